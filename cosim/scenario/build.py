"""From a validated ``Scenario`` to the domain objects a run needs.

Everything that needs data to check (feeder, buses, profiles, hours, policy
files, graph connectivity) is checked here, before any run directory is
created. The checks collect their problems (``cosim.scenario.errors.Problems``); a check
whose input failed an earlier one is skipped, and ``build`` raises one
``ScenarioError`` listing every ``(field path, message)``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import networkx as nx
import numpy as np
from numpy.typing import NDArray

from agents.consensus.duals import DualConfig, DualDynamics
from agents.consensus.faults import FaultModel
from agents.consensus.graphs import GraphError, make_graph
from agents.control.contract import ControllerContext
from agents.control.rules import Controller, NoControl, PriceAwareHeuristic, RuleBasedPeakShaving
from agents.fleet.building import FleetParams
from agents.fleet.data import CityLearnData, DataError, load_citylearn
from agents.fleet.paths import resolve_path
from agents.fleet.runner import FleetSetup, district_peak_kwh
from agents.learning.policy import Policy, PolicyFileError, PolicyLibrary, load_policy
from cosim.engine.user_controller import (
    UserControllerError,
    build_user_controller,
    load_controller_class,
    shard_forecast,
)
from cosim.scenario.controller import FLEET_WIDE_KINDS
from cosim.scenario.errors import Problems, ScenarioError, ScenarioInfeasible
from cosim.scenario.fleet import BatteryConfig
from cosim.scenario.limits import MAX_GRAPH_EDGES
from cosim.scenario.model import Scenario

if TYPE_CHECKING:  # cosim.scenario.grid and the oracle import the power-flow and LP stacks: lazily
    from agents.control.coupling import CouplingRows, Forecast
    from agents.control.oracle import OracleSchedule
    from agents.control.oracle_grid import LinearGridLimits
    from cosim.scenario.grid import GridModel
    from cosim.scenario.grid_constraints import GridConstraintSet



@dataclass
class Built:
    """Everything a run needs, built and checked."""

    scenario: Scenario
    names: list[str]
    profiles: list[str]
    classes: list[str]
    setup: FleetSetup
    controller: Controller | None  # None only until build() sets it (controller_for)
    # None only in a shard built without the feeder with topology "feeder" (the graph and
    # the duals then live in the main process)
    graph: nx.Graph[int] | None
    duals: DualDynamics | None
    limit_kwh: float
    grid: GridModel | None  # None when built without the feeder
    policies: dict[str, Policy]  # loaded policies by class (controller kind "policy")
    oracle: OracleSchedule | None = None  # controller kind "oracle"
    limit_basis: str = ""  # how limit_kwh was obtained, for people
    grid_constraints: GridConstraintSet | None = None
    # controller kinds dmpc and epos: what they plan with (FLEET_WIDE_KINDS)
    forecast: Forecast | None = None
    coupling: CouplingRows | None = None
    overlay: nx.Graph[int] | None = None  # epos: the graph its tree overlay is built from
    controller_class: type | None = None  # kind python: the user's class (controller.entry)
    # the controller build() made for the whole fleet: a ``controller`` that is not this
    # object was given from Python (cosim.engine.run.execute(controller=...)), see given_controller
    scenario_controller: Controller | None = None
    # implausible but valid values, ``(field path, message)``: printed as ``warning:`` lines
    # by ``cosim validate`` and ``cosim run``, never an error (see :func:`_warnings`)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def given_controller(self) -> Controller | None:
        """The controller object given from Python in place of the scenario's, if any."""
        if self.controller is None or self.controller is self.scenario_controller:
            return None
        return self.controller

    @property
    def n(self) -> int:
        """The number of buildings."""
        return len(self.names)


class BuildingRow(NamedTuple):
    """One building as the scenario gives it (also what :func:`cosim.scenario.grid.build_grid`
    reads)."""

    field_path: str  # where the scenario declares it, e.g. "buildings.explicit.3"
    id: str
    profile: str | None  # CityLearn building; None when the data are missing
    demand_scale: float
    policy_class: str | None
    battery: BatteryConfig | None  # None: the data's battery
    pv_kw: float | None
    bus: int | None  # feeder bus; None: placed automatically


