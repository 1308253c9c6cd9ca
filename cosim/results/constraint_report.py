"""KPIs, a plot and a Markdown table of the grid constraints of a run.

A run writes a long-format table of its grid constraints: one row per constraint
per step, a :class:`pandas.DataFrame` with the columns :data:`CONSTRAINT_COLUMNS`:

``time``
    the step (int64).
``constraint``
    the constraint's name, e.g. ``"trafo 0 loading"``, ``"line 12 loading"``,
    ``"voltage max"``, ``"peak kW"``.
``kind``
    one of :data:`CONSTRAINT_KINDS`: ``"loading_max"``, ``"voltage_max"``,
    ``"voltage_min"``, ``"peak_kw_max"``.
``measured``
    the measured quantity (loading in %, voltage in pu or power in kW); NaN when the
    power flow did not converge at that step (the step is *unknown*).
``limit``
    the limit, in the unit of ``measured``.
``excess``
    the normalised excess (> 0: violated), as the controller saw it.
``mu``
    the constraint's multiplier the buildings saw at that step (>= 0).
``mu_spread``
    max - min of the multiplier over the buildings concerned (0 in operator mode).
``sign``
    +1 or -1, the direction of the constraint in the controller.

A step violates a constraint when, strictly, ``measured > limit`` (``loading_max``,
``voltage_max``, ``peak_kw_max``) or ``measured < limit`` (``voltage_min``); a value
equal to the limit is no violation. Unknown steps are never counted as violated, so
violation hours are lower bounds when some steps are unknown; ``unknown_steps`` says
how many.

Everything returned is plain Python (``int``, ``float``, ``str``, ``None``): it goes
through ``json.dumps(..., allow_nan=False)``. A value that is not a finite number (an
extreme over no known step) is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

#: the columns of the constraint table, in the order the run writes them
CONSTRAINT_COLUMNS: tuple[str, ...] = (
    "time", "constraint", "kind", "measured", "limit", "excess", "mu", "mu_spread", "sign",
)

#: kinds whose measured value must stay at or below the limit
MAX_KINDS: tuple[str, ...] = ("loading_max", "voltage_max", "peak_kw_max")
#: kinds whose measured value must stay at or above the limit
MIN_KINDS: tuple[str, ...] = ("voltage_min",)
CONSTRAINT_KINDS: tuple[str, ...] = MAX_KINDS + MIN_KINDS

#: unit of ``measured`` and ``limit`` per kind
KIND_UNITS: dict[str, str] = {
    "loading_max": "%",
    "voltage_max": "pu",
    "voltage_min": "pu",
    "peak_kw_max": "kW",
}

#: quantity on the left axis of a plot panel, per kind
KIND_QUANTITIES: dict[str, str] = {
    "loading_max": "loading",
    "voltage_max": "voltage",
    "voltage_min": "voltage",
    "peak_kw_max": "peak power",
}


# --------------------------------------------------------------------------- checks


def check_constraint_frame(frame: pd.DataFrame) -> None:
    """Raise :class:`ValueError` when ``frame`` lacks columns of :data:`CONSTRAINT_COLUMNS`
    (naming them) or holds a kind outside :data:`CONSTRAINT_KINDS`."""
    missing = [col for col in CONSTRAINT_COLUMNS if col not in frame.columns]
    if missing:
        raise ValueError(f"constraint table lacks the column(s) {', '.join(missing)}")
    bad = sorted({str(k) for k in pd.unique(frame["kind"])} - set(CONSTRAINT_KINDS))
    if bad:
        raise ValueError(f"unknown constraint kind(s) {', '.join(bad)}; "
                         f"expected one of {', '.join(CONSTRAINT_KINDS)}")


def _check_dt(dt_h: float) -> float:
    dt = float(dt_h)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt_h must be a positive finite number of hours, got {dt_h!r}")
    return dt


def _checked(frame: pd.DataFrame) -> pd.DataFrame:
    check_constraint_frame(frame)
    if frame.empty:
        raise ValueError("constraint table is empty")
    return frame


# ------------------------------------------------------------------ per-row helpers


def _is_min_kind(kind: pd.Series[str]) -> NDArray[np.bool_]:
    return kind.isin(MIN_KINDS).to_numpy()


def _margin(frame: pd.DataFrame) -> NDArray[np.float64]:
    """By how much each row goes past its limit, in the limit's unit (> 0: violated;
    NaN on unknown steps)."""
    measured: NDArray[np.float64] = frame["measured"].to_numpy(dtype=float)
    limit: NDArray[np.float64] = frame["limit"].to_numpy(dtype=float)
    return np.where(_is_min_kind(frame["kind"]), limit - measured, measured - limit)


def _violated(frame: pd.DataFrame) -> NDArray[np.bool_]:
    """Strict violation per row; ``False`` on unknown steps (NaN compares false)."""
    return _margin(frame) > 0.0


def _known(frame: pd.DataFrame) -> NDArray[np.bool_]:
    measured: NDArray[np.float64] = frame["measured"].to_numpy(dtype=float)
    return ~np.isnan(measured)


def _plain(value: Any) -> float | None:  # Any: numpy's reductions return Any
    """A plain Python number (an int for integers), ``None`` for NaN/inf."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def _nan_stat(values: np.ndarray, how: str) -> float | None:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return None
    return _plain(finite.max() if how == "max" else finite.mean())


