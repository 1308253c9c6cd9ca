"""Grid KPIs of DESIGN.md section 8 from a sequence of power-flow results.

"Hours" count the steps in which *any* element is beyond the threshold, times
``dt_h``. Steps that did not converge are excluded from every other KPI (their
results are NaN) and counted in ``nonconverged_steps``. Over-loading is strictly
above the threshold; a voltage is outside a band when strictly below its lower or
above its upper bound. Extremes over no data (no converged step, no line) are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from grid_models.powerflow import BatchGridResult, GridResult

OVERLOAD_THRESHOLD_PERCENT = 100.0
#: Voltage bands (pu): the planning band and EN 50160's +-10 %.
VOLTAGE_BANDS_PU = {"095_105": (0.95, 1.05), "090_110": (0.90, 1.10)}

KPI_KEYS = (
    "steps",
    "nonconverged_steps",
    "trafo_overload_hours",
    "line_overload_hours",
    "max_trafo_loading_percent",
    "max_line_loading_percent",
    "hours_outside_095_105_pu",
    "hours_outside_090_110_pu",
    "min_vm_pu",
    "max_vm_pu",
    "losses_mwh",
)


def as_batch(
    results: BatchGridResult | GridResult | Sequence[GridResult] | Sequence[BatchGridResult],
) -> BatchGridResult:
    """One :class:`BatchGridResult` from any of the accepted result containers."""
    if isinstance(results, BatchGridResult):
        return results
    if isinstance(results, GridResult):
        return BatchGridResult.from_results([results])
    items = list(results)
    if not items:
        raise ValueError("no results given")
    batches = [r for r in items if isinstance(r, BatchGridResult)]
    if len(batches) == len(items):
        return BatchGridResult.concatenate(batches)
    steps = [r for r in items if isinstance(r, GridResult)]
    if len(steps) == len(items):
        return BatchGridResult.from_results(steps)
    raise TypeError("results must be GridResult or BatchGridResult objects, not a mix")


def _any_over(values: np.ndarray, threshold: float) -> np.ndarray:
    """Per step: does any element exceed the threshold (NaN never does)?"""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0], dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.any(values > threshold, axis=1)


def _nan_extreme(values: np.ndarray, fn: str) -> float:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    return float(getattr(np, fn)(finite))


def grid_kpis(
    results: BatchGridResult | GridResult | Sequence[GridResult] | Sequence[BatchGridResult],
    dt_h: float = 1.0,
    *,
    overload_threshold_percent: float = OVERLOAD_THRESHOLD_PERCENT,
) -> dict[str, float]:
    """Grid KPIs, keys of :data:`KPI_KEYS` (units in the names; counts are plain numbers)."""
    if not dt_h > 0:
        raise ValueError(f"dt_h must be > 0, got {dt_h}")
    batch = as_batch(results)
    ok = batch.converged
    vm = batch.bus_vm_pu[ok]
    kpis: dict[str, float] = {
        "steps": float(len(batch)),
        "nonconverged_steps": float((~ok).sum()),
        "trafo_overload_hours": float(
            _any_over(batch.trafo_loading_percent[ok], overload_threshold_percent).sum() * dt_h
        ),
        "line_overload_hours": float(
            _any_over(batch.line_loading_percent[ok], overload_threshold_percent).sum() * dt_h
        ),
        "max_trafo_loading_percent": _nan_extreme(batch.trafo_loading_percent[ok], "max"),
        "max_line_loading_percent": _nan_extreme(batch.line_loading_percent[ok], "max"),
    }
    for name, (low, high) in VOLTAGE_BANDS_PU.items():
        with np.errstate(invalid="ignore"):
            outside = (
                np.any((vm < low) | (vm > high), axis=1) if vm.shape[1] else np.zeros(len(vm), bool)
            )
        kpis[f"hours_outside_{name}_pu"] = float(outside.sum() * dt_h)
    kpis["min_vm_pu"] = _nan_extreme(vm, "min")
    kpis["max_vm_pu"] = _nan_extreme(vm, "max")
    kpis["losses_mwh"] = float(np.sum(batch.losses_mw[ok]) * dt_h)
    return {key: kpis[key] for key in KPI_KEYS}