def _rows(sc: Scenario, data: CityLearnData | None) -> list[BuildingRow]:
    b = sc.buildings
    if b.explicit is not None:
        return [BuildingRow(f"buildings.explicit.{i}", s.id, s.profile, s.demand_scale,
                            s.policy_class, s.battery, s.pv_kw, s.bus)
                for i, s in enumerate(b.explicit)]
    g = b.generate
    assert g is not None  # BuildingsConfig holds exactly one of explicit and generate
    profiles: list[str] | list[None] = g.profiles or (data.names if data is not None
                                                      else [None])
    width = len(str(g.count))
    return [BuildingRow("buildings.generate", f"B{i + 1:0{width}d}", profiles[i % len(profiles)],
                g.demand_scales[i % len(g.demand_scales)], None, g.battery, g.pv_kw,
                g.buses[i] if g.buses else None) for i in range(g.count)]


def _load_data(sc: Scenario, problems: Problems) -> CityLearnData | None:
    try:
        return load_citylearn(resolve_path(sc.data.path))
    except DataError as exc:
        problems.add("data.path", str(exc))
        return None


def _check_time(sc: Scenario, data: CityLearnData, problems: Problems) -> bool:
    ok = True
    if sc.time.step_h != data.hours_per_step:
        problems.add("time.step_h", f"the CityLearn data are hourly; step_h must be "
                     f"{data.hours_per_step:g}, got {sc.time.step_h:g}")
        ok = False
    last = sc.time.start + sc.time.steps
    if last > data.n_steps:
        problems.add("time.steps", f"start {sc.time.start} + steps {sc.time.steps} = {last} "
                     f"exceeds the {data.n_steps} hours the data hold")
        ok = False
    horizon = sc.constraint.peak_horizon_steps
    if horizon is not None and sc.time.start + horizon > data.n_steps:
        problems.add("constraint.peak_horizon_steps", f"start {sc.time.start} + "
                     f"{horizon} steps exceeds the {data.n_steps} hours the data hold")
        ok = False
    return ok


def _check_profiles(rows: list[BuildingRow], data: CityLearnData, problems: Problems) -> bool:
    valid = ", ".join(data.names)
    bad_generated = False
    ok = True
    for row in rows:
        if row.profile in data.buildings:
            continue
        ok = False
        if row.field_path.startswith("buildings.explicit"):
            problems.add(f"{row.field_path}.profile",
                         f"unknown CityLearn building {row.profile!r}; valid: {valid}")
        elif not bad_generated:
            bad_generated = True
            problems.add("buildings.generate.profiles", f"unknown CityLearn building "
                         f"{row.profile!r}; valid: {valid}")
    return ok


def _checked_profiles(rows: list[BuildingRow]) -> list[str]:
    """The rows' profiles, once ``_check_profiles`` found every one in the data."""
    profiles: list[str] = []
    for r in rows:
        assert r.profile is not None  # a missing profile is a problem raised before
        profiles.append(r.profile)
    return profiles


def _fleet_params(sc: Scenario, rows: list[BuildingRow], data: CityLearnData) -> FleetParams:
    bl = sc.buildings
    scales = np.array([r.demand_scale for r in rows], dtype=float)
    base = FleetParams.from_buildings([data.building(p) for p in _checked_profiles(rows)],
                                      demand_scale=scales,
                                      backlog_cap_kwh=bl.backlog_cap_kwh, export_pv=bl.export_pv)
    cap, power = base.capacity_kwh.copy(), base.power_kw.copy()
    eta, pv = base.eta_charge.copy(), base.pv_kw.copy()
    for i, row in enumerate(rows):
        battery = row.battery or BatteryConfig()  # None: the data's battery
        if battery.capacity_kwh is not None:
            cap[i] = battery.capacity_kwh
        if battery.power_kw is not None:
            power[i] = battery.power_kw
        if battery.efficiency is not None:
            eta[i] = battery.efficiency ** 0.5
        if row.pv_kw is not None:
            pv[i] = row.pv_kw
    return FleetParams(cap, power, eta, eta.copy(), pv, base.demand_scale,
                       base.backlog_cap_kwh, base.export_pv)


