"""A slow, agent-by-agent implementation of I-EPOS selection, for tests and benchmarks only.

It is the selection of :mod:`agents.control.epos.selection` as it was before the
level-by-level vectorisation (a Python loop over the agents in post order, one agent's
options at a time), kept so that a test can check that the vectorised selection picks
exactly the same plans (:func:`reference_select_plans`) and a benchmark can time both.
It shares the problem, the evaluation and the trees with the production code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import numpy as np

from agents.control.epos.problem import VIOLATION_ATOL, HardBounds, Selection, _Problem, _rounded
from agents.control.epos.rounds import MAX_APPROVAL_CHILDREN
from agents.control.epos.selection import (
    _contribution,
    _evaluate,
    _reorganised,
)
from agents.control.epos.tree import _post_order


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


def reference_select_plans(plans_kwh: np.ndarray, discomfort: np.ndarray, parent: np.ndarray, *,
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
    # the restarts on shuffled trees are the production loop's; the pass on one tree is
    # this module's agent-by-agent one
    return _reorganised(problem, parent, iterations, reorganisations, rng, _iepos)


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
