"""Grid-constraint multipliers ("operator" duals) and the buildings' effective lambda.

Grid limits (a transformer's or a line's loading, a bus voltage band, a district peak)
become constraints the buildings act on without new policies: each constraint k gets a
multiplier ``mu_k >= 0`` and building i's policy is fed the effective multiplier
``clip(lambda_i + sum_k W_ki mu_k, 0, lambda_max)`` in place of its own lambda_i
(:mod:`agents.duals`).

Constraints (:class:`GridConstraint`), with ``h_k`` the measured quantity (loading %,
voltage pu, district kW), ``L_k`` its limit and ``s_k > 0`` its scale::

    e_k = (h_k - L_k) / s_k       loading_max, voltage_max, peak_kw_max
    e_k = (L_k - h_k) / s_k       voltage_min

``e_k > 0`` means violated (:func:`normalised_excess`). The scale makes the excesses of
different constraints comparable (e.g. the limit itself for a loading or a peak, the
half-width of the voltage band, 0.05 pu, for a voltage).

Operator update (:class:`OperatorMultipliers`), a projected dual ascent on the
normalised constraint, per constraint step ``alpha_k``::

    mu_k <- clip(mu_k + alpha_k e_k(h_k), 0, mu_max)
    lambda_eff_i = clip(lambda_i + sum_k W_ki mu_k, 0, lambda_max)

A measurement that is not finite (NaN from a failed power flow step) carries no
information about the constraint: that mu_k keeps its value (it is neither raised,
lowered nor turned into NaN).

**Time shift.** The constraint is measured by the power flow *after* the buildings
acted, so the multipliers the buildings see at step t come from ``update`` with the
measurement of step t-1 (at step 0: the initial mu, 0 by default).

**Why the policies need no retraining (the Lagrangian).** The fleet minimises its cost
subject to the district energy limit and the grid limits,
``min sum_i cost_i(g_i)  s.t.  sum_i g_i <= c,  h_k(p) <= L_k``, with ``g_i`` building
i's grid energy and p the buildings' consumption. Its Lagrangian is::

    L = sum_i cost_i(g_i) + lambda (sum_i g_i - c) + sum_k mu_k (h_k(p) - L_k)

With ``h_k`` linearised around the operating point, ``h_k(p) ~ h_k(p0) + sum_i
(dh_k/dp_i) (p_i - p0_i)`` and, per step, ``dL/dg_i = price_i + lambda +
sum_k mu_k dh_k/dp_i``. A building that faces ``lambda_i + sum_k W_ki mu_k`` with
``W_ki`` proportional to ``dh_k/dp_i`` therefore faces the joint problem's marginal
price of consumption: the shipped state-augmented policies, trained to respond to
lambda, respond to the grid constraints too. The factor between ``W_k`` and
``dh_k/dp`` (here ``1 / max_i |dh_k/dp_i|``, so the most concerned building has
``|W_ki| = 1``) and the scale ``s_k`` of the excess are absorbed into mu_k, which is then
in units of lambda.

**Signs of the weights.** ``W_ki > 0`` where more consumption of building i worsens
constraint k (loading of an element that imports power, under-voltage, the peak), so a
positive mu_k raises the building's price and makes it consume less; ``W_ki < 0`` where
more consumption relieves it (over-voltage under PV export: consumption lowers the
voltage), so mu_k lowers the building's price (clipped at 0) and makes it consume more.
With ``vm_pu_per_kw`` (negative under load, :mod:`grid_models.sensitivity`):
``voltage_max: W = vm / max|vm|`` (negative) and ``voltage_min: W = -vm / max|vm|``
(positive); a loading ``W = loading_pp_per_kw / max|.|`` is positive downstream of an
importing element and negative where the element carries reverse flow that consumption
relieves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # agents does not import grid_models at run time
    from grid_models.sensitivity import Sensitivities

CONSTRAINT_KINDS = ("loading_max", "voltage_max", "voltage_min", "peak_kw_max")
_MIN_KINDS = ("voltage_min",)  # violated below the limit


def _finite_float(where: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got {value!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{where} must be finite, got {value}")
    return value


@dataclass(frozen=True, eq=False)
class GridConstraint:
    """One grid limit the buildings act on.

    Attributes:
        name: label for reports, e.g. ``"trafo 0 loading"`` or ``"bus 17 voltage max"``.
        kind: one of ``CONSTRAINT_KINDS``.
        limit: the limit, in % (loading), pu (voltage) or kW (peak).
        scale: > 0, normalises the excess (same unit as ``limit``).
        weights: (N,) signed weight per building: > 0 where more consumption of the
            building worsens the constraint, < 0 where it relieves it (module docstring).
    """

    name: str
    kind: str
    limit: float
    scale: float
    weights: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"GridConstraint.name must be a non-empty string, got {self.name!r}")
        label = f"GridConstraint {self.name!r}"
        if self.kind not in CONSTRAINT_KINDS:
            raise ValueError(f"{label}: kind must be one of {', '.join(CONSTRAINT_KINDS)}, "
                             f"got {self.kind!r}")
        limit = _finite_float(f"{label}: limit", self.limit)
        if self.kind in ("voltage_max", "voltage_min") and limit <= 0:
            raise ValueError(f"{label}: limit of a voltage constraint must be > 0 pu, got {limit}")
        scale = _finite_float(f"{label}: scale", self.scale)
        if scale <= 0:
            raise ValueError(f"{label}: scale must be > 0, got {scale}")
        try:
            weights = np.array(self.weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{label}: weights must be numbers, got {self.weights!r}") from None
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"{label}: weights must have shape (N,) with N >= 1, "
                             f"got shape {weights.shape}")
        if not np.isfinite(weights).all():
            raise ValueError(f"{label}: weights must be finite (buildings "
                             f"{np.flatnonzero(~np.isfinite(weights))[:10].tolist()} are not)")
        if not weights.any():
            raise ValueError(f"{label}: weights are all zero, no building acts on this "
                             "constraint")
        weights.setflags(write=False)
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "weights", weights)

    @property
    def n_buildings(self) -> int:
        return int(self.weights.shape[0])


def normalised_excess(constraint: GridConstraint, measured: float) -> float:
    """``(measured - limit) / scale`` (``(limit - measured) / scale`` for voltage_min).

    Positive: the constraint is violated. A non-finite measurement gives NaN.
    """
    measured = float(measured)
    if constraint.kind in _MIN_KINDS:
        return (constraint.limit - measured) / constraint.scale
    return (measured - constraint.limit) / constraint.scale


# -- weights ---------------------------------------------------------------------------


def _unit_max(row: np.ndarray, what: str) -> np.ndarray:
    row = np.asarray(row, dtype=np.float64)
    if not np.isfinite(row).all():
        raise ValueError(f"sensitivities of {what} are not finite")
    peak = float(np.abs(row).max()) if row.size else 0.0
    if peak == 0.0:
        raise ValueError(f"no building moves {what} (all sensitivities are zero)")
    return row / peak


def loading_weights(sens: Sensitivities, element: tuple[str, int]) -> np.ndarray:
    """Weights of a loading_max constraint: ``loading_pp_per_kw[k] / max_i |.|``."""
    k = sens.element_index(element)
    return _unit_max(sens.loading_pp_per_kw[k], f"the loading of {element[0]} {element[1]}")


def voltage_weights(sens: Sensitivities, bus: int, kind: str) -> np.ndarray:
    """Weights of a voltage constraint at ``bus``.

    ``voltage_max``: ``vm_pu_per_kw[b] / max|.|`` (negative under load: consumption lowers
    the voltage and relieves an over-voltage); ``voltage_min``: ``-vm_pu_per_kw[b] /
    max|.|`` (positive: consumption worsens an under-voltage).
    """
    if kind not in ("voltage_max", "voltage_min"):
        raise ValueError(f"kind must be 'voltage_max' or 'voltage_min', got {kind!r}")
    w = _unit_max(sens.vm_pu_per_kw[sens.bus_index(bus)], f"the voltage of bus {bus}")
    return w if kind == "voltage_max" else -w


def peak_weights(n_buildings: int) -> np.ndarray:
    """Weights of a district peak_kw_max constraint: every building's kW counts once."""
    n = int(n_buildings)
    if n < 1:
        raise ValueError(f"n_buildings must be >= 1, got {n_buildings}")
    return np.ones(n)


