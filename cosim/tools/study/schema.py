"""The study file (YAML, see :mod:`cosim.tools.study`), its checks, and the grid of
runs it makes (run names are single, safe folder names).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cosim.scenario.errors import ScenarioError
from cosim.scenario.limits import MAX_SCENARIO_FILE_BYTES
from grid_models.support.safe_yaml import YamlProblems, read_yaml, read_yaml_file

#: a variant name: letters, digits, then also _ . = + - (no path separators, not . or ..)
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,63}$")


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]")


MAX_RUN_NAME = 200


def _base_variant() -> dict[str, dict[str, Any]]:
    return {"base": {}}


class StudyFile(BaseModel):
    """The schema of a study file (module docstring); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    scenario: str
    engine: Literal["mosaik", "plain"] = "mosaik"  # cosim.engine.run.ENGINES
    set: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=_base_variant)


@dataclass
class Study:
    """A loaded study: its base scenario (absolute path), overrides, sweep and variants."""

    name: str
    scenario: Path
    engine: str
    common: list[tuple[str, Any]]
    sweep: dict[str, list[Any]]
    variants: dict[str, list[tuple[str, Any]]]
    source: str = "<study>"
    runs: list[dict[str, Any]] = field(default_factory=list)

    def grid(self) -> list[tuple[str, dict[str, Any], list[tuple[str, Any]]]]:
        """(run id, sweep values, overrides) of every run; run ids are safe folder names."""
        bad = [n for n in self.variants if not VARIANT_NAME.match(str(n)) or ".." in str(n)]
        if bad:
            raise ScenarioError(self.source, [(f"variants.{bad[0]}", "a variant name is 1-64 "
                                               "letters, digits, _ . = + - starting with a "
                                               "letter or digit (no /, no ..)")])
        keys = list(self.sweep)
        out = []
        seen: dict[str, str] = {}
        for values in itertools.product(*(self.sweep[k] for k in keys)) if keys else [()]:
            point = dict(zip(keys, values, strict=True))
            for name, overrides in self.variants.items():
                tag = "__".join(f"{_safe(k.rsplit('.', 1)[-1])}={_safe(v)}"
                                for k, v in point.items())
                run_id = f"{name}__{tag}" if tag else name
                if len(run_id) > MAX_RUN_NAME:
                    raise ScenarioError(self.source, [("sweep", f"run name {run_id[:40]!r}... "
                                                       f"is longer than {MAX_RUN_NAME}")])
                label = f"{name} {point}"
                if run_id in seen:
                    raise ScenarioError(self.source, [("sweep", f"{seen[run_id]} and {label} "
                                                       f"both make the run name {run_id!r}")])
                seen[run_id] = label
                out.append((run_id, {"variant": name, **point},
                            [*self.common, *point.items(), *overrides]))
        return out


def _value(text: str, source: str) -> Any:
    """A command-line value read as YAML (``3``, ``0.5``, ``off``), bounded and strict."""
    try:
        return read_yaml(text)
    except YamlProblems as exc:
        raise ScenarioError(source, exc.errors) from None
    except yaml.YAMLError:
        return text


def _safe(value: Any) -> str:
    """A swept key or value as part of a folder name: unsafe characters become ``_``."""
    text = _UNSAFE.sub("_", str(value)).replace("..", "_")
    return text or "_"


def load_study(path: str | Path) -> Study:
    """Read and check a study file; its ``scenario`` is resolved from the file's folder.

    Raises :class:`~cosim.scenario.errors.ScenarioError` naming every problem found.
    """
    path = Path(path)
    try:
        raw = read_yaml_file(path, what="study file", max_bytes=MAX_SCENARIO_FILE_BYTES)
        spec = StudyFile.model_validate(raw)
    except YamlProblems as exc:
        raise ScenarioError(str(path), exc.errors) from None
    except ValidationError as exc:
        raise ScenarioError(str(path), [(".".join(map(str, e["loc"])), e["msg"])
                                        for e in exc.errors()]) from None
    scenario = (path.parent / spec.scenario).resolve()
    return Study(spec.name, scenario, spec.engine, list(spec.set.items()), spec.sweep,
                 {k: list(v.items()) for k, v in spec.variants.items()}, str(path))


def study_from_args(scenario: str, sweeps: list[str], variants: list[str],
                    name: str = "study", engine: str = "mosaik") -> Study:
    """``--sweep key=v1,v2`` and ``--variant name:key=value,key=value`` from the command line."""
    sweep: dict[str, list[Any]] = {}
    for item in sweeps:
        key, sep, values = item.partition("=")
        if not sep:
            raise ScenarioError("--sweep", [("", f"{item!r} is not key=v1,v2,...")])
        sweep[key.strip()] = [_value(v, "--sweep") for v in values.split(",")]
    parsed: dict[str, list[tuple[str, Any]]] = {}
    for item in variants:
        label, sep, body = item.partition(":")
        if not sep:
            raise ScenarioError("--variant", [("", f"{item!r} is not name:key=value,...")])
        pairs = []
        for kv in filter(None, body.split(",")):
            k, s2, v = kv.partition("=")
            if not s2:
                raise ScenarioError("--variant", [("", f"{kv!r} in {item!r} is not key=value")])
            pairs.append((k.strip(), _value(v, "--variant")))
        parsed[label] = pairs
    return Study(_safe(name)[:64], Path(scenario).resolve(), engine, [], sweep,
                 parsed or {"base": []}, scenario)
