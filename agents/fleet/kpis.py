"""Fleet KPIs of docs/equations.md from a results table (``buildings.parquet``).

Definitions, with G_t = sum_i grid_kwh_i,t the district's grid energy of step t
and T the number of steps:

    total_cost                 sum of ``cost`` over buildings and steps ($)
    mean_district_grid_kwh     (1/T) sum_t G_t, to compare with ``limit_kwh`` (c per step)
    steps_over_limit           number of steps with G_t > c (by more than OVER_LIMIT_RTOL * c)
    final_avg_unmet_kwh        the paper's cumulative average unmet demand at the end,
                               (1/T) sum_t sum_i unmet_i,t; ``unmet`` = demand to serve
                               not served in the step (backlog carried on + dropped), so
                               demand postponed for k steps counts k times
    dropped_kwh                demand dropped above the backlog cap, total
    peak_district_import_kwh   max_t G_t (kWh per step); ``..._kw`` = that / dt_h
    peak_to_average            max_t G_t / mean_t G_t (None when the mean is 0)
    ramping_kwh                sum_t |G_t - G_{t-1}|
    lambda_spread_last10pct    consensus error: max over the last ceil(T/10) steps of the
                               spread S_t = max_i lambda_i,t - min_i lambda_i,t
    lambda_spread_last10pct_mean   the mean of S_t over those steps
    lambda_spread_last10pct_rel    lambda_spread_last10pct / lambda_max
    final_lambda               lambda per building at the last step (building order)
    agents_at_lambda_max       how many of those lie within 1e-9 of lambda_max

The trajectory KPIs (:func:`trajectory_kpis`, ``kpis.json``'s ``trajectory``; what the
study table adds):

    final_backlog_kwh          sum_i backlog_i,T, the fleet's backlog after the last step
    unmet_slope_first_third    least-squares slope of the cumulative average unmet demand
    unmet_slope_last_third     over the first / last max(2, T // 3) steps
    double_share_at_lambda_max     share of (steps x ``double`` agents) with lambda within
                                   1e-9 of lambda_max
    double_share_near_lambda_max   ... with lambda >= 0.9 lambda_max

Labels and units of every KPI: :mod:`agents.fleet.kpi_labels`.

"At the last step" means the values the agents used in the run's last step, the
last ones the table holds (the dual update after the last step is not recorded).
The spread S_t is absolute (multiplier units): relative to the mean lambda it would
mean nothing where lambda is near 0. Buildings with no lambda (NaN) at t are left out
of S_t; a step where none has one has no S_t, and a KPI with none left is null.

:class:`FleetKpiStream` gives the same numbers, bit for bit, from a table read in
pieces of whole steps (only :data:`FLEET_KPI_COLUMNS`), so a table larger than memory
never has to be loaded: per-step sums are pandas' group sums of each step's rows, and
the totals are numpy's pairwise sums reproduced block by block (:class:`PairwiseSum`);
the lambda spread is kept as one number per step, S_t of each step's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from agents.fleet.kpi_labels import FLEET_KPI_LABELS

LAMBDA_MAX_ATOL = 1e-9

#: The unit of each fleet KPI (``kpis.json``'s ``units.fleet``), from the one label table.
FLEET_KPI_UNITS = {name: label.unit for name, label in FLEET_KPI_LABELS.items()}


#: The columns of the results table that the fleet KPIs read.
FLEET_KPI_COLUMNS = ("time", "building", "grid_kwh", "unmet_kwh", "cost", "dropped_kwh", "lambda")


def district_grid_kwh(df: pd.DataFrame) -> pd.Series:
    """G_t, the district's grid energy per step, indexed by ``time``."""
    return df.groupby("time", sort=True)["grid_kwh"].sum()


def _unmet_per_step(df: pd.DataFrame) -> pd.Series:
    return df.groupby("time", sort=True)["unmet_kwh"].sum()