def _class_field(row: BuildingRow) -> str:
    if row.field_path.startswith("buildings.explicit"):
        return f"{row.field_path}.policy_class"
    return "buildings.class_for_scale"


def _classes(sc: Scenario, rows: list[BuildingRow], problems: Problems) -> list[str] | None:
    by_scale = {float(k): v for k, v in sc.buildings.class_for_scale.items()}
    classes: list[str] = []
    missing: set[float] = set()
    for row in rows:
        cls = row.policy_class or by_scale.get(row.demand_scale)
        if cls is None:
            if row.demand_scale not in missing:
                missing.add(row.demand_scale)
                problems.add(_class_field(row), f"no policy class for demand scale "
                             f"{row.demand_scale:g}; set policy_class or add it to "
                             f"buildings.class_for_scale ({sc.buildings.class_for_scale})")
            continue  # the list is not returned (missing is not empty)
        classes.append(cls)
    return None if missing else classes


def _policies(sc: Scenario, rows: list[BuildingRow], classes: list[str],
              problems: Problems) -> dict[str, Policy] | None:
    ctl = sc.controller
    policy_dir = resolve_path(ctl.policy_dir)
    if not policy_dir.is_dir():
        problems.add("controller.policy_dir", f"{policy_dir}: directory not found")
        return None
    available = sorted(p.stem for p in policy_dir.glob("*.json"))
    if not available:
        problems.add("controller.policy_dir", f"{policy_dir}: no policy files (<class>.json) "
                     "in this directory")
        return None
    policies: dict[str, Policy] = {}
    ok = True
    for cls in sorted(set(classes)):
        path = policy_dir / f"{cls}.json"
        if not path.is_file():
            ok = False
            problems.add(_class_field(rows[classes.index(cls)]), f"unknown policy class "
                         f"{cls!r}: {path} not found (available in {ctl.policy_dir}: "
                         f"{', '.join(available)})")
            continue
        try:
            policies[cls] = load_policy(path)
        except PolicyFileError as exc:
            ok = False
            problems.add("controller.policy_dir", str(exc))
        except RecursionError:  # json.loads of pathologically nested metadata
            ok = False
            problems.add("controller.policy_dir", f"{path}: nested too deeply to be a policy "
                         "file (its JSON metadata)")
    return policies if ok else None


def _check_lambda_range(sc: Scenario, policies: dict[str, Policy], problems: Problems) -> None:
    ranges: dict[str, float] = {}
    for cls, p in policies.items():
        try:
            ranges[cls] = float(p.metadata["multipliers"]["lambda_range"][1])
            if not np.isfinite(ranges[cls]) or ranges[cls] <= 0:
                raise ValueError(ranges[cls])
        except (KeyError, IndexError, TypeError, ValueError):
            problems.add("controller.policy_dir", f"policy {cls!r} does not say the lambda "
                         "range it was trained on (multipliers.lambda_range, finite and > 0)")
            return
    lam_hi = min(ranges.values())
    if sc.duals.lambda_max > lam_hi + 1e-9:
        problems.add("duals.lambda_max", f"{sc.duals.lambda_max:g} exceeds the range the "
                     f"policies were trained on (lambda <= {lam_hi:g})")
    if sc.grid_constraints is not None and sc.grid_constraints.lambda_eff_min < 0:
        lows = {cls: float(p.metadata["multipliers"].get("lambda_low", 0.0))
                for cls, p in policies.items()}
        lam_lo = max(lows.values())
        if sc.grid_constraints.lambda_eff_min < lam_lo - 1e-9:
            problems.add("grid_constraints.lambda_eff_min",
                         f"{sc.grid_constraints.lambda_eff_min:g} lies below the range the "
                         f"policies were trained on (lambda >= {lam_lo:g}); policies trained "
                         "with multipliers.lambda_low <= it are needed")


