"""Linearised grid limits for the oracle LP (``solve_oracle(..., grid_limits=...)``).

K limits, each linear in the buildings' net feeder consumption ``p_it`` (kW,
``(g_it - export_it) / dt_h``, negative when exporting, as ``StepResult.net_load_kw``):

    offset[t, k] + sum_i sensitivity[k, i] * p_it <= upper[k]      for every t, k

``offset[t, k]`` is the quantity at step t with zero net consumption of the fleet (e.g.
an element's loading with only the feeder's background load), ``sensitivity[k, i]`` its
change per kW of building i. A **lower** bound ``q >= q_min`` is written as the upper
bound ``-q <= -q_min``: negate offset, sensitivity and limit (the builder does this for
``voltage_min`` rows).

:func:`grid_limits_from_sensitivities` makes the rows from a
:class:`grid_models.sensitivity.Sensitivities` (a loading row per chosen element, a
``vm <= v_max`` and a ``vm >= v_min`` row per chosen bus) and per-step offsets that the
caller computes (e.g. from background-only power flows, or :func:`offsets_at` for a
single operating point).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from grid_models.sensitivity import ElementKey, Sensitivities


@dataclass(frozen=True, eq=False)
class LinearGridLimits:
    """K linearised limits ``offset[t] + sensitivity @ p_t <= upper`` (module docstring).

    * ``names`` (K,): e.g. ``"trafo 0 loading <= 100 %"``, ``"bus 3 vm >= 0.95 pu"``;
    * ``offset`` (T, K): the quantity at zero net fleet consumption, per step (a lower
      bound's row holds the negated quantity);
    * ``sensitivity`` (K, N): change per kW of building i's net consumption;
    * ``upper`` (K,): the limit (negated for a lower bound).
    """

    names: list[str]
    offset: np.ndarray
    sensitivity: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        names = [str(x) for x in self.names]
        object.__setattr__(self, "names", names)
        k = len(names)
        for field, ndim in (("offset", 2), ("sensitivity", 2), ("upper", 1)):
            arr = np.array(getattr(self, field), dtype=float)
            if arr.ndim != ndim:
                raise ValueError(f"LinearGridLimits.{field}: expected {ndim} dimensions, "
                                 f"got shape {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"LinearGridLimits.{field}: every value must be finite")
            arr.setflags(write=False)
            object.__setattr__(self, field, arr)
        if self.offset.shape[1] != k or self.offset.shape[0] < 1:
            raise ValueError(f"LinearGridLimits.offset: expected shape (T, {k}) for {k} "
                             f"names, got {self.offset.shape}")
        if self.sensitivity.shape[0] != k:
            raise ValueError(f"LinearGridLimits.sensitivity: expected shape ({k}, N) for {k} "
                             f"names, got {self.sensitivity.shape}")
        if self.upper.shape != (k,):
            raise ValueError(f"LinearGridLimits.upper: expected shape ({k},), got "
                             f"{self.upper.shape}")

    @property
    def n_limits(self) -> int:
        """Number of linearised limits K."""
        return len(self.names)

    @property
    def n_steps(self) -> int:
        """Number of steps T."""
        return int(self.offset.shape[0])

    @property
    def n_buildings(self) -> int:
        """Number of buildings N."""
        return int(self.sensitivity.shape[1])

    def value(self, net_load_kw: np.ndarray) -> np.ndarray:
        """The linearised quantities (T, K) for net consumption ``net_load_kw`` (T, N)."""
        p = np.asarray(net_load_kw, dtype=float)
        if p.shape != (self.n_steps, self.n_buildings):
            raise ValueError(f"net_load_kw: expected shape ({self.n_steps}, "
                             f"{self.n_buildings}), got {p.shape}")
        result: np.ndarray = self.offset + p @ self.sensitivity.T
        return result

    def describe(self, max_names: int = 8) -> str:
        """``"trafo 0 loading <= 100 %, ..."`` (at most ``max_names``, then a count)."""
        shown = ", ".join(self.names[:max_names])
        more = len(self.names) - max_names
        return shown + (f", ... ({len(self.names)} in all)" if more > 0 else "")


def _key_name(key: ElementKey) -> str:
    return f"{key[0]} {int(key[1])}"


def offsets_at(sens: Sensitivities, fleet_kw: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Zero-fleet (loading %, vm pu) of one operating point, extrapolated linearly.

    ``base - sensitivity @ fleet_kw`` where ``fleet_kw`` (N,) is the fleet's net
    consumption at which ``sens`` was measured (default zero: the base itself). A
    stand-in for background-only power flows when none are at hand.
    """
    p = np.zeros(sens.n_buildings) if fleet_kw is None else np.asarray(fleet_kw, float)
    loading, vm = sens.predict(-p)
    return loading, vm


def grid_limits_from_sensitivities(
    sens: Sensitivities,
    loading_offset_percent: np.ndarray | None,
    vm_offset_pu: np.ndarray | None,
    *,
    steps: int | None = None,
    loading_max_percent: float | None = 100.0,
    voltage_band: tuple[float, float] | None = (0.95, 1.05),
    elements: Sequence[ElementKey] | None = None,
    buses: Sequence[int] | None = None,
) -> LinearGridLimits:
    """Rows for :func:`agents.control.oracle.solve_oracle` from linearised sensitivities.

    Args:
        sens: the sensitivities (E elements, B buses, N buildings).
        loading_offset_percent: loading of every element of ``sens`` at zero fleet
            consumption, (T, E) per step or (E,) for every step; ``None`` only when no
            loading rows are asked for.
        vm_offset_pu: the same for the bus voltages, (T, B) or (B,).
        steps: T, needed when every offset given is 1-D.
        loading_max_percent: one ``loading <= max`` row per chosen element; ``None``: none.
        voltage_band: ``(v_min, v_max)``: a ``vm <= v_max`` and a ``vm >= v_min`` row
            (negated) per chosen bus; ``None``: none.
        elements: element keys (e.g. ``("trafo", 0)``), default all of ``sens``'s.
        buses: bus ids, default all of ``sens``'s.
    """
    elements = list(sens.element_keys) if elements is None else list(elements)
    buses = [int(b) for b in sens.bus_ids] if buses is None else [int(b) for b in buses]
    want_loading = loading_max_percent is not None and len(elements) > 0
    want_vm = voltage_band is not None and len(buses) > 0

    def per_step(arr: np.ndarray | None, width: int, field: str) -> np.ndarray | None:
        if arr is None:
            return None
        a = np.asarray(arr, dtype=float)
        if a.ndim == 1 and a.shape == (width,):
            return a[None, :]
        if a.ndim != 2 or a.shape[1] != width:
            raise ValueError(f"{field}: expected shape (T, {width}) or ({width},), "
                             f"got {a.shape}")
        return a

    lo = per_step(loading_offset_percent, len(sens.element_keys), "loading_offset_percent")
    vo = per_step(vm_offset_pu, len(sens.bus_ids), "vm_offset_pu")
    if want_loading and lo is None:
        raise ValueError("loading_offset_percent is needed for loading rows "
                         "(or pass loading_max_percent=None)")
    if want_vm and vo is None:
        raise ValueError("vm_offset_pu is needed for voltage rows (or pass voltage_band=None)")
    lengths = {a.shape[0] for a in (lo, vo) if a is not None and a.shape[0] > 1}
    if len(lengths) > 1:
        raise ValueError(f"loading_offset_percent and vm_offset_pu have different numbers "
                         f"of steps: {sorted(lengths)}")
    if lengths:
        t = lengths.pop()
        if steps is not None and int(steps) != t:
            raise ValueError(f"steps={steps} but the offsets have {t} steps")
    elif steps is None:
        raise ValueError("steps is needed when the offsets are constant (1-D)")
    else:
        t = int(steps)

    names: list[str] = []
    offset: list[np.ndarray] = []
    sensitivity: list[np.ndarray] = []
    upper: list[float] = []
    if want_loading:
        assert lo is not None and loading_max_percent is not None
        for key in elements:
            row = sens.element_index(key)
            names.append(f"{_key_name(key)} loading <= {loading_max_percent:g} %")
            offset.append(np.broadcast_to(lo[:, row], (t,)))
            sensitivity.append(sens.loading_pp_per_kw[row])
            upper.append(float(loading_max_percent))
    if want_vm:
        assert vo is not None and voltage_band is not None
        v_min, v_max = (float(v) for v in voltage_band)
        if not v_min < v_max:
            raise ValueError(f"voltage_band: need v_min < v_max, got {voltage_band}")
        for bus in buses:
            row = sens.bus_index(bus)
            names.append(f"bus {bus} vm <= {v_max:g} pu")
            offset.append(np.broadcast_to(vo[:, row], (t,)))
            sensitivity.append(sens.vm_pu_per_kw[row])
            upper.append(v_max)
            names.append(f"bus {bus} vm >= {v_min:g} pu")  # as -vm <= -v_min
            offset.append(-np.broadcast_to(vo[:, row], (t,)))
            sensitivity.append(-sens.vm_pu_per_kw[row])
            upper.append(-v_min)
    n = sens.n_buildings
    return LinearGridLimits(
        names=names,
        offset=np.stack(offset, axis=1) if offset else np.zeros((t, 0)),
        sensitivity=np.array(sensitivity).reshape(len(names), n),
        upper=np.array(upper, dtype=float),
    )
