"""Scenario files: a strict pydantic schema, one loader, errors that name the field.

A scenario is YAML, read by a bounded reader (``cosim.scenario.safe_yaml``: no duplicate
keys, no alias bombs). Unknown keys are rejected everywhere and types are strict
(``steps: true`` or ``steps: 24.5`` are errors, not coerced; a float field takes
an integer). Every count, window and free-form mapping has an upper bound
(``cosim.scenario.limits``). ``load_scenario`` returns a validated ``Scenario`` with every
default filled in, or raises one ``ScenarioError`` listing every problem of the
schema; the checks that need data (does the feeder exist, is the bus in it, are
there enough hours, is the policy file there) run when the scenario is built
(``cosim.scenario.build``) and are collected the same way.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from agents.consensus.duals import mode_problem, pi_gain_problem
from agents.consensus.graphs import TOPOLOGIES
from agents.control.rules import HEURISTIC_BACKLOG_MARGIN, HEURISTIC_PRICE_THRESHOLD_PER_KWH
from cosim.scenario.limits import (
    ID_PATTERN,
    ID_RULE,
    MAX_BATTERY_CAPACITY_KWH,
    MAX_BUILDING_STEPS,
    MAX_BUILDINGS,
    MAX_DELAY_STEPS,
    MAX_DEMAND_SCALE,
    MAX_DUAL_ROUNDS,
    MAX_EPOS_PLANS,
    MAX_FLEET_SCALE,
    MAX_FLUSH_EVERY,
    MAX_GRAPH_EDGES,
    MAX_GRID_PERIOD_STEPS,
    MAX_ID_CHARS,
    MAX_LIST_ITEMS,
    MAX_NEGOTIATION_ITERATIONS,
    MAX_ORACLE_BUILDING_STEPS,
    MAX_PARAMS,
    MAX_PLAN_HORIZON_STEPS,
    MAX_POWER_KW,
    MAX_REMOTE_TIMEOUT_S,
    MAX_REPORTED_ERRORS,
    MAX_SCENARIO_FILE_BYTES,
    MAX_SEED,
    MAX_SHARDS,
    MAX_SILENT_INTERVALS,
    MAX_TEXT_CHARS,
    MAX_TIME_STEPS,
    MAX_V1_WINDOW,
)
from cosim.scenario.safe_yaml import YamlProblems, read_yaml
from grid_models.errors import InputError

MAX_BUS_ID = 2**31 - 1
#: communication.topology of a graph read from communication.graph_file
FILE_TOPOLOGY = "file"
#: communication.params accepted per topology, with their type (float also takes int).
TOPOLOGY_PARAMS: dict[str, dict[str, type]] = {
    "complete": {}, "ring": {}, "line": {}, "star": {},
    "two_clusters": {"split": int},
    "random_geometric": {"radius": float},
    "small_world": {"k": int, "p": float},
    "feeder": {"max_hops": int},
    "file": {},
}
_SHOWN_INPUT_CHARS = 60  # longest wrong input echoed in a message
_NO_INPUT_SHOWN = {"missing", "extra_forbidden", "value_error", "assertion_error"}


class ScenarioError(InputError, ValueError):
    """Invalid scenario. ``errors`` holds one ``(field path, message)`` per problem."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem (a message's own line breaks become spaces), at most
        ``MAX_REPORTED_ERRORS`` and a last one counting the rest."""
        shown = [f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}"
                 for path, msg in ((p, " ".join(str(m).splitlines()))
                                   for p, m in self.errors[:MAX_REPORTED_ERRORS])]
        rest = len(self.errors) - MAX_REPORTED_ERRORS
        if rest > 0:
            shown.append(f"{self.source}: {rest} more problem(s) not shown")
        return shown


class ScenarioInfeasible(ScenarioError):
    """The scenario is valid, but no schedule meets its constraint (the oracle's LP)."""


class Problems:
    """Collects ``(field path, message)`` pairs; ``raise_if_any`` raises them as one error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[tuple[str, str]] = []

    def add(self, path: str, msg: str) -> None:
        """Record a problem with the field at ``path`` (dotted, e.g. ``time.steps``)."""
        self.errors.append((path, msg))

    def __bool__(self) -> bool:
        return bool(self.errors)

    def __len__(self) -> int:
        return len(self.errors)

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record a ``ScenarioError`` raised inside instead of letting it through."""
        try:
            yield
        except ScenarioError as exc:
            self.errors.extend(exc.errors)

    def raise_if_any(self) -> None:
        """Raise the recorded problems as one :class:`ScenarioError`; nothing if none."""
        if self.errors:
            raise ScenarioError(self.source, list(self.errors))


class _FieldErrors(ValueError):
    """Raised by a validator to name fields below the one it validates."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(m for _, m in errors))


class _FieldError(_FieldErrors):
    def __init__(self, field: str, msg: str) -> None:
        super().__init__([(field, msg)])


def _check_id(value: str) -> str:
    if not re.fullmatch(ID_PATTERN, value):
        raise ValueError(f"{value!r} is not a valid id: {ID_RULE} (mosaik entity ids and file "
                         "names are made from it)")
    return value


def _check_text(value: str) -> str:
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"control character {bad!r} in the text; give printable characters")
    return value


Id = Annotated[str, AfterValidator(_check_id)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS),
                 AfterValidator(_check_text)]
Count = Annotated[int, Field(ge=1, le=MAX_BUILDINGS)]
BusId = Annotated[int, Field(ge=0, le=MAX_BUS_ID)]
Step = Annotated[int, Field(ge=0, le=MAX_TIME_STEPS)]
DemandScale = Annotated[float, Field(gt=0, le=MAX_DEMAND_SCALE)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class TimeConfig(_Strict):
    """The run's steps: the data row of step 0, how many steps, their length."""

    start: Step = Field(0, description="data row (hour of the CityLearn year) of step 0")
    steps: int = Field(ge=1, le=MAX_TIME_STEPS)
    step_h: float = Field(1.0, gt=0, le=24, description="step length in hours")


class DataConfig(_Strict):
    """Where the buildings' data set is read from."""

    source: Literal["citylearn_2022"] = "citylearn_2022"
    path: Text = "data/citylearn_2022"


class BackgroundConfig(_Strict):
    """The feeder's own loads besides the fleet: SimBench profiles, nominal or off; scaled."""

    mode: Literal["simbench", "nominal", "off"] = "off"
    scale: float = Field(1.0, ge=0, le=MAX_FLEET_SCALE)


class FeederConfig(_Strict):
    """The distribution feeder, its power flow backend and the fleet's load on it."""

    source: Text = Field(description="simbench:CODE, pandapower:NAME or a pandapower JSON path")
    backend: Literal["pandapower", "power-grid-model"] = "power-grid-model"
    background: BackgroundConfig = BackgroundConfig()
    fleet_scale: float = Field(1.0, gt=0, le=MAX_FLEET_SCALE,
                               description="multiplies the fleet's feeder load")
    power_factor: float = Field(0.95, gt=0, le=1)


class BatteryConfig(_Strict):
    """A building's battery; a None field keeps the value of its data."""

    capacity_kwh: float | None = Field(None, ge=0, le=MAX_BATTERY_CAPACITY_KWH)
    power_kw: float | None = Field(None, ge=0, le=MAX_POWER_KW)
    efficiency: float | None = Field(None, gt=0, le=1, description="round trip")


class BuildingSpec(_Strict):
    """One building given by hand: its profile, scale, policy class, bus and battery."""

    id: Id
    profile: Text = Field(description="CityLearn building name, e.g. Building_1")
    demand_scale: DemandScale = 1.0
    policy_class: Id | None = None
    bus: BusId | None = None
    battery: BatteryConfig = BatteryConfig()
    pv_kw: float | None = Field(None, ge=0, le=MAX_POWER_KW)


class GeneratorConfig(_Strict):
    """``count`` buildings generated from cycled profiles and demand scales."""

    count: Count
    profiles: list[Text] | None = Field(None, min_length=1, max_length=MAX_LIST_ITEMS,
                                        description="cycled; default all")
    demand_scales: list[DemandScale] = Field(default_factory=lambda: [1.0], min_length=1,
                                             max_length=MAX_LIST_ITEMS)
    battery: BatteryConfig = BatteryConfig()
    pv_kw: float | None = Field(None, ge=0, le=MAX_POWER_KW)
    buses: list[BusId] | None = Field(None, min_length=1, max_length=MAX_BUILDINGS,
                                      description="one per building; default: placed")

    @model_validator(mode="after")
    def _one_bus_each(self) -> GeneratorConfig:
        if self.buses is not None and len(self.buses) != self.count:
            raise _FieldError("buses", f"give one bus per building ({self.count}), "
                              f"got {len(self.buses)}")
        return self


class BuildingsConfig(_Strict):
    """The fleet: ``explicit`` buildings or ``generate``, and their shared settings."""

    explicit: list[BuildingSpec] | None = Field(None, min_length=1, max_length=MAX_BUILDINGS)
    generate: GeneratorConfig | None = None
    backlog_cap_kwh: float = Field(24.0, gt=0)
    export_pv: bool = True
    initial_soc_fraction: float = Field(0.0, ge=0, le=1)
    class_for_scale: dict[str, Id] = Field(
        default_factory=lambda: {"1.0": "normal", "2.0": "double"}, max_length=MAX_LIST_ITEMS,
        description="policy class of a building by its demand scale",
    )

    @model_validator(mode="after")
    def _consistent(self) -> BuildingsConfig:
        errors = []
        if (self.explicit is None) == (self.generate is None):
            errors.append(("", "give exactly one of 'explicit' or 'generate'"))
        if self.explicit is not None:
            ids = [b.id for b in self.explicit]
            seen: set[str] = set()
            for k, i in enumerate(ids):
                if i in seen:
                    errors.append((f"explicit.{k}.id", f"building ids must be unique; {i!r} "
                                   f"is given before (item {ids.index(i)})"))
                seen.add(i)
        for key in self.class_for_scale:
            if not _is_number(key):
                errors.append((f"class_for_scale.{key}", "keys must be demand scales written "
                               "as quoted numbers, e.g. '2.0': double"))
        if errors:
            raise _FieldErrors(errors)
        return self


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


#: Fields of ``controller`` that only one kind uses, and their defaults for that kind
#: (filled in when the kind is given; null for every other kind).
CONTROLLER_KIND_FIELDS: dict[str, tuple[str, Any]] = {
    "rule_threshold_kwh": ("rule", None),
    "heuristic_price_threshold": ("heuristic", HEURISTIC_PRICE_THRESHOLD_PER_KWH),
    "heuristic_backlog_margin": ("heuristic", HEURISTIC_BACKLOG_MARGIN),
    "oracle_limit": ("oracle", "run_average"),
    "dmpc_horizon_h": ("dmpc", 24),
    "dmpc_forecast": ("dmpc", "perfect"),
    "dmpc_iterations": ("dmpc", 10),
    "dmpc_tolerance": ("dmpc", 0.01),
    "dmpc_step": ("dmpc", 0.05),
    "dmpc_negotiation": ("dmpc", "coordinator"),
    "dmpc_consensus_rounds": ("dmpc", 10),
    "dmpc_soc_value": ("dmpc", None),
    "dmpc_backlog_value": ("dmpc", None),
    "epos_plans": ("epos", 16),
    "epos_forecast": ("epos", "perfect"),
    "epos_iterations": ("epos", 20),
    "epos_alpha": ("epos", 0.0),
    "epos_beta": ("epos", 0.1),
    "epos_overlay": ("epos", "communication"),
    "epos_reorganisations": ("epos", 5),
    "entry": ("python", None),
    "path": ("python", None),
    "params": ("python", None),
    "remote_cmd": ("remote", None),
    "remote_connect": ("remote", None),
    "remote_timeout_s": ("remote", 30.0),
}
#: ``controller.entry``: ``package.module:ClassName`` (a user's controller, kind python).
ENTRY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
#: The controllers that plan for the whole fleet at once (one negotiation or selection
#: over every building): they run in one shard.
FLEET_WIDE_KINDS = ("dmpc", "epos")


class ControllerConfig(_Strict):
    """What acts for the buildings (``kind``) and the settings of that kind."""

    kind: Literal["policy", "none", "rule", "heuristic", "oracle", "dmpc", "epos",
                  "python", "remote"] = "policy"
    policy_dir: Text = "data/policies"
    rule_threshold_kwh: float | None = Field(None, ge=0)
    heuristic_price_threshold: float | None = Field(
        None, gt=0, description="$/kWh; from this price on the heuristic postpones purchases "
                                f"(kind heuristic; default {HEURISTIC_PRICE_THRESHOLD_PER_KWH})")
    heuristic_backlog_margin: float | None = Field(
        None, gt=0, le=1, description="share of backlog_cap_kwh the heuristic may fill while "
                                      f"expensive (kind heuristic; default "
                                      f"{HEURISTIC_BACKLOG_MARGIN})")
    oracle_limit: Literal["run_average", "per_step"] | None = Field(
        None, description="c on the run's average or in every step (kind oracle; default "
                          "run_average)")
    dmpc_horizon_h: int | None = Field(None, ge=1, le=MAX_PLAN_HORIZON_STEPS,
                                       description="hours each building plans ahead "
                                                   "(kind dmpc; default 24)")
    dmpc_forecast: Literal["perfect", "persistence"] | None = Field(
        None, description="perfect: the data; persistence: yesterday's demand and PV "
                          "(kind dmpc; default perfect)")
    dmpc_iterations: int | None = Field(None, ge=1, le=MAX_NEGOTIATION_ITERATIONS,
                                        description="most negotiation iterations per step "
                                                    "(kind dmpc; default 10)")
    dmpc_tolerance: float | None = Field(None, gt=0, le=1,
                                         description="relative excess at which negotiation "
                                                     "stops (kind dmpc; default 0.01)")
    dmpc_step: float | None = Field(None, gt=0, le=100,
                                    description="subgradient step, $/kWh per unit of relative "
                                                "excess (kind dmpc; default 0.05)")
    dmpc_negotiation: Literal["coordinator", "consensus"] | None = Field(
        None, description="how the fleet's sum is obtained: a coordinator, or consensus on "
                          "the communication graph (kind dmpc; default coordinator)")
    dmpc_consensus_rounds: int | None = Field(None, ge=1, le=MAX_DUAL_ROUNDS,
                                              description="averaging rounds per negotiation "
                                                          "iteration (kind dmpc; default 10)")
    dmpc_soc_value: float | None = Field(None, ge=0, le=100,
                                         description="$/kWh of stored energy at the horizon's "
                                                     "end (kind dmpc; default eta x mean price)")
    dmpc_backlog_value: float | None = Field(None, ge=0, le=100,
                                             description="$/kWh of backlog at the horizon's "
                                                         "end (kind dmpc; default 1.05 x max "
                                                         "price)")
    epos_plans: int | None = Field(None, ge=1, le=MAX_EPOS_PLANS,
                                   description="candidate day plans per building (kind epos; "
                                               "default 16)")
    epos_forecast: Literal["perfect", "persistence"] | None = Field(
        None, description="what the day plans are made from (kind epos; default perfect)")
    epos_iterations: int | None = Field(None, ge=1, le=MAX_NEGOTIATION_ITERATIONS,
                                        description="I-EPOS iterations per day (kind epos; "
                                                    "default 20)")
    epos_alpha: float | None = Field(None, ge=0, le=1,
                                     description="weight of unfairness (kind epos; default 0)")
    epos_beta: float | None = Field(None, ge=0, le=1,
                                    description="weight of discomfort (kind epos; default 0.1)")
    epos_overlay: Literal["communication", "feeder"] | None = Field(
        None, description="the graph the tree overlay is built from (kind epos; default "
                          "communication)")
    epos_reorganisations: int | None = Field(None, ge=0, le=MAX_NEGOTIATION_ITERATIONS,
                                             description="restarts on a shuffled tree after a "
                                                         "violation (kind epos; default 5)")
    entry: str | None = Field(
        None, max_length=MAX_TEXT_CHARS, pattern=ENTRY_PATTERN,
        description="the controller class to run, 'package.module:ClassName', imported from "
                    "the installed environment or from 'path' (kind python; this RUNS that "
                    "code)")
    path: Text | None = Field(
        None, description="a directory to import 'entry' from (kind python; relative paths "
                          "from the project directory); never the working directory "
                          "implicitly")
    params: dict[str, Any] | None = Field(
        None, description="keyword arguments of the class: cls(context, **params) (kind "
                          "python; JSON-like values)")
    remote_cmd: Text | None = Field(
        None, description="command that starts the controller process, with %(addr)s (where "
                          "it connects to) and optionally %(python)s; run in the project "
                          "directory (kind remote; this RUNS that command)")
    remote_connect: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:\[\]-]+:[0-9]{1,5}$",
        description="HOST:PORT of a controller process already listening (kind remote)")
    remote_timeout_s: float | None = Field(
        None, gt=0, le=MAX_REMOTE_TIMEOUT_S,
        description="seconds the remote controller may take to answer a step before the run "
                    "fails (kind remote; default 30; a started process has at least 60 s to "
                    "connect)")

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("kind", "policy")
            missing = {name: default for name, (owner, default) in CONTROLLER_KIND_FIELDS.items()
                       if owner == kind and data.get(name) is None}
            if missing:
                data = {**data, **missing}
        return data

    @model_validator(mode="after")
    def _kind_fields(self) -> ControllerConfig:
        errors = [(name, f"only used with kind {owner!r} (kind is {self.kind!r})")
                  for name, (owner, _) in CONTROLLER_KIND_FIELDS.items()
                  if owner != self.kind and getattr(self, name) is not None]
        if self.kind == "remote" and (self.remote_cmd is None) == (self.remote_connect is None):
            errors.append(("remote_cmd", "kind 'remote' needs exactly one of remote_cmd (a "
                           "command with %(addr)s) or remote_connect (HOST:PORT)"))
        if self.remote_cmd is not None and "%(addr)s" not in self.remote_cmd:
            errors.append(("remote_cmd", "the command must contain %(addr)s, the address the "
                           "controller process connects to"))
        if self.kind == "python" and self.entry is None:
            errors.append(("entry", "kind 'python' needs entry: 'package.module:ClassName' "
                           "(the controller class to run)"))
        if self.kind == "epos" and self.epos_alpha is not None and self.epos_beta is not None \
                and self.epos_alpha + self.epos_beta > 1:
            errors.append(("epos_beta", f"epos_alpha + epos_beta must be <= 1 (the global "
                           f"cost's weight is 1 - alpha - beta), got {self.epos_alpha:g} + "
                           f"{self.epos_beta:g}"))
        if errors:
            raise _FieldErrors(errors)
        return self


