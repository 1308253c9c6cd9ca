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


def loading_ylim(values: np.ndarray, limit_percent: float = 100.0) -> tuple[float, float]:
    """0 to the data's maximum or a little above the limit, whichever is higher."""
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    return 0.0, max(limit_percent * 1.1, top * 1.05)


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
    ax.axhline(100, color="red", ls="--", lw=0.9, label="100 %")
    ax.set_ylim(*loading_ylim(loading))
    ax.legend(fontsize=7, ncol=2, loc="upper right")


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


def plot_district_grid(data: ReportData, limit: float, path: Path) -> Path:
    """The district's grid energy per step, its moving mean and the limit c."""
    import matplotlib.pyplot as plt

    g = data.steps.district_grid_kwh()
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(g.index, g.to_numpy(), lw=0.6, label="district grid energy")
    window = min(168, max(1, len(g) // 10))
    ax.plot(g.index, g.rolling(window, min_periods=1).mean(), lw=1.5,
            label=f"moving mean ({window} steps)")
    ax.axhline(limit, color="red", ls="--", label=f"limit c = {limit:.2f} kWh")
    ax.set(xlabel="step", ylabel="kWh per step", title="District grid energy")
    ax.legend(loc="upper right")
    return _save(fig, path)


def plot_lambda(data: ReportData, path: Path) -> Path:
    """lambda per cluster of the communication graph: its mean and min-max band."""
    import matplotlib.pyplot as plt

    assert data.lam is not None
    steps, stats = data.lam.arrays()
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for k, label in enumerate(data.lam.labels):
        line, = ax.plot(steps, stats[:, k, 0], lw=1.0, label=f"{label}: mean")
        ax.fill_between(steps, stats[:, k, 1], stats[:, k, 2], color=line.get_color(),
                        alpha=0.25, lw=0)
    ax.legend(ncol=min(3, len(data.lam.labels)), fontsize=7, loc="upper right",
              title="cluster: mean, band min-max", title_fontsize=7)
    ax.set(xlabel="step", ylabel="lambda",
           title="Global multiplier per cluster of the communication graph")
    return _save(fig, path)


def plot_unmet(data: ReportData, path: Path) -> Path:
    """The cumulative average unmet demand."""
    import matplotlib.pyplot as plt

    cu = data.steps.cumulative_average_unmet_kwh()
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(cu.index, cu.to_numpy())
    ax.set(xlabel="step", ylabel="kWh per step",
           title="Cumulative average unmet demand (1/t) sum unmet")
    return _save(fig, path)


def plot_duration(loading: np.ndarray, element_ids: np.ndarray, what: str, title: str,
                  path: Path) -> Path:
    """Loading duration curves of the ``what``s (``trafo`` or ``line``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    _duration_curves(ax, loading, element_ids, what)
    ax.set(xlabel="steps, sorted by loading", ylabel="loading [%]", title=title)
    return _save(fig, path)


def plot_voltage_envelope(batch: BatchGridResult, path: Path) -> Path:
    """The minimum and maximum bus voltage per step, with the voltage bands."""
    import matplotlib.pyplot as plt

    vm = batch.bus_vm_pu
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: unknown steps
        low, high = np.nanmin(vm, axis=1), np.nanmax(vm, axis=1)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.fill_between(batch.steps, low, high, alpha=0.5, label="min-max over buses")
    _voltage_bands(ax, vm)
    ax.set(xlabel="step", ylabel="vm [pu]", title="Voltage envelope")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_worst_buses(batch: BatchGridResult, bus_ids: np.ndarray, path: Path) -> Path:
    """The voltage of the buses with the lowest minimum and the highest maximum."""
    import matplotlib.pyplot as plt

    vm = batch.bus_vm_pu
    fig, ax = plt.subplots(figsize=(10, 3.5))
    worst = worst_buses(vm)
    for j, label in worst:
        ax.plot(batch.steps, vm[:, j], lw=0.8,
                label=f"bus {bus_ids[j] if j < len(bus_ids) else j} ({label})")
    _voltage_bands(ax, vm[:, [j for j, _ in worst]] if worst else vm)
    ax.set(xlabel="step", ylabel="vm [pu]", title="The worst buses' voltage")
    ax.legend(loc="upper right", fontsize=8)
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
    small = graph.number_of_nodes() <= 40
    labels = {n: names[n] if isinstance(n, int) and n < len(names) else str(n)
              for n in graph.nodes} if small else None
    finite = [c for c in colors if np.isfinite(c)]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1e-9
    nx.draw_networkx(graph, pos, ax=ax, node_color=colors, cmap="viridis", vmin=vmin,
                     vmax=vmax, with_labels=small, labels=labels,
                     node_size=300 if small else 20, font_size=6,
                     width=1.0 if graph.number_of_nodes() <= SPRING_LAYOUT_MAX else 0.05)
    mappable = plt.cm.ScalarMappable(cmap="viridis", norm=Normalize(vmin=vmin, vmax=vmax))
    fig.colorbar(mappable, ax=ax, shrink=0.8, label="final lambda")
    ax.set(title="Communication graph (colour: final lambda)")
    ax.axis("off")
    return _save(fig, path)


def _grid_plots(run_dir: Path, data: ReportData, kpis: dict[str, Any], out: Path,
                net: Any) -> list[Path]:
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
        plot_voltage_envelope(batch, out / "voltage_envelope.png"),
        plot_worst_buses(batch, bus_ids, out / "worst_bus_voltage.png"),
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
    paths = [plot_district_grid(data, kpis["limit_kwh"], out / "district_grid.png"),
             plot_lambda(data, out / "lambda.png"),
             plot_unmet(data, out / "unmet.png")]
    if data.grid is not None:
        paths += _grid_plots(run_dir, data, kpis, out, net)
    if data.comm is not None:
        paths.append(plot_comm_graph(data.comm, kpis["fleet"]["final_lambda"],
                                     out / "comm_graph.png"))
    return paths
