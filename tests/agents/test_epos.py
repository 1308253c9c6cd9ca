"""I-EPOS plan selection (agents/control/epos/): brute force on tiny instances, its optimality
condition, its hard bounds, the candidate plans and the controller's closed loop.

I-EPOS is a heuristic: its fixed point is coordinate-wise optimal (no agent can lower
the cost by changing its own plan alone), which is checked on every instance; on tiny
instances (3 agents x 3 plans x 4 hours) it finds the brute-force optimum on about two in
three (131 of 200 on the star, 130 of 200 on the path measured) and the named instances
below must keep matching. With a tight hard bound it finds a feasible selection wherever
brute force does (200 of 200 measured), and an hour where the bound cannot hold leaves the
others holding (200 of 200).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import networkx as nx
import numpy as np
import pytest

from agents.control.coupling import CouplingRows, Forecast
from agents.control.epos.controller import EposConfig, EposController
from agents.control.epos.plans import candidate_plans
from agents.control.epos.problem import VIOLATION_ATOL, HardBounds, Selection, _Problem
from agents.control.epos.rounds import MAX_APPROVAL_CHILDREN
from agents.control.epos.selection import _evaluate, select_plans
from agents.control.epos.tree import shuffled_tree, tree_from_graph
from agents.fleet.building import FleetState, step_fleet
from agents.fleet.data import load_citylearn
from agents.fleet.runner import FleetLoop, FleetSetup, run_plain
from tests.agents.epos_reference import reference_select_plans

ALPHA, BETA = 0.1, 0.2
TREE = np.array([-1, 0, 0])  # a root and two children
PATH = np.array([-1, 0, 1])
INSTANCES = 200
#: instances (seeds) on which I-EPOS finds the brute-force optimum
MATCHING_SEEDS = [0, 1, 4, 5, 7, 11, 12]
#: the share of random tiny instances it solves exactly may not fall below this
MATCH_SHARE_MIN = 0.6
COST_ATOL = 1e-12
ENERGY_ATOL_KWH = 1e-9


def _instance(seed: int, hard: bool = False) -> tuple[np.ndarray, np.ndarray,
                                                      HardBounds | None]:
    rng = np.random.default_rng(seed)
    plans = rng.random((3, 3, 4)) * 3
    discomfort = rng.random((3, 3)) * 2
    bounds = None
    if hard:
        upper = np.array([1.5 * np.quantile(plans.sum(axis=0).max(axis=0), 0.3)])
        bounds = HardBounds(plans[:, :, None, :], np.zeros((1, 4)), upper)
    return plans, discomfort, bounds


def _problem(plans: np.ndarray, discomfort: np.ndarray, hard: HardBounds | None) -> _Problem:
    return _Problem.build(plans, discomfort, ALPHA, BETA, hard)


def _brute_force(problem: _Problem) -> Selection:
    n, k, _ = problem.plans.shape
    found = [_evaluate(problem, np.array(c), 0) for c in itertools.product(range(k), repeat=n)]
    return min(found, key=Selection.rank)


def _select(plans: np.ndarray, discomfort: np.ndarray, hard: HardBounds | None) -> Selection:
    return select_plans(plans, discomfort, TREE, alpha=ALPHA, beta=BETA, iterations=50,
                        hard=hard)


@pytest.mark.parametrize("seed", MATCHING_SEEDS)
def test_matches_brute_force_on_tiny_instances(seed: int):
    plans, discomfort, _ = _instance(seed)
    best = _brute_force(_problem(plans, discomfort, None))
    found = _select(plans, discomfort, None)
    assert found.cost == pytest.approx(best.cost, abs=COST_ATOL)


def _coordinate_wise_optimal(problem: _Problem, found: Selection) -> bool:
    n, k, _ = problem.plans.shape
    for i, p in itertools.product(range(n), range(k)):
        other = found.index.copy()
        other[i] = p
        moved = _evaluate(problem, other, 0).rank()
        if moved < found.rank()[:2] + (found.cost - COST_ATOL,):
            return False
    return True


@pytest.mark.parametrize("tree", [TREE, PATH], ids=["star", "path"])
def test_every_selection_is_coordinate_wise_optimal_and_feasible_where_possible(tree):
    matches = 0
    for seed in range(INSTANCES):
        hard = seed % 2 == 1
        plans, discomfort, bounds = _instance(seed, hard)
        problem = _problem(plans, discomfort, bounds)
        found = select_plans(plans, discomfort, tree, alpha=ALPHA, beta=BETA, iterations=50,
                             hard=bounds)
        best = _brute_force(problem)
        matches += abs(found.cost - best.cost) <= COST_ATOL and found.violation_kwh == \
            best.violation_kwh
        if best.violation_kwh == 0.0:  # some selection meets the bounds: EPOS finds one
            assert found.violation_kwh == 0.0, seed
        assert _coordinate_wise_optimal(problem, found), seed
    assert matches / INSTANCES >= MATCH_SHARE_MIN


def _tight_instance(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plans, discomforts and a bound between the least and the largest peak of any
    selection (in its lower 30 %): most selections violate it."""
    rng = np.random.default_rng(1000 + seed)
    plans = rng.random((3, 3, 4)) * 3
    discomfort = rng.random((3, 3)) * 2
    peaks = np.array([plans[np.arange(3), list(c)].sum(axis=0).max()
                      for c in itertools.product(range(3), repeat=3)])
    upper = np.array([peaks.min() + rng.uniform(0, 0.3) * (peaks.max() - peaks.min())])
    return plans, discomfort, upper


