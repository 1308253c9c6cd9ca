"""I-EPOS plan selection with decentralised hard constraints (``controller.kind: epos``).

After I-EPOS (Pournaras, Pilgerstorfer & Asikis 2018) and its hard-constraint extension
(Majumdar, Qin & Pournaras, AAMAS 2023). Pure domain code (numpy, networkx).

**Candidate plans** (:func:`candidate_plans`). Once a day every building makes k plans
of its grid energy for the day, each simulated with the building model
(:func:`agents.fleet.building.step_fleet`) from its state and the forecast, so every plan is
feasible under its own dynamics. Plan 0 serves everything at once, battery first. Plans
1-4 are capped: battery first, and the grid serves at most a cap, the rest waiting until
an hour below it (peak shaving without a rebound). With a district limit c the caps are
0.8, 0.9, 1 and 1.1 x c x the building's share of the day's forecast demand (if every
building takes its factor-1 plan, the district stays within c in every hour); without
one, 40, 55, 70 and 85 % of the building's largest hourly demand of the day. Every
other plan draws (per building, seeded) a window ``[start, start + width)`` (width 1..6
h), a share ``f`` in {0.5, 1} of what is to be served in that window that is postponed,
and whether the battery serves first; outside the window everything is served. The plan's
**discomfort** is the demand kept waiting, ``sum_h backlog_h`` (kWh h), plus
``DROP_PENALTY`` per kWh dropped.

**Serving the demand is a local hard constraint** (:func:`serving_plans`): a plan that
drops demand is replaced by the building's plan 0 wherever the building has a plan that
drops nothing. Without it the district bound, being hard, made the selection drop
demand to meet it (418 kWh at c = 0.3 x peak on ``paper_fig1d``).

**Objective** (the I-EPOS weighting, all terms normalised to be unitless)::

    (1 - alpha - beta) var_h(G) / var_h(G_0)  +  alpha var_i(D_i) / mean(D)^2
                                               +  beta mean_i(D_i) / mean(D)

with ``G = sum_i plan_i`` the district plan (its variance: peak shaving), ``G_0`` the
district plan of everyone's plan 0, ``D_i`` the discomfort of building i's selected
plan (its variance across buildings: unfairness) and ``mean(D)`` the mean over all
candidates (1 where that is 0).

**Selection** (:func:`select_plans`) on a tree overlay (:func:`tree_from_graph`: a BFS
spanning tree of the communication graph or of the feeder's building graph). Each
iteration, bottom-up (children before parents): an agent knows the previous iteration's
district plan ``G'``, its own subtree's previous aggregate ``A_i'`` and its children's new
aggregates; it chooses its plan and, for each child, whether to approve the child's new
subtree choices or keep its previous ones, minimising the objective of the prediction
``G' - A_i' + sum_c A_c + plan`` (first iteration: its subtree's aggregate alone). The root
closes the iteration; top-down, every subtree whose changes were rejected returns to its
previous choices. The best selection seen is kept; iterations stop when nothing changes.
An agent weighs all ``2^c`` approval choices of its c children up to
``MAX_APPROVAL_CHILDREN``; with more it approves greedily (from rejecting all, it approves
one child at a time where that improves its best option, or all if that is better). An
all-or-none rule there stalled a 1,000-building small-world BFS tree after two
iterations: all children moved against the same previous plan, the root rejected them all,
and nothing changed (peak 1,726 kWh against 1,085 with greedy approvals).
Messages: one up and one down per tree edge and iteration.

**Hard upper bounds** (:class:`HardBounds`: the district's c per hour, linearised grid
limits), ``offset + sum_i contribution_i <= upper`` per row and hour, hold as follows. An
hour and row is *feasible* when even everyone's smallest contribution there fits
(``offset + sum_i min_p contribution <= upper``); where it is not, the bound becomes that
floor (the least excess any selection can reach), at a lower priority: options (and
selections) are ranked lexicographically by their violation where the bounds can hold,
then their excess over the floor where they cannot, then the I-EPOS cost (an hour that
cannot hold does not spoil the others). An agent thus discards every option whose
prediction violates a bound; if all do, it takes the least violation.
**Cold start**: in the first iteration, an agent checks its options against
its subtree's aggregate plus the lower envelope (per hour, the smallest contribution of
each agent) of everyone outside its subtree. **Reorganisation**: if the best selection
still violates a bound where it can hold, the agents reorganise into a shuffled balanced
tree and start again from a cold start (at most ``reorganisations`` times); the best
selection in that order is kept. A reorganised cold start assumes of each agent outside a
subtree the contribution of one of its plans drawn at random instead of the envelope:
with the envelope alone, a reorganised tree went back to the same infeasible fixed point
(on 6 of 200 tiny instances with a tight bound; with the draws, a feasible selection was
found on all 200).

**Execution** (:class:`EposController`): the rest of the day follows the selected plan:
``g = min(planned g, D)`` with ``D`` the demand plus backlog now, then the battery serves
what it can of ``D - g``, and the rest waits in the backlog (the model drops what exceeds
its cap). Deviations from the forecast thus go to the battery and the backlog, and the
grid energy never exceeds the plan: a bound the plan holds, operation holds.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, fields, replace

import networkx as nx
import numpy as np
import pandas as pd

from agents.control.coupling import CouplingRows, Forecast
from agents.fleet.actions import model_actions
from agents.fleet.building import FleetParams, FleetState, step_fleet
from agents.fleet.observation import FleetObservation
from grid_models.support.settings import check_settings, setting

#: A plan drops demand when it drops more than this (kWh over the day).
DROP_ATOL_KWH = 1e-9
#: Discomfort per kWh of dropped demand (kWh h equivalent).
DROP_PENALTY = 100.0
#: Capped candidate plans: the grid serves at most these shares of the building's largest
#: hourly demand of the day (peak shaving without the rebound of a window).
CAP_LEVELS = (0.4, 0.55, 0.7, 0.85)
#: With a district limit c, the capped plans' caps are these multiples of c times the
#: building's share of the day's demand.
CAP_FACTORS = (0.8, 0.9, 1.0, 1.1)
#: Longest deferral window of a candidate plan, hours.
MAX_WINDOW_H = 6
#: An agent with more children than this approves them greedily (module docstring).
MAX_APPROVAL_CHILDREN = 8
#: A bound is violated by more than this (kWh, or the row's unit).
VIOLATION_ATOL = 1e-9


@dataclass(frozen=True)
class EposConfig:
    """Settings of an EPOS controller (scenario ``controller.epos_*``)."""

    plans: int = setting(16, ge=1, integer=True, doc="candidate day plans per building")
    iterations: int = setting(20, ge=1, integer=True, doc="I-EPOS iterations per day")
    alpha: float = setting(0.0, ge=0, le=1, doc="weight of unfairness")
    beta: float = setting(0.1, ge=0, le=1, doc="weight of discomfort")
    reorganisations: int = setting(5, ge=0, integer=True,
                                   doc="restarts on a shuffled tree after a violation")
    day_steps: int = setting(24, ge=1, integer=True, doc="steps of a day plan")

    def __post_init__(self) -> None:
        check_settings(self)
        problem = weights_problem(self.alpha, self.beta)
        if problem:
            raise ValueError(problem)


def weights_problem(alpha: float, beta: float, names: tuple[str, str] = ("alpha", "beta")) -> str:
    """Why the weights of unfairness and discomfort do not fit ("" if they do): the global
    cost's weight ``1 - alpha - beta`` may not be negative (``names``: how to call them)."""
    if alpha + beta <= 1:
        return ""
    return (f"{names[0]} + {names[1]} must be <= 1 (the global cost's weight is "
            f"1 - alpha - beta), got {alpha:g} + {beta:g}")