def _grid(sc: Scenario, rows: list[BuildingRow], problems: Problems) -> GridModel | None:
    from cosim.scenario.grid import build_grid

    grid = None  # stays None when build_grid raises a ScenarioError (collected)
    with problems.collect():
        grid = build_grid(sc, rows, problems.source)
    return grid


def _limit(sc: Scenario, setup: FleetSetup, data: CityLearnData,
           profiles: list[str]) -> tuple[float, str]:
    """c in kWh per step and how it was obtained (the peak over the declared horizon)."""
    c = sc.constraint
    if c.limit_kw is not None:
        return float(c.limit_kw) * setup.dt_h, f"constraint.limit_kw = {c.limit_kw:g} kW"
    horizon = c.peak_horizon_steps or sc.time.steps
    if horizon == setup.n_steps:
        base = setup.base_demand_kwh
    else:
        base, _, _ = data.window(profiles, sc.time.start, horizon)
    peak = district_peak_kwh(base, setup.params.demand_scale)
    last = sc.time.start + horizon - 1
    assert c.fraction_of_peak is not None  # ConstraintConfig: exactly one of the two
    return c.fraction_of_peak * peak, (
        f"{c.fraction_of_peak:g} x the district's peak demand {peak:.3f} kWh per step over "
        f"the {horizon} declared steps, data rows {sc.time.start}..{last}")


def _warnings(sc: Scenario, setup: FleetSetup, limit_kwh: float) -> list[tuple[str, str]]:
    """Valid but implausible values, ``(field path, message)``: a ``fraction_of_peak`` above 1
    (a percentage typed as a fraction: 27 for 0.27) and a limit at or above the fleet's peak
    demand over the run (it never binds, the multipliers stay 0)."""
    c = sc.constraint
    found: list[tuple[str, str]] = []
    if c.fraction_of_peak is not None and c.fraction_of_peak > 1:
        found.append(("constraint.fraction_of_peak",
                      f"{c.fraction_of_peak:g} is above 1: the limit is {c.fraction_of_peak:g} "
                      f"x the fleet's peak demand and never binds; a fraction is wanted "
                      f"({c.fraction_of_peak / 100:g} for {c.fraction_of_peak:g} %)"))
    elif c.limit_kw is not None:
        peak = district_peak_kwh(setup.base_demand_kwh, setup.params.demand_scale)
        if limit_kwh >= peak:
            found.append(("constraint.limit_kw",
                          f"{c.limit_kw:g} kW ({limit_kwh:.3f} kWh per step) is at or above "
                          f"the fleet's peak demand over the run ({peak:.3f} kWh per step); "
                          "the limit never binds"))
    return found


def _graph(sc: Scenario, names: list[str], grid: GridModel | None,
           problems: Problems) -> nx.Graph[int] | None:
    n = len(names)
    com = sc.communication
    params = dict(com.params)
    if com.topology == "file":
        from agents.consensus.graphs import graph_from_file
        from cosim.scenario.limits import MAX_GRAPH_FILE_BYTES

        try:
            return graph_from_file(resolve_path(str(com.graph_file)), names, max_bytes=
                                   MAX_GRAPH_FILE_BYTES, max_edges=MAX_GRAPH_EDGES,
                                   allow_disconnected=com.allow_disconnected)
        except GraphError as exc:
            problems.add("communication.graph_file", str(exc))
            return None
    if com.topology == "feeder":
        if grid is None:
            return None  # the feeder's own problem is reported (or built without it)
        same_bus_pairs = sum(k * (k - 1) // 2 for k in Counter(grid.building_bus.tolist())
                             .values())
        if same_bus_pairs > MAX_GRAPH_EDGES:
            problems.add("communication.topology", f"the feeder graph joins buildings on one "
                         f"bus: {same_bus_pairs:,} edges, more than the {MAX_GRAPH_EDGES:,} "
                         "allowed; spread the buildings over more buses or use small_world")
            return None
        params.update(net=grid.net, building_buses=grid.building_bus)
    try:
        return make_graph(com.topology, n, seed=sc.seed,
                          allow_disconnected=com.allow_disconnected, **params)
    except GraphError as exc:
        problems.add("communication.topology", str(exc))
    except (TypeError, ValueError) as exc:
        problems.add("communication.params", f"invalid parameter for topology "
                     f"{com.topology!r}: {exc}")
    return None


