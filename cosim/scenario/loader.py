"""Reading a scenario: the file (bounded, UTF-8 YAML), the overrides, the schema; one
``ScenarioError`` listing every problem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cosim.scenario.errors import ScenarioError
from cosim.scenario.limits import MAX_SCENARIO_FILE_BYTES
from cosim.scenario.messages import pydantic_errors
from cosim.scenario.model import Scenario
from cosim.scenario.overrides import set_path, shorten_run
from grid_models.support.safe_yaml import YamlProblems, read_yaml


def scenario_from_dict(raw: Any, source: str = "<scenario>",
                       overrides: list[tuple[str, Any]] | None = None,
                       steps: int | None = None,
                       earlier: list[tuple[str, str]] | None = None) -> Scenario:
    """Validate ``raw`` after applying ``overrides`` and ``steps`` (``--steps``: the run is
    shortened, the constraint's peak still taken over the declared steps).

    ``earlier``: problems already found in the file (duplicate keys), reported
    together with the schema's.
    """
    errors = list(earlier or [])
    if not isinstance(raw, dict):
        raise ScenarioError(source, [*errors, ("", "a scenario must be a mapping of fields")])
    for path, value in overrides or []:
        set_path(raw, path, value, source)
    if steps is not None:
        shorten_run(raw, steps)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        errors.extend(pydantic_errors(exc))
    if errors:
        raise ScenarioError(source, errors)
    return scenario


def _not_a_file(path: Path) -> str:
    """Why ``path`` (not a regular file) cannot be read as a scenario, in words."""
    if not path.exists():
        return "scenario file not found"
    if path.is_dir():
        return "is a directory, not a scenario file; give the YAML file inside it"
    kind = "a FIFO (named pipe)" if path.is_fifo() else (
        "a socket" if path.is_socket() else "a device" if path.is_char_device() or
        path.is_block_device() else "not a regular file")
    return f"is {kind}, not a scenario file; give a YAML file"


def _not_utf8(data: bytes) -> str:
    """What a scenario file that is not UTF-8 is, in words."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            data.decode("utf-16")
        except UnicodeDecodeError:
            pass
        else:
            return "UTF-16 text; save the file as UTF-8"
    if b"\x00" in data:
        return "a binary file, not YAML text (UTF-8)"
    return "not UTF-8 text (another encoding?); save the file as UTF-8"


def read_scenario_file(path: str | os.PathLike[str], max_bytes: int = MAX_SCENARIO_FILE_BYTES,
                       duplicates: list[tuple[str, str]] | None = None) -> Any:
    """The YAML value of a scenario file, read with the bounded reader (``duplicates``:
    see ``grid_models.support.safe_yaml.read_yaml``)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ScenarioError(source, [("", _not_a_file(path))])
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ScenarioError(source, [("", f"cannot read the scenario file: "
                                      f"{exc.strerror or exc}")]) from None
    if len(data) > max_bytes:
        raise ScenarioError(source, [("", f"larger than {max_bytes:,} bytes; a scenario file "
                                      "is a few KB (use buildings.generate for large fleets)")])
    try:
        return read_yaml(data.decode("utf-8"), duplicates)
    except UnicodeDecodeError:
        raise ScenarioError(source, [("", _not_utf8(data))]) from None
    except YamlProblems as exc:
        raise ScenarioError(source, exc.errors) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split()) or "cannot parse"
        raise ScenarioError(source, [("", f"malformed YAML{where}: {problem}")]) from None


def load_scenario(path: str | os.PathLike[str], overrides: list[tuple[str, Any]] | None = None,
                  steps: int | None = None, *,
                  max_bytes: int = MAX_SCENARIO_FILE_BYTES) -> Scenario:
    """Read and validate a scenario file (plus ``--set`` overrides and ``--steps``)."""
    duplicates: list[tuple[str, str]] = []
    raw = read_scenario_file(path, max_bytes, duplicates)
    return scenario_from_dict(raw, str(path), overrides, steps, duplicates)


def resolved_yaml(scenario: Scenario) -> str:
    """The fully resolved scenario (defaults filled in) as YAML."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