def test_a_tight_bound_holds_wherever_some_selection_meets_it():
    for seed in range(INSTANCES):
        plans, discomfort, upper = _tight_instance(seed)
        bounds = HardBounds(plans[:, :, None, :], np.zeros((1, 4)), upper)
        assert _brute_force(_problem(plans, discomfort, bounds)).violation_kwh == 0.0
        found = select_plans(plans, discomfort, TREE, alpha=ALPHA, beta=BETA, iterations=50,
                             hard=bounds, rng=np.random.default_rng(seed))
        assert found.violation_kwh == 0.0, seed
        value = plans[np.arange(3), found.index].sum(axis=0)
        assert (value <= upper[0] + VIOLATION_ATOL).all(), seed


def test_an_hour_that_cannot_hold_leaves_the_others_holding():
    for seed in range(INSTANCES):
        plans, discomfort, upper = _tight_instance(seed)
        offset = np.zeros((1, 4))
        offset[0, 0] = upper[0] + 1.0 - plans[:, :, 0].min(axis=1).sum()  # floor: c + 1
        bounds = HardBounds(plans[:, :, None, :], offset, upper)
        assert bounds.feasible()[0].tolist() == [False, True, True, True]
        found = select_plans(plans, discomfort, TREE, alpha=ALPHA, beta=BETA, iterations=50,
                             hard=bounds, rng=np.random.default_rng(seed))
        value = offset + plans[np.arange(3), found.index].sum(axis=0)
        assert (value[0, 1:] <= upper[0] + VIOLATION_ATOL).all(), seed
        assert found.violation_kwh == 0.0


def test_an_agent_with_many_children_approves_greedily():
    """A root with 12 children (more than ``MAX_APPROVAL_CHILDREN``): all-or-none approvals
    stalled it (no instance coordinate-wise optimal); greedy approvals reach a fixed point."""
    n = 13
    parent = np.array([-1] + [0] * (n - 1))
    assert n - 1 > MAX_APPROVAL_CHILDREN
    for seed in range(5):
        rng = np.random.default_rng(seed)
        plans, discomfort = rng.random((n, 4, 6)) * 3, rng.random((n, 4))
        found = select_plans(plans, discomfort, parent, alpha=ALPHA, beta=BETA, iterations=50)
        assert _coordinate_wise_optimal(_problem(plans, discomfort, None), found), seed


