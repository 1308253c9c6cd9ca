"""The scenario's sections about how the agents coordinate: ``duals`` (the multipliers'
dynamics), ``grid_constraints`` (grid limits they act on) and ``communication`` (their
graph and the faults of their messages)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from agents.consensus.duals import DualConfig, mode_problem, pi_gain_problem
from agents.consensus.graphs import TOPOLOGIES, TOPOLOGY_PARAMS
from cosim.scenario.errors import FieldError, FieldErrors
from cosim.scenario.fields import (
    BusId,
    ElementId,
    Id,
    Step,
    StrictModel,
    Text,
    domain_field,
    shown_value,
)
from cosim.scenario.limits import (
    MAX_BUILDINGS,
    MAX_DELAY_STEPS,
    MAX_DUAL_ROUNDS,
    MAX_GRID_PERIOD_STEPS,
    MAX_LIST_ITEMS,
    MAX_PARAMS,
    MAX_SILENT_INTERVALS,
    MAX_TEXT_CHARS,
    MAX_V1_WINDOW,
)

#: communication.topology of a graph read from communication.graph_file
FILE_TOPOLOGY = "file"
#: communication.params accepted per topology (agents.consensus.graphs), and none for a file
SCENARIO_TOPOLOGY_PARAMS: dict[str, dict[str, type]] = {**TOPOLOGY_PARAMS, FILE_TOPOLOGY: {}}


class DualsConfig(StrictModel):
    """The multipliers' dynamics (:mod:`agents.consensus.duals`): mode, gains and bounds."""

    # defaults, bounds and meanings: agents.consensus.duals.DualConfig
    mode: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] = domain_field(DualConfig, "mode")
    alpha: float = domain_field(DualConfig, "alpha")
    beta: float = domain_field(DualConfig, "beta")
    gamma: float = domain_field(DualConfig, "gamma")
    eta: float = domain_field(DualConfig, "eta")
    rounds: int = domain_field(DualConfig, "rounds", le=MAX_DUAL_ROUNDS)
    lambda_max: float = domain_field(DualConfig, "lambda_max")
    nu_min: float = domain_field(DualConfig, "nu_min", bounds=False)  # checked below
    nu_max: float = domain_field(DualConfig, "nu_max", bounds=False)
    v1_window: int = domain_field(DualConfig, "v1_window", le=MAX_V1_WINDOW)

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
            raise FieldErrors(errors)
        return self


class LoadingLimitConfig(StrictModel):
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


class VoltageLimitConfig(StrictModel):
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
            raise FieldError("min_pu", f"{self.min_pu:g} must be below max_pu "
                              f"({self.max_pu:g})")
        return self


class GridConstraintsConfig(StrictModel):
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


class SilentConfig(StrictModel):
    """An agent that sends nothing at steps ``start <= t < end``."""

    agent: Id
    start: Step
    end: Step

    @model_validator(mode="after")
    def _order(self) -> SilentConfig:
        if self.end < self.start:
            raise FieldError("end", f"end ({self.end}) must be >= start ({self.start})")
        return self


class FaultsConfig(StrictModel):
    """Faults of the agents' messages: dropped, delayed, silent agents."""

    drop_probability: float = Field(0.0, ge=0, le=1)
    delay_steps: int = Field(0, ge=0, le=MAX_DELAY_STEPS)
    silent: list[SilentConfig] = Field(default_factory=list, max_length=MAX_SILENT_INTERVALS)


class CommunicationConfig(StrictModel):
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
            raise FieldError("graph_file", "give graph_file exactly with topology 'file'")
        accepted = SCENARIO_TOPOLOGY_PARAMS[self.topology]
        errors = [(f"params.{key}", _param_problem(self.topology, accepted, key, value))
                  for key, value in self.params.items()]
        errors = [(f, m) for f, m in errors if m]
        if errors:
            raise FieldErrors(errors)
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
        return f"must be {noun}, got {shown_value(value)}"
    if not math.isfinite(value) or value <= 0:
        return f"must be > 0, got {value!r}"
    if kind is int and value > MAX_BUILDINGS:
        return f"must be <= {MAX_BUILDINGS:,}, got {value!r}"
    return ""