@dataclass(frozen=True)
class Plans:
    """k candidate day plans per building: energies (N, k, H) and discomfort (N, k)."""

    grid_kwh: np.ndarray
    export_kwh: np.ndarray
    battery_kwh: np.ndarray
    backlog_kwh: np.ndarray
    dropped_kwh: np.ndarray  # (N, k), over the day
    discomfort: np.ndarray  # (N, k), kWh h


def candidate_plans(params: FleetParams, backlog0_kwh: np.ndarray, soc0_kwh: np.ndarray,
                    demand_kwh: np.ndarray, pv_kwh: np.ndarray, k: int,
                    rng: np.random.Generator, dt_h: float = 1.0,
                    cap_kwh: np.ndarray | None = None) -> Plans:
    """k plans per building for ``demand_kwh`` and ``pv_kwh`` (H, N), simulated with the
    building model from the state ``(backlog0, soc0)`` (module docstring).

    ``cap_kwh`` (N, m): the grid caps of the capped plans 1..m (default: ``CAP_LEVELS`` x
    each building's largest hourly demand of the day).
    """
    h, n = demand_kwh.shape
    rep = np.repeat(np.arange(n), k)  # copy c = building i, plan p: c = i k + p
    copies = n * k
    # the model scales demand and converts solar: feed it kWh directly
    sim = replace(params.select(rep), demand_scale=np.ones(copies),
                  pv_kw=np.full(copies, 1000.0 / dt_h))
    start = rng.integers(0, h, size=(n, k))
    width = rng.integers(1, MAX_WINDOW_H + 1, size=(n, k))
    share = rng.choice([0.5, 1.0], size=(n, k))
    battery_on = rng.random((n, k)) < 0.5
    start[:, 0], width[:, 0], share[:, 0], battery_on[:, 0] = 0, 0, 0.0, True
    # capped plans (p = 1 .. len(CAP_LEVELS), as k allows): battery first, then the grid
    # serves at most a level x the building's largest hourly demand of the day
    cap = np.full((n, k), np.inf)
    if cap_kwh is None:
        cap_kwh = np.asarray(CAP_LEVELS)[None, :] * demand_kwh.max(axis=0)[:, None]
    m = min(cap_kwh.shape[1], max(k - 1, 0))
    cap[:, 1:1 + m] = cap_kwh[:, :m]
    width[:, 1:1 + m], battery_on[:, 1:1 + m] = 0, True
    start, width, share = start.ravel(), width.ravel(), share.ravel()
    battery_on, cap_flat = battery_on.ravel(), cap.ravel()
    state = FleetState(backlog0_kwh[rep].astype(float), soc0_kwh[rep].astype(float))
    out = {name: np.empty((h, copies)) for name in ("grid", "export", "battery", "backlog")}
    dropped = np.zeros(copies)
    energy = sim.power_kw * dt_h
    for step in range(h):
        demand = demand_kwh[step, rep]
        to_serve = demand + state.backlog_kwh
        available = np.minimum(state.soc_kwh * sim.eta_discharge, energy)
        battery = np.where(battery_on, np.minimum(to_serve, available), 0.0)
        rest = to_serve - battery
        in_window = (step >= start) & (step < start + width)
        grid = np.minimum(np.where(in_window, (1.0 - share) * rest, rest), cap_flat)
        actions = model_actions(grid, battery, to_serve)
        state, r = step_fleet(sim, state, demand, pv_kwh[step, rep], 0.0, actions[:, 0],
                              actions[:, 1], dt_h)
        out["grid"][step], out["export"][step] = r.grid_kwh, r.export_kwh
        out["battery"][step], out["backlog"][step] = r.battery_kwh, r.backlog_kwh
        dropped += r.dropped_kwh

    def per_plan(a: np.ndarray) -> np.ndarray:
        result: np.ndarray = a.T.reshape(n, k, h)
        return result

    backlog = per_plan(out["backlog"])
    drops = dropped.reshape(n, k)
    return Plans(per_plan(out["grid"]), per_plan(out["export"]), per_plan(out["battery"]),
                 backlog, drops, backlog.sum(axis=2) * dt_h + DROP_PENALTY * drops)