def _faults(sc: Scenario, names: list[str], problems: Problems) -> FaultModel | None:
    com = sc.communication
    index = {name: i for i, name in enumerate(names)}
    silent: list[tuple[int, int, int]] = []
    ok = True
    for k, s in enumerate(com.faults.silent):
        if s.agent not in index:
            ok = False
            problems.add(f"communication.faults.silent.{k}.agent",
                         f"unknown building id {s.agent!r}")
            continue
        silent.append((index[s.agent], s.start, s.end))
    if not ok:
        return None
    return FaultModel(com.faults.drop_probability, com.faults.delay_steps, tuple(silent))


def _dual_config(sc: Scenario, problems: Problems) -> DualConfig | None:
    d = sc.duals
    try:
        return DualConfig(mode=d.mode, alpha=d.alpha, beta=d.beta, gamma=d.gamma, eta=d.eta,
                          rounds=d.rounds,
                          lambda_max=d.lambda_max, nu_min=d.nu_min, nu_max=d.nu_max,
                          v1_window=d.v1_window)
    except ValueError as exc:
        problems.add("duals", str(exc))
        return None


def _duals(sc: Scenario, config: DualConfig, graph: nx.Graph[int], limit_kwh: float,
           faults: FaultModel, problems: Problems) -> DualDynamics | None:
    try:
        return DualDynamics(config, graph, limit_kwh,
                            faults=None if faults.is_trivial else faults, seed=sc.seed)
    except GraphError as exc:
        problems.add("communication.topology", str(exc))
    except ValueError as exc:
        problems.add("duals", str(exc))
    return None


def _oracle(sc: Scenario, setup: FleetSetup, limit_kwh: float, source: str,
            grid_limits: LinearGridLimits | None = None) -> OracleSchedule:
    from agents.control.oracle import OracleInfeasible, solve_oracle

    limit = sc.controller.oracle_limit
    assert limit is not None  # ControllerConfig fills it in for kind "oracle"
    try:
        return solve_oracle(setup.params, setup.base_demand_kwh, setup.solar_w_per_kw,
                            setup.price_per_kwh, limit_kwh, setup.dt_h,
                            setup.initial_soc_fraction, limit=limit,
                            grid_limits=grid_limits)
    except OracleInfeasible as exc:
        where = "grid_constraints" if grid_limits is not None else "constraint"
        raise ScenarioInfeasible(source, [(where, f"infeasible for the oracle: {exc}")]) \
            from None


#: the scenario sections each section's data-dependent checks read: a check is skipped
#: when the schema refused a field of one of them (cosim.scenario.build.data_problems)
CHECK_NEEDS: dict[str, set[str]] = {
    "data": {"data"},
    "time": {"data", "time", "constraint"},
    "buildings": {"data", "time", "buildings", "feeder"},
    "feeder": {"feeder", "buildings"},
    "controller": {"controller", "buildings", "data", "time", "duals", "grid_constraints"},
    "constraint": {"data", "time", "buildings", "feeder", "constraint", "controller"},
    "communication": {"communication", "buildings", "feeder"},
    "duals": {"duals", "communication", "buildings", "feeder", "data", "time", "constraint",
              "controller"},
    "grid_constraints": {"grid_constraints", "feeder", "buildings", "communication", "data",
                         "time", "constraint", "duals", "controller"},
}


class _ChecksPassed(Exception):
    """Raised by ``build(..., checks_only=True)`` once every check passed."""


