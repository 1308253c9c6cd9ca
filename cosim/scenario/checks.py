"""Checks across a scenario's sections (shards, windows, sizes, the graph's size, peer
grid constraints), and the estimate of a communication graph's size."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from agents.consensus.duals import pi_gain_problem
from agents.consensus.graphs import SMALL_WORLD_K, default_radius
from cosim.scenario.controller import FLEET_WIDE_KINDS
from cosim.scenario.coordination import FILE_TOPOLOGY
from cosim.scenario.limits import MAX_BUILDING_STEPS, MAX_GRAPH_EDGES, MAX_ORACLE_BUILDING_STEPS

if TYPE_CHECKING:
    from cosim.scenario.model import Scenario


def scenario_problems(sc: Scenario) -> list[tuple[str, str]]:
    """Every ``(field path, message)`` the checks across sections find in ``sc``."""
    return [e for check in (_shard_problems, _window_problems, _size_problems,
                            _graph_problems, _grid_constraint_problems)
            for e in check(sc)]


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
        return n * min(int(params.get("k") or SMALL_WORLD_K), max(n - 1, 0)) / 2
    if topology == "random_geometric":
        radius = params.get("radius")
        if radius is None:
            radius = default_radius(n)
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