def weights_from_sensitivities(
    sens: Sensitivities,
    kind: str,
    *,
    element: tuple[str, int] | None = None,
    bus: int | None = None,
) -> np.ndarray:
    """Weights (N,) of a constraint of ``kind`` from linearised sensitivities.

    ``loading_max`` needs ``element`` (e.g. ``("trafo", 0)``), the voltage kinds need
    ``bus``; ``peak_kw_max`` gives ones. The most concerned building has ``|w| = 1``.
    """
    if kind == "loading_max":
        if element is None:
            raise ValueError("kind 'loading_max' needs element=(table, index)")
        return loading_weights(sens, element)
    if kind in ("voltage_max", "voltage_min"):
        if bus is None:
            raise ValueError(f"kind {kind!r} needs bus=")
        return voltage_weights(sens, bus, kind)
    if kind == "peak_kw_max":
        return peak_weights(sens.n_buildings)
    raise ValueError(f"kind must be one of {', '.join(CONSTRAINT_KINDS)}, got {kind!r}")


def membership_weights(mask: np.ndarray | Sequence[bool], sign: float = 1.0) -> np.ndarray:
    """Topology-only weights: ``sign`` for the buildings in ``mask`` (downstream), 0 else.

    ``mask`` as from :func:`grid_models.sensitivity.membership`; ``sign = -1`` for a
    voltage_max constraint (consumption relieves it).
    """
    m = np.asarray(mask)
    if m.ndim != 1 or m.dtype.kind not in "bui":
        raise ValueError(f"mask must be a 1-D boolean array, got dtype {m.dtype}, shape {m.shape}")
    if sign not in (1.0, -1.0):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    return np.where(m.astype(bool), float(sign), 0.0)