def data_problems(partial: Scenario, failed_sections: set[str],
                  source: str) -> list[tuple[str, str]]:
    """The data-dependent problems of a scenario whose schema refused fields of
    ``failed_sections`` (``partial``: the scenario without them, see
    ``cosim.scenario.loader``), so that one pass reports both kinds. Only the checks that
    read none of the refused sections count (:data:`CHECK_NEEDS`); a section not listed
    there reads them all."""
    try:
        build(partial, source, checks_only=True)
    except ScenarioError as exc:
        found = exc.errors
    except _ChecksPassed:
        return []
    except Exception:  # noqa: BLE001 - defaults standing in for refused fields: no finding
        return []
    else:  # pragma: no cover - checks_only never returns
        return []
    every = set(Scenario.model_fields)
    return [(path, msg) for path, msg in found
            if not CHECK_NEEDS.get(path.split(".")[0], every) & failed_sections]


def build(sc: Scenario, source: str = "<scenario>", *, with_grid: bool = True,
          checks_only: bool = False) -> Built:
    """Check everything against the data and build the run's objects.

    Raises one ``ScenarioError`` with every problem found; checks that need a
    piece that failed are skipped (an unknown profile leaves the fleet unbuilt,
    so its constraint is not computed, but the policies and the graph are checked).
    ``checks_only``: stop after the checks (:func:`data_problems`).
    """
    problems = Problems(source)
    data = _load_data(sc, problems)
    rows = _rows(sc, data)
    names = [r.id for r in rows]
    fleet_ok = data is not None and _check_time(sc, data, problems)
    fleet_ok = data is not None and _check_profiles(rows, data, problems) and fleet_ok
    classes = _classes(sc, rows, problems)
    policies: dict[str, Policy] | None = None
    if sc.controller.kind == "policy" and classes is not None:
        policies = _policies(sc, rows, classes, problems)
    grid = _grid(sc, rows, problems) if with_grid else None
    grid_ok = grid is not None or not with_grid

    setup: FleetSetup | None = None
    limit_kwh: float | None = None
    limit_basis = ""
    warnings: list[tuple[str, str]] = []
    if fleet_ok and grid_ok:
        assert data is not None  # fleet_ok
        params = _fleet_params(sc, rows, data)
        profiles = _checked_profiles(rows)
        demand, solar, price = data.window(profiles, sc.time.start, sc.time.steps)
        buses = grid.building_bus if grid is not None else np.full(len(rows), -1, np.int64)
        setup = FleetSetup(names, params, buses, demand, solar, price,
                           start_hour=sc.time.start, dt_h=data.hours_per_step,
                           initial_soc_fraction=sc.buildings.initial_soc_fraction,
                           price_outlook_per_kwh=data.price_outlook(sc.time.start,
                                                                    sc.time.steps))
        limit_kwh, limit_basis = _limit(sc, setup, data, profiles)
        warnings = _warnings(sc, setup, limit_kwh)

    # without the feeder (a cmd-mode shard: buildings and controller only) a 'feeder'
    # graph cannot be built, and none is needed: the duals run in the main process
    graph = _graph(sc, names, grid, problems)
    faults = _faults(sc, names, problems)
    config = _dual_config(sc, problems)
    duals: DualDynamics | None = None
    if graph is not None and faults is not None and config is not None and limit_kwh is not None:
        duals = _duals(sc, config, graph, limit_kwh, faults, problems)
    if policies is not None:
        _check_lambda_range(sc, policies, problems)
    controller_class = _controller_class(sc, problems)
    constraints = None
    if sc.grid_constraints is not None and grid is not None and setup is not None \
            and graph is not None:
        from cosim.scenario.grid_constraints import build_grid_constraints

        constraints = build_grid_constraints(sc, grid, graph, setup, problems)
    problems.raise_if_any()
    if checks_only:
        raise _ChecksPassed
    # without problems the fleet was built (its data, profiles and feeder were fine) and
    # every building has a policy class
    assert setup is not None and limit_kwh is not None and classes is not None

    oracle = None
    if sc.controller.kind == "oracle":
        limits = None
        if constraints:
            assert grid is not None  # grid constraints are built on the feeder
            limits = constraints.oracle_limits(grid, setup.n_steps)
        oracle = _oracle(sc, setup, limit_kwh, source, limits)
    built = Built(sc, names, _checked_profiles(rows), classes, setup, None, graph, duals,
                  limit_kwh, grid, policies or {}, oracle, limit_basis, constraints,
                  controller_class=controller_class, warnings=warnings)
    if sc.controller.kind in FLEET_WIDE_KINDS:
        assert data is not None  # the fleet was built
        _planning(built, data, source)
    if sc.controller.kind == "python":
        from agents.control.coupling import DAY_STEPS, Forecast

        assert data is not None  # the fleet was built
        built.forecast = Forecast.from_citylearn(data, built.profiles, setup.params,
                                                 sc.time.start, setup.n_steps, DAY_STEPS,
                                                 "perfect", setup.dt_h)
    try:
        built.controller = controller_for(built, np.arange(len(names)))
    except UserControllerError as exc:
        raise ScenarioError(source, [(exc.field, exc.message)]) from None
    built.scenario_controller = built.controller
    return built