class ConstraintConfig(_Strict):
    """The fleet's grid limit c: a fraction of its peak demand or ``limit_kw``."""

    fraction_of_peak: float | None = Field(None, gt=0, le=1_000)
    limit_kw: float | None = Field(None, gt=0)
    peak_horizon_steps: int | None = Field(
        None, ge=1, le=MAX_TIME_STEPS,
        description="steps from time.start over which the peak is taken (default: time.steps; "
                    "--steps sets it to the declared steps so that c does not move)")

    @model_validator(mode="after")
    def _exactly_one(self) -> ConstraintConfig:
        if (self.fraction_of_peak is None) == (self.limit_kw is None):
            raise ValueError("give exactly one of 'fraction_of_peak' or 'limit_kw'")
        if self.limit_kw is not None and self.peak_horizon_steps is not None:
            raise _FieldError("peak_horizon_steps", "only used with fraction_of_peak "
                              "(limit_kw needs no peak)")
        return self


class DualsConfig(_Strict):
    """The multipliers' dynamics (:mod:`agents.consensus.duals`): mode, gains and bounds."""

    mode: str = Field("pi", max_length=MAX_TEXT_CHARS)
    alpha: float = Field(0.1, ge=0)
    beta: float = Field(0.1, ge=0)
    gamma: float = Field(0.5, ge=0, description="pi's proportional gain; alpha*beta < gamma <= 1")
    eta: float = Field(1.0, ge=0)
    rounds: int = Field(3, ge=1, le=MAX_DUAL_ROUNDS)
    lambda_max: float = Field(15.0, gt=0)
    nu_min: float = -20.0
    nu_max: float = 20.0
    v1_window: int = Field(1, ge=1, le=MAX_V1_WINDOW)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        problem = mode_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _gain_and_nu(self) -> DualsConfig:
        errors = []
        if self.mode == "pi":
            problem = pi_gain_problem(self.alpha, self.beta, self.gamma)
            if problem:
                errors.append(("gamma", problem))
        if self.nu_min > 0:
            errors.append(("nu_min", f"must be <= 0 (nu starts at 0), got {self.nu_min:g}"))
        if self.nu_max < 0:
            errors.append(("nu_max", f"must be >= 0 (nu starts at 0), got {self.nu_max:g}"))
        if not errors and self.nu_min >= self.nu_max:
            errors.append(("nu_min", f"nu_min ({self.nu_min:g}) must be < nu_max "
                           f"({self.nu_max:g})"))
        if errors:
            raise _FieldErrors(errors)
        return self


