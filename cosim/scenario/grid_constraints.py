"""A scenario's ``grid_constraints`` turned into the objects a run needs.

``build_grid_constraints`` resolves the scenario's declarations (``ids: all`` and bus
``all`` shorthands, named elements checked against the feeder) into
:class:`~grid_models.constraint_probe.ConstraintSpec` s, weighs the buildings with the
feeder's linearised sensitivities or downstream membership, and builds the multipliers
(:mod:`agents.consensus.grid_multipliers`, operator or peer). The result, a
:class:`GridConstraintSet`, is used by both engines:

* at step t the policies see ``lambda_eff = clip(lambda + sum_k s_k W_k mu_k, 0,
  lambda_max)`` (:meth:`GridConstraintSet.effective_lambda`);
* after the power flow of step t, :meth:`GridConstraintSet.step` takes the measured
  quantities and signs (:class:`~grid_models.constraint_probe.ConstraintProbe`), returns
  the step's row of the ``constraints`` table (with the multipliers the buildings used)
  and updates the multipliers.

With ``period_steps = P > 1`` every constraint has P multipliers, one per phase
``t mod P`` (P = 24 on hourly steps: one per hour of the day). Step t uses and updates
only its phase's multiplier, so the multiplier of 18:00 learns from the measurements at
18:00 of the days before, like a daily price profile; the buildings' response at one
hour then no longer feeds back on the very next hour's multiplier.

:meth:`GridConstraintSet.describe` is written to the run directory as
``grid_constraints.json`` (who is concerned, with which weight, and the operating point
of the linearisation), and :meth:`GridConstraintSet.oracle_limits` gives the LP oracle
the same constraints, linearised (docs/equations.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from agents.consensus.grid_constraint import GridConstraint
from agents.consensus.grid_multipliers import make_grid_multipliers
from agents.consensus.operator_multipliers import OperatorMultipliers
from agents.consensus.peer_multipliers import PeerMultipliers
from cosim.scenario.coordination import GridConstraintsConfig
from cosim.scenario.errors import Problems
from cosim.scenario.model import Scenario
from grid_models.constraint_probe import ConstraintProbe, ConstraintSpec, constraint_weights
from grid_models.errors import GridModelError, format_choices
from grid_models.sensitivity import Sensitivities

if TYPE_CHECKING:
    import networkx as nx

    from agents.control.oracle_grid import LinearGridLimits
    from agents.fleet.runner import FleetSetup
    from grid_models.grid_model import GridModel

#: Peer mode: a voltage constraint's cluster holds the buildings with |weight| >= this.
VOLTAGE_CLUSTER_MIN_WEIGHT = 0.1
FIELD = "grid_constraints"
#: Bus ids shown in a voltage constraint's name before "..." takes over.
_NAMED_BUSES = 4


@dataclass
class GridConstraintSet:
    """The grid constraints of a run (module docstring)."""

    specs: list[ConstraintSpec]
    weights: np.ndarray  # (K, N)
    clusters: np.ndarray  # (K, N) bool: the buildings concerned
    probe: ConstraintProbe
    phases: list[OperatorMultipliers | PeerMultipliers]  # per phase of the period
    sens: Sensitivities
    operating_point_kw: np.ndarray  # (N,) fleet load of the linearisation
    mode: str
    weight_mode: str
    lambda_max: float
    skipped: list[str] = field(default_factory=list)
    lambda_min: float = 0.0  # lower end of lambda_eff (< 0: the grid asks for consumption)
    t: int = 0  # steps taken (the next step's phase is t % period)
    #: peer mode: feeder links added to the communication graph to join a cluster
    peer_links: list[tuple[int, int]] = field(default_factory=list)

    @property
    def period_steps(self) -> int:
        """The number of phases of the period (1: one multiplier per constraint)."""
        return len(self.phases)

    @property
    def multipliers(self) -> OperatorMultipliers | PeerMultipliers:
        """The multipliers of the coming step's phase."""
        return self.phases[self.t % len(self.phases)]

    @property
    def names(self) -> list[str]:
        """The constraints' names, in order."""
        return [s.name for s in self.specs]

    @property
    def n_constraints(self) -> int:
        """The number of constraints."""
        return len(self.specs)

    def effective_lambda(self, lam: np.ndarray) -> np.ndarray:
        """What the policies see: ``clip(lambda + sum_k s_k W_k mu_k, lambda_min,
        lambda_max)`` (``lambda_min`` = ``grid_constraints.lambda_eff_min``, default 0)."""
        return self.multipliers.effective_lambda(lam, self.lambda_max, self.lambda_min)

    def step(self, measured: np.ndarray, sign: np.ndarray) -> dict[str, np.ndarray]:
        """The step's constraint row (multipliers as the buildings used them), then update."""
        m = self.multipliers
        row = {
            "measured": np.asarray(measured, dtype=np.float64),
            "limit": np.array([s.limit for s in self.specs]),
            "excess": m.excess(measured),
            "mu": m.mu,
            "mu_spread": m.mu_spread,
            "sign": m.signs,
        }
        m.update(measured, sign)
        self.t += 1
        return row

    def snapshot(self) -> dict[str, np.ndarray]:
        """The step count and every phase's multiplier state, for a checkpoint."""
        snap = {"t": np.array(self.t, dtype=np.int64)}
        for j, m in enumerate(self.phases):
            snap.update({f"p{j}_{k}": v for k, v in m.snapshot().items()})
        return snap

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Set the step count and the multipliers back to a :meth:`snapshot`."""
        for j, m in enumerate(self.phases):
            prefix = f"p{j}_"
            m.restore({k.removeprefix(prefix): v for k, v in snap.items()
                       if k.startswith(prefix)})
        self.t = int(snap["t"])

    def describe(self, building_ids: list[str]) -> dict[str, Any]:
        """Plain values for ``grid_constraints.json``."""
        constraints = []
        for k, spec in enumerate(self.specs):
            members = np.flatnonzero(self.clusters[k])
            constraints.append({
                **spec.describe(),
                "buildings_concerned": [building_ids[i] for i in members],
                "weights": {building_ids[i]: round(float(w), 6)
                            for i, w in enumerate(self.weights[k]) if w != 0.0},
            })
        return {
            "format": "fleetcosim-grid-constraints/1",
            "mode": self.mode,
            "period_steps": self.period_steps,
            "weights": self.weight_mode,
            "alpha": self.multipliers.alpha.tolist(),
            "mu_max": self.multipliers.mu_max,
            "lambda_max": self.lambda_max,
            "linearisation": {
                "operating_point_kw": {b: round(float(p), 4) for b, p in
                                       zip(building_ids, self.operating_point_kw, strict=True)},
                "backend": self.sens.backend, "delta_kw": self.sens.delta_kw,
                "power_factor": self.sens.power_factor, "fleet_scale": self.sens.fleet_scale,
                "note": "weights: |d quantity / d p_i| per kW of building i around the "
                        "operating point (the fleet's mean demand with the feeder's own "
                        "loads), scaled so that the largest is 1; loading weights are "
                        "re-signed every step by the measured direction of the flow",
            },
            "skipped": self.skipped,
            "peer_links_added": [[building_ids[u], building_ids[v]] for u, v in self.peer_links],
            "constraints": constraints,
        }

    def oracle_limits(self, grid: GridModel, steps: int) -> LinearGridLimits:
        """The constraints as linear limits of the LP oracle, with per-step offsets from
        background-only power flows (:mod:`agents.control.oracle_grid`, docs/equations.md).

        A loading becomes two rows on the signed flow ``f`` (forward positive):
        ``f <= L`` and ``-f <= L`` with ``f ~ s_bg,t |l_bg,t| + sum_i |dl/dp_i| p_i``.
        A voltage constraint becomes one row per bus of its set. The peak is
        ``fleet_scale * sum_i p_i <= peak``.
        """
        from agents.control.oracle_grid import LinearGridLimits

        n = self.weights.shape[1]
        background = grid.solve_batch(0, np.zeros((steps, n)))
        names, offsets, sens_rows, upper = [], [], [], []
        for j, spec in enumerate(self.specs):
            if spec.kind == "loading_max":
                element = self.probe.element_pos[j]
                # a loading_max constraint names its element (ConstraintSpec checks it)
                assert element is not None and spec.element is not None
                table, col = element
                loading = (background.trafo_loading_percent if table == "trafo"
                           else background.line_loading_percent)[:, col]
                down = self.probe.downstream_pos[j]
                flow_sign = (np.where(background.bus_p_mw[:, down].sum(axis=1) >= 0, 1.0, -1.0)
                             if down.size else np.ones(steps))
                signed = np.nan_to_num(loading) * flow_sign
                slope = np.abs(self.sens.loading_pp_per_kw[self.sens.element_index(spec.element)])
                # only the buildings downstream move a radial element's flow to first order
                # (elsewhere |slope| is ~1e-3 of theirs, voltage effects): drop them from the
                # rows, which keeps the LP sparse
                slope = np.where(self.clusters[j], slope, 0.0)
                for sgn, label in ((1.0, "forward"), (-1.0, "reverse")):
                    names.append(f"{spec.name} {label} <= {spec.limit:g} %")
                    offsets.append(sgn * signed)
                    sens_rows.append(sgn * slope)
                    upper.append(spec.limit)
            elif spec.kind in ("voltage_max", "voltage_min"):
                sgn = 1.0 if spec.kind == "voltage_max" else -1.0
                for b in spec.buses:
                    col = self.probe.bus_pos[int(b)]
                    names.append(f"bus {b} vm {'<=' if sgn > 0 else '>='} {spec.limit:g} pu")
                    offsets.append(sgn * np.nan_to_num(background.bus_vm_pu[:, col], nan=1.0))
                    sens_rows.append(sgn * self.sens.vm_pu_per_kw[self.sens.bus_index(int(b))])
                    upper.append(sgn * spec.limit)
            else:
                names.append(f"{spec.name} <= {spec.limit:g} kW")
                offsets.append(np.zeros(steps))
                sens_rows.append(np.full(n, self.probe.fleet_scale))
                upper.append(spec.limit)
        return LinearGridLimits(names=names, offset=np.stack(offsets, axis=1),
                                sensitivity=np.array(sens_rows), upper=np.array(upper))


# -- from the scenario ------------------------------------------------------------------


def _short_buses(buses: list[int]) -> str:
    shown = ", ".join(str(b) for b in buses[:_NAMED_BUSES])
    return shown + (", ..." if len(buses) > _NAMED_BUSES else "")


def _loading_specs(cfg: GridConstraintsConfig, feeder: Any, problems: Problems
                   ) -> tuple[list[tuple[ConstraintSpec, bool, str]], bool]:
    """(spec, explicitly named, field) per loading constraint; ok flag."""
    from grid_models.sensitivity import element_keys

    out: list[tuple[ConstraintSpec, bool, str]] = []
    seen: dict[tuple[str, int], str] = {}
    ok = True
    for i, entry in enumerate(cfg.loading):
        where = f"{FIELD}.loading.{i}.ids"
        available = [idx for _, idx in element_keys(feeder, (entry.element,))]
        if entry.ids == "all":
            ids, explicit = available, False
            if not ids:
                problems.add(where, f"the feeder has no in-service {entry.element}")
                ok = False
                continue
        else:
            ids, explicit = list(entry.ids), True
            bad = [x for x in ids if x not in available]
            if bad:
                problems.add(where, f"{entry.element} {bad[:10]} not in service in the feeder; "
                             f"valid: {format_choices(available)}")
                ok = False
                continue
        for idx in ids:
            key = (entry.element, int(idx))
            if key in seen:
                problems.add(where, f"{entry.element} {idx} is already constrained by "
                             f"{seen[key]}; list each element once")
                ok = False
                continue
            seen[key] = f"{FIELD}.loading.{i}"
            out.append((ConstraintSpec(f"{entry.element} {idx} loading", "loading_max",
                                       float(entry.max_percent), element=key), explicit,
                        where))
    return out, ok


def _voltage_specs(cfg: GridConstraintsConfig, sens: Sensitivities, problems: Problems
                   ) -> tuple[list[tuple[ConstraintSpec, bool, str]], bool]:
    out: list[tuple[ConstraintSpec, bool, str]] = []
    energised = [int(b) for b in sens.bus_ids]
    ok = True
    for i, entry in enumerate(cfg.voltage):
        where = f"{FIELD}.voltage.{i}.buses"
        if entry.buses == "all":
            buses, label = energised, "all buses"
        else:
            buses = list(dict.fromkeys(int(b) for b in entry.buses))
            bad = [b for b in buses if b not in energised]
            if bad:
                problems.add(where, f"buses {bad[:10]} are not energised buses of the feeder; "
                             f"valid: {format_choices(energised)}")
                ok = False
                continue
            label = f"bus{'es' if len(buses) > 1 else ''} {_short_buses(buses)}"
        suffix = f" #{i}" if len(cfg.voltage) > 1 else ""
        for side, limit in (("max", entry.max_pu), ("min", entry.min_pu)):
            if limit is not None:
                out.append((ConstraintSpec(f"voltage {side} ({label}){suffix}",
                                           f"voltage_{side}", float(limit),
                                           buses=tuple(buses)), True, where))
    return out, ok


def _operating_point_kw(setup: FleetSetup) -> NDArray[np.float64]:
    """The fleet's mean demand per building, kW: where the feeder is linearised."""
    mean_kwh: NDArray[np.float64] = setup.demand_kwh().mean(axis=0)
    return mean_kwh / setup.dt_h