def serving_plans(plans: Plans) -> Plans:
    """The plans with the local hard constraint "serve the demand": a plan that drops demand
    is replaced by the building's plan 0 (which serves everything at once, and so drops only
    what even it cannot serve) wherever the building has a plan that drops nothing."""
    drops = plans.dropped_kwh > DROP_ATOL_KWH  # (N, k)
    replace_it = drops & ~drops.all(axis=1, keepdims=True)
    if not replace_it.any():
        return plans
    arrays = {}
    for name in ("grid_kwh", "export_kwh", "battery_kwh", "backlog_kwh"):
        a = getattr(plans, name).copy()
        a[replace_it] = np.broadcast_to(a[:, :1], a.shape)[replace_it]
        arrays[name] = a
    dropped, discomfort = plans.dropped_kwh.copy(), plans.discomfort.copy()
    dropped[replace_it] = np.broadcast_to(dropped[:, :1], dropped.shape)[replace_it]
    discomfort[replace_it] = np.broadcast_to(discomfort[:, :1], discomfort.shape)[replace_it]
    return Plans(arrays["grid_kwh"], arrays["export_kwh"], arrays["battery_kwh"],
                 arrays["backlog_kwh"], dropped, discomfort)


# --- tree overlays ---------------------------------------------------------------------------


def tree_from_graph(graph: nx.Graph[int], root: int | None = None) -> np.ndarray:
    """Parent of each node 0..N-1 in a BFS spanning tree of ``graph`` (the root's: -1).

    The root is the node of highest degree (the smallest id among ties) unless given.

    Raises:
        ValueError: if the graph is empty or not connected.
    """
    n = graph.number_of_nodes()
    if n == 0:
        raise ValueError("the overlay graph has no nodes")
    if not nx.is_connected(graph):
        raise ValueError(f"the overlay graph is not connected "
                         f"({nx.number_connected_components(graph)} components)")
    if root is None:
        root = min(graph.nodes, key=lambda v: (-graph.degree(v), v))
    parent = np.full(n, -1, dtype=np.int64)
    for u, v in nx.bfs_edges(graph, root, sort_neighbors=sorted):
        parent[v] = u
    return parent