# -- the operator's multipliers --------------------------------------------------------


class OperatorMultipliers:
    """Multipliers mu (K,) of K grid constraints over N buildings (module docstring).

    Arguments:
        constraints: the K >= 1 constraints, all over the same N buildings, distinct names.
        alpha: step of mu per unit of normalised excess, a scalar or one per constraint,
            finite and >= 0.
        mu_max: upper bound of every mu_k, finite and > 0.
    """

    def __init__(
        self,
        constraints: Sequence[GridConstraint],
        alpha: float | np.ndarray | Sequence[float],
        mu_max: float,
    ) -> None:
        constraints = tuple(constraints)
        if not constraints:
            raise ValueError("OperatorMultipliers.constraints must hold at least one constraint")
        for c in constraints:
            if not isinstance(c, GridConstraint):
                raise TypeError("OperatorMultipliers.constraints must be GridConstraint, got "
                                f"{type(c).__name__}")
        names = [c.name for c in constraints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"OperatorMultipliers.constraints: duplicate names {dup}")
        sizes = {c.n_buildings for c in constraints}
        if len(sizes) != 1:
            raise ValueError("OperatorMultipliers.constraints: weights over different numbers "
                             f"of buildings {sorted(sizes)}")
        self.constraints = constraints
        self.n_constraints = k = len(constraints)
        self.n_buildings = sizes.pop()
        try:
            a = np.array(np.broadcast_to(np.asarray(alpha, dtype=np.float64), (k,)))
        except (TypeError, ValueError):
            raise ValueError(f"OperatorMultipliers.alpha must be a number or {k} numbers, "
                             f"got {alpha!r}") from None
        if not np.isfinite(a).all() or (a < 0).any():
            raise ValueError(f"OperatorMultipliers.alpha must be finite and >= 0, got {alpha!r}")
        self.alpha = a
        mu_max = _finite_float("OperatorMultipliers.mu_max", mu_max)
        if mu_max <= 0:
            raise ValueError(f"OperatorMultipliers.mu_max must be > 0, got {mu_max}")
        self.mu_max = mu_max
        self.names = tuple(names)
        self.weights = np.stack([c.weights for c in constraints])  # (K, N)
        self.weights.setflags(write=False)
        self._limit = np.array([c.limit for c in constraints])
        self._scale = np.array([c.scale for c in constraints])
        self._min_kind = np.array([c.kind in _MIN_KINDS for c in constraints])
        self.reset()

    # --- state ------------------------------------------------------------------------

    def reset(self, mu: np.ndarray | float | None = None) -> np.ndarray:
        """Set mu (default 0) and the step count to 0; returns a copy of mu."""
        value = 0.0 if mu is None else mu
        try:
            arr = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64),
                                           (self.n_constraints,)))
        except (TypeError, ValueError):
            raise ValueError(f"mu must be a number or {self.n_constraints} numbers, "
                             f"got {mu!r}") from None
        self._check_mu(arr)
        self._mu = arr
        self._step = 0
        return self.mu

    def _check_mu(self, arr: np.ndarray) -> None:
        if not np.isfinite(arr).all() or (arr < 0).any() or (arr > self.mu_max).any():
            raise ValueError(f"mu must be finite and lie in [0, {self.mu_max}], got {arr}")

    @property
    def mu(self) -> np.ndarray:
        """The multipliers (K,), a copy."""
        return self._mu.copy()

    @property
    def step(self) -> int:
        """Number of updates since the last reset."""
        return self._step

    def snapshot(self) -> dict[str, np.ndarray]:
        """The state, as named arrays: ``restore(snapshot())`` on an instance built with
        the same constraints, alpha and mu_max continues bit for bit."""
        return {"mu": self._mu.copy(), "step": np.array(self._step, dtype=np.int64)}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Set the state saved by :meth:`snapshot`; shape and bounds are checked."""
        arr = np.array(snap["mu"], dtype=np.float64)
        if arr.shape != (self.n_constraints,):
            raise ValueError(f"grid multiplier snapshot 'mu': shape {arr.shape}, expected "
                             f"({self.n_constraints},)")
        self._check_mu(arr)
        self._mu = arr
        self._step = int(snap["step"])

    # --- the step ---------------------------------------------------------------------

    def excess(self, measured: np.ndarray | Sequence[float]) -> np.ndarray:
        """Normalised excess e (K,) of the measured quantities (NaN where not finite)."""
        h = np.asarray(measured, dtype=np.float64)
        if h.shape != (self.n_constraints,):
            raise ValueError(f"measured must have shape ({self.n_constraints},), got {h.shape}")
        h = np.where(np.isfinite(h), h, np.nan)
        return np.where(self._min_kind, self._limit - h, h - self._limit) / self._scale

    def update(self, measured: np.ndarray | Sequence[float]) -> np.ndarray:
        """One projected ascent step from the quantities measured at the previous step.

        ``measured[k]``: constraint k's quantity (loading %, voltage pu, kW). A
        non-finite entry leaves that mu_k unchanged. Returns a copy of the new mu.
        """
        e = self.excess(measured)
        ok = np.isfinite(e)
        stepped = np.clip(self._mu + self.alpha * np.where(ok, e, 0.0), 0.0, self.mu_max)
        self._mu = np.where(ok, stepped, self._mu)
        self._step += 1
        return self.mu

    def price_shift(self) -> np.ndarray:
        """``W^T mu`` (N,), what the grid constraints add to each building's lambda."""
        return self.weights.T @ self._mu

    def effective_lambda(self, lam: np.ndarray | float, lambda_max: float) -> np.ndarray:
        """``clip(lam + W^T mu, 0, lambda_max)`` (N,), the multiplier the policies see."""
        lam_max = _finite_float("lambda_max", lambda_max)
        if lam_max <= 0:
            raise ValueError(f"lambda_max must be > 0, got {lam_max}")
        lam = np.asarray(lam, dtype=np.float64)
        if lam.shape not in ((), (self.n_buildings,)):
            raise ValueError(f"lam must be a number or have shape ({self.n_buildings},), "
                             f"got {lam.shape}")
        if not np.isfinite(lam).all():
            raise ValueError("lam must be finite")
        return np.clip(lam + self.price_shift(), 0.0, lam_max)
