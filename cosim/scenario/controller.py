"""The scenario's ``controller`` section: what acts for the buildings and the settings of
each kind (a field of one kind only is an error with another)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from agents.control.rules import HEURISTIC_BACKLOG_MARGIN, HEURISTIC_PRICE_THRESHOLD_PER_KWH
from cosim.scenario.errors import FieldErrors
from cosim.scenario.fields import StrictModel, Text
from cosim.scenario.limits import (
    MAX_DUAL_ROUNDS,
    MAX_EPOS_PLANS,
    MAX_NEGOTIATION_ITERATIONS,
    MAX_PLAN_HORIZON_STEPS,
    MAX_REMOTE_TIMEOUT_S,
    MAX_TEXT_CHARS,
)

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
            raise FieldErrors(errors)
        return self

