"""Training tariffs and multiplier draws: what a training episode sees (``cosim train``).

The CityLearn tariff is a function of the hour of day (0.21 $/kWh, 0.40-0.54 from
16 to 20 h), so a policy trained on it alone can read "expensive" from the clock
and never learn to read the price. Each episode therefore draws either the data's
tariff scaled by a random factor, or a synthetic time-of-use tariff with its own
levels and peak window. Off-peak and peak levels do not overlap, so a higher price
always means a dearer hour than the off-peak ones of the same episode.

Multipliers are drawn once per episode. Execution visits lambda near 0 most of the
time (the district limit is often slack) and nu near the building's backlog (with
eta = 1, nu integrates unmet demand), so the draws put mass near 0:

    x = 0                               with probability zero_share
    x = high * u**power, u ~ U[0, 1]    otherwise (for nu: low * u**power with
                                        probability negative_share)

``power = 1`` and ``zero_share = 0`` give the uniform draw over the range.
Pure numpy; every draw comes from the episode's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MultiplierDraw:
    """How one multiplier is drawn per episode over ``[low, high]`` (``low <= 0 <= high``
    for nu, ``0 <= low`` for lambda)."""

    low: float
    high: float
    zero_share: float = 0.0
    power: float = 1.0
    negative_share: float | None = None  # None: in proportion to |low| and high

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"MultiplierDraw: need low <= high, got [{self.low}, {self.high}]")
        if not 0.0 <= self.zero_share <= 1.0:
            raise ValueError(f"MultiplierDraw.zero_share must lie in [0, 1], got {self.zero_share}")
        if not self.power >= 1.0:
            raise ValueError(f"MultiplierDraw.power must be >= 1, got {self.power}")
        share = self.negative_share
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"MultiplierDraw.negative_share must lie in [0, 1], got {share}")

    def draw(self, rng: np.random.Generator) -> float:
        """One value in ``[low, high]``.

        0 with probability ``zero_share`` (when the range holds 0); otherwise uniform, or, with
        ``power > 1`` or a ``negative_share``, ``u ** power`` scaled out from the point of the
        range closest to 0.
        """
        lo, hi = self.low, self.high
        if self.zero_share and lo <= 0.0 <= hi and rng.random() < self.zero_share:
            return 0.0
        if self.power == 1.0 and self.negative_share is None:
            return float(rng.uniform(lo, hi))
        u = rng.random() ** self.power  # mass near 0
        if lo >= 0.0:
            return float(lo + (hi - lo) * u)
        if hi <= 0.0:
            return float(hi + (lo - hi) * u)
        neg = self.negative_share if self.negative_share is not None else -lo / (hi - lo)
        return float((lo if rng.random() < neg else hi) * u)


@dataclass(frozen=True)
class TariffDraw:
    """The tariff of a training episode.

    With probability ``synthetic_share`` a two-level time-of-use tariff: off-peak
    level ~ U[offpeak], peak level = off-peak + U[peak_extra], a peak window that
    starts at an hour ~ U{peak_start} and lasts ~ U{peak_hours} hours (it may wrap
    past midnight). Otherwise the data's tariff times a factor ~ U[data_scale].
    """

    synthetic_share: float = 0.0
    data_scale: tuple[float, float] = (1.0, 1.0)
    offpeak: tuple[float, float] = (0.15, 0.28)
    peak_extra: tuple[float, float] = (0.15, 0.40)
    peak_start: tuple[int, int] = (6, 21)
    peak_hours: tuple[int, int] = (2, 7)

    def __post_init__(self) -> None:
        if not 0.0 <= self.synthetic_share <= 1.0:
            raise ValueError(f"TariffDraw.synthetic_share must lie in [0, 1], "
                             f"got {self.synthetic_share}")
        for name in ("data_scale", "offpeak", "peak_extra", "peak_start", "peak_hours"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"TariffDraw.{name} must satisfy 0 <= low <= high, got {lo, hi}")
        if self.offpeak[0] <= 0 or self.peak_hours[0] < 1 or self.peak_start[1] > 23:
            raise ValueError("TariffDraw: need offpeak > 0, peak_hours >= 1, peak_start <= 23")
        if self.peak_hours[1] > 23:
            raise ValueError("TariffDraw.peak_hours must be <= 23 (an off-peak hour must remain)")

    def draw(self, rng: np.random.Generator, hour_of_day: np.ndarray,
             data_price: np.ndarray) -> np.ndarray:
        """Prices ($/kWh) at the given hours of day (one episode)."""
        if self.synthetic_share and rng.random() < self.synthetic_share:
            base = rng.uniform(*self.offpeak)
            peak = base + rng.uniform(*self.peak_extra)
            start = int(rng.integers(self.peak_start[0], self.peak_start[1] + 1))
            length = int(rng.integers(self.peak_hours[0], self.peak_hours[1] + 1))
            in_peak = (np.floor(hour_of_day).astype(int) - start) % 24 < length
            return np.where(in_peak, peak, base)
        return np.asarray(data_price, dtype=np.float64) * rng.uniform(*self.data_scale)
