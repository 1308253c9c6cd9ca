"""The run's plots (``plots/*.png``, docs/equations.md): one function per figure, and
:func:`write_plots`, which draws them all from what :func:`cosim.results.report.read_report_data`
read.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from cosim.results.report import ReportData, read_report_data
from grid_models.powerflow.interface import BatchGridResult

#: largest communication graph drawn with a force-directed layout (circular beyond)
SPRING_LAYOUT_MAX = 500


#: Voltage bands drawn on voltage plots: (low, high, colour); the outer one only when the
#: data come within VOLTAGE_BAND_NEAR_PU of it.
VOLTAGE_BANDS = ((0.95, 1.05, "orange"), (0.90, 1.10, "red"))


VOLTAGE_BAND_NEAR_PU = 0.02


#: Lines drawn one by one in the line-loading duration curve (the most loaded).
DURATION_LINES_MAX = 10

#: The loading axis shows the 100 % limit when the data come within this fraction of it;
#: further below, the axis fits the data and a note names the limit and the peak.
LOADING_LIMIT_NEAR = 0.6

#: Most nodes of the communication graph drawn with their building ids (beyond: no
#: labels, which would overlap).
COMM_LABELS_MAX = 20


def loading_ylim(values: np.ndarray, limit_percent: float = 100.0) -> tuple[float, float]:
    """0 to a little above the data's maximum; up to a little above the limit too when
    the data come within :data:`LOADING_LIMIT_NEAR` of it (or there are no data)."""
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    if top >= LOADING_LIMIT_NEAR * limit_percent or top <= 0.0:
        return 0.0, max(limit_percent * 1.1, top * 1.05)
    return 0.0, top * 1.15


def step_datetimes(steps: Any, start_row: int | None) -> np.ndarray:
    """The x values of a per-step plot: the datetime of each step (data row
    ``start_row + step``, :func:`agents.fleet.calendar.row_datetimes`), or the steps
    themselves when the start is not known."""
    values = np.asarray(steps)
    if start_row is None:
        return values
    from agents.fleet.calendar import row_datetimes

    return row_datetimes(start_row, values.astype(np.int64))


def time_axis(ax: Any, start_row: int | None, short: bool = False) -> None:
    """Label the x axis: dates and hours, or steps when the start is not known
    (``short``: fewer ticks and a short label, for small panels)."""
    if start_row is None:
        ax.set_xlabel("step")
        return
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=2 if short else 3,  # type: ignore[no-untyped-call]
                                     maxticks=5 if short else 10)
    # matplotlib's default hour and day steps leave no fit for some short runs (a
    # UserWarning and 12 ticks); with these, 1 to 8,760 hourly steps all find one
    locator.intervald[mdates.HOURLY] = [1, 2, 3, 4, 6, 8, 12, 24]
    locator.intervald[mdates.DAILY] = [1, 2, 3, 4, 7, 14, 21]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.set_xlabel("time" if short else "time (start of each step, nominal year of the data)")


def _legend_outside(ax: Any, **kwargs: Any) -> None:
    """The legend to the right of the axes, off the data."""
    kwargs.setdefault("fontsize", 8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def _duration_curves(ax: Any, loading: np.ndarray, ids: np.ndarray, what: str) -> None:
    """Each element's loading sorted in descending order; the most loaded drawn one by
    one (:data:`DURATION_LINES_MAX`), the envelope of all in grey, the 100 % limit."""
    if loading.shape[1] == 0:
        ax.text(0.5, 0.5, f"no {what}s", ha="center", transform=ax.transAxes)
        return
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        peaks = np.nanmax(loading, axis=0)
    curves = [np.sort(col[np.isfinite(col)])[::-1] for col in loading.T]
    longest = max((len(c) for c in curves), default=0)
    if longest:
        padded = np.full((len(curves), longest), np.nan)
        for j, c in enumerate(curves):
            padded[j, :len(c)] = c
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.fill_between(np.arange(1, longest + 1), 0, np.nanmax(padded, axis=0),
                            color="0.85", label=f"max over all {len(curves)} {what}s")
    order = np.argsort(np.nan_to_num(peaks, nan=-np.inf))[::-1][:DURATION_LINES_MAX]
    for j in order:
        label = f"{what} {ids[j] if j < len(ids) else j}"
        ax.plot(np.arange(1, len(curves[j]) + 1), curves[j], lw=1.0, label=label)
    low, high = loading_ylim(loading)
    ax.set_ylim(low, high)
    if high > 100.0:
        ax.axhline(100, color="red", ls="--", lw=0.9, label="limit 100 %")
    else:  # the limit far above the data: named, not drawn
        peak = float(np.nanmax(loading)) if np.isfinite(loading).any() else 0.0
        ax.text(0.99, 0.97, f"limit 100 % is above this axis (peak {peak:.1f} %)",
                transform=ax.transAxes, ha="right", va="top", fontsize=8, color="red",
                bbox={"facecolor": "white", "edgecolor": "red", "alpha": 0.9})
    _legend_outside(ax, fontsize=7)


def voltage_ylim(vm: np.ndarray) -> tuple[tuple[float, float], list[tuple[float, float, str]]]:
    """y limits fitted to the voltages and the bands worth drawing (0.95-1.05 always,
    0.90-1.10 when the data come within :data:`VOLTAGE_BAND_NEAR_PU` of it)."""
    finite = vm[np.isfinite(vm)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (1.0, 1.0)
    bands = [VOLTAGE_BANDS[0]] + [b for b in VOLTAGE_BANDS[1:]
                                  if low <= b[0] + VOLTAGE_BAND_NEAR_PU
                                  or high >= b[1] - VOLTAGE_BAND_NEAR_PU]
    lines = [v for b in bands for v in b[:2]]
    lo, hi = min(low, *lines), max(high, *lines)
    pad = 0.05 * (hi - lo)
    return (lo - pad, hi + pad), bands


def _voltage_bands(ax: Any, vm: np.ndarray) -> None:
    (lo, hi), bands = voltage_ylim(vm)
    for low, high, colour in bands:
        for y in (low, high):
            ax.axhline(y, color=colour, ls="--", lw=0.8)
    ax.set_ylim(lo, hi)


def worst_buses(vm: np.ndarray) -> list[tuple[int, str]]:
    """Columns of the bus with the lowest minimum and of the one with the highest
    maximum voltage (one entry when it is the same bus; none without data)."""
    if vm.size == 0 or not np.isfinite(vm).any():
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lows, highs = np.nanmin(vm, axis=0), np.nanmax(vm, axis=0)
    j_low = int(np.nanargmin(lows))
    j_high = int(np.nanargmax(highs))
    if j_low == j_high:
        return [(j_low, "lowest and highest")]
    return [(j_low, "lowest"), (j_high, "highest")]


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write and close ``fig``; return its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_district_grid(data: ReportData, limit: float, path: Path,
                       start_row: int | None = None, step_h: float = 1.0) -> Path:
    """The fleet's grid energy per step, its moving mean and the limit c; with a grid,
    the transformer total beside it (the external grid's import: fleet, background load
    and losses)."""
    import matplotlib.pyplot as plt

    g = data.steps.district_grid_kwh()
    x = step_datetimes(g.index, start_row)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.plot(x, g.to_numpy(), lw=0.6, color="tab:blue", label="fleet grid energy")
    batch = data.grid
    if batch is not None and len(batch.steps) and np.isfinite(batch.ext_grid_p_mw).any():
        ax.plot(step_datetimes(batch.steps, start_row), batch.ext_grid_p_mw * 1000.0 * step_h,
                lw=0.8, color="black", ls=(0, (4, 2)), alpha=0.75,
                label="transformer total\n(fleet + background\nload + losses)")
    window = min(168, max(1, len(g) // 10))
    ax.plot(x, g.rolling(window, min_periods=1).mean().to_numpy(), lw=1.5,
            color="tab:orange", label=f"fleet moving mean\n({window} steps)")
    ax.axhline(limit, color="red", ls="--", label=f"limit c = {limit:.2f} kWh")
    ax.set(ylabel="kWh per step", title="District grid energy")
    time_axis(ax, start_row)
    _legend_outside(ax)
    return _save(fig, path)


def plot_lambda(data: ReportData, path: Path, start_row: int | None = None) -> Path:
    """lambda per cluster of the communication graph: its mean and min-max band."""
    import matplotlib.pyplot as plt

    assert data.lam is not None
    steps, stats = data.lam.arrays()
    x = step_datetimes(steps, start_row)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    for k, label in enumerate(data.lam.labels):
        line, = ax.plot(x, stats[:, k, 0], lw=1.0, label=f"{label}: mean")
        ax.fill_between(x, stats[:, k, 1], stats[:, k, 2], color=line.get_color(),
                        alpha=0.25, lw=0)
    _legend_outside(ax, fontsize=7, title="cluster: mean,\nband min-max", title_fontsize=7)
    ax.set(ylabel="lambda", title="Global multiplier per cluster of the communication graph")
    time_axis(ax, start_row)
    return _save(fig, path)


def plot_unmet(data: ReportData, path: Path, start_row: int | None = None) -> Path:
    """The cumulative average unmet demand."""
    import matplotlib.pyplot as plt

    cu = data.steps.cumulative_average_unmet_kwh()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.plot(step_datetimes(cu.index, start_row), cu.to_numpy())
    ax.set(ylabel="kWh per step", title="Cumulative average unmet demand (1/t) sum unmet")
    time_axis(ax, start_row)
    return _save(fig, path)


def plot_duration(loading: np.ndarray, element_ids: np.ndarray, what: str, title: str,
                  path: Path) -> Path:
    """Loading duration curves of the ``what``s (``trafo`` or ``line``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.8))
    _duration_curves(ax, loading, element_ids, what)
    ax.set(xlabel="steps, sorted by loading", ylabel="loading [%]", title=title)
    return _save(fig, path)