def _controller_class(sc: Scenario, problems: Problems) -> type | None:
    """Kind python: the user's class, imported and checked (problems name the field)."""
    ctl = sc.controller
    if ctl.kind != "python":
        return None
    assert ctl.entry is not None  # ControllerConfig requires it for kind python
    try:
        return load_controller_class(ctl.entry, resolve_path(ctl.path) if ctl.path else None)
    except UserControllerError as exc:
        problems.add(exc.field, exc.message)
        return None


def shard_controller(built: Built, index: NDArray[np.int64]) -> Controller:
    """The controller of the shard ``index`` in an in-process or shard-process FleetSim.

    The whole fleet's shard runs ``built.controller`` itself, the very object the plain
    engine runs (the scenario's, or one given from Python); smaller shards get their own
    from the scenario (:func:`controller_for`).

    Raises:
        ValueError: a controller object given from Python with a sharded fleet (the
            object acts for the whole fleet and cannot be split).
    """
    if len(index) == built.n and built.controller is not None:
        return built.controller
    given = built.given_controller
    if given is not None:
        raise ValueError(f"the controller object {type(given).__qualname__} given from Python "
                         f"acts for the whole fleet; the scenario splits it into "
                         f"{built.scenario.sharding.shards} shards. Give sharding.shards: 1, "
                         "or name the class in the scenario (controller.kind: python) so "
                         "that each shard builds its own")
    return controller_for(built, index)


def _planning(built: Built, data: CityLearnData, source: str) -> None:
    """The forecast, coupling rows and overlay of a dmpc or epos controller (in ``built``)."""
    from agents.control.coupling import DAY_STEPS, CouplingRows, Forecast

    sc, setup = built.scenario, built.setup
    ctl = sc.controller
    horizon = ctl.dmpc_horizon_h if ctl.kind == "dmpc" else DAY_STEPS
    mode = ctl.dmpc_forecast if ctl.kind == "dmpc" else ctl.epos_forecast
    assert horizon is not None and mode is not None  # filled in for the kind
    built.forecast = Forecast.from_citylearn(data, built.profiles, setup.params,
                                             sc.time.start, setup.n_steps, horizon, mode,
                                             setup.dt_h)
    coupling = CouplingRows.district(built.n, built.limit_kwh, setup.n_steps)
    if built.grid_constraints:
        assert built.grid is not None  # grid constraints are built on the feeder
        limits = built.grid_constraints.oracle_limits(built.grid, setup.n_steps)
        coupling = coupling.with_grid_limits(limits, setup.dt_h)
    built.coupling = coupling
    if ctl.kind == "epos":
        overlay = built.graph
        if ctl.epos_overlay == "feeder":
            if built.grid is None:
                raise ScenarioError(source, [("controller.epos_overlay", "the feeder overlay "
                                              "needs the feeder")])
            from agents.consensus.graphs import feeder_graph

            overlay = feeder_graph(built.grid.net, built.grid.building_bus.tolist())
        built.overlay = overlay


