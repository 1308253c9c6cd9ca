"""The selection problem of I-EPOS (:mod:`agents.control.epos.selection` describes it): the
hard bounds, a selection and its ranking, and the normalised objective."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A bound is violated by more than this (kWh, or the row's unit).
VIOLATION_ATOL = 1e-9


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
        result: np.ndarray = ((1 - self.alpha - self.beta) * _variance(global_kwh)
                              / self.var_norm + self.alpha * var / self.disc_norm ** 2
                              + self.beta * mean / self.disc_norm)
        return result

    def violation(self, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive excess of predicted row values (..., R, H): over the bounds in the hours
        where they can hold, and over the floor (the least reachable value) where not."""
        if self.upper is None or self.floor is None or self.reachable is None:
            none = np.zeros(value.shape[:-2])
            return none, none
        # a bound of +inf adds exactly 0 where it does not apply, as np.where would
        over = np.maximum(value - np.where(self.reachable, self.upper, np.inf), 0.0)
        under = np.maximum(value - np.where(self.reachable, np.inf, self.floor), 0.0)
        return over.sum(axis=(-2, -1)), under.sum(axis=(-2, -1))


def _variance(values: np.ndarray) -> np.ndarray:
    """``values.var(axis=-1)``, the same operations in the same order, in place on a copy."""
    x = np.array(values, dtype=float)
    mean = x.sum(axis=-1, keepdims=True)
    mean /= x.shape[-1]
    np.subtract(x, mean, out=x)
    np.multiply(x, x, out=x)
    result: np.ndarray = x.sum(axis=-1) / x.shape[-1]
    return result
