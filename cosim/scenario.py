"""Scenario files: a strict pydantic schema, one loader, errors that name the field.

A scenario is YAML. Unknown keys are rejected everywhere. ``load_scenario``
returns a validated ``Scenario`` with every default filled in; the checks that
need data (does the feeder exist, is the bus in it, are there enough hours, is
the policy file there) run when the scenario is built (``cosim.build``), and
raise the same ``ScenarioError`` naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agents.duals import DUAL_MODES
from agents.graphs import TOPOLOGIES


class ScenarioError(ValueError):
    """Invalid scenario. ``errors`` holds one ``(field path, message)`` per problem."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem (a message's own line breaks become spaces)."""
        return [f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}"
                for path, msg in ((p, " ".join(str(m).splitlines())) for p, m in self.errors)]


class _FieldError(ValueError):
    """Raised by a validator to name a field below the one it validates."""

    def __init__(self, field: str, msg: str) -> None:
        self.field = field
        super().__init__(msg)


class ScenarioInfeasible(ScenarioError):
    """The scenario is valid, but no schedule meets its constraint (the oracle's LP)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TimeConfig(_Strict):
    start: int = Field(0, ge=0, description="data row (hour of the CityLearn year) of step 0")
    steps: int = Field(ge=1)
    step_h: float = Field(1.0, gt=0, description="step length in hours")


class DataConfig(_Strict):
    source: Literal["citylearn_2022"] = "citylearn_2022"
    path: str = "data/citylearn_2022"


class BackgroundConfig(_Strict):
    mode: Literal["simbench", "nominal", "off"] = "off"
    scale: float = Field(1.0, ge=0)


class FeederConfig(_Strict):
    source: str = Field(description="simbench:CODE, pandapower:NAME or a pandapower JSON path")
    backend: Literal["pandapower", "power-grid-model"] = "power-grid-model"
    background: BackgroundConfig = BackgroundConfig()
    fleet_scale: float = Field(1.0, gt=0, description="multiplies the fleet's feeder load")
    power_factor: float = Field(0.95, gt=0, le=1)


class BatteryConfig(_Strict):
    capacity_kwh: float | None = Field(None, ge=0)
    power_kw: float | None = Field(None, ge=0)
    efficiency: float | None = Field(None, gt=0, le=1, description="round trip")


class BuildingSpec(_Strict):
    id: str = Field(min_length=1)
    profile: str = Field(description="CityLearn building name, e.g. Building_1")
    demand_scale: float = Field(1.0, gt=0)
    policy_class: str | None = None
    bus: int | None = None
    battery: BatteryConfig = BatteryConfig()
    pv_kw: float | None = Field(None, ge=0)


class GeneratorConfig(_Strict):
    count: int = Field(ge=1)
    profiles: list[str] | None = Field(None, min_length=1, description="cycled; default all")
    demand_scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    battery: BatteryConfig = BatteryConfig()
    pv_kw: float | None = Field(None, ge=0)
    buses: list[int] | None = Field(None, min_length=1, description="explicit; default: placed")

    @field_validator("demand_scales")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("every demand scale must be > 0")
        return v


class BuildingsConfig(_Strict):
    explicit: list[BuildingSpec] | None = Field(None, min_length=1)
    generate: GeneratorConfig | None = None
    backlog_cap_kwh: float = Field(24.0, gt=0)
    export_pv: bool = True
    initial_soc_fraction: float = Field(0.0, ge=0, le=1)
    class_for_scale: dict[str, str] = Field(
        default_factory=lambda: {"1.0": "normal", "2.0": "double"},
        description="policy class of a building by its demand scale",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> BuildingsConfig:
        if (self.explicit is None) == (self.generate is None):
            raise ValueError("give exactly one of 'explicit' or 'generate'")
        if self.explicit is not None:
            ids = [b.id for b in self.explicit]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                first = next(k for k, i in enumerate(ids) if i in dup and ids.index(i) < k)
                raise _FieldError(f"explicit.{first}.id",
                                  f"building ids must be unique; repeated: {dup}")
        return self


class ControllerConfig(_Strict):
    kind: Literal["policy", "none", "rule", "oracle"] = "policy"
    policy_dir: str = "data/policies"
    rule_threshold_kwh: float | None = Field(None, ge=0)


class ConstraintConfig(_Strict):
    fraction_of_peak: float | None = Field(None, gt=0)
    limit_kw: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> ConstraintConfig:
        if (self.fraction_of_peak is None) == (self.limit_kw is None):
            raise ValueError("give exactly one of 'fraction_of_peak' or 'limit_kw'")
        return self


class DualsConfig(_Strict):
    mode: str = "consensus"
    alpha: float = Field(0.1, ge=0)
    beta: float = Field(0.1, ge=0)
    eta: float = Field(1.0, ge=0)
    rounds: int = Field(3, ge=1)
    lambda_max: float = Field(15.0, gt=0)
    nu_min: float = -20.0
    nu_max: float = 20.0
    v1_window: int = Field(1, ge=1)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in DUAL_MODES:
            raise ValueError(f"unknown dual mode {v!r}; valid: {', '.join(DUAL_MODES)}")
        return v

    @model_validator(mode="after")
    def _nu(self) -> DualsConfig:
        if self.nu_min > self.nu_max:
            raise _FieldError("nu_min", f"nu_min ({self.nu_min}) must be <= nu_max ({self.nu_max})")
        return self


class SilentConfig(_Strict):
    agent: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class FaultsConfig(_Strict):
    drop_probability: float = Field(0.0, ge=0, le=1)
    delay_steps: int = Field(0, ge=0)
    silent: list[SilentConfig] = Field(default_factory=list)


class CommunicationConfig(_Strict):
    topology: str = "complete"
    params: dict[str, Any] = Field(default_factory=dict)
    allow_disconnected: bool = False
    faults: FaultsConfig = FaultsConfig()

    @field_validator("topology")
    @classmethod
    def _topology(cls, v: str) -> str:
        if v not in TOPOLOGIES:
            raise ValueError(f"unknown topology {v!r}; valid: {', '.join(TOPOLOGIES)}")
        return v


class OutputConfig(_Strict):
    directory: str = "runs/{name}"
    flush_every: int = Field(100, ge=1, description="steps between flushes to disk")
    plots: bool = True

    @field_validator("directory")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            v.format(name="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{v!r}: the only placeholder allowed is {{name}} ({exc!r})") from None
        return v


class ShardingConfig(_Strict):
    shards: int = Field(1, ge=1)
    mode: Literal["inprocess", "cmd"] = "inprocess"


class Scenario(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(0, ge=0)
    time: TimeConfig
    data: DataConfig = DataConfig()
    feeder: FeederConfig
    buildings: BuildingsConfig
    controller: ControllerConfig = ControllerConfig()
    constraint: ConstraintConfig
    duals: DualsConfig = DualsConfig()
    communication: CommunicationConfig = CommunicationConfig()
    output: OutputConfig = OutputConfig()
    sharding: ShardingConfig = ShardingConfig()

    def n_buildings(self) -> int:
        b = self.buildings
        if b.explicit is not None:
            return len(b.explicit)
        return b.generate.count  # type: ignore[union-attr]

    @model_validator(mode="after")
    def _shards(self) -> Scenario:
        if self.sharding.shards > self.n_buildings():
            raise _FieldError("sharding.shards", f"{self.sharding.shards} exceeds the number "
                              f"of buildings ({self.n_buildings()})")
        return self


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _set_path(raw: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node: Any = raw
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not (key.isdigit() and int(key) < len(node)):
                raise ScenarioError(source, [(".".join(keys[: i + 1]),
                                              f"no item {key} in a list of {len(node)}")])
            node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise ScenarioError(source, [(".".join(keys[: i + 1]), "cannot set inside a value")])
        node = node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            raise ScenarioError(source, [(dotted, f"no item {last} in a list of {len(node)}")])
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError(source, [(dotted, "cannot set inside a value")])


def parse_overrides(items: list[str] | None,
                    source: str = "<command line>") -> list[tuple[str, Any]]:
    """``path=value`` strings; the value is read as YAML (``3``, ``0.5``, ``[1, 2]``, ``off``)."""
    out = []
    for item in items or []:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise ScenarioError(source, [("--set", f"{item!r} is not of the form path=value")])
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        out.append((path.strip(), value))
    return out


def scenario_from_dict(raw: Any, source: str = "<scenario>",
                       overrides: list[tuple[str, Any]] | None = None) -> Scenario:
    if not isinstance(raw, dict):
        raise ScenarioError(source, [("", "a scenario must be a mapping of fields")])
    for path, value in overrides or []:
        _set_path(raw, path, value, source)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            below = getattr(err.get("ctx", {}).get("error"), "field", "")
            errors.append((".".join(p for p in (_loc(err["loc"]), below) if p), msg))
        raise ScenarioError(source, errors) from None


def load_scenario(path: str | Path, overrides: list[tuple[str, Any]] | None = None) -> Scenario:
    """Read and validate a scenario file (plus ``--set`` overrides)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ScenarioError(source, [("", "scenario file not found")])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise ScenarioError(source, [("", f"malformed YAML{where}: {problem}")]) from None
    except UnicodeDecodeError:
        raise ScenarioError(source, [("", "not a text file")]) from None
    return scenario_from_dict(raw, source, overrides)


def resolved_yaml(scenario: Scenario) -> str:
    """The fully resolved scenario (defaults filled in) as YAML."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