# ---------------------------------------------------------------------------- KPIs


def _single_kind(name: str, group: pd.DataFrame) -> str:
    kinds = pd.unique(group["kind"])
    if len(kinds) != 1:
        raise ValueError(f"constraint {name!r} has several kinds: {', '.join(map(str, kinds))}")
    return str(kinds[0])


def _reported_limit(kind: str, limits: np.ndarray) -> float | None:
    """The constraint's limit; where it changes over the run, the tightest one."""
    finite = limits[~np.isnan(limits)]
    if finite.size == 0:
        return None
    return _plain(finite.max() if kind in MIN_KINDS else finite.min())


def _constraint_kpi(name: str, group: pd.DataFrame, dt_h: float) -> dict[str, Any]:
    kind = _single_kind(name, group)
    known = _known(group)
    margin = _margin(group)
    times = group["time"].to_numpy()
    violated_steps = np.unique(times[_violated(group)]).size
    unknown_steps = np.unique(times[~known]).size
    worst_excess: float | None = None
    worst_step: int | None = None
    if known.any():
        at = int(np.nanargmax(np.where(known, margin, np.nan)))
        worst_excess = _plain(margin[at])
        worst_step = int(times[at])
    return {
        "kind": kind,
        "limit": _reported_limit(kind, group["limit"].to_numpy(dtype=float)),
        "violation_hours": _plain(violated_steps * dt_h),
        "unknown_steps": int(unknown_steps),
        "worst_excess": worst_excess,
        "worst_step": worst_step,
        "mu_max": _nan_stat(group["mu"].to_numpy(dtype=float), "max"),
        "mu_mean": _nan_stat(group["mu"].to_numpy(dtype=float), "mean"),
        "mu_spread_max": _nan_stat(group["mu_spread"].to_numpy(dtype=float), "max"),
    }


def constraint_kpis(frame: pd.DataFrame, dt_h: float) -> dict[str, dict[str, Any]]:
    """KPIs per constraint name, in order of first appearance in ``frame``.

    Each value holds ``kind``; ``limit`` (the tightest where it changes);
    ``violation_hours`` (violated known steps * ``dt_h``: a lower bound when steps are
    unknown); ``unknown_steps`` (steps with NaN ``measured``); ``worst_excess`` (the
    largest ``measured - limit``, or ``limit - measured`` for ``voltage_min``, over
    known steps, in the limit's unit: negative when the limit was never reached,
    ``None`` without a known step) and ``worst_step`` (its ``time``, the first such
    step); ``mu_max``, ``mu_mean`` and ``mu_spread_max``.
    """
    dt = _check_dt(dt_h)
    frame = _checked(frame)
    return {
        str(name): _constraint_kpi(str(name), group, dt)
        for name, group in frame.groupby("constraint", sort=False)
    }