def controller_for(built: Built, index: NDArray[np.int64]) -> Controller:
    """The scenario's controller for the buildings ``index`` (a shard or the whole fleet)."""
    ctl = built.scenario.controller
    if ctl.kind == "none":
        return NoControl()
    if ctl.kind == "rule":
        return RuleBasedPeakShaving(built.setup.params.select(index), ctl.rule_threshold_kwh,
                                    built.setup.dt_h)
    if ctl.kind == "heuristic":
        # ControllerConfig fills both in for kind "heuristic"
        assert ctl.heuristic_price_threshold is not None
        assert ctl.heuristic_backlog_margin is not None
        return PriceAwareHeuristic(built.setup.params.select(index),
                                   ctl.heuristic_price_threshold, ctl.heuristic_backlog_margin)
    if ctl.kind == "oracle":
        from agents.control.oracle import OracleController

        assert built.oracle is not None  # build() solves it for kind "oracle"
        return OracleController(built.oracle, np.asarray(index))
    if ctl.kind in FLEET_WIDE_KINDS:
        return _fleet_wide_controller(built, index)
    if ctl.kind == "remote":
        from cosim.engine.remote_controller import RemoteAnswers

        return RemoteAnswers()  # the actions come from the controller process (mosaik)
    if ctl.kind == "python":
        assert built.controller_class is not None and ctl.entry is not None  # build() loads it
        setup = built.setup
        context = ControllerContext(
            names=tuple(built.names[i] for i in index), params=setup.params.select(index),
            dt_h=setup.dt_h, n_steps=setup.n_steps, limit_kwh=built.limit_kwh,
            seed=built.scenario.seed, forecast=shard_forecast(built.forecast, index))
        return build_user_controller(built.controller_class, context, ctl.params, ctl.entry)
    return PolicyLibrary(built.policies, [built.classes[i] for i in index])


def _fleet_wide_controller(built: Built, index: NDArray[np.int64]) -> Controller:
    """A dmpc or epos controller: the whole fleet in one (the scenario allows one shard)."""
    ctl = built.scenario.controller
    if len(index) != built.n:
        raise ValueError(f"controller kind {ctl.kind!r} plans for the whole fleet; "
                         f"got a shard of {len(index)} of {built.n} buildings")
    # a shard built without the feeder has no forecast: build() makes it for these kinds
    assert built.forecast is not None and built.coupling is not None
    steps = built.setup.n_steps
    if ctl.kind == "dmpc":
        from agents.control.dmpc import DmpcConfig, DmpcController

        assert ctl.dmpc_horizon_h is not None and ctl.dmpc_iterations is not None
        assert ctl.dmpc_tolerance is not None and ctl.dmpc_step is not None
        assert ctl.dmpc_negotiation is not None and ctl.dmpc_consensus_rounds is not None
        assert ctl.dmpc_smoothing is not None and ctl.dmpc_threads is not None
        config = DmpcConfig(horizon=ctl.dmpc_horizon_h, iterations=ctl.dmpc_iterations,
                            tolerance=ctl.dmpc_tolerance, step=ctl.dmpc_step,
                            smoothing=ctl.dmpc_smoothing, threads=ctl.dmpc_threads,
                            master_groups=ctl.dmpc_master_groups,
                            negotiation=ctl.dmpc_negotiation,
                            consensus_rounds=ctl.dmpc_consensus_rounds,
                            soc_value=ctl.dmpc_soc_value, backlog_value=ctl.dmpc_backlog_value)
        return DmpcController(built.setup.params, built.forecast, built.coupling, config, steps,
                              graph=built.graph)
    from agents.control.epos.controller import EposConfig, EposController
    from agents.control.epos.tree import tree_from_graph

    assert ctl.epos_plans is not None and ctl.epos_iterations is not None
    assert ctl.epos_alpha is not None and ctl.epos_beta is not None
    assert ctl.epos_reorganisations is not None
    assert built.overlay is not None  # build() sets it for kind epos
    config_e = EposConfig(plans=ctl.epos_plans, iterations=ctl.epos_iterations,
                          alpha=ctl.epos_alpha, beta=ctl.epos_beta,
                          reorganisations=ctl.epos_reorganisations)
    return EposController(built.setup.params, built.forecast, built.coupling, config_e,
                          tree_from_graph(built.overlay), steps, built.scenario.seed)

