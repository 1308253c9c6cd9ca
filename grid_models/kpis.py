"""Grid KPIs of docs/equations.md from a sequence of power-flow results.

"Hours" count the steps in which *any* element is beyond the threshold, times
``dt_h``. Over-loading is strictly above the threshold; a voltage is outside a band
when strictly below its lower or above its upper bound.

A step whose power flow said nothing is **unknown**, never "fine":

* a step is *unknown* when it did not converge, or its results are not numbers where
  they must be (losses or external-grid power not finite, no bus voltage at all, or
  any infinite value);
* the feeder's topology is fixed during a run, so an element that has a value in some
  known step is energised: a NaN for it in another step makes that step unknown for
  its quantity (de-energised elements are NaN in every step and are ignored).

Each hours KPI is therefore a lower bound: ``X_hours`` counts the steps known to be
beyond the threshold, ``X_hours_unknown_steps`` the steps for which it is unknown (the
true value lies in ``[X, X + unknown_steps * dt_h]``). A step with an element known to
be beyond the threshold counts even if another element of that step is unknown.
``nonconverged_steps`` counts the steps that did not converge, ``unknown_steps`` those
unknown for any quantity. Extremes and losses come from known values only; extremes
and losses over no known step are NaN (JSON writers turn them into null, the printed
table says "unknown"): unknown is never zero.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from grid_models.powerflow.interface import BatchGridResult, GridResult

OVERLOAD_THRESHOLD_PERCENT = 100.0
#: Voltage bands (pu): the planning band and EN 50160's +-10 %.
VOLTAGE_BANDS_PU = {"095_105": (0.95, 1.05), "090_110": (0.90, 1.10)}
#: Suffix of the key that holds the unknown-step count of an hours KPI.
UNKNOWN_SUFFIX = "_unknown_steps"

#: The hours KPIs; each has a companion ``<key>_unknown_steps``.
HOURS_KEYS = (
    "trafo_overload_hours",
    "line_overload_hours",
    "hours_outside_095_105_pu",
    "hours_outside_090_110_pu",
)

KPI_KEYS = (
    "steps",
    "nonconverged_steps",
    "unknown_steps",
    "trafo_overload_hours",
    "trafo_overload_hours_unknown_steps",
    "line_overload_hours",
    "line_overload_hours_unknown_steps",
    "max_trafo_loading_percent",
    "max_line_loading_percent",
    "hours_outside_095_105_pu",
    "hours_outside_095_105_pu_unknown_steps",
    "hours_outside_090_110_pu",
    "hours_outside_090_110_pu_unknown_steps",
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


def known_steps(batch: BatchGridResult) -> np.ndarray:
    """Per step: converged and numbers where a solved step always has them."""
    ok = np.asarray(batch.converged, dtype=bool).copy()
    for name in ("losses_mw", "ext_grid_p_mw", "ext_grid_q_mvar"):
        ok &= np.isfinite(getattr(batch, name))
    vm = batch.bus_vm_pu
    if vm.shape[1]:
        ok &= np.isfinite(vm).any(axis=1)
    for values in (vm, batch.line_loading_percent, batch.trafo_loading_percent):
        if values.shape[1]:
            ok &= ~np.isinf(values).any(axis=1)
    result: np.ndarray = ok
    return result


def unknown_elements(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per step: does an energised element (a value in some known step) lack a value?"""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0], dtype=bool)
    live = np.isfinite(values[known]).any(axis=0)
    return ~np.isfinite(values[:, live]).all(axis=1) if live.any() else np.zeros(
        values.shape[0], dtype=bool)


def _outside_band(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Where ``x`` lies outside ``[low, high]`` (NaN: False)."""
    result: np.ndarray = (x < low) | (x > high)
    return result


def beyond(
    values: np.ndarray, known: np.ndarray, outside: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(known beyond, unknown) per step for a predicate ``outside(values) -> bool array``."""
    n = values.shape[0]
    if values.shape[1] == 0:
        return np.zeros(n, dtype=bool), ~known
    with np.errstate(invalid="ignore"):
        hit = known & np.any(outside(values), axis=1)  # NaN is never outside
    unknown = ~hit & (~known | unknown_elements(values, known))
    return hit, unknown


def _extreme(values: np.ndarray, fn: str) -> float:
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
    known = known_steps(batch)
    vm = batch.bus_vm_pu
    checks = {
        "trafo_overload_hours": beyond(batch.trafo_loading_percent, known,
                                       lambda x: x > overload_threshold_percent),
        "line_overload_hours": beyond(batch.line_loading_percent, known,
                                      lambda x: x > overload_threshold_percent),
    }
    for name, (low, high) in VOLTAGE_BANDS_PU.items():
        checks[f"hours_outside_{name}_pu"] = beyond(
            vm, known, functools.partial(_outside_band, low=low, high=high))
    any_unknown = ~known
    kpis: dict[str, float] = {
        "steps": float(len(batch)),
        "nonconverged_steps": float((~np.asarray(batch.converged, dtype=bool)).sum()),
    }
    for key, (hit, unknown) in checks.items():
        kpis[key] = float(hit.sum() * dt_h)
        kpis[key + UNKNOWN_SUFFIX] = float(unknown.sum())
        any_unknown = any_unknown | unknown
    kpis["unknown_steps"] = float(any_unknown.sum())
    kpis["max_trafo_loading_percent"] = _extreme(batch.trafo_loading_percent[known], "max")
    kpis["max_line_loading_percent"] = _extreme(batch.line_loading_percent[known], "max")
    kpis["min_vm_pu"] = _extreme(vm[known], "min")
    kpis["max_vm_pu"] = _extreme(vm[known], "max")
    # unknown is never zero: losses over no known step are NaN (null in kpis.json)
    kpis["losses_mwh"] = float(np.sum(batch.losses_mw[known]) * dt_h) if known.any() \
        else float("nan")
    return {key: kpis[key] for key in KPI_KEYS}


def hours_text(kpis: dict[str, float], key: str) -> str:
    """``"X"`` or ``"at least X (unknown for Y steps)"`` for an hours KPI of :func:`grid_kpis`."""
    text = f"{kpis[key]:g}"
    unknown = kpis.get(key + UNKNOWN_SUFFIX) or 0
    return f"at least {text} (unknown for {unknown:g} steps)" if unknown else text