def constraint_totals(frame: pd.DataFrame, dt_h: float) -> dict[str, Any]:
    """Totals over all constraints: ``grid_constraints`` (how many),
    ``grid_constraint_violation_hours`` (hours with at least one constraint violated,
    a lower bound when steps are unknown) and ``grid_constraint_unknown_steps`` (steps
    with at least one NaN measurement)."""
    dt = _check_dt(dt_h)
    frame = _checked(frame)
    times = frame["time"].to_numpy()
    return {
        "grid_constraints": int(frame["constraint"].nunique()),
        "grid_constraint_violation_hours": _plain(np.unique(times[_violated(frame)]).size * dt),
        "grid_constraint_unknown_steps": int(np.unique(times[~_known(frame)]).size),
    }


# ---------------------------------------------------------------------------- plot


def _rank_key(name: str, kpi: dict[str, Any]) -> tuple[float, float, str]:
    excess = kpi["worst_excess"]
    return (-(kpi["violation_hours"] or 0.0),
            -(excess if excess is not None else -math.inf), name)


def select_constraints(kpis: dict[str, dict[str, Any]], max_panels: int) -> list[str]:
    """The ``max_panels`` constraint names with the most violation hours (ties: the
    largest worst excess, then name order), in that order."""
    ranked = sorted(kpis, key=lambda name: _rank_key(name, kpis[name]))
    return ranked[:max_panels]


def _draw_panel(ax: Any, name: str, group: pd.DataFrame, kpi: dict[str, Any]) -> None:
    kind = kpi["kind"]
    unit = KIND_UNITS[kind]
    group = group.sort_values("time", kind="stable")
    time = group["time"].to_numpy()
    measured = group["measured"].to_numpy(dtype=float)
    limit = group["limit"].to_numpy(dtype=float)
    ax.plot(time, measured, lw=0.9, color="C0", label="measured")
    if np.unique(limit[~np.isnan(limit)]).size <= 1:
        if kpi["limit"] is not None:
            ax.axhline(kpi["limit"], color="red", ls="--", lw=1.0, label="limit")
    else:
        ax.step(time, limit, where="mid", color="red", ls="--", lw=1.0, label="limit")
    violated = _violated(group)
    if violated.any():
        ax.plot(time[violated], measured[violated], ls="none", marker=".", ms=4,
                color="red", label="violated")
    ax.set_ylabel(f"{KIND_QUANTITIES[kind]} [{unit}]")
    steps = kpi["violation_hours"]  # computed with dt_h = 1: steps
    title = f"{name} ({kind}): {steps:g} steps violated"
    if kpi["unknown_steps"]:
        title += f", {kpi['unknown_steps']} steps unknown"
    ax.set_title(title, fontsize=9, loc="left")

    mu_ax = ax.twinx()
    mu = group["mu"].to_numpy(dtype=float)
    spread = np.nan_to_num(group["mu_spread"].to_numpy(dtype=float), nan=0.0)
    if (spread > 0).any():
        mu_ax.fill_between(time, mu - spread / 2, mu + spread / 2, color="C1", alpha=0.25,
                           lw=0, label="mu ± spread/2")
    mu_ax.plot(time, mu, lw=0.9, color="C1", label="mu")
    mu_ax.set_ylabel("multiplier mu", color="C1")
    mu_ax.tick_params(axis="y", colors="C1")
    ax.set_zorder(mu_ax.get_zorder() + 1)  # measured and limit above the multiplier
    ax.patch.set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    mu_handles, mu_labels = mu_ax.get_legend_handles_labels()
    ax.legend(handles + mu_handles, labels + mu_labels, fontsize=7, loc="upper right")


def _caption(shown: int, total: int) -> str:
    hidden = total - shown
    if hidden <= 0:
        return ""
    return (f"{hidden} of {total} constraints not shown "
            "(fewer violation hours than those above)")


