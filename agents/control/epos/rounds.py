"""One bottom-up pass of I-EPOS (:mod:`agents.control.epos.selection`), vectorised: the agents
decide in batches (:func:`~agents.control.epos.tree._groups`: all agents of one height and
number of children at once), each agent's options (approval choice of its children's
changes and plan) as numpy arrays over (agents x choices x plans), ranked by violation,
excess where a bound cannot hold, and cost; ties go to the first choice, then the first plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.control.epos.problem import VIOLATION_ATOL, _Problem

#: An agent with more children than this approves them greedily
#: (:mod:`agents.control.epos.selection`).
MAX_APPROVAL_CHILDREN = 8
#: Options (agents x choices x plans x rows+1 x hours) evaluated in one numpy batch at most.
BATCH_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class _Options:
    """Options of G agents (approval choice m, plan p): subtree sums and their ranking."""

    agg: np.ndarray  # (G, m, k, H)
    dsum: np.ndarray  # (G, m, k)
    dsq: np.ndarray  # (G, m, k)
    hsub: np.ndarray  # (G, m, k, R, H)
    over: np.ndarray  # (G, m, k)
    under: np.ndarray  # (G, m, k)
    cost: np.ndarray  # (G, m, k)

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        """Each agent's best option ``(m, p)`` (:func:`_best_option`), two (G,) arrays."""
        g, m, k = self.cost.shape
        flat = _best_option(*(a.reshape(g, m * k) for a in (self.over, self.under, self.cost)))
        return flat // k, flat % k

    def key(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each agent's ranking of its best option: violation, excess where unreachable,
        cost (violations within ``VIOLATION_ATOL`` count as none), three (G,) arrays."""
        m, p = self.best()
        rows = np.arange(m.size)
        over, under = (_rounded(a[rows, m, p]) for a in (self.over, self.under))
        return over, under, self.cost[rows, m, p]


class _Round:
    """One bottom-up pass of I-EPOS: the subtree sums the agents send up as they decide."""

    def __init__(self, problem: _Problem, contrib: np.ndarray, envelope: np.ndarray,
                 size: np.ndarray, prev: dict[str, np.ndarray] | None) -> None:
        n, _, h = problem.plans.shape
        self.problem, self.contrib, self.envelope = problem, contrib, envelope
        self.size, self.prev = size, prev
        self.env_total = envelope.sum(axis=0)
        self.agg = np.zeros((n, h))
        self.dsum, self.dsq = np.zeros(n), np.zeros(n)
        self.hsub = np.zeros((n,) + contrib.shape[2:])
        self.env_sub = np.zeros((n,) + contrib.shape[2:])
        self.plan = np.zeros(n, dtype=np.int64)
        self.rejected = np.zeros(n, dtype=bool)  # a child whose parent kept its previous sums

    def decide(self, idx: np.ndarray, kids: np.ndarray) -> None:
        """Agents ``idx`` (G,), each with children ``kids`` (G, c): plans, approvals and
        their subtrees' new sums, in batches of at most ``BATCH_ELEMENTS``."""
        g, c = kids.shape
        if self.prev is None:
            self.env_sub[idx] = self.envelope[idx] + _fold(self.env_sub, kids)
        _, k, r, h = self.contrib.shape
        m = 1 if self.prev is None or c > MAX_APPROVAL_CHILDREN else 1 << c
        step = max(1, BATCH_ELEMENTS // (m * k * (r + 1) * h))
        for lo in range(0, g, step):
            self._decide(idx[lo:lo + step], kids[lo:lo + step])

    def _decide(self, idx: np.ndarray, kids: np.ndarray) -> None:
        c = kids.shape[1]
        if self.prev is not None and c > MAX_APPROVAL_CHILDREN:
            mask = self._greedy(idx, kids)
        else:
            mask = _approval_choices(c, first=self.prev is None)[None]
        opts = self.options(idx, kids, mask)
        m, p = opts.best()
        rows = np.arange(idx.size)
        self.plan[idx] = p
        self.agg[idx], self.hsub[idx] = opts.agg[rows, m, p], opts.hsub[rows, m, p]
        self.dsum[idx], self.dsq[idx] = opts.dsum[rows, m, p], opts.dsq[rows, m, p]
        self.rejected[kids] = ~np.broadcast_to(mask, (idx.size,) + mask.shape[1:])[rows, m]

    def _greedy(self, idx: np.ndarray, kids: np.ndarray) -> np.ndarray:
        """Approvals of many children, (G, 1, c): from rejecting all, approve one child at a
        time where that improves the agent's best option; approving all if that is better."""
        choice = np.zeros(kids.shape, dtype=bool)
        best: tuple[np.ndarray, ...] = self.options(idx, kids, choice[:, None]).key()
        for j in range(kids.shape[1]):
            trial = choice.copy()
            trial[:, j] = True
            key = self.options(idx, kids, trial[:, None]).key()
            better = _less(key, best)
            choice = np.where(better[:, None], trial, choice)
            best = tuple(np.where(better, a, b) for a, b in zip(key, best, strict=True))
        everyone = np.ones_like(choice)
        better = _less(self.options(idx, kids, everyone[:, None]).key(), best)
        result: np.ndarray = np.where(better[:, None], everyone, choice)[:, None]
        return result

    def options(self, idx: np.ndarray, kids: np.ndarray, mask: np.ndarray) -> _Options:
        """Options of agents ``idx`` for each approval choice ``mask`` (G or 1, m, c) of their
        children ``kids`` (G, c) and each plan."""
        problem, prev = self.problem, self.prev
        plans, disc = problem.plans[idx][:, None], problem.discomfort[idx][:, None]
        c_agg, c_ds, c_dq, c_h = (self._pick(name, kids, mask)
                                  for name in ("agg", "dsum", "dsq", "hsub"))
        sub = c_agg[:, :, None] + plans  # (G, m, k, H)
        sub_ds = c_ds[:, :, None] + disc
        sub_dq = c_dq[:, :, None] + disc ** 2
        sub_h = c_h[:, :, None] + self.contrib[idx][:, None]  # (G, m, k, R, H)
        if prev is None:
            count = self.size[idx][:, None, None]
            cost = problem.cost(sub, sub_ds, sub_dq, count)
        else:
            cost = problem.cost((prev["G"] - prev["agg"][idx])[:, None, None] + sub,
                                (prev["D"] - prev["dsum"][idx])[:, None, None] + sub_ds,
                                (prev["Q"] - prev["dsq"][idx])[:, None, None] + sub_dq,
                                problem.plans.shape[0])
        over = under = np.zeros_like(cost)
        if problem.hard is not None:
            if prev is None:  # cold start: the rest at its estimate (the lower envelope)
                rest = self.env_total - self.env_sub[idx]
            else:
                rest = prev["H"] - prev["hsub"][idx]
            over, under = problem.violation((problem.hard.offset + rest)[:, None, None]
                                            + sub_h)
        return _Options(sub, sub_ds, sub_dq, sub_h, over, under, cost)

    def _pick(self, name: str, kids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(G, m, ...): per approval choice, the sum over the children (in their order, from
        zero) of their new (approved) or previous subtree sums ``name``."""
        new: np.ndarray = getattr(self, name)
        g, c = kids.shape
        total = np.zeros((g, mask.shape[1]) + new.shape[1:])
        tail = (None,) * (new.ndim - 1)
        for j in range(c):
            if self.prev is None:
                total = total + new[kids[:, j]][:, None]
            else:
                ok = mask[(slice(None), slice(None), j) + tail]
                total = total + np.where(ok, new[kids[:, j]][:, None],
                                         self.prev[name][kids[:, j]][:, None])
        return total


def _fold(values: np.ndarray, kids: np.ndarray) -> np.ndarray:
    """(G, ...): the sum of ``values`` over each agent's children, in their order from zero."""
    total = np.zeros((kids.shape[0],) + values.shape[1:])
    for j in range(kids.shape[1]):
        total = total + values[kids[:, j]]
    return total


def _rounded(values: np.ndarray) -> np.ndarray:
    """Violations within ``VIOLATION_ATOL`` count as none."""
    result: np.ndarray = np.where(values > VIOLATION_ATOL, values, 0.0)
    return result


def _best_option(over: np.ndarray, under: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """(G,): per row of (G, options), the index of the option with the least violation where
    the bounds can hold, then the least excess where they cannot, then the least cost
    (violations within ``VIOLATION_ATOL`` count as none); ties go to the first."""
    tied = np.ones(cost.shape, dtype=bool)
    for key in (_rounded(over), _rounded(under), cost):
        masked = np.where(tied, key, np.inf)
        tied &= masked == masked.min(axis=1, keepdims=True)
    result: np.ndarray = tied.argmax(axis=1)
    return result


def _less(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """Elementwise lexicographic ``a < b`` of two rankings (tuples of (G,) arrays)."""
    less = np.zeros(a[0].shape, dtype=bool)
    equal = np.ones(a[0].shape, dtype=bool)
    for x, y in zip(a, b, strict=True):
        less |= equal & (x < y)
        equal &= x == y
    return less


def _approval_choices(n_children: int, first: bool) -> np.ndarray:
    """(m, c): which children's changes to approve: every combination in the order of
    ``itertools.product((True, False), repeat=c)`` (approve all in the first iteration,
    when there is nothing to go back to)."""
    if first or n_children == 0:
        return np.ones((1, n_children), dtype=bool)
    m = np.arange(1 << n_children)[:, None]
    shift = np.arange(n_children - 1, -1, -1)[None, :]
    result: np.ndarray = (m >> shift) & 1 == 0
    return result