def _cumulative_average(per_step: pd.Series) -> pd.Series:
    return per_step.cumsum() / np.arange(1, len(per_step) + 1)


def cumulative_average_unmet_kwh(df: pd.DataFrame) -> pd.Series:
    """(1/t) sum_{tau <= t} sum_i unmet_i,tau per step t (t counted from 1)."""
    return _cumulative_average(_unmet_per_step(df))


def lambda_spread_per_step(df: pd.DataFrame) -> pd.Series:
    """S_t = max_i lambda_i,t - min_i lambda_i,t per step, indexed by ``time`` (NaN
    lambdas left out; NaN where a step has none)."""
    lam = df.groupby("time", sort=True)["lambda"]
    return lam.max() - lam.min()


def consensus_window_steps(steps: int) -> int:
    """How many of the last steps the consensus error looks at: ceil(10 % of ``steps``),
    at least 1 (in integer arithmetic)."""
    return max(1, -(-int(steps) // 10))


def lambda_spread_kpis(spread: np.ndarray | pd.Series, lambda_max: float) -> dict[str, Any]:
    """``lambda_spread_last10pct`` (max), ``..._mean`` and ``..._rel`` (max / lambda_max)
    of the per-step spread ``spread`` (all steps, in time order); None where undefined."""
    s = np.asarray(spread, dtype=np.float64)
    window = s[len(s) - consensus_window_steps(len(s)):] if len(s) else s
    window = window[~np.isnan(window)]
    if window.size == 0:
        return dict.fromkeys(("lambda_spread_last10pct", "lambda_spread_last10pct_mean",
                              "lambda_spread_last10pct_rel"))
    peak = float(window.max())
    return {
        "lambda_spread_last10pct": peak,
        "lambda_spread_last10pct_mean": float(window.mean()),
        "lambda_spread_last10pct_rel": peak / lambda_max if lambda_max > 0 else None,
    }


def _check(rows: int, dt_h: float) -> None:
    if rows == 0:
        raise ValueError("fleet_kpis: the results table is empty")
    if not dt_h > 0:
        raise ValueError(f"fleet_kpis: dt_h must be > 0, got {dt_h}")


#: G_t above c by less than this share of c is float rounding, not a violation (a
#: schedule planned at exactly c, like the per-step oracle's, sums to c +- 1e-15).
OVER_LIMIT_RTOL = 1e-9


def _kpi_values(grid: np.ndarray, final_avg_unmet: float, total_cost: float, dropped: float,
                n_buildings: int, lam: np.ndarray, spread: np.ndarray, limit_kwh: float,
                dt_h: float, lambda_max: float) -> dict[str, Any]:
    """The KPI dict from per-step G_t and lambda spread, totals and the last step's
    lambdas."""
    steps = int(grid.shape[0])
    mean_grid = float(grid.mean())
    peak = float(grid.max())
    return {
        "n_buildings": int(n_buildings),
        "steps": steps,
        "total_cost": float(total_cost),
        "mean_district_grid_kwh": mean_grid,
        "limit_kwh": float(limit_kwh),
        "steps_over_limit": int((grid > limit_kwh * (1.0 + OVER_LIMIT_RTOL)).sum()),
        "final_avg_unmet_kwh": float(final_avg_unmet),
        "dropped_kwh": float(dropped),
        "peak_district_import_kwh": peak,
        "peak_district_import_kw": peak / dt_h,
        "peak_to_average": peak / mean_grid if mean_grid > 0 else None,
        "ramping_kwh": float(np.abs(np.diff(grid)).sum()),
        **lambda_spread_kpis(spread, lambda_max),
        "final_lambda": [float(x) for x in lam],
        "agents_at_lambda_max": int((lam >= lambda_max - LAMBDA_MAX_ATOL).sum()),
    }


def fleet_kpis(
    df: pd.DataFrame, limit_kwh: float, dt_h: float, lambda_max: float = 15.0
) -> dict[str, Any]:
    """The fleet KPIs named in ``FLEET_KPI_UNITS`` (plain Python values, JSON-ready)."""
    _check(len(df), dt_h)
    last = df[df["time"] == df["time"].max()]
    return _kpi_values(
        district_grid_kwh(df).to_numpy(), cumulative_average_unmet_kwh(df).iloc[-1],
        df["cost"].sum(), df["dropped_kwh"].sum(), df["building"].nunique(),
        last["lambda"].to_numpy(dtype=np.float64), lambda_spread_per_step(df).to_numpy(),
        limit_kwh, dt_h, lambda_max)


# --- the same from a table read in pieces ----------------------------------------------------

#: Values summed at once by :class:`PairwiseSum` (at least numpy's block of 128).
PAIRWISE_BLOCK = 1 << 22


def _pairwise_split(n: int) -> int:
    """Where numpy's pairwise summation splits ``n`` > 128 values (``numpy/_core/src/umath/
    loops_utils.h.src``: ``n2 = n / 2; n2 -= n2 % 8``)."""
    half = n // 2
    return half - half % 8


def _pairwise_blocks(n: int, block: int) -> list[int]:
    if n <= block:
        return [n]
    half = _pairwise_split(n)
    return _pairwise_blocks(half, block) + _pairwise_blocks(n - half, block)


def _pairwise_combine(n: int, block: int, sums: Iterator[float]) -> float:
    if n <= block:
        result: float = next(sums)
        return result
    half = _pairwise_split(n)
    left = _pairwise_combine(half, block, sums)
    return left + _pairwise_combine(n - half, block, sums)


def _nansum(values: np.ndarray) -> float:
    """``pd.Series(values).sum()``: NaN counted as 0, the rest summed by numpy."""
    nan = np.isnan(values)
    if nan.any():
        values = np.where(nan, 0.0, values)
    result: float = values.sum()
    return result


class PairwiseSum:
    """The sum of ``n`` float64 values that arrive in pieces, equal to ``np.sum`` (and
    pandas' ``Series.sum``, NaN as 0) of all of them at once, bit for bit.

    numpy sums a contiguous array pairwise: more than 128 values are split in two at
    :func:`_pairwise_split` and the halves' sums added. Splitting the same way down to
    blocks of at most ``block`` values, summing each block with numpy and adding the
    block sums along the same tree gives the very same number while holding one block.
    ``tests/cosim/test_streamed_results.py`` checks it against ``np.sum``.
    """

    def __init__(self, n: int, block: int | None = None) -> None:
        block = PAIRWISE_BLOCK if block is None else block
        if block < 128:
            raise ValueError(f"PairwiseSum: block must be >= 128, got {block}")
        self.n, self.block = int(n), int(block)
        self._sizes = _pairwise_blocks(self.n, self.block)
        self._sums: list[float] = []
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._seen = 0

    def add(self, values: ArrayLike) -> None:
        """Take the next values (flattened), in order.

        Raises:
            ValueError: if more than the ``n`` announced values arrive.
        """
        x = np.asarray(values, dtype=np.float64).ravel()
        self._seen += x.size
        if self._seen > self.n:
            raise ValueError(f"PairwiseSum: more than the {self.n} values announced")
        if x.size:
            self._pending.append(x)
            self._pending_n += x.size
        while len(self._sums) < len(self._sizes) and \
                self._pending_n >= self._sizes[len(self._sums)]:
            size = self._sizes[len(self._sums)]
            buf = self._pending[0] if len(self._pending) == 1 else (
                np.concatenate(self._pending) if self._pending else np.zeros(0))
            self._sums.append(_nansum(np.ascontiguousarray(buf[:size])))
            rest = buf[size:]
            self._pending = [rest] if rest.size else []
            self._pending_n = int(rest.size)

    def result(self) -> float:
        """The sum of all ``n`` values, NaN counted as 0.

        Raises:
            ValueError: if fewer than ``n`` values arrived.
        """
        if self._seen != self.n or len(self._sums) != len(self._sizes):
            raise ValueError(f"PairwiseSum: got {self._seen} of {self.n} values")
        return _pairwise_combine(self.n, self.block, iter(self._sums))


class StepTotals:
    """G_t and the unmet energy per step (and the backlog, where the pieces have it), from
    pieces of whole steps in time order."""

    def __init__(self) -> None:
        self._grid: list[pd.Series] = []
        self._unmet: list[pd.Series] = []
        self._backlog: list[pd.Series] = []

    def add(self, chunk: pd.DataFrame) -> None:
        """``chunk``: every row of its steps (columns ``time``, ``grid_kwh``, ``unmet_kwh``;
        ``backlog_kwh`` optional)."""
        self._grid.append(district_grid_kwh(chunk))
        self._unmet.append(_unmet_per_step(chunk))
        if "backlog_kwh" in chunk:
            self._backlog.append(chunk.groupby("time", sort=True)["backlog_kwh"].sum())

    @staticmethod
    def _joined(pieces: list[pd.Series]) -> pd.Series:
        if len(pieces) != 1:
            pieces[:] = [pd.concat(pieces)]
        series = pieces[0]
        if not series.index.is_monotonic_increasing or not series.index.is_unique:
            raise ValueError("StepTotals: pieces must hold whole steps, in time order")
        return series

    def district_grid_kwh(self) -> pd.Series:
        """As :func:`district_grid_kwh` of the whole table."""
        return self._joined(self._grid)

    def cumulative_average_unmet_kwh(self) -> pd.Series:
        """As :func:`cumulative_average_unmet_kwh` of the whole table."""
        return _cumulative_average(self._joined(self._unmet))

    def district_backlog_kwh(self) -> pd.Series:
        """The fleet's backlog per step (sum over buildings), from pieces with ``backlog_kwh``."""
        return self._joined(self._backlog)


class FleetKpiStream:
    """:func:`fleet_kpis` of a table of ``n_rows`` rows fed in pieces of whole steps.

    Each piece needs the columns :data:`FLEET_KPI_COLUMNS`; memory holds one piece, a
    few numbers per step (G_t, unmet, lambda spread S_t), the building ids and the last
    step's lambdas.
    """

    def __init__(self, n_rows: int, *, block: int | None = None) -> None:
        self.steps = StepTotals()
        self._rows = 0
        self._cost = PairwiseSum(n_rows, block)
        self._dropped = PairwiseSum(n_rows, block)
        self._buildings: set[object] = set()  # the ids as the table holds them
        self._last_time: Any = None  # a value of the "time" column (pandas' max() is Any)
        self._last_lambda: list[np.ndarray] = []
        self._spread: list[pd.Series] = []

    def add(self, chunk: pd.DataFrame) -> None:
        """Take the next piece of whole steps, in time order; an empty piece is ignored."""
        if chunk.empty:
            return
        self._rows += len(chunk)
        self.steps.add(chunk)
        self._cost.add(chunk["cost"].to_numpy(dtype=np.float64))
        self._dropped.add(chunk["dropped_kwh"].to_numpy(dtype=np.float64))
        self._buildings.update(chunk["building"].dropna().unique())
        self._spread.append(lambda_spread_per_step(chunk))
        t = chunk["time"].max()
        lam = chunk.loc[chunk["time"] == t, "lambda"].to_numpy(dtype=np.float64)
        if self._last_time is None or t > self._last_time:
            self._last_time, self._last_lambda = t, [lam]
        elif t == self._last_time:
            self._last_lambda.append(lam)

    def kpis(self, limit_kwh: float, dt_h: float, lambda_max: float = 15.0) -> dict[str, Any]:
        """As :func:`fleet_kpis` of the whole table."""
        _check(self._rows, dt_h)
        lam = np.concatenate(self._last_lambda)
        if len(self._spread) != 1:
            self._spread[:] = [pd.concat(self._spread)]
        spread = self._spread[0]
        if not spread.index.is_unique:
            raise ValueError("FleetKpiStream: pieces must hold whole steps, in time order")
        return _kpi_values(
            self.steps.district_grid_kwh().to_numpy(),
            self.steps.cumulative_average_unmet_kwh().iloc[-1],
            self._cost.result(), self._dropped.result(), len(self._buildings), lam,
            spread.to_numpy(), limit_kwh, dt_h, lambda_max)


# --- the trajectory KPIs (kpis.json's ``trajectory``: what the study table adds) ------------

#: "near lambda_max": at least this share of it
NEAR_LAMBDA_MAX = 0.9
#: The trajectory KPIs, in ``kpis.json``'s order (units: ``agents.fleet.kpi_labels``).
TRAJECTORY_KPIS = ("final_backlog_kwh", "unmet_slope_first_third", "unmet_slope_last_third",
                   "double_share_at_lambda_max", "double_share_near_lambda_max")


def _slope(y: np.ndarray) -> float:
    """The slope of a least-squares line through ``y`` over 0, 1, ... (0 for one value)."""
    x = np.arange(len(y), dtype=float)
    return float(np.polyfit(x, y, 1)[0]) if len(y) > 1 else 0.0


def unmet_slopes(cumulative_unmet: np.ndarray) -> tuple[float, float]:
    """The slopes of the cumulative average unmet demand over its first and last third
    (at least 2 steps each): does the backlog settle or keep growing."""
    third = max(2, len(cumulative_unmet) // 3)
    return _slope(cumulative_unmet[:third]), _slope(cumulative_unmet[-third:])


class DoubleShares:
    """How much of the run the ``double`` agents' lambda spent at lambda_max (within
    ``LAMBDA_MAX_ATOL``, as ``agents_at_lambda_max``) and at ``NEAR_LAMBDA_MAX`` of it
    or more: shares of (steps x double agents), fed pieces of whole steps in time order.

    ``classes``: each building's class, in the table's building order (the order of the
    first step's rows).
    """

    def __init__(self, classes: list[str], lambda_max: float) -> None:
        self.classes = list(classes)
        self.lambda_max = float(lambda_max)
        self._double: set[object] | None = None
        self._at = self._near = self._count = 0

    def add(self, chunk: pd.DataFrame) -> None:
        """Count the double agents' rows of ``chunk`` (columns ``time``, ``building``,
        ``lambda``)."""
        if chunk.empty:
            return
        if self._double is None:
            names = list(dict.fromkeys(chunk["building"]))
            self._double = {n for n, c in zip(names, self.classes, strict=False)
                            if c == "double"}
        lam = chunk.loc[chunk["building"].isin(self._double), "lambda"].to_numpy(np.float64)
        self._at += int((lam >= self.lambda_max - LAMBDA_MAX_ATOL).sum())
        self._near += int((lam >= NEAR_LAMBDA_MAX * self.lambda_max).sum())
        self._count += int(lam.size)

    def shares(self) -> tuple[float, float]:
        """(at lambda_max, near it); NaN without double agents."""
        if not self._count:
            return float("nan"), float("nan")
        return self._at / self._count, self._near / self._count


def trajectory_kpis(steps: StepTotals, shares: DoubleShares) -> dict[str, float]:
    """The KPIs of :data:`TRAJECTORY_KPIS` from a run's step totals (read with
    ``backlog_kwh``) and its :class:`DoubleShares`."""
    first, last = unmet_slopes(steps.cumulative_average_unmet_kwh().to_numpy())
    at, near = shares.shares()
    return {"final_backlog_kwh": float(steps.district_backlog_kwh().to_numpy()[-1]),
            "unmet_slope_first_third": first, "unmet_slope_last_third": last,
            "double_share_at_lambda_max": at, "double_share_near_lambda_max": near}