def plot_constraints(frame: pd.DataFrame, path: str | Path, *, max_panels: int = 8,
                     title: str = "") -> list[str]:
    """One PNG at ``path``: a panel per constraint for the ``max_panels`` constraints with
    the most violation hours (see :func:`select_constraints`).

    Each panel draws the measured quantity against time with the limit dashed (left
    axis) and the multiplier ``mu`` on a right axis, with a band ``mu ± mu_spread/2``
    where the spread is ever positive. A caption says how many constraints were left
    out. Returns the names plotted, top to bottom.
    """
    if max_panels < 1:
        raise ValueError(f"max_panels must be at least 1, got {max_panels}")
    frame = _checked(frame)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kpis = constraint_kpis(frame, 1.0)  # hours in steps: the ranking does not need dt_h
    names = select_constraints(kpis, max_panels)
    groups = {str(name): group for name, group in frame.groupby("constraint", sort=False)}
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names) + 0.8),
                             sharex=True, squeeze=False)
    try:
        for ax, name in zip(axes[:, 0], names, strict=True):
            _draw_panel(ax, name, groups[name], kpis[name])
        axes[-1, 0].set_xlabel("step")
        if title:
            fig.suptitle(title)
        caption = _caption(len(names), len(kpis))
        fig.tight_layout(rect=(0, 0.04 if caption else 0, 1, 1))
        if caption:
            fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return names


# -------------------------------------------------------------------------- table


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit else text


def _md_cell(text: str) -> str:
    return text.replace("|", r"\|")


def _hours_cell(kpi: dict[str, Any]) -> str:
    hours = _fmt(kpi["violation_hours"])
    if kpi["unknown_steps"]:
        return f">= {hours} ({kpi['unknown_steps']} steps unknown)"
    return hours


def _table_rows(kpis: dict[str, dict[str, Any]]) -> Iterable[str]:
    for name, kpi in kpis.items():
        unit = KIND_UNITS.get(kpi["kind"], "")
        cells = (name, kpi["kind"], _fmt(kpi["limit"], unit), _hours_cell(kpi),
                 _fmt(kpi["worst_excess"], unit), _fmt(kpi["mu_max"]))
        yield "| " + " | ".join(_md_cell(c) for c in cells) + " |"


def constraint_table_md(kpis: dict[str, dict[str, Any]]) -> str:
    """A Markdown table of :func:`constraint_kpis`: constraint | kind | limit |
    violation h | worst excess | max mu, one row per constraint in ``kpis`` order."""
    header = ("| constraint | kind | limit | violation h | worst excess | max mu |\n"
              "|---|---|---:|---:|---:|---:|")
    return "\n".join([header, *_table_rows(kpis)]) + "\n"


# ---------------------------------------------------------------- release analysis


def release_at_overloads(run_dir: str | Path, threshold_percent: float = 100.0
                         ) -> dict[str, Any]:
    """How much of a run's transformer overloads is postponed demand coming back.

    For the steps in which any transformer's loading is above ``threshold_percent``:
    ``overload_steps``; ``after_lambda_eff_fell`` (steps in which the fleet's mean
    lambda_eff was lower than in the step before: the multiplier had just let go);
    ``released_kwh`` (the fleet's backlog served in them, sum of ``b(t-1) - b(t)`` where
    positive), ``bought_kwh`` (the fleet's grid energy in them) and their ratio
    ``released_share``; and over the whole run ``max_release_kwh`` (the largest backlog
    served in one step) and ``max_fleet_grid_kwh``. Reads ``buildings`` and ``trafos``.
    """
    from cosim.results.readers import read_table

    b = read_table(run_dir, "buildings", columns=["time", "grid_kwh", "backlog_kwh",
                                                  "lambda_eff"])
    loading = read_table(run_dir, "trafos").groupby("time").loading_percent.max()
    per_step = b.groupby("time")
    grid = per_step.grid_kwh.sum()
    backlog = per_step.backlog_kwh.sum()
    release = backlog.shift(1, fill_value=0.0) - backlog
    lam = per_step.lambda_eff.mean()
    over = (loading > threshold_percent).reindex(grid.index, fill_value=False)
    released = float(release[over].clip(lower=0).sum())
    bought = float(grid[over].sum())
    return {
        "overload_steps": int(over.sum()),
        "after_lambda_eff_fell": int((lam.diff()[over] < 0).sum()),
        "released_kwh": released,
        "bought_kwh": bought,
        "released_share": released / bought if bought > 0 else None,
        "max_release_kwh": float(release.max()),
        "max_fleet_grid_kwh": float(grid.max()),
    }