def _clusters(specs: list[ConstraintSpec], weights: np.ndarray,
              masks: dict[tuple[str, int], np.ndarray]) -> np.ndarray:
    out = np.zeros(weights.shape, dtype=bool)
    for k, spec in enumerate(specs):
        if spec.kind == "loading_max":
            assert spec.element is not None  # a loading_max constraint names its element
            mask = masks.get(spec.element)
            out[k] = mask if mask is not None and mask.any() else weights[k] != 0.0
        elif spec.kind == "peak_kw_max":
            out[k] = True
        else:
            out[k] = np.abs(weights[k]) >= VOLTAGE_CLUSTER_MIN_WEIGHT
    return out


def peer_graph(graph: nx.Graph[int], clusters: NDArray[np.bool_],
               feeder: Any,  # a pandapower net: pandapower ships no types
               building_bus: NDArray[np.int64]) -> nx.Graph[int]:
    """The graph the peers of every cluster talk over: the communication graph, plus, for
    a cluster whose members it leaves apart, the feeder graph among the cluster's own
    members (neighbours along the feeder, joined by the shortest feeder links;
    :mod:`agents.consensus.feeder_graph`). Each cluster is then connected on a radial feeder."""
    import networkx as nx

    from agents.consensus.graphs import make_graph

    out = graph.copy()
    for mask in clusters:
        members = np.flatnonzero(mask)
        if len(members) < 2 or nx.is_connected(out.subgraph(members.tolist())):
            continue
        local = make_graph("feeder", len(members), net=feeder,
                           building_buses=np.asarray(building_bus)[members])
        out.add_edges_from((int(members[u]), int(members[v])) for u, v in local.edges)
    return out