def _tree(kind: str, n: int, rng: np.random.Generator, seed: int) -> np.ndarray:
    if kind == "star":
        return np.array([-1] + [0] * (n - 1))
    if kind == "wide":  # 12 children each: greedy approvals
        return shuffled_tree(n, rng, branching=12)
    if kind == "bfs":
        return tree_from_graph(nx.connected_watts_strogatz_graph(n, 4, 0.1, seed=seed))
    return shuffled_tree(n, rng)


@pytest.mark.parametrize("kind, n", [("binary", 30), ("wide", 30), ("bfs", 40), ("star", 11)])
def test_the_vectorised_selection_picks_what_the_agent_by_agent_one_did(kind: str, n: int):
    """Level by level over (agents x choices x plans) arrays, the selection is the same,
    float for float, as one agent at a time in post order (tests/agents/epos_reference.py),
    with and without hard bounds (two rows, some unreachable hours)."""
    for seed in range(4):
        rng = np.random.default_rng(seed)
        plans, discomfort = rng.random((n, 6, 24)) * 3, rng.random((n, 6)) * 2
        parent = _tree(kind, n, rng, seed)
        weight = rng.random((n, 2)) * (rng.random((n, 2)) < 0.7)
        contribution = plans[:, :, None, :] * weight[:, None, :, None]
        offset = rng.random((2, 24)) * 0.1 * n
        upper = (offset + contribution.min(axis=1).sum(axis=0)).max(axis=1) + 0.1 * n
        for hard in (None, HardBounds(contribution, offset, upper)):
            args = dict(alpha=0.1 * (seed % 3), beta=0.1, iterations=20, hard=hard)
            found = select_plans(plans, discomfort, parent, rng=np.random.default_rng(seed),
                                 **args)
            expected = reference_select_plans(plans, discomfort, parent,
                                              rng=np.random.default_rng(seed), **args)
            assert found.index.tobytes() == expected.index.tobytes(), (seed, hard is None)
            assert found == replace(expected, index=found.index, global_kwh=found.global_kwh)
            assert found.global_kwh.tobytes() == expected.global_kwh.tobytes()


def test_hours_where_the_bound_cannot_hold_do_not_spoil_the_others():
    plans, discomfort, _ = _instance(3)
    upper = np.array([0.0])  # the first hour cannot hold: every plan's floor is above it
    offset = np.zeros((1, 4))
    offset[0, 1:] = -100.0  # the other hours hold for any selection
    bounds = HardBounds(plans[:, :, None, :], offset, upper)
    assert bounds.feasible().tolist() == [[False, True, True, True]]
    assert _select(plans, discomfort, bounds).violation_kwh == 0.0


@pytest.fixture(scope="module")
def fleet() -> tuple[FleetSetup, Forecast]:
    names = ["Building_1", "Building_2", "Building_3", "Building_4"]
    steps, start = 48, 2000
    setup = FleetSetup.from_citylearn(names, start, steps, backlog_cap_kwh=24.0,
                                      demand_scale=[1.0, 2.0, 1.0, 1.0])
    forecast = Forecast.from_citylearn(load_citylearn(), names, setup.params, start, steps,
                                       24)
    return setup, forecast


