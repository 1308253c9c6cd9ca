"""What the operator and the peer grid multipliers share (:mod:`agents.consensus.grid_multipliers`).

The checks of alpha and of the flow signs, and :class:`GridMultipliersBase`: the
constraints, alpha, mu_max, signs, excess, prices and the frame of one update; each
mode supplies its ascent step and its price shift.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from agents.consensus.grid_constraint import MIN_KINDS, GridConstraint, finite_float


def check_alpha(label: str, alpha: float | np.ndarray | Sequence[float], k: int) -> np.ndarray:
    """``alpha`` broadcast to (k,), finite and >= 0."""
    try:
        a = np.array(np.broadcast_to(np.asarray(alpha, dtype=np.float64), (k,)))
    except (TypeError, ValueError):
        raise ValueError(f"{label}.alpha must be a number or {k} numbers, got {alpha!r}") from None
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"{label}.alpha must be finite and >= 0, got {alpha!r}")
    return a


def check_signs(where: str, signs: np.ndarray | Sequence[float], k: int) -> np.ndarray:
    """``signs`` as a float array (K,) whose entries are +1, -1, 0 or not finite."""
    try:
        arr = np.array(signs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be {k} numbers (+1 or -1), got {signs!r}") from None
    if arr.shape != (k,):
        raise ValueError(f"{where} must have shape ({k},), got {arr.shape}")
    finite = np.isfinite(arr)
    bad = finite & (arr != 1.0) & (arr != -1.0) & (arr != 0.0)
    if bad.any():
        raise ValueError(f"{where} entries must be +1 or -1 (0 or NaN: keep the previous "
                         f"sign), got {arr[bad][:10].tolist()} at constraints "
                         f"{np.flatnonzero(bad)[:10].tolist()}")
    return arr


class GridMultipliersBase(ABC):
    """What both modes share: the constraints, alpha, mu_max, signs, excess, prices and
    the update's frame (:meth:`update`); a mode supplies its ascent step and its price."""

    _step: int  # updates since the last reset (set by each mode's reset)

    def __init__(
        self,
        constraints: Sequence[GridConstraint],
        alpha: float | np.ndarray | Sequence[float],
        mu_max: float,
    ) -> None:
        label = type(self).__name__
        constraints = tuple(constraints)
        if not constraints:
            raise ValueError(f"{label}.constraints must hold at least one constraint")
        for c in constraints:
            if not isinstance(c, GridConstraint):
                raise TypeError(f"{label}.constraints must be GridConstraint, got "
                                f"{type(c).__name__}")
        names = [c.name for c in constraints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{label}.constraints: duplicate names {dup}")
        sizes = {c.n_buildings for c in constraints}
        if len(sizes) != 1:
            raise ValueError(f"{label}.constraints: weights over different numbers "
                             f"of buildings {sorted(sizes)}")
        self.constraints = constraints
        self.n_constraints = len(constraints)
        self.n_buildings = sizes.pop()
        self.alpha = check_alpha(label, alpha, self.n_constraints)
        mu_max = finite_float(f"{label}.mu_max", mu_max)
        if mu_max <= 0:
            raise ValueError(f"{label}.mu_max must be > 0, got {mu_max}")
        self.mu_max = mu_max
        self.names = tuple(names)
        self.weights = np.stack([c.weights for c in constraints])  # (K, N)
        self.weights.setflags(write=False)
        self._limit = np.array([c.limit for c in constraints])
        self._scale = np.array([c.scale for c in constraints])
        self._min_kind = np.array([c.kind in MIN_KINDS for c in constraints])
        self._signs = np.ones(self.n_constraints)

    # --- signs ------------------------------------------------------------------------

    @property
    def signs(self) -> np.ndarray:
        """The sign (K,) of each constraint's weights, +1 or -1 (a copy; module docstring)."""
        result: np.ndarray = self._signs.copy()
        return result

    def _new_signs(self, sign: np.ndarray | Sequence[float] | None) -> np.ndarray:
        """The signs after ``update(..., sign)``: non-finite or 0 entries keep the old one."""
        if sign is None:
            result: np.ndarray = self._signs.copy()
            return result
        arr = check_signs("sign", sign, self.n_constraints)
        keep = ~np.isfinite(arr) | (arr == 0.0)
        return np.where(keep, self._signs, arr)

    def _signs_from_snapshot(self, snap: dict[str, np.ndarray]) -> np.ndarray:
        """The snapshot's signs (all +1 for a snapshot saved before signs existed)."""
        if "signs" not in snap:
            return np.ones(self.n_constraints)
        arr = check_signs("grid multiplier snapshot 'signs'", snap["signs"], self.n_constraints)
        if not np.isin(arr, (1.0, -1.0)).all():
            raise ValueError(f"grid multiplier snapshot 'signs' must be +1 or -1, got {arr}")
        return arr

    def _signed_weights(self) -> np.ndarray:
        """``sign_k W_k`` (K, N)."""
        result: np.ndarray = self._signs[:, None] * self.weights
        return result

    # --- measurements and prices --------------------------------------------------------

    def excess(self, measured: np.ndarray | Sequence[float]) -> np.ndarray:
        """Normalised excess e (K,) of the measured quantities (NaN where not finite)."""
        h = np.asarray(measured, dtype=np.float64)
        if h.shape != (self.n_constraints,):
            raise ValueError(f"measured must have shape ({self.n_constraints},), got {h.shape}")
        h = np.where(np.isfinite(h), h, np.nan)
        result: np.ndarray = (np.where(self._min_kind, self._limit - h, h - self._limit)
                              / self._scale)
        return result

    @abstractmethod
    def price_shift(self) -> np.ndarray:
        """What the grid constraints add to each building's lambda, (N,)."""

    @property
    @abstractmethod
    def mu(self) -> np.ndarray:
        """The multipliers (K,) (peer mode: the mean over each cluster)."""

    @abstractmethod
    def _ascend(self, e: np.ndarray) -> None:
        """Move the multipliers by one step on the normalised excess ``e`` (K,); a
        non-finite ``e[k]`` leaves constraint k's multipliers unchanged."""

    @property
    def step(self) -> int:
        """Number of updates since the last reset."""
        result: int = self._step
        return result

    def update(
        self,
        measured: np.ndarray | Sequence[float],
        sign: np.ndarray | Sequence[float] | None = None,
    ) -> np.ndarray:
        """One step from the quantities measured at the previous step; returns the new mu.

        ``measured[k]``: constraint k's quantity (loading %, voltage pu, kW). A
        non-finite entry leaves that constraint's multipliers unchanged. ``sign`` (K,):
        the direction of each constraint's flow, +1 or -1, re-signing its weights from
        now on (None: keep every sign; 0 or non-finite: keep that one). Nothing changes
        when an argument is refused.
        """
        e = self.excess(measured)
        signs = self._new_signs(sign)
        self._ascend(e)
        self._signs = signs
        self._step += 1
        return self.mu

    def effective_lambda(self, lam: np.ndarray | float, lambda_max: float,
                         lambda_min: float = 0.0) -> np.ndarray:
        """``clip(lam + price_shift(), lambda_min, lambda_max)`` (N,), the multiplier the
        policies see (``lambda_min <= 0``; below 0 the grid asks for consumption)."""
        lam_max = finite_float("lambda_max", lambda_max)
        if lam_max <= 0:
            raise ValueError(f"lambda_max must be > 0, got {lam_max}")
        lam_min = finite_float("lambda_min", lambda_min)
        if lam_min > 0:
            raise ValueError(f"lambda_min must be <= 0, got {lam_min}")
        lam = np.asarray(lam, dtype=np.float64)
        if lam.shape not in ((), (self.n_buildings,)):
            raise ValueError(f"lam must be a number or have shape ({self.n_buildings},), "
                             f"got {lam.shape}")
        if not np.isfinite(lam).all():
            raise ValueError("lam must be finite")
        result: np.ndarray = np.clip(lam + self.price_shift(), lam_min, lam_max)
        return result

    def _initial_mu(self, mu: np.ndarray | float | None) -> np.ndarray:
        """``mu`` of :meth:`reset` as (K,) (default 0), checked against [0, mu_max]."""
        value = 0.0 if mu is None else mu
        try:
            arr = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64),
                                           (self.n_constraints,)))
        except (TypeError, ValueError):
            raise ValueError(f"mu must be a number or {self.n_constraints} numbers, "
                             f"got {mu!r}") from None
        self._check_mu(arr)
        return arr

    def _check_mu(self, arr: np.ndarray) -> None:
        if not np.isfinite(arr).all() or (arr < 0).any() or (arr > self.mu_max).any():
            raise ValueError(f"mu must be finite and lie in [0, {self.mu_max}], got {arr}")
