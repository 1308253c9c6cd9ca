"""One bottom-up pass of I-EPOS (:mod:`agents.control.epos.selection`): each agent's options
(approval choice of its children's changes and plan), ranked by violation, excess where a
bound cannot hold, and cost."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields

import numpy as np

from agents.control.epos.problem import VIOLATION_ATOL, _Problem, _rounded

#: An agent with more children than this approves them greedily
#: (:mod:`agents.control.epos.selection`).
MAX_APPROVAL_CHILDREN = 8


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