def plot_voltage_envelope(batch: BatchGridResult, path: Path,
                          start_row: int | None = None) -> Path:
    """The minimum and maximum bus voltage per step, with the voltage bands."""
    import matplotlib.pyplot as plt

    vm = batch.bus_vm_pu
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: unknown steps
        low, high = np.nanmin(vm, axis=1), np.nanmax(vm, axis=1)
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.fill_between(step_datetimes(batch.steps, start_row), low, high, alpha=0.5,
                    label="min-max over buses")
    _voltage_bands(ax, vm)
    ax.set(ylabel="vm [pu]", title="Voltage envelope")
    time_axis(ax, start_row)
    _legend_outside(ax)
    return _save(fig, path)


def plot_worst_buses(batch: BatchGridResult, bus_ids: np.ndarray, path: Path,
                     start_row: int | None = None) -> Path:
    """The voltage of the buses with the lowest minimum and the highest maximum."""
    import matplotlib.pyplot as plt

    vm = batch.bus_vm_pu
    fig, ax = plt.subplots(figsize=(11, 3.6))
    worst = worst_buses(vm)
    x = step_datetimes(batch.steps, start_row)
    for j, label in worst:
        ax.plot(x, vm[:, j], lw=0.8,
                label=f"bus {bus_ids[j] if j < len(bus_ids) else j}\n({label})")
    _voltage_bands(ax, vm[:, [j for j, _ in worst]] if worst else vm)
    ax.set(ylabel="vm [pu]", title="The worst buses' voltage")
    time_axis(ax, start_row)
    _legend_outside(ax)
    return _save(fig, path)


