"""I-EPOS plan selection with decentralised hard constraints (:mod:`agents.control.epos`).

**Objective** (the I-EPOS weighting, all terms normalised to be unitless)::

    (1 - alpha - beta) var_h(G) / var_h(G_0)  +  alpha var_i(D_i) / mean(D)^2
                                               +  beta mean_i(D_i) / mean(D)

with ``G = sum_i plan_i`` the district plan (its variance: peak shaving), ``G_0`` the
district plan of everyone's plan 0, ``D_i`` the discomfort of building i's selected
plan (its variance across buildings: unfairness) and ``mean(D)`` the mean over all
candidates (1 where that is 0).

**Selection** (:func:`select_plans`) on a tree overlay
(:func:`~agents.control.epos.tree.tree_from_graph`: a BFS spanning tree of the communication
graph or of the feeder's building graph). Each
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
Messages: one up and one down per tree edge and iteration. Executed in batches
(:mod:`agents.control.epos.rounds`): every agent of one height and number of children at
once, the same selection as agent by agent in post order.

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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from agents.control.epos.problem import VIOLATION_ATOL, HardBounds, Selection, _Problem
from agents.control.epos.rounds import _Round
from agents.control.epos.tree import _groups, shuffled_tree


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
    return _reorganised(problem, parent, iterations, reorganisations, rng, _iepos)


#: one I-EPOS run on one tree: (problem, parent, iterations, cold-start estimate) to the
#: best selection and the iterations used
OneTree = Callable[[_Problem, np.ndarray, int, "np.ndarray | None"], tuple[Selection, int]]


def _reorganised(problem: _Problem, parent: np.ndarray, iterations: int,
                 reorganisations: int, rng: np.random.Generator,
                 one_tree: OneTree) -> Selection:
    """``one_tree`` on ``parent``, then on shuffled trees until the bounds hold or
    ``reorganisations`` restarts are used; the best selection found, messages counted."""
    n = len(parent)
    best: Selection | None = None
    tree = parent
    messages = 0
    estimate = None
    for restart in range(reorganisations + 1):
        found, used = one_tree(problem, tree, iterations, estimate)
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
    groups = _groups(parent)
    n = problem.plans.shape[0]
    contrib = _contribution(problem)
    envelope = contrib.min(axis=1) if estimate is None else estimate  # (N, R, H)
    size = _subtree_sizes(groups, n)
    sel = np.zeros(n, dtype=np.int64)
    best: Selection | None = None
    used = 0
    prev: dict[str, np.ndarray] | None = None  # subtree sums of the previous iteration
    for s in range(1, iterations + 1):
        used = s
        step = _Round(problem, contrib, envelope, size, prev)
        for idx, kids in groups:
            step.decide(idx, kids)
        new_sel = step.plan
        # top-down: subtrees whose changes were rejected keep their previous choices
        if prev is not None:
            new_sel = np.where(_reverted(groups, step.rejected), sel, new_sel)
        changed = not np.array_equal(new_sel, sel) or prev is None
        sel = new_sel
        prev = _sums(problem, sel, groups)
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


def _subtree_sizes(groups: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """(N,): the number of agents in each agent's subtree."""
    size = np.ones(n, dtype=np.int64)
    for idx, kids in groups:
        size[idx] += size[kids].sum(axis=1)
    return size


def _reverted(groups: list[tuple[np.ndarray, np.ndarray]], rejected: np.ndarray) -> np.ndarray:
    """(N,): agents in a subtree whose changes were rejected, top-down (parents first)."""
    reverted: np.ndarray = rejected.copy()
    for idx, kids in reversed(groups):
        reverted[kids] |= reverted[idx][:, None]
    return reverted


def _sums(problem: _Problem, sel: np.ndarray,
          groups: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Subtree sums of a selection (aggregate plan, discomfort, its squares, hard rows):
    each agent's own, then its children's added in their order, batch by batch."""
    n = sel.shape[0]
    rows = np.arange(n)
    d = problem.discomfort[rows, sel]
    sums = {"agg": problem.plans[rows, sel].copy(), "dsum": d.copy(), "dsq": d * d,
            "hsub": _contribution(problem)[rows, sel].copy()}
    for idx, kids in groups:
        for values in sums.values():
            total = values[idx]
            for j in range(kids.shape[1]):
                total = total + values[kids[:, j]]
            values[idx] = total
    root = int(groups[-1][0][0])
    return sums | {"G": sums["agg"][root], "D": np.array(sums["dsum"][root]),
                   "Q": np.array(sums["dsq"][root]), "H": sums["hsub"][root]}