def shuffled_tree(n: int, rng: np.random.Generator, branching: int = 2) -> np.ndarray:
    """Parents of a balanced tree of ``branching`` over a random order of the N nodes."""
    order = rng.permutation(n)
    parent = np.full(n, -1, dtype=np.int64)
    for pos in range(1, n):
        parent[order[pos]] = order[(pos - 1) // branching]
    return parent


def _post_order(parent: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """Nodes children-first and the children of each node."""
    n = parent.shape[0]
    children: list[list[int]] = [[] for _ in range(n)]
    roots = []
    for v in range(n):
        if parent[v] < 0:
            roots.append(v)
        else:
            children[int(parent[v])].append(v)
    if len(roots) != 1:
        raise ValueError(f"a tree overlay has one root, got {len(roots)}")
    order: list[int] = []
    stack = [(roots[0], False)]
    while stack:
        v, done = stack.pop()
        if done:
            order.append(v)
            continue
        stack.append((v, True))
        stack.extend((c, False) for c in reversed(children[v]))
    if len(order) != n:
        raise ValueError("the overlay's parents do not form one tree")
    return order, children


# --- selection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HardBounds:
    """``offset + sum_i contribution[i, plan_i] <= upper`` per row and hour.

    ``contribution`` (N, k, R, H), ``offset`` (R, H), ``upper`` (R,).
    """

    contribution: np.ndarray
    offset: np.ndarray
    upper: np.ndarray

    def floor(self) -> np.ndarray:
        """(R, H): the smallest value any selection can reach (everyone's smallest)."""
        result: np.ndarray = self.offset + self.contribution.min(axis=1).sum(axis=0)
        return result

    def feasible(self) -> np.ndarray:
        """(R, H): True where everyone's smallest contribution fits."""
        result: np.ndarray = self.floor() <= self.upper[:, None] + VIOLATION_ATOL
        return result

    def effective_upper(self) -> np.ndarray:
        """(R, H): the bound where it can hold, else the floor (the least excess possible)."""
        result: np.ndarray = np.maximum(self.upper[:, None], self.floor())
        return result


@dataclass(frozen=True)
class Selection:
    """One plan index per building and what it achieves."""

    index: np.ndarray  # (N,)
    global_kwh: np.ndarray  # (H,)
    cost: float
    global_cost: float
    local_cost: float
    unfairness: float
    iterations: int
    reorganisations: int
    violation_kwh: float  # positive excess over the bounds where they can hold, summed
    messages: int
    unreachable_excess_kwh: float = 0.0  # excess over the floor where a bound cannot hold

    def rank(self) -> tuple[float, float, float]:
        """Lexicographic order of selections: violation, excess where unreachable, cost."""
        return (_rounded(self.violation_kwh), _rounded(self.unreachable_excess_kwh), self.cost)


def _rounded(violation: float) -> float:
    """A violation within ``VIOLATION_ATOL`` counts as none."""
    return violation if violation > VIOLATION_ATOL else 0.0


@dataclass(frozen=True)
class _Problem:
    plans: np.ndarray  # (N, k, H)
    discomfort: np.ndarray  # (N, k)
    alpha: float
    beta: float
    var_norm: float
    disc_norm: float
    hard: HardBounds | None
    upper: np.ndarray | None  # (R, H): the bound in every hour
    floor: np.ndarray | None  # (R, H): HardBounds.floor
    reachable: np.ndarray | None  # (R, H): HardBounds.feasible

    @classmethod
    def build(cls, plans_kwh: np.ndarray, discomfort: np.ndarray, alpha: float, beta: float,
              hard: HardBounds | None) -> _Problem:
        """The normalised objective and the bounds of one selection problem."""
        var0 = float(plans_kwh[:, 0].sum(axis=0).var())
        disc = float(discomfort.mean())
        upper = floor = reachable = None
        if hard is not None:
            upper = np.broadcast_to(hard.upper[:, None], hard.offset.shape)
            floor, reachable = hard.floor(), hard.feasible()
        return cls(plans_kwh, discomfort, alpha, beta, var0 if var0 > 0 else 1.0,
                   disc if disc > 0 else 1.0, hard, upper, floor, reachable)

    def cost(self, global_kwh: np.ndarray, d_sum: np.ndarray, d_sq: np.ndarray,
             n: int) -> np.ndarray:
        """Objective of predicted district plans (..., H) and discomfort sums (...)."""
        mean = d_sum / n
        var = np.maximum(d_sq / n - mean ** 2, 0.0)
        result: np.ndarray = ((1 - self.alpha - self.beta) * global_kwh.var(axis=-1)
                              / self.var_norm + self.alpha * var / self.disc_norm ** 2
                              + self.beta * mean / self.disc_norm)
        return result

    def violation(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive excess of predicted row values (..., R, H): over the bounds in the hours
        where they can hold, and over the floor (the least reachable value) where not."""
        if self.upper is None or self.floor is None or self.reachable is None:
            none = np.zeros(value.shape[:-2])
            return none, none
        over = np.where(self.reachable, np.maximum(value - self.upper, 0.0), 0.0)
        under = np.where(self.reachable, 0.0, np.maximum(value - self.floor, 0.0))
        return over.sum(axis=(-2, -1)), under.sum(axis=(-2, -1))


def select_plans(plans_kwh: np.ndarray, discomfort: np.ndarray, parent: np.ndarray, *,
                 alpha: float = 0.0, beta: float = 0.1, iterations: int = 20,
                 hard: HardBounds | None = None, reorganisations: int = 5,
                 rng: np.random.Generator | None = None) -> Selection:
    """One plan per agent by I-EPOS on the tree ``parent`` (module docstring)."""
    n, k, _ = plans_kwh.shape
    if discomfort.shape != (n, k) or parent.shape != (n,):
        raise ValueError(f"discomfort {discomfort.shape} must be ({n}, {k}) and parent "
                         f"{parent.shape} ({n},)")
    rng = rng if rng is not None else np.random.default_rng(0)
    problem = _Problem.build(plans_kwh, discomfort, alpha, beta, hard)
    best: Selection | None = None
    tree = parent
    messages = 0
    estimate = None
    for restart in range(reorganisations + 1):
        found, used = _iepos(problem, tree, iterations, estimate)
        messages += 2 * (n - 1) * used
        if best is None or found.rank() < best.rank():
            best = replace(found, reorganisations=restart)
        if best.violation_kwh <= VIOLATION_ATOL:
            break
        tree = shuffled_tree(n, rng)
        estimate = _random_estimate(problem, rng)
    assert best is not None
    return replace(best, messages=messages)


def _random_estimate(problem: _Problem, rng: np.random.Generator) -> np.ndarray | None:
    """A reorganisation's cold-start estimate: one random plan's contribution per agent."""
    if problem.hard is None:
        return None
    n, k = problem.discomfort.shape
    result: np.ndarray = problem.hard.contribution[np.arange(n), rng.integers(0, k, n)]
    return result


def _evaluate(problem: _Problem, sel: np.ndarray, iterations: int) -> Selection:
    n = sel.shape[0]
    rows = np.arange(n)
    g = problem.plans[rows, sel].sum(axis=0)
    d = problem.discomfort[rows, sel]
    mean = float(d.mean())
    unfair = float(d.var()) / problem.disc_norm ** 2
    over = under = 0.0
    if problem.hard is not None:
        value = problem.hard.offset + problem.hard.contribution[rows, sel].sum(axis=0)
        over_a, under_a = problem.violation(value)
        over, under = float(over_a), float(under_a)
    cost = float(problem.cost(g, np.array(d.sum()), np.array((d * d).sum()), n))
    return Selection(sel.copy(), g, cost, float(g.var()) / problem.var_norm,
                     mean / problem.disc_norm, unfair, iterations, 0, over, 0, under)


def _iepos(problem: _Problem, parent: np.ndarray, iterations: int,
           estimate: np.ndarray | None = None) -> tuple[Selection, int]:
    """I-EPOS from a cold start on one tree: the best selection and the iterations used.

    ``estimate`` (N, R, H): what the cold start assumes of the agents outside a subtree
    (default: the lower envelope, each agent's smallest contribution per row and hour).
    """
    order, children = _post_order(parent)
    n = problem.plans.shape[0]
    contrib = _contribution(problem)
    envelope = contrib.min(axis=1) if estimate is None else estimate  # (N, R, H)
    sel = np.zeros(n, dtype=np.int64)
    best: Selection | None = None
    used = 0
    prev: dict[str, np.ndarray] | None = None  # subtree sums of the previous iteration
    for s in range(1, iterations + 1):
        used = s
        step = _Round(problem, contrib, envelope, children, prev)
        new_sel = sel.copy()
        approve: dict[int, tuple[bool, ...]] = {}
        for i in order:
            new_sel[i], approve[i] = step.decide(i)
        # top-down: subtrees whose changes were rejected keep their previous choices
        if prev is not None:
            for i in reversed(order):
                for c, ok in zip(children[i], approve[i], strict=True):
                    if not ok:
                        _revert(c, children, new_sel, sel)
        changed = not np.array_equal(new_sel, sel) or prev is None
        sel = new_sel
        prev = _sums(problem, sel, order, children)
        found = _evaluate(problem, sel, s)
        if best is None or found.rank() < best.rank():
            best = found
        if not changed:
            break
    assert best is not None
    return best, used


def _contribution(problem: _Problem) -> np.ndarray:
    """(N, k, R, H): every plan's contribution to the hard rows (R = 0 without bounds)."""
    if problem.hard is not None:
        return problem.hard.contribution
    n, k, h = problem.plans.shape
    return np.zeros((n, k, 0, h))


@dataclass(frozen=True)
class _Options:
    """An agent's options (approval choice m, plan p): subtree sums and their ranking."""

    agg: np.ndarray  # (m, k, H)
    dsum: np.ndarray  # (m, k)
    dsq: np.ndarray  # (m, k)
    hsub: np.ndarray  # (m, k, R, H)
    over: np.ndarray  # (m, k)
    under: np.ndarray  # (m, k)
    cost: np.ndarray  # (m, k)

    def best(self) -> tuple[int, int]:
        """The best option ``(m, p)`` (:func:`_best_option`)."""
        m, p = np.unravel_index(_best_option(self.over, self.under, self.cost),
                                self.cost.shape)
        return int(m), int(p)

    def row(self, m: int) -> _Options:
        """The options of approval choice m alone."""
        return _Options(*(getattr(self, f.name)[m:m + 1] for f in fields(self)))

    def key(self, m: int, p: int) -> tuple[float, float, float]:
        """The ranking of option ``(m, p)``: violation, excess where unreachable, cost."""
        return (_rounded(float(self.over[m, p])), _rounded(float(self.under[m, p])),
                float(self.cost[m, p]))


class _Round:
    """One bottom-up pass of I-EPOS: the subtree sums the agents send up as they decide."""

    def __init__(self, problem: _Problem, contrib: np.ndarray, envelope: np.ndarray,
                 children: list[list[int]], prev: dict[str, np.ndarray] | None) -> None:
        n, _, h = problem.plans.shape
        self.problem, self.contrib, self.envelope = problem, contrib, envelope
        self.children, self.prev = children, prev
        self.env_total = envelope.sum(axis=0)
        self.agg = np.zeros((n, h))
        self.dsum, self.dsq = np.zeros(n), np.zeros(n)
        self.hsub = np.zeros((n,) + contrib.shape[2:])
        self.env_sub = np.zeros((n,) + contrib.shape[2:])

    def decide(self, i: int) -> tuple[int, tuple[bool, ...]]:
        """Agent i's plan and approvals; records its subtree's new sums."""
        kids = self.children[i]
        self.env_sub[i] = self.envelope[i] + sum((self.env_sub[c] for c in kids),
                                                 np.zeros(self.envelope.shape[1:]))
        if self.prev is not None and len(kids) > MAX_APPROVAL_CHILDREN:
            choice, opts = self._greedy(i, kids)
        else:
            choices = _approval_choices(len(kids), first=self.prev is None)
            opts = self.options(i, choices)
            m, _ = opts.best()
            choice, opts = choices[m], opts.row(m)
        _, p = opts.best()
        self.agg[i], self.dsum[i], self.dsq[i] = opts.agg[0, p], opts.dsum[0, p], opts.dsq[0, p]
        self.hsub[i] = opts.hsub[0, p]
        return p, choice

    def _greedy(self, i: int, kids: list[int]) -> tuple[tuple[bool, ...], _Options]:
        """Approvals of many children: from rejecting all, approve one child at a time
        where that improves the agent's best option; approving all if that is better."""
        choice = [False] * len(kids)
        opts = self.options(i, [tuple(choice)])
        best_key = opts.key(*opts.best())
        for j in range(len(kids)):
            trial = choice.copy()
            trial[j] = True
            trial_opts = self.options(i, [tuple(trial)])
            trial_key = trial_opts.key(*trial_opts.best())
            if trial_key < best_key:
                choice, opts, best_key = trial, trial_opts, trial_key
        everyone = self.options(i, [(True,) * len(kids)])
        if everyone.key(*everyone.best()) < best_key:
            return (True,) * len(kids), everyone
        return tuple(choice), opts

    def options(self, i: int, choices: list[tuple[bool, ...]]) -> _Options:
        """Agent i's options for each approval choice and plan."""
        problem, prev, kids = self.problem, self.prev, self.children[i]
        plans, disc = problem.plans[i], problem.discomfort[i]
        # per approval choice: the children's sums as chosen (m, ...)
        c_agg = np.stack([_pick(self.agg, prev, "agg", kids, ch) for ch in choices])
        c_ds = np.stack([_pick(self.dsum, prev, "dsum", kids, ch) for ch in choices])
        c_dq = np.stack([_pick(self.dsq, prev, "dsq", kids, ch) for ch in choices])
        c_h = np.stack([_pick(self.hsub, prev, "hsub", kids, ch) for ch in choices])
        sub = c_agg[:, None, :] + plans[None]  # (m, k, H)
        sub_ds = c_ds[:, None] + disc[None]
        sub_dq = c_dq[:, None] + disc[None] ** 2
        sub_h = c_h[:, None] + self.contrib[i][None]  # (m, k, R, H)
        if prev is None:
            count = _subtree_size(i, self.children)
            cost = problem.cost(sub, sub_ds, sub_dq, count)
        else:
            cost = problem.cost(prev["G"] - prev["agg"][i] + sub,
                                prev["D"] - prev["dsum"][i] + sub_ds,
                                prev["Q"] - prev["dsq"][i] + sub_dq, problem.plans.shape[0])
        over = under = np.zeros_like(cost)
        if problem.hard is not None:
            if prev is None:  # cold start: the rest at its estimate (the lower envelope)
                rest = self.env_total - self.env_sub[i]
            else:
                rest = prev["H"] - prev["hsub"][i]
            over, under = problem.violation(problem.hard.offset + rest + sub_h)
        return _Options(sub, sub_ds, sub_dq, sub_h, over, under, cost)


def _best_option(over: np.ndarray, under: np.ndarray, cost: np.ndarray) -> int:
    """Flat index of the option with the least violation where the bounds can hold, then the
    least excess where they cannot, then the least cost (violations within
    ``VIOLATION_ATOL`` count as none)."""
    keys = [np.where(a > VIOLATION_ATOL, a, 0.0).ravel() for a in (over, under)]
    return int(np.lexsort((cost.ravel(), keys[1], keys[0]))[0])


def _approval_choices(n_children: int, first: bool) -> list[tuple[bool, ...]]:
    """Which children's changes to approve: every combination (approve all in the first
    iteration, when there is nothing to go back to)."""
    if first or n_children == 0:
        return [(True,) * n_children]
    return list(itertools.product((True, False), repeat=n_children))


def _pick(new: np.ndarray, prev: dict[str, np.ndarray] | None, name: str, kids: list[int],
          choice: tuple[bool, ...]) -> np.ndarray:
    """Sum over the children of their new (approved) or previous subtree sums."""
    total = np.zeros(new.shape[1:])
    for c, ok in zip(kids, choice, strict=True):
        total = total + (new[c] if ok or prev is None else prev[name][c])
    return total


def _subtree_size(i: int, children: list[list[int]]) -> int:
    size, stack = 0, [i]
    while stack:
        v = stack.pop()
        size += 1
        stack.extend(children[v])
    return size


def _revert(root: int, children: list[list[int]], new_sel: np.ndarray,
            old_sel: np.ndarray) -> None:
    stack = [root]
    while stack:
        v = stack.pop()
        new_sel[v] = old_sel[v]
        stack.extend(children[v])


def _sums(problem: _Problem, sel: np.ndarray, order: list[int],
          children: list[list[int]]) -> dict[str, np.ndarray]:
    """Subtree sums of a selection (aggregate plan, discomfort, its squares, hard rows)."""
    n = sel.shape[0]
    rows = np.arange(n)
    agg = problem.plans[rows, sel].copy()
    d = problem.discomfort[rows, sel]
    dsum, dsq = d.copy(), d * d
    hsub = _contribution(problem)[rows, sel].copy()
    for v in order:
        for c in children[v]:
            agg[v] += agg[c]
            dsum[v] += dsum[c]
            dsq[v] += dsq[c]
            hsub[v] += hsub[c]
    root = order[-1]
    return {"agg": agg, "dsum": dsum, "dsq": dsq, "hsub": hsub, "G": agg[root],
            "D": np.array(dsum[root]), "Q": np.array(dsq[root]),
            "H": hsub[root]}


# --- the controller --------------------------------------------------------------------------


class EposController:
    """Once a day, I-EPOS selects a plan per building; the day follows it (module docstring)."""

    name = "epos"

    def __init__(self, params: FleetParams, forecast: Forecast, rows: CouplingRows | None,
                 config: EposConfig, parent: np.ndarray, steps: int, seed: int = 0) -> None:
        if forecast.n != params.n or parent.shape != (params.n,):
            raise ValueError(f"forecast ({forecast.n}) and overlay ({parent.shape}) must "
                             f"cover the {params.n} buildings")
        _post_order(parent)  # a single tree, or ValueError
        self.params, self.forecast, self.rows, self.config = params, forecast, rows, config
        self.parent = parent
        self.steps, self.seed = int(steps), int(seed)
        self.n = params.n
        self.t = 0
        self.plan_kwh = np.zeros((self.n, config.day_steps))
        days = -(-self.steps // config.day_steps)
        self.log_days = np.full((days, 10), np.nan)
        self.log_plan = np.full((days, self.n), -1, dtype=np.int64)
        self.log_discomfort = np.full((days, self.n), np.nan)
        self.timing = {"plans_s": 0.0, "select_s": 0.0, "calls": 0.0}

    def act(self, obs: FleetObservation) -> np.ndarray:
        """Plan the day at its first step; follow the plan (module docstring), (N, 2).

        Raises:
            RuntimeError: past the run's last step.
        """
        if self.t >= self.steps:
            raise RuntimeError(f"the EPOS controller was made for {self.steps} steps")
        hour = self.t % self.config.day_steps
        if hour == 0:
            self._plan_day(obs)
        to_serve = obs.demand_kwh + obs.backlog_kwh
        g = np.minimum(self.plan_kwh[:, hour], to_serve)
        x = np.minimum(to_serve - g, obs.battery_available_kwh)
        self.t += 1
        self.timing["calls"] += 1
        return model_actions(g, x, to_serve)

    def _plan_day(self, obs: FleetObservation) -> None:
        cfg = self.config
        day = self.t // cfg.day_steps
        h = min(cfg.day_steps, self.steps - self.t, self.forecast.steps_available(self.t))
        demand, pv, _ = self.forecast.window(self.t, h)
        demand[0], pv[0] = obs.demand_kwh, obs.pv_kwh  # the step itself is measured
        rng = np.random.default_rng([self.seed, day])
        t0 = time.perf_counter()
        plans = candidate_plans(self.params, obs.backlog_kwh, obs.soc_kwh, demand, pv,
                                cfg.plans, rng, self.forecast.dt_h, self._caps(demand))
        plans = serving_plans(plans)
        t1 = time.perf_counter()
        hard = None
        if self.rows is not None:
            w_g, w_e = self.rows.w_grid.T, self.rows.w_export.T  # (N, R)
            contribution = (plans.grid_kwh[:, :, None, :] * w_g[:, None, :, None]
                            - plans.export_kwh[:, :, None, :] * w_e[:, None, :, None])
            hard = HardBounds(contribution, self.rows.offset_window(self.t, h).T,
                              self.rows.upper)
        sel = select_plans(plans.grid_kwh, plans.discomfort, self.parent, alpha=cfg.alpha,
                           beta=cfg.beta, iterations=cfg.iterations, hard=hard,
                           reorganisations=cfg.reorganisations, rng=rng)
        self.timing["plans_s"] += t1 - t0
        self.timing["select_s"] += time.perf_counter() - t1
        rows = np.arange(self.n)
        self.plan_kwh = np.zeros((self.n, cfg.day_steps))
        self.plan_kwh[:, :h] = plans.grid_kwh[rows, sel.index]
        self.log_days[day] = (self.t, sel.iterations, sel.reorganisations, sel.global_cost,
                              sel.local_cost, sel.unfairness, float(sel.global_kwh.max()),
                              sel.violation_kwh, sel.messages,
                              0 if hard is None else int((~hard.feasible()).sum()))
        self.log_plan[day] = sel.index
        self.log_discomfort[day] = plans.discomfort[rows, sel.index]

    def _caps(self, demand_kwh: np.ndarray) -> np.ndarray | None:
        """Caps of the capped plans from the district limit: ``CAP_FACTORS`` x c x the
        building's share of the day's forecast demand (everyone on factor 1 meets c in
        every hour); None without a district row (then shares of the building's peak)."""
        rows = self.rows
        if rows is None or not rows.n_rows or not (rows.w_grid[0] == 1).all() \
                or (rows.w_export[0] != 0).any():
            return None
        total = demand_kwh.sum(axis=0)
        share = total / total.sum() if total.sum() > 0 else np.full(self.n, 1.0 / self.n)
        result: np.ndarray = rows.upper[0] * share[:, None] * np.asarray(CAP_FACTORS)[None, :]
        return result

    def decisions(self) -> dict[str, pd.DataFrame]:
        """``epos_days`` (one row per day planned) and ``epos_selection`` (per building)."""
        days = int(np.isfinite(self.log_days[:, 0]).sum())
        log = self.log_days[:days]
        day_table = pd.DataFrame({
            "day": np.arange(days, dtype=np.int64), "time": log[:, 0].astype(np.int64),
            "iterations": log[:, 1].astype(np.int64),
            "reorganisations": log[:, 2].astype(np.int64), "global_cost": log[:, 3],
            "local_cost": log[:, 4], "unfairness": log[:, 5], "planned_peak_kwh": log[:, 6],
            "violation_kwh": log[:, 7], "messages": log[:, 8].astype(np.int64),
            "unreachable_hours": log[:, 9].astype(np.int64)})
        selection = pd.DataFrame({
            "day": np.repeat(np.arange(days, dtype=np.int64), self.n),
            "building": np.tile(np.arange(self.n, dtype=np.int64), days),
            "plan": self.log_plan[:days].ravel(),
            "discomfort": self.log_discomfort[:days].ravel()})
        return {"epos_days": day_table, "epos_selection": selection}

    def snapshot(self) -> dict[str, np.ndarray]:
        """Step, the day's plan and the decision log, for :meth:`restore`."""
        return {"t": np.array(self.t, dtype=np.int64), "plan_kwh": self.plan_kwh.copy(),
                "log_days": self.log_days.copy(), "log_plan": self.log_plan.copy(),
                "log_discomfort": self.log_discomfort.copy()}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Continue from a :meth:`snapshot`.

        Raises:
            ValueError: if the snapshot is of another fleet or run length.
        """
        if snap["log_plan"].shape != self.log_plan.shape:
            raise ValueError(f"EPOS snapshot for {snap['log_plan'].shape}, this controller "
                             f"holds {self.log_plan.shape} (days, buildings)")
        self.t = int(snap["t"])
        self.plan_kwh = np.array(snap["plan_kwh"], dtype=float)
        self.log_days = np.array(snap["log_days"], dtype=float)
        self.log_plan = np.array(snap["log_plan"], dtype=np.int64)
        self.log_discomfort = np.array(snap["log_discomfort"], dtype=float)