ElementId = Annotated[int, Field(ge=0, le=MAX_BUS_ID)]


class LoadingLimitConfig(_Strict):
    """Loading of transformers or lines: ``ids: all`` (every in-service one) or a list."""

    element: Literal["trafo", "line"]
    ids: Literal["all"] | list[ElementId] = Field("all", description="'all' or element indices")
    max_percent: float = Field(100.0, gt=0, le=1_000)

    @field_validator("ids")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("give 'all' or at least one index")
            if len(v) > MAX_LIST_ITEMS:
                raise ValueError(f"at most {MAX_LIST_ITEMS} indices")
            dup = sorted({x for x in v if v.count(x) > 1})
            if dup:
                raise ValueError(f"indices listed twice: {dup}")
        return v


class VoltageLimitConfig(_Strict):
    """A voltage band over ``buses`` ('all': every energised bus, or a list of bus ids)."""

    buses: Literal["all"] | list[BusId] = "all"
    min_pu: float | None = Field(0.95, gt=0, lt=2)
    max_pu: float | None = Field(1.05, gt=0, lt=2)

    @field_validator("buses")
    @classmethod
    def _buses(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("give 'all' or at least one bus")
            if len(v) > MAX_LIST_ITEMS:
                raise ValueError(f"at most {MAX_LIST_ITEMS} buses")
        return v

    @model_validator(mode="after")
    def _band(self) -> VoltageLimitConfig:
        if self.min_pu is None and self.max_pu is None:
            raise ValueError("give min_pu, max_pu or both (null switches one side off)")
        if self.min_pu is not None and self.max_pu is not None and self.min_pu >= self.max_pu:
            raise _FieldError("min_pu", f"{self.min_pu:g} must be below max_pu "
                              f"({self.max_pu:g})")
        return self


class GridConstraintsConfig(_Strict):
    """Grid limits the buildings act on through their multiplier (docs/equations.md)."""

    mode: Literal["operator", "peer"] = Field(
        "operator", description="operator: one multiplier per constraint, sent to the "
        "buildings concerned; peer: they agree on it by the duals' consensus mode")
    alpha: float = Field(1.0, gt=0, description="step of a multiplier per unit of normalised "
                         "excess")
    mu_max: float = Field(15.0, gt=0, description="upper bound of each grid multiplier")
    lambda_eff_min: float = Field(
        0.0, le=0, ge=-1000, description="lower end of the effective multiplier the "
        "buildings see (below 0 a grid constraint asks for more consumption, e.g. under "
        "over-voltage); the policies must have been trained on it")
    period_steps: int = Field(
        1, ge=1, le=MAX_GRID_PERIOD_STEPS,
        description="1: one multiplier per constraint, updated every step; 24 (hourly "
        "steps): one per hour of the day, each updated with its own hour's measurement")
    beta: float = Field(0.1, ge=0, description="peer mode: consensus integral gain "
                        "(pi: alpha*beta < gamma <= 1)")
    gamma: float = Field(0.9, ge=0, description="peer mode: pi's proportional gain")
    weights: Literal["sensitivity", "membership"] = Field(
        "sensitivity", description="loading constraints: linearised sensitivities or "
        "downstream membership (voltage and peak always use sensitivities / ones)")
    loading: list[LoadingLimitConfig] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    voltage: list[VoltageLimitConfig] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    peak_kw: float | None = Field(None, gt=0, description="the fleet's net load as the "
                                  "feeder sees it, kW, in every step")

    @model_validator(mode="after")
    def _some(self) -> GridConstraintsConfig:
        if not self.loading and not self.voltage and self.peak_kw is None:
            raise ValueError("declare at least one of loading, voltage or peak_kw")
        return self


class SilentConfig(_Strict):
    """An agent that sends nothing at steps ``start <= t < end``."""

    agent: Id
    start: Step
    end: Step

    @model_validator(mode="after")
    def _order(self) -> SilentConfig:
        if self.end < self.start:
            raise _FieldError("end", f"end ({self.end}) must be >= start ({self.start})")
        return self


class FaultsConfig(_Strict):
    """Faults of the agents' messages: dropped, delayed, silent agents."""

    drop_probability: float = Field(0.0, ge=0, le=1)
    delay_steps: int = Field(0, ge=0, le=MAX_DELAY_STEPS)
    silent: list[SilentConfig] = Field(default_factory=list, max_length=MAX_SILENT_INTERVALS)


class CommunicationConfig(_Strict):
    """The agents' communication graph and the faults of their messages."""

    topology: str = Field("complete", max_length=MAX_TEXT_CHARS)
    params: dict[str, Any] = Field(default_factory=dict, max_length=MAX_PARAMS,
                                   description="scalar parameters of the topology")
    graph_file: Text | None = Field(
        None, description="topology file: node-link JSON (as comm_graph.json) or an edge "
        "list 'ID ID' per line; absolute or relative to the project directory")
    allow_disconnected: bool = False
    faults: FaultsConfig = FaultsConfig()

    @field_validator("topology")
    @classmethod
    def _topology(cls, v: str) -> str:
        if v not in (*TOPOLOGIES, FILE_TOPOLOGY):
            raise ValueError(f"unknown topology {v!r}; valid: "
                             f"{', '.join((*TOPOLOGIES, FILE_TOPOLOGY))}")
        return v

    @model_validator(mode="after")
    def _params(self) -> CommunicationConfig:
        if (self.topology == FILE_TOPOLOGY) != (self.graph_file is not None):
            raise _FieldError("graph_file", "give graph_file exactly with topology 'file'")
        accepted = TOPOLOGY_PARAMS[self.topology]
        errors = [(f"params.{key}", _param_problem(self.topology, accepted, key, value))
                  for key, value in self.params.items()]
        errors = [(f, m) for f, m in errors if m]
        if errors:
            raise _FieldErrors(errors)
        return self


def _param_problem(topology: str, accepted: dict[str, type], key: str, value: Any) -> str:
    """Why ``key: value`` is not a parameter of ``topology`` ("" if it is)."""
    if key not in accepted:
        names = ", ".join(accepted) or "none"
        return f"unknown parameter for topology {topology!r}; accepted: {names}"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return f"must be a single value (a number), got a {type(value).__name__}"
    kind = accepted[key]
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        noun = "an integer" if kind is int else "a number"
        return f"must be {noun}, got {_shown(value)}"
    if not math.isfinite(value) or value <= 0:
        return f"must be > 0, got {value!r}"
    if kind is int and value > MAX_BUILDINGS:
        return f"must be <= {MAX_BUILDINGS:,}, got {value!r}"
    return ""


class OutputConfig(_Strict):
    """Where the run is written, how often it is flushed, whether plots are drawn."""

    directory: Text = "runs/{name}"
    flush_every: int = Field(100, ge=1, le=MAX_FLUSH_EVERY,
                             description="steps between flushes to disk")
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
    """How many shards the fleet is split into and where they run."""

    shards: int = Field(1, ge=1, le=MAX_SHARDS)
    mode: Literal["inprocess", "cmd"] = "inprocess"


class Scenario(_Strict):
    """A whole scenario file, validated, with every default filled in."""

    name: str = Field(min_length=1, max_length=2 * MAX_ID_CHARS,
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="letters, digits, '_', '-', '.'; starts with a letter or digit")
    description: str = Field("", max_length=MAX_TEXT_CHARS)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    time: TimeConfig
    data: DataConfig = DataConfig()
    feeder: FeederConfig
    buildings: BuildingsConfig
    controller: ControllerConfig = ControllerConfig()
    constraint: ConstraintConfig
    duals: DualsConfig = DualsConfig()
    grid_constraints: GridConstraintsConfig | None = None
    communication: CommunicationConfig = CommunicationConfig()
    output: OutputConfig = OutputConfig()
    sharding: ShardingConfig = ShardingConfig()

    def n_buildings(self) -> int:
        """The number of buildings, given or generated."""
        b = self.buildings
        if b.explicit is not None:
            return len(b.explicit)
        return b.generate.count  # type: ignore[union-attr]

    def buildings_field(self) -> str:
        """The field that sets the number of buildings, to name in errors."""
        return "buildings.explicit" if self.buildings.explicit is not None else \
            "buildings.generate.count"

    @model_validator(mode="after")
    def _sizes(self) -> Scenario:
        errors = [e for check in (_shard_problems, _window_problems, _size_problems,
                                  _graph_problems, _grid_constraint_problems)
                  for e in check(self)]
        if errors:
            raise _FieldErrors(errors)
        return self


def _shard_problems(sc: Scenario) -> list[tuple[str, str]]:
    if sc.sharding.shards > sc.n_buildings():
        return [("sharding.shards", f"{sc.sharding.shards} exceeds the number of buildings "
                 f"({sc.n_buildings()})")]
    if sc.controller.kind in (*FLEET_WIDE_KINDS, "remote"):
        verb = "answers" if sc.controller.kind == "remote" else "plans"
        where = f"controller kind {sc.controller.kind!r} {verb} for the whole fleet in one " \
                "in-process FleetSim"
        if sc.sharding.shards > 1:
            return [("sharding.shards", f"{where}; give shards: 1 (got {sc.sharding.shards})")]
        if sc.sharding.mode != "inprocess":
            return [("sharding.mode", f"{where}; give mode: inprocess (got "
                     f"{sc.sharding.mode!r})")]
    return []


def _window_problems(sc: Scenario) -> list[tuple[str, str]]:
    # the steps the scenario declares: --steps shortens a run and records the declared
    # horizon as constraint.peak_horizon_steps; a window longer than a shortened run
    # averages over the steps so far, like the start of any run
    declared = max(sc.time.steps, sc.constraint.peak_horizon_steps or 0)
    if sc.duals.v1_window > declared:
        return [("duals.v1_window", f"{sc.duals.v1_window} exceeds the scenario's {declared} "
                 "steps; give 1..time.steps")]
    return []


def _grid_constraint_problems(sc: Scenario) -> list[tuple[str, str]]:
    g = sc.grid_constraints
    if g is None or g.mode != "peer" or sc.duals.mode != "pi":
        return []
    problem = pi_gain_problem(g.alpha, g.beta, g.gamma)
    return [("grid_constraints.gamma", f"peer mode agrees by the duals' mode 'pi': "
             f"{problem}")] if problem else []


def _size_problems(sc: Scenario) -> list[tuple[str, str]]:
    n = sc.n_buildings()
    steps = max(sc.time.steps, sc.constraint.peak_horizon_steps or 0)
    errors = []
    if n * steps > MAX_BUILDING_STEPS:
        errors.append((sc.buildings_field(), f"{n:,} buildings x {steps:,} steps = "
                       f"{n * steps:,} building-steps, more than the {MAX_BUILDING_STEPS:,} "
                       "allowed; use fewer buildings or fewer steps"))
    elif sc.controller.kind == "oracle" and n * sc.time.steps > MAX_ORACLE_BUILDING_STEPS:
        errors.append(("controller.kind", f"the oracle's linear program for {n:,} buildings x "
                       f"{sc.time.steps:,} steps exceeds {MAX_ORACLE_BUILDING_STEPS:,} "
                       "building-steps; shorten the run (--steps) or use fewer buildings"))
    return errors


def graph_edges_estimate(topology: str, n: int, params: dict[str, Any]) -> float:
    """About how many edges ``make_graph(topology, n, **params)`` makes (feeder: 0, known
    only once the buildings are placed)."""
    pairs = n * (n - 1) / 2
    if topology == "complete":
        return pairs
    if topology == "two_clusters":
        split = int(params.get("split") or n // 2)
        return split * (split - 1) / 2 + (n - split) * (n - split - 1) / 2 + 1
    if topology == "small_world":
        return n * min(int(params.get("k") or 4), max(n - 1, 0)) / 2
    if topology == "random_geometric":
        radius = params.get("radius")
        if radius is None:
            radius = min(1.5, math.sqrt(3.0 * math.log(max(n, 2)) / (math.pi * max(n, 1))))
        return pairs * min(1.0, math.pi * float(radius) ** 2)
    return 0.0 if topology in ("feeder", FILE_TOPOLOGY) else float(n)


def _graph_problems(sc: Scenario) -> list[tuple[str, str]]:
    com = sc.communication
    edges = graph_edges_estimate(com.topology, sc.n_buildings(), com.params)
    if edges > MAX_GRAPH_EDGES:
        field = "communication.params" if com.params else "communication.topology"
        return [(field, f"the {com.topology} graph of {sc.n_buildings():,} agents has about "
                 f"{edges:,.0f} edges, more than the {MAX_GRAPH_EDGES:,} allowed; use a sparse "
                 "topology (small_world, feeder, ring)")]
    return []


# --- loading ---------------------------------------------------------------------------------


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
            value = read_yaml(text) if text.strip() else ""
        except YamlProblems as exc:
            raise ScenarioError(source, [(path.strip(), f"--set value: {m}")
                                         for _, m in exc.errors]) from None
        except yaml.YAMLError:
            value = text
        out.append((path.strip(), value))
    return out


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys accepted where ``loc`` (the unknown key's path) points."""
    model: Any = Scenario
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_of(info.annotation) if info else None
    return list(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _message(err: ErrorDetails) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(tuple(err["loc"]))
        return "unknown key" + (f"; valid: {', '.join(valid)}" if valid else "")
    msg = re.sub(r"a valid dictionary or instance of \w+", "a mapping of fields", msg)
    value = err.get("input")
    if err["type"] not in _NO_INPUT_SHOWN and isinstance(value, (bool, int, float, str)):
        shown = _shown(value)
        if len(shown) <= _SHOWN_INPUT_CHARS:
            msg = f"{msg}, got {shown}"
    return msg


def _shown(value: Any) -> str:
    """A scalar as the scenario file would spell it."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _pydantic_errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for err in exc.errors():
        where = _loc(err["loc"])
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, _FieldErrors):
            errors.extend((".".join(p for p in (where, below) if p), msg)
                          for below, msg in inner.errors)
        else:
            errors.append((where, _message(err)))
    return errors


def _shorten(raw: dict[str, Any], steps: int) -> None:
    """``--steps``: run ``steps`` steps, but keep c from the declared horizon."""
    time_, constraint = raw.get("time"), raw.get("constraint")
    declared = time_.get("steps") if isinstance(time_, dict) else None
    if (isinstance(constraint, dict) and constraint.get("fraction_of_peak") is not None
            and constraint.get("peak_horizon_steps") is None
            and isinstance(declared, int) and not isinstance(declared, bool)
            and declared != steps):
        constraint["peak_horizon_steps"] = declared
    _set_path(raw, "time.steps", steps, "<--steps>")


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
        _set_path(raw, path, value, source)
    if steps is not None:
        _shorten(raw, steps)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc))
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
    see ``cosim.scenario.safe_yaml.read_yaml``)."""
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