def test_candidate_plans_follow_the_building_model(fleet):
    setup, forecast = fleet
    demand, pv, _ = forecast.window(0, 24)
    b0, e0 = np.full(4, 2.0), np.full(4, 1.0)
    plans = candidate_plans(setup.params, b0, e0, demand, pv, 8, np.random.default_rng(0))
    # energy balance of every plan: d + b0 = g + x + b_end + dropped
    served = plans.grid_kwh.sum(axis=2) + plans.battery_kwh.sum(axis=2)
    np.testing.assert_allclose(np.broadcast_to((demand.sum(axis=0) + b0)[:, None], (4, 8)),
                               served + plans.backlog_kwh[:, :, -1] + plans.dropped_kwh,
                               atol=ENERGY_ATOL_KWH)
    assert (plans.backlog_kwh <= setup.params.backlog_cap_kwh[:, None, None]).all()
    # plan 0: battery first, the grid serves all the rest at once
    state = FleetState(b0, e0)
    for h in range(24):
        to_serve = demand[h] + state.backlog_kwh
        x = np.minimum(to_serve, np.minimum(state.soc_kwh * setup.params.eta_discharge,
                                            setup.params.power_kw))
        np.testing.assert_allclose(plans.grid_kwh[:, 0, h], to_serve - x,
                                   atol=ENERGY_ATOL_KWH)
        u_grid = np.divide(to_serve - x, to_serve, out=np.zeros(4), where=to_serve > 0)
        solar = setup.solar_w_per_kw[h] if h else setup.solar_w_per_kw[0]
        state, _ = step_fleet(setup.params, state, setup.base_demand_kwh[h], solar, 0.0,
                              u_grid, np.ones(4))
    assert (plans.discomfort[:, 0] == plans.backlog_kwh[:, 0].sum(axis=1)).all()
    # capped plans: the grid never serves more than the cap
    caps = np.array([[0.5, 1.0]] * 4)
    capped = candidate_plans(setup.params, b0, e0, demand, pv, 4, np.random.default_rng(0),
                             cap_kwh=caps)
    assert (capped.grid_kwh[:, 1:3] <= caps[:, :, None] + ENERGY_ATOL_KWH).all()


def _controller(fleet, limit: float, seed: int = 3) -> EposController:
    setup, forecast = fleet
    graph = nx.path_graph(4)
    return EposController(setup.params, forecast, CouplingRows.district(4, limit, 48),
                          EposConfig(plans=12), tree_from_graph(graph), 48, seed)


def test_closed_loop_holds_the_bound_every_hour_and_is_deterministic(fleet):
    setup, _ = fleet
    limit = 0.9 * float(setup.demand_kwh().sum(axis=1).max())
    a, b = (run_plain(setup, _controller(fleet, limit), None) for _ in range(2))
    assert a.equals(b)
    district = a.groupby("time").grid_kwh.sum().to_numpy()
    assert district.max() <= limit + ENERGY_ATOL_KWH
    ctl = _controller(fleet, limit)
    run_plain(setup, ctl, None)
    tables = ctl.decisions()
    assert list(tables["epos_days"].time) == [0, 24]
    assert len(tables["epos_selection"]) == 2 * 4
    assert (tables["epos_days"].violation_kwh == 0).all()
    assert (tables["epos_days"].unreachable_hours == 0).all()
    assert (tables["epos_days"].messages >= 2 * 3).all()


def test_a_restored_controller_continues_identically(fleet):
    setup, _ = fleet
    limit = 0.7 * float(setup.demand_kwh().sum(axis=1).max())
    loop = FleetLoop(setup, _controller(fleet, limit), None)
    for _ in range(30):
        loop.step()
    snap = loop.snapshot()
    rest = [loop.step()["grid_kwh"] for _ in range(18)]
    again = FleetLoop(setup, _controller(fleet, limit), None)
    again.restore(snap)
    for expected in rest:
        np.testing.assert_array_equal(again.step()["grid_kwh"], expected)


def test_trees():
    graph = nx.connected_watts_strogatz_graph(30, 4, 0.2, seed=1)
    parent = tree_from_graph(graph)
    assert (parent < 0).sum() == 1
    tree = nx.Graph([(int(v), int(p)) for v, p in enumerate(parent) if p >= 0])
    assert nx.is_tree(tree) and tree.number_of_nodes() == 30
    assert all(graph.has_edge(u, v) for u, v in tree.edges)
    with pytest.raises(ValueError, match="not connected"):
        tree_from_graph(nx.Graph([(0, 1), (2, 3)]))
    shuffled = shuffled_tree(10, np.random.default_rng(0))
    assert (shuffled < 0).sum() == 1 and nx.is_tree(
        nx.Graph([(v, int(p)) for v, p in enumerate(shuffled) if p >= 0]))


@pytest.mark.parametrize("field, value", [("plans", 0), ("iterations", 0), ("alpha", -0.1),
                                          ("beta", 1.5), ("reorganisations", -1)])
def test_bad_settings_name_their_field(field: str, value: object):
    with pytest.raises(ValueError, match=field):
        EposConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        EposConfig(alpha=0.6, beta=0.6)