def build_grid_constraints(sc: Scenario, grid: GridModel, graph: nx.Graph[int],
                           setup: FleetSetup,
                           problems: Problems) -> GridConstraintSet | None:
    """The run's grid constraints, or None (problems added) when they cannot be built."""
    from grid_models.sensitivity import downstream_buses, linearised_sensitivities

    cfg = sc.grid_constraints
    assert cfg is not None
    before = len(problems)
    feeder = grid.feeder
    op_kw = _operating_point_kw(setup)
    p_mw, _ = grid.injections(op_kw)
    try:
        sens = linearised_sensitivities(
            feeder, grid.building_bus, p_mw, power_factor=sc.feeder.power_factor,
            fleet_scale=grid.fleet_scale, backend=sc.feeder.backend)
        downstream = downstream_buses(feeder, meshed="empty")
    except GridModelError as exc:
        problems.add(FIELD, f"cannot linearise the feeder: {exc}")
        return None
    specs_l, ok_l = _loading_specs(cfg, feeder, problems)
    specs_v, ok_v = _voltage_specs(cfg, sens, problems)
    declared = specs_l + specs_v
    if cfg.peak_kw is not None:
        declared.append((ConstraintSpec("fleet peak kW", "peak_kw_max", float(cfg.peak_kw)),
                         True, f"{FIELD}.peak_kw"))
    if not (ok_l and ok_v):
        return None
    masks = {key: np.isin(grid.building_bus, down) for key, down in downstream.items()}
    specs, rows, skipped = [], [], []
    n = len(grid.building_bus)
    for spec, explicit, where in declared:
        try:
            w = constraint_weights(spec, n, sens=sens, mode=cfg.weights,
                                   downstream_mask=masks.get(spec.element)
                                   if spec.element else None)
        except GridModelError as exc:
            if explicit:
                problems.add(where, str(exc))
            else:
                skipped.append(f"{spec.name}: no building moves it")
            continue
        specs.append(spec)
        rows.append(w)
    if not specs:
        problems.add(FIELD, "no declared constraint is moved by any building "
                     f"({len(skipped)} skipped: {'; '.join(skipped[:5])})")
        return None
    if len(problems) > before:
        return None
    weights = np.array(rows)
    clusters = _clusters(specs, weights, masks)
    constraints = [GridConstraint(s.name, s.kind, s.limit, s.scale, w)
                   for s, w in zip(specs, weights, strict=True)]
    links: list[tuple[int, int]] = []
    if cfg.mode == "peer":
        try:
            joined = peer_graph(graph, clusters, feeder, grid.building_bus)
        except ValueError as exc:
            problems.add(f"{FIELD}.mode", str(exc))
            return None
        links = sorted((min(u, v), max(u, v)) for u, v in joined.edges
                       if not graph.has_edge(u, v))
        graph = joined
    try:
        phases = [make_grid_multipliers(
            cfg.mode, constraints, cfg.alpha, cfg.mu_max, graph=graph,
            consensus_mode=sc.duals.mode, beta=cfg.beta, gamma=cfg.gamma,
            rounds=sc.duals.rounds, clusters=list(clusters) if cfg.mode == "peer" else None,
            seed=sc.seed + j) for j in range(cfg.period_steps)]
        probe = ConstraintProbe(specs, grid.bus_ids, grid.line_ids, grid.trafo_ids, downstream,
                                grid.fleet_scale)
    except (ValueError, GridModelError) as exc:
        problems.add(f"{FIELD}.mode", str(exc))
        return None
    return GridConstraintSet(specs, weights, clusters, probe, phases, sens, op_kw,
                             cfg.mode, cfg.weights, float(sc.duals.lambda_max), skipped,
                             peer_links=links, lambda_min=float(cfg.lambda_eff_min))
