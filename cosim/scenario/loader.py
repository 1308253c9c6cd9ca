"""Reading a scenario: the file (bounded, UTF-8 YAML), the overrides, the schema; one
``ScenarioError`` listing every problem."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cosim.scenario.errors import ScenarioError
from cosim.scenario.limits import MAX_RESOLVED_SCENARIO_BYTES, MAX_SCENARIO_FILE_BYTES
from cosim.scenario.messages import pydantic_errors
from cosim.scenario.model import Scenario
from cosim.scenario.overrides import set_path, shorten_run
from grid_models.support.safe_yaml import YamlProblems, read_yaml_file


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
        schema = pydantic_errors(exc)
        error = ScenarioError(source, [*errors, *schema])
        error.partial = _without_failed_fields(raw, exc)
        error.failed_sections = {path.split(".")[0] for path, _ in schema}
        raise error from None
    if errors:
        raise ScenarioError(source, errors)
    return scenario


def _without_failed_fields(raw: dict[str, Any], exc: ValidationError,
                           rounds: int = 3) -> Scenario | None:
    """The scenario with every field the schema refused left out (its default taken), so
    that the data-dependent checks of the other sections can still run; None when that
    is impossible (a required field failed, or a problem that names no single field)."""
    trial = copy.deepcopy(raw)
    for _ in range(rounds):
        for err in exc.errors():
            loc = [p for p in err["loc"]
                   if not (isinstance(p, str) and p.startswith("function-"))]
            if err["type"] == "missing" or not loc or not _drop(trial, loc):
                return None
        try:
            return Scenario.model_validate(trial)
        except ValidationError as again:
            exc = again
    return None


def _drop(raw: Any, loc: list[str | int]) -> bool:
    """Remove the key at ``loc`` from the nested mappings ``raw``; False if it is not there
    as a mapping's key (a list element, a union's branch name)."""
    node = raw
    for part in loc[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    if isinstance(node, dict) and loc[-1] in node:
        del node[loc[-1]]
        return True
    return False


def read_scenario_file(path: str | os.PathLike[str], max_bytes: int = MAX_SCENARIO_FILE_BYTES,
                       duplicates: list[tuple[str, str]] | None = None) -> Any:
    """The YAML value of a scenario file, read with the bounded reader (``duplicates``:
    see ``grid_models.support.safe_yaml.read_yaml``)."""
    try:
        return read_yaml_file(path, what="scenario file", max_bytes=max_bytes,
                              too_large="a scenario file is a few KB (use buildings.generate "
                                        "for large fleets)", duplicates=duplicates)
    except YamlProblems as exc:
        raise ScenarioError(str(path), exc.errors) from None


def load_run_scenario(run_dir: str | os.PathLike[str]) -> Scenario:
    """The resolved ``scenario.yaml`` a run stored, read and validated like any scenario
    (what verify, compare and the reports read of it)."""
    return load_scenario(Path(run_dir) / "scenario.yaml", max_bytes=MAX_RESOLVED_SCENARIO_BYTES)


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
