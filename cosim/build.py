"""From a validated ``Scenario`` to the domain objects a run needs.

Everything that needs data to check (feeder, buses, profiles, hours, policy
files, graph connectivity) is checked here and reported as ``ScenarioError``
with the field path, before any run directory is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from agents.building import FleetParams
from agents.controllers import NoControl, RuleBasedPeakShaving
from agents.data import REPO_ROOT, CityLearnData, DataError, load_citylearn
from agents.duals import DualConfig, DualDynamics
from agents.faults import FaultModel
from agents.graphs import GraphError, make_graph
from agents.policy import PolicyFileError, PolicyLibrary, load_policy
from agents.runner import FleetSetup, district_limit_kwh
from cosim.scenario import Scenario, ScenarioError, ScenarioInfeasible


def resolve_path(path: str, base: Path | None = None) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (base or REPO_ROOT) / p


@dataclass
class Built:
    """Everything a run needs, built and checked."""

    scenario: Scenario
    names: list[str]
    profiles: list[str]
    classes: list[str]
    setup: FleetSetup
    controller: Any
    graph: nx.Graph
    duals: DualDynamics
    limit_kwh: float
    grid: Any  # cosim.grid.GridModel, or None when built without the feeder
    policies: dict[str, Any]  # loaded policies by class (controller kind "policy")
    oracle: Any = None  # agents.oracle.OracleSchedule (controller kind "oracle")

    @property
    def n(self) -> int:
        return len(self.names)


def _fail(source: str, path: str, msg: str) -> ScenarioError:
    return ScenarioError(source, [(path, msg)])


def _buildings(sc: Scenario, data: CityLearnData, source: str):
    """ids, profiles, demand scales, battery/PV overrides, explicit buses (or None)."""
    b = sc.buildings
    rows = []
    if b.explicit is not None:
        for i, spec in enumerate(b.explicit):
            rows.append((f"buildings.explicit.{i}", spec.id, spec.profile, spec.demand_scale,
                         spec.policy_class, spec.battery, spec.pv_kw, spec.bus))
    else:
        g = b.generate
        profiles = g.profiles or data.names
        width = len(str(g.count))
        for i in range(g.count):
            bus = g.buses[i % len(g.buses)] if g.buses else None
            rows.append(("buildings.generate", f"B{i + 1:0{width}d}", profiles[i % len(profiles)],
                         g.demand_scales[i % len(g.demand_scales)], None, g.battery, g.pv_kw, bus))
        if g.buses and len(g.buses) != g.count:
            raise _fail(source, "buildings.generate.buses",
                        f"give one bus per building ({g.count}), got {len(g.buses)}")
    for path, _id, profile, *_ in rows:
        if profile not in data.buildings:
            field = f"{path}.profile" if path.startswith("buildings.explicit") else (
                "buildings.generate.profiles")
            raise _fail(source, field, f"unknown CityLearn building {profile!r}; valid: "
                        f"{', '.join(data.names)}")
    return rows


def _policy_class(sc: Scenario, path: str, explicit: str | None, scale: float,
                  source: str) -> str:
    if explicit is not None:
        return explicit
    for key, cls in sc.buildings.class_for_scale.items():
        try:
            if float(key) == scale:
                return cls
        except ValueError:
            raise _fail(source, f"buildings.class_for_scale.{key}",
                        "keys must be demand scales (numbers)") from None
    raise _fail(source, path, f"no policy class for demand scale {scale:g}; set policy_class "
                f"or add it to buildings.class_for_scale ({sc.buildings.class_for_scale})")


def build(sc: Scenario, source: str = "<scenario>", *, with_grid: bool = True) -> Built:
    """Check everything against the data and build the run's objects."""
    try:
        data = load_citylearn(resolve_path(sc.data.path))
    except DataError as exc:
        raise _fail(source, "data.path", str(exc)) from None
    if sc.time.step_h != data.hours_per_step:
        raise _fail(source, "time.step_h", f"the CityLearn data are hourly; step_h must be "
                    f"{data.hours_per_step:g}, got {sc.time.step_h:g}")
    last = sc.time.start + sc.time.steps
    if last > data.n_steps:
        raise _fail(source, "time.steps", f"start {sc.time.start} + steps {sc.time.steps} = "
                    f"{last} exceeds the {data.n_steps} hours the data hold")

    rows = _buildings(sc, data, source)
    names = [r[1] for r in rows]
    profiles = [r[2] for r in rows]
    scales = np.array([r[3] for r in rows], dtype=float)
    bl = sc.buildings
    chosen = [data.building(p) for p in profiles]
    base = FleetParams.from_buildings(chosen, demand_scale=scales,
                                      backlog_cap_kwh=bl.backlog_cap_kwh, export_pv=bl.export_pv)
    cap = base.capacity_kwh.copy()
    power = base.power_kw.copy()
    eta = base.eta_charge.copy()
    pv = base.pv_kw.copy()
    for i, row in enumerate(rows):
        battery, pv_kw = row[5], row[6]
        if battery.capacity_kwh is not None:
            cap[i] = battery.capacity_kwh
        if battery.power_kw is not None:
            power[i] = battery.power_kw
        if battery.efficiency is not None:
            eta[i] = battery.efficiency ** 0.5
        if pv_kw is not None:
            pv[i] = pv_kw
    params = FleetParams(cap, power, eta, eta.copy(), pv, base.demand_scale,
                         base.backlog_cap_kwh, base.export_pv)

    class_fields = [f"{r[0]}.policy_class" if r[0].startswith("buildings.explicit") else
                    "buildings.class_for_scale" for r in rows]
    classes = [_policy_class(sc, f, r[4], r[3], source) for f, r in zip(class_fields, rows,
                                                                          strict=True)]

    grid = None
    buses = np.full(len(rows), -1, dtype=np.int64)
    if with_grid:
        from cosim.grid import build_grid

        grid = build_grid(sc, rows, source)
        buses = grid.building_bus
    demand, solar, price = data.window(profiles, sc.time.start, sc.time.steps)
    setup = FleetSetup(names, params, buses, demand, solar, price, start_hour=sc.time.start,
                       dt_h=data.hours_per_step, initial_soc_fraction=bl.initial_soc_fraction)

    c = sc.constraint
    if c.fraction_of_peak is not None:
        limit_kwh = district_limit_kwh(setup, c.fraction_of_peak)
    else:
        limit_kwh = float(c.limit_kw) * setup.dt_h

    ctl = sc.controller
    policies: dict[str, Any] = {}
    if ctl.kind == "policy":
        policy_dir = resolve_path(ctl.policy_dir)
        if not policy_dir.is_dir():
            raise _fail(source, "controller.policy_dir", f"{policy_dir}: directory not found")
        available = sorted(p.stem for p in policy_dir.glob("*.json"))
        if not available:
            raise _fail(source, "controller.policy_dir", f"{policy_dir}: no policy files "
                        "(<class>.json) in this directory")
        for cls in sorted(set(classes)):
            path = policy_dir / f"{cls}.json"
            field = class_fields[classes.index(cls)]
            if not path.is_file():
                raise _fail(source, field, f"unknown policy class {cls!r}: {path} not found "
                            f"(available in {ctl.policy_dir}: {available or 'none'})")
            try:
                policies[cls] = load_policy(path)
            except PolicyFileError as exc:
                raise _fail(source, "controller.policy_dir", str(exc)) from None

    com = sc.communication
    params_graph = dict(com.params)
    if com.topology == "feeder":
        if grid is None:
            raise _fail(source, "communication.topology", "'feeder' needs the feeder")
        params_graph.update(net=grid.net, building_buses=buses)
    try:
        graph = make_graph(com.topology, len(names), seed=sc.seed,
                           allow_disconnected=com.allow_disconnected, **params_graph)
    except GraphError as exc:
        raise _fail(source, "communication.topology", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise _fail(source, "communication.params", f"invalid parameter for topology "
                    f"{com.topology!r}: {exc}") from None
    silent = []
    for k, s in enumerate(com.faults.silent):
        if s.agent not in names:
            raise _fail(source, f"communication.faults.silent.{k}.agent",
                        f"unknown building id {s.agent!r}")
        if s.end < s.start:
            raise _fail(source, f"communication.faults.silent.{k}.end", "end must be >= start")
        silent.append((names.index(s.agent), s.start, s.end))
    faults = FaultModel(com.faults.drop_probability, com.faults.delay_steps, tuple(silent))
    d = sc.duals
    try:
        config = DualConfig(mode=d.mode, alpha=d.alpha, beta=d.beta, eta=d.eta, rounds=d.rounds,
                            lambda_max=d.lambda_max, nu_min=d.nu_min, nu_max=d.nu_max,
                            v1_window=d.v1_window)
        duals = DualDynamics(config, graph, limit_kwh,
                             faults=None if faults.is_trivial else faults, seed=sc.seed)
    except GraphError as exc:
        raise _fail(source, "communication.topology", str(exc)) from None
    except ValueError as exc:
        raise _fail(source, "duals", str(exc)) from None
    if ctl.kind == "policy":
        ranges = {}
        for cls, p in policies.items():
            try:
                ranges[cls] = float(p.metadata["multipliers"]["lambda_range"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                raise _fail(source, "controller.policy_dir", f"policy {cls!r} does not say the "
                            "lambda range it was trained on (multipliers.lambda_range)") from None
        lam_hi = min(ranges.values())
        if d.lambda_max > lam_hi + 1e-9:
            raise _fail(source, "duals.lambda_max", f"{d.lambda_max:g} exceeds the range the "
                        f"policies were trained on (lambda <= {lam_hi:g})")
    oracle = None
    if ctl.kind == "oracle":
        from agents.oracle import OracleInfeasible, solve_oracle

        try:
            oracle = solve_oracle(params, setup.base_demand_kwh, setup.solar_w_per_kw,
                                  setup.price_per_kwh, limit_kwh, setup.dt_h,
                                  setup.initial_soc_fraction)
        except OracleInfeasible as exc:
            raise ScenarioInfeasible(
                source, [("constraint", f"infeasible for the oracle: {exc}")]) from None
    built = Built(sc, names, profiles, classes, setup, None, graph, duals, limit_kwh, grid,
                  policies, oracle)
    built.controller = controller_for(built, np.arange(len(names)))
    return built


def controller_for(built: Built, index: np.ndarray) -> Any:
    """The scenario's controller for the buildings ``index`` (a shard or the whole fleet)."""
    ctl = built.scenario.controller
    if ctl.kind == "none":
        return NoControl()
    if ctl.kind == "rule":
        return RuleBasedPeakShaving(built.setup.params.select(index), ctl.rule_threshold_kwh,
                                    built.setup.dt_h)
    if ctl.kind == "oracle":
        from agents.oracle import OracleController

        return OracleController(built.oracle, np.asarray(index))
    return PolicyLibrary(built.policies, [built.classes[i] for i in index])
