"""A grid constraint as the buildings' multipliers see it, and its normalised excess.

With ``h`` the measured quantity (loading %, voltage pu, district kW), ``L`` the limit
and ``s > 0`` the scale::

    e = (h - L) / s       loading_max, voltage_max, peak_kw_max
    e = (L - h) / s       voltage_min

``e > 0`` means violated. The kinds are the feeder side's
(:data:`grid_models.constraint_probe.SPEC_KINDS`); the weights come from
:func:`grid_models.constraint_probe.constraint_weights`. The multipliers themselves:
:mod:`agents.consensus.grid_multipliers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grid_models.constraint_probe import SPEC_KINDS

MIN_KINDS = ("voltage_min",)  # violated below the limit


def finite_float(where: str, value: float) -> float:
    """``value`` as a finite float; a ValueError naming ``where`` otherwise."""
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
        kind: one of :data:`~grid_models.constraint_probe.SPEC_KINDS`.
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
        if self.kind not in SPEC_KINDS:
            raise ValueError(f"{label}: kind must be one of {', '.join(SPEC_KINDS)}, "
                             f"got {self.kind!r}")
        limit = finite_float(f"{label}: limit", self.limit)
        if self.kind in ("voltage_max", "voltage_min") and limit <= 0:
            raise ValueError(f"{label}: limit of a voltage constraint must be > 0 pu, got {limit}")
        scale = finite_float(f"{label}: scale", self.scale)
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
        """Number of buildings N, the length of ``weights``."""
        return int(self.weights.shape[0])


def normalised_excess(constraint: GridConstraint, measured: float) -> float:
    """``(measured - limit) / scale`` (``(limit - measured) / scale`` for voltage_min).

    Positive: the constraint is violated. A non-finite measurement gives NaN.
    """
    measured = float(measured)
    if constraint.kind in MIN_KINDS:
        return (constraint.limit - measured) / constraint.scale
    return (measured - constraint.limit) / constraint.scale