def plot_comm_graph(comm: tuple[nx.Graph[int], list[str]], final_lambda: list[Any],
                    path: Path) -> Path:
    """The communication graph, each agent coloured by its final lambda."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    graph, names = comm
    fig, ax = plt.subplots(figsize=(6.5, 5))
    # a force-directed layout costs O(n^2) per iteration: minutes for 10,000 agents
    pos = (nx.spring_layout(graph, seed=0) if graph.number_of_nodes() <= SPRING_LAYOUT_MAX
           else nx.circular_layout(graph))
    final = {name: np.nan if value is None else value  # null in kpis.json
             for name, value in zip(names, final_lambda, strict=False)}
    colors = [final.get(names[n], 0.0) if isinstance(n, int) else final.get(n, 0.0)
              for n in graph.nodes]
    n_nodes = graph.number_of_nodes()
    small = n_nodes <= COMM_LABELS_MAX
    finite = [c for c in colors if np.isfinite(c)]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1e-9
    nx.draw_networkx(graph, pos, ax=ax, node_color=colors, cmap="viridis", vmin=vmin,
                     vmax=vmax, with_labels=False,
                     node_size=160 if small else (40 if n_nodes <= 100 else 10),
                     width=1.0 if n_nodes <= SPRING_LAYOUT_MAX else 0.05)
    if small:  # ids beside the nodes, on white, so they neither overlap nodes nor vanish
        for n in graph.nodes:
            label = names[n] if isinstance(n, int) and n < len(names) else str(n)
            xy = (float(pos[n][0]), float(pos[n][1]))
            ax.annotate(label, xy, xytext=(7, 7), textcoords="offset points", fontsize=8,
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white",
                              "edgecolor": "none", "alpha": 0.8})
    else:
        ax.text(0.0, -0.02, f"{n_nodes} agents: ids not drawn (more than "
                f"{COMM_LABELS_MAX})", transform=ax.transAxes, fontsize=8, color="0.4")
    mappable = plt.cm.ScalarMappable(cmap="viridis", norm=Normalize(vmin=vmin, vmax=vmax))
    fig.colorbar(mappable, ax=ax, shrink=0.8, label="final lambda")
    ax.set(title="Communication graph (colour: final lambda)")
    ax.margins(0.12)
    ax.axis("off")
    return _save(fig, path)


def _grid_plots(run_dir: Path, data: ReportData, kpis: dict[str, Any], out: Path,
                net: Any, start_row: int | None = None) -> list[Path]:
    """The duration curves, the voltage plots and the feeder map of a run with a grid."""
    batch = data.grid
    assert batch is not None
    ids, none = data.element_ids, np.zeros(0, dtype=np.int64)
    bus_ids = ids.get("buses", none)
    paths = [
        plot_duration(batch.trafo_loading_percent, ids.get("trafos", none), "trafo",
                      "Transformer loading duration curve", out / "trafo_duration.png"),
        plot_duration(batch.line_loading_percent, ids.get("lines", none), "line",
                      "Line loading duration curve", out / "line_duration.png"),
        plot_voltage_envelope(batch, out / "voltage_envelope.png", start_row),
        plot_worst_buses(batch, bus_ids, out / "worst_bus_voltage.png", start_row),
    ]
    if net is None and (run_dir / "feeder.json").is_file():
        from grid_models.feeders import read_feeder_json

        net = read_feeder_json(run_dir / "feeder.json")
    if net is not None:
        from cosim.results.feeder_map import draw_feeder_map, element_extremes

        paths.append(draw_feeder_map(
            net,
            element_extremes(batch.line_loading_percent, ids.get("lines", none), "max"),
            element_extremes(batch.trafo_loading_percent, ids.get("trafos", none), "max"),
            element_extremes(batch.bus_vm_pu, bus_ids, "min"), out / "feeder_map.png",
            title=f"{kpis.get('scenario', '')}: maximum loading and minimum voltage "
                  "over the run"))
    return paths


def run_time(run_dir: Path) -> tuple[int | None, float]:
    """The data row of step 0 and the step length in hours of the run's stored
    ``scenario.yaml`` ((None, 1.0) without a readable one: the plots then count steps)."""
    if not (run_dir / "scenario.yaml").is_file():
        return None, 1.0
    from cosim.scenario.loader import load_run_scenario

    try:
        sc = load_run_scenario(run_dir)
    except Exception:  # noqa: BLE001 - an unreadable scenario only costs the dates
        return None, 1.0
    return int(sc.time.start), float(sc.time.step_h)


def write_plots(run_dir: Path, kpis: dict[str, Any], data: ReportData | None = None,
                net: Any = None) -> list[Path]:
    """The plots of docs/equations.md into ``run_dir/plots``.

    ``net``: the feeder for the feeder map (default: read from ``feeder.json``).

    ``data``: what :func:`read_report_data` read (with ``plots=True``); without it the
    plots read only what they draw (``PLOT_BUILDING_COLUMNS``, ``PLOT_GRID_FIELDS`` of
    :mod:`cosim.results.report`).
    """
    import matplotlib

    matplotlib.use("Agg")

    if data is None or data.lam is None:
        data = read_report_data(run_dir, kpis=False, plots=True)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    start_row, step_h = run_time(run_dir)
    paths = [plot_district_grid(data, kpis["limit_kwh"], out / "district_grid.png",
                                start_row, step_h),
             plot_lambda(data, out / "lambda.png", start_row),
             plot_unmet(data, out / "unmet.png", start_row)]
    if data.grid is not None:
        paths += _grid_plots(run_dir, data, kpis, out, net, start_row)
    if data.comm is not None:
        paths.append(plot_comm_graph(data.comm, kpis["fleet"]["final_lambda"],
                                     out / "comm_graph.png"))
    return paths
