"""The scenario's ``controller`` section: what acts for the buildings and the settings of
each kind (a field of one kind only is an error with another)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from agents.control.dmpc import DmpcConfig
from agents.control.epos.controller import EposConfig, weights_problem
from agents.control.rules import HEURISTIC_BACKLOG_MARGIN, HEURISTIC_PRICE_THRESHOLD_PER_KWH
from cosim.scenario.errors import FieldErrors
from cosim.scenario.fields import StrictModel, Text, domain_field
from cosim.scenario.limits import (
    MAX_BUILDINGS,
    MAX_DMPC_THREADS,
    MAX_DUAL_ROUNDS,
    MAX_EPOS_PLANS,
    MAX_NEGOTIATION_ITERATIONS,
    MAX_PLAN_HORIZON_STEPS,
    MAX_REMOTE_TIMEOUT_S,
    MAX_TEXT_CHARS,
)
from grid_models.support.settings import settings_of

# the dmpc_* and epos_* settings' defaults, bounds and meanings: the domain configs
_DMPC = settings_of(DmpcConfig)
_EPOS = settings_of(EposConfig)
#: Fields of ``controller`` that only one kind uses, and their defaults for that kind
#: (filled in when the kind is given; null for every other kind).
CONTROLLER_KIND_FIELDS: dict[str, tuple[str, Any]] = {
    "rule_threshold_kwh": ("rule", None),
    "heuristic_price_threshold": ("heuristic", HEURISTIC_PRICE_THRESHOLD_PER_KWH),
    "heuristic_backlog_margin": ("heuristic", HEURISTIC_BACKLOG_MARGIN),
    "oracle_limit": ("oracle", "run_average"),
    "dmpc_horizon_h": ("dmpc", _DMPC["horizon"][0]),
    "dmpc_forecast": ("dmpc", "perfect"),
    "dmpc_iterations": ("dmpc", _DMPC["iterations"][0]),
    "dmpc_tolerance": ("dmpc", _DMPC["tolerance"][0]),
    "dmpc_step": ("dmpc", _DMPC["step"][0]),
    "dmpc_smoothing": ("dmpc", _DMPC["smoothing"][0]),
    "dmpc_threads": ("dmpc", _DMPC["threads"][0]),
    "dmpc_master_groups": ("dmpc", _DMPC["master_groups"][0]),
    "dmpc_negotiation": ("dmpc", _DMPC["negotiation"][0]),
    "dmpc_consensus_rounds": ("dmpc", _DMPC["consensus_rounds"][0]),
    "dmpc_soc_value": ("dmpc", _DMPC["soc_value"][0]),
    "dmpc_backlog_value": ("dmpc", _DMPC["backlog_value"][0]),
    "epos_plans": ("epos", _EPOS["plans"][0]),
    "epos_forecast": ("epos", "perfect"),
    "epos_iterations": ("epos", _EPOS["iterations"][0]),
    "epos_alpha": ("epos", _EPOS["alpha"][0]),
    "epos_beta": ("epos", _EPOS["beta"][0]),
    "epos_overlay": ("epos", "communication"),
    "epos_reorganisations": ("epos", _EPOS["reorganisations"][0]),
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


class ControllerConfig(StrictModel):
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
    dmpc_horizon_h: int | None = domain_field(DmpcConfig, "horizon", le=MAX_PLAN_HORIZON_STEPS,
                                              optional_for="dmpc")
    dmpc_forecast: Literal["perfect", "persistence"] | None = Field(
        None, description="perfect: the data; persistence: yesterday's demand and PV "
                          "(kind dmpc; default perfect)")
    dmpc_iterations: int | None = domain_field(DmpcConfig, "iterations",
                                               le=MAX_NEGOTIATION_ITERATIONS, optional_for="dmpc")
    dmpc_tolerance: float | None = domain_field(DmpcConfig, "tolerance", le=1,
                                                optional_for="dmpc")
    dmpc_step: float | None = domain_field(DmpcConfig, "step", le=100, optional_for="dmpc")
    dmpc_smoothing: float | None = domain_field(DmpcConfig, "smoothing", optional_for="dmpc")
    dmpc_threads: int | None = domain_field(DmpcConfig, "threads", le=MAX_DMPC_THREADS,
                                            optional_for="dmpc")
    dmpc_master_groups: int | None = domain_field(DmpcConfig, "master_groups",
                                                  le=MAX_BUILDINGS, optional_for="dmpc")
    dmpc_negotiation: Literal["coordinator", "consensus"] | None = domain_field(
        DmpcConfig, "negotiation", optional_for="dmpc")
    dmpc_consensus_rounds: int | None = domain_field(DmpcConfig, "consensus_rounds",
                                                     le=MAX_DUAL_ROUNDS, optional_for="dmpc")
    dmpc_soc_value: float | None = domain_field(DmpcConfig, "soc_value", le=100,
                                                optional_for="dmpc")
    dmpc_backlog_value: float | None = domain_field(DmpcConfig, "backlog_value", le=100,
                                                    optional_for="dmpc")
    epos_plans: int | None = domain_field(EposConfig, "plans", le=MAX_EPOS_PLANS,
                                          optional_for="epos")
    epos_forecast: Literal["perfect", "persistence"] | None = Field(
        None, description="what the day plans are made from (kind epos; default perfect)")
    epos_iterations: int | None = domain_field(EposConfig, "iterations",
                                               le=MAX_NEGOTIATION_ITERATIONS, optional_for="epos")
    epos_alpha: float | None = domain_field(EposConfig, "alpha", optional_for="epos")
    epos_beta: float | None = domain_field(EposConfig, "beta", optional_for="epos")
    epos_overlay: Literal["communication", "feeder"] | None = Field(
        None, description="the graph the tree overlay is built from (kind epos; default "
                          "communication)")
    epos_reorganisations: int | None = domain_field(EposConfig, "reorganisations",
                                                    le=MAX_NEGOTIATION_ITERATIONS,
                                                    optional_for="epos")
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
        if self.kind == "epos" and self.epos_alpha is not None and self.epos_beta is not None:
            problem = weights_problem(self.epos_alpha, self.epos_beta, ("epos_alpha", "epos_beta"))
            if problem:
                errors.append(("epos_beta", problem))
        if errors:
            raise FieldErrors(errors)
        return self

