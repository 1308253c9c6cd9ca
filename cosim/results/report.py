"""KPIs (``kpis.json``), plots (``plots/*.png``) and the printed summary of a run.

Everything here is computed from the files of the run directory, so a reviewer
gets the same numbers from the files alone. ``kpis.json`` is strict JSON: a value
that is not a finite number (an extreme over no known step) is ``null``. Grid hours
are lower bounds when some steps are unknown (see :mod:`grid_models.kpis`); the
summary prints them as "at least X (unknown for Y steps)".

Tables are never loaded whole: the buildings table is read once, in pieces of whole
steps and only the columns the KPIs and plots use (:data:`REPORT_BUILDING_COLUMNS`),
into per-step sums, running totals and the last step's multipliers; the grid tables
are read column by column into (step x element) arrays of the values used
(:data:`KPI_GRID_FIELDS`). The numbers equal those of the whole tables read with
pandas, bit for bit (``tests/cosim/test_streamed_results.py``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from agents.consensus.graphs import communities, graph_from_json
from agents.fleet.kpi_labels import FLEET_KPI_LABELS, GRID_KPI_LABELS
from agents.fleet.kpis import FLEET_KPI_COLUMNS, FLEET_KPI_UNITS, FleetKpiStream, StepTotals
from cosim.results.jsonio import json_safe, write_json
from cosim.results.readers import TableScan, read_table
from grid_models.kpis import HOURS_KEYS, UNKNOWN_SUFFIX, hours_text
from grid_models.kpis import grid_kpis as compute_grid_kpis
from grid_models.powerflow.interface import BatchGridResult

#: largest communication graph drawn with a force-directed layout (circular beyond)
SPRING_LAYOUT_MAX = 500

#: The unit of each grid KPI (``kpis.json``'s ``units.grid``), from the one label table.
GRID_KPI_UNITS = {"steps": FLEET_KPI_LABELS["steps"].unit,
                  **{name: label.unit for name, label in GRID_KPI_LABELS.items()}}

#: Array fields of :class:`BatchGridResult` -> (table, element column, value column).
GRID_FIELDS = {
    "bus_vm_pu": ("buses", "bus", "vm_pu"),
    "bus_p_mw": ("buses", "bus", "p_mw"),
    "bus_q_mvar": ("buses", "bus", "q_mvar"),
    "line_loading_percent": ("lines", "line", "loading_percent"),
    "line_i_ka": ("lines", "line", "i_ka"),
    "trafo_loading_percent": ("trafos", "trafo", "loading_percent"),
    "trafo_p_hv_mw": ("trafos", "trafo", "p_hv_mw"),
}
#: What the grid KPIs read (besides the whole, one-row-per-step ``grid`` table).
KPI_GRID_FIELDS = ("bus_vm_pu", "line_loading_percent", "trafo_loading_percent")
#: What the grid plots draw.
PLOT_GRID_FIELDS = ("bus_vm_pu", "line_loading_percent", "trafo_loading_percent")
#: Voltage bands drawn on voltage plots: (low, high, colour); the outer one only when the
#: data come within VOLTAGE_BAND_NEAR_PU of it.
VOLTAGE_BANDS = ((0.95, 1.05, "orange"), (0.90, 1.10, "red"))
VOLTAGE_BAND_NEAR_PU = 0.02
#: Lines drawn one by one in the line-loading duration curve (the most loaded).
DURATION_LINES_MAX = 10
#: What the plots draw from the buildings table.
PLOT_BUILDING_COLUMNS = ("time", "building", "grid_kwh", "unmet_kwh", "lambda")
#: What the report (KPIs and plots) reads from the buildings table.
REPORT_BUILDING_COLUMNS = FLEET_KPI_COLUMNS
#: The lambda plot draws a mean and a band for at most this many clusters of agents.
LAMBDA_CLUSTERS_MAX = 6


def strict_json(obj: Any) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_safe`); raises on anything left over."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False)


def _wide(run_dir: Path, table: str, key: str, values: Sequence[str]
          ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """``values`` of an element table as (time x element) arrays, rows in time order and
    columns in element order (what ``pivot(index="time", columns=key)`` gives; NaN where
    a row is missing), read in pieces and only these columns, with the element ids of
    the columns. None: the table is empty."""
    scan = TableScan(run_dir, table, ["time", key, *values])
    times = np.zeros(0, dtype=np.int64)
    keys = np.zeros(0, dtype=np.int64)
    for frame in scan.batches(["time", key]):
        times = np.union1d(times, frame["time"].to_numpy())
        keys = np.union1d(keys, frame[key].to_numpy())
    if times.size == 0:
        return None
    wide = {v: np.full((times.size, keys.size), np.nan) for v in values}
    for frame in scan.batches():
        rows = np.searchsorted(times, frame["time"].to_numpy())
        cols = np.searchsorted(keys, frame[key].to_numpy())
        for v in values:
            wide[v][rows, cols] = frame[v].to_numpy(dtype=float)
    return wide, keys


def grid_batch(run_dir: Path, fields: Sequence[str] | None = None) -> BatchGridResult | None:
    """The run's power-flow results, rebuilt from its Parquet tables.

    ``fields``: the array fields of :class:`BatchGridResult` to read (None: all); the
    others are (steps x 0) arrays, and only the columns asked for are read. None when
    the run has no grid results.
    """
    return _grid_batch(run_dir, fields)[0]


def _grid_batch(run_dir: Path, fields: Sequence[str] | None
                ) -> tuple[BatchGridResult | None, dict[str, np.ndarray]]:
    """:func:`grid_batch` and the element ids of each table read (``{"buses": ids,
    ...}``, the columns' order), from the same pass over the tables."""
    try:
        g = read_table(run_dir, "grid").sort_values("time")
    except ValueError:
        return None, {}
    fields = tuple(GRID_FIELDS) if fields is None else tuple(fields)
    unknown = [f for f in fields if f not in GRID_FIELDS]
    if unknown:
        raise ValueError(f"grid_batch: unknown fields {unknown}; valid: {list(GRID_FIELDS)}")
    steps = len(g)
    arrays = {name: np.zeros((steps, 0)) for name in GRID_FIELDS}
    ids: dict[str, np.ndarray] = {}
    for table in dict.fromkeys(GRID_FIELDS[f][0] for f in fields):
        key = next(GRID_FIELDS[f][1] for f in fields if GRID_FIELDS[f][0] == table)
        asked = {GRID_FIELDS[f][2]: f for f in fields if GRID_FIELDS[f][0] == table}
        read = _wide(run_dir, table, key, list(asked))
        if read is not None:
            wide, ids[table] = read
            arrays.update({asked[v]: wide[v] for v in asked})
    vm = arrays["bus_vm_pu"]
    return BatchGridResult(
        **arrays,
        bus_va_degree=np.full_like(vm, np.nan),  # angles are not recorded
        losses_mw=g["losses_mw"].to_numpy(), ext_grid_p_mw=g["ext_grid_p_mw"].to_numpy(),
        ext_grid_q_mvar=g["ext_grid_q_mvar"].to_numpy(), converged=g["converged"].to_numpy(),
        steps=g["time"].to_numpy(),
    ), ids


class LambdaTracks:
    """What the lambda plot draws: per step, the mean, minimum and maximum of lambda
    over each cluster of agents (the communication graph's communities,
    :func:`agents.consensus.graphs.communities`), fed pieces of whole steps of the buildings table.

    ``clusters``: building ids per cluster; None (or ids the table lacks): one cluster of
    every agent in the table.
    """

    def __init__(self, clusters: Sequence[Sequence[str]] | None = None) -> None:
        self.clusters = [list(c) for c in clusters] if clusters else None
        self._times: list[np.ndarray] = []
        self._stats: list[np.ndarray] = []  # (steps, clusters, 3): mean, min, max
        self._layout: tuple[tuple[Any, ...], list[np.ndarray]] | None = None

    def _columns(self, names: pd.Index) -> list[np.ndarray]:
        """Column positions of each cluster in a pivot with columns ``names`` (cached)."""
        key = tuple(names)
        if self._layout is None or self._layout[0] != key:
            position = {name: j for j, name in enumerate(key)}
            groups = self.clusters or [list(key)]
            cols = [np.array([position[x] for x in g if x in position], dtype=np.int64)
                    for g in groups]
            self._layout = (key, cols)
        return self._layout[1]

    def add(self, chunk: pd.DataFrame) -> None:
        """Add the lambda statistics of the whole steps in ``chunk`` (buildings table rows)."""
        lam = chunk.pivot(index="time", columns="building", values="lambda")
        values = lam.to_numpy(dtype=float)
        stats = np.full((len(lam), len(self.clusters) if self.clusters else 1, 3), np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a cluster all NaN in a step
            for k, cols in enumerate(self._columns(lam.columns)):
                if cols.size:
                    part = values[:, cols]
                    stats[:, k] = np.stack([np.nanmean(part, axis=1), np.nanmin(part, axis=1),
                                            np.nanmax(part, axis=1)], axis=1)
        self._times.append(lam.index.to_numpy())
        self._stats.append(stats)

    @property
    def labels(self) -> list[str]:
        """One label per cluster: its building ids (the first two and the count if more
        than three)."""
        if self.clusters is None:
            return ["all agents"]
        return [", ".join(c) if len(c) <= 3 else f"{c[0]}, {c[1]}, ... ({len(c)} agents)"
                for c in self.clusters]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(steps (T,), stats (T, clusters, 3))`` with stats mean, min, max."""
        if not self._times:
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.labels), 3))
        return np.concatenate(self._times), np.concatenate(self._stats)


@dataclass
class ReportData:
    """What :func:`compute_kpis` and :func:`write_plots` take from the run's tables."""

    steps: StepTotals
    fleet: FleetKpiStream | None
    lam: LambdaTracks | None
    grid: BatchGridResult | None
    #: element ids of each grid table read (``{"buses": ids, ...}``), in column order
    element_ids: dict[str, np.ndarray] = field(default_factory=dict)
    #: the communication graph and building ids (``comm_graph.json``), read for the plots
    comm: tuple[nx.Graph[int], list[str]] | None = None


def read_report_data(run_dir: Path, *, kpis: bool = True, plots: bool = True) -> ReportData:
    """One pass over the buildings table (only the columns used) and the grid arrays used."""
    columns = REPORT_BUILDING_COLUMNS if kpis else PLOT_BUILDING_COLUMNS
    scan = TableScan(run_dir, "buildings", columns)
    fleet = FleetKpiStream(scan.num_rows) if kpis else None
    steps = fleet.steps if fleet is not None else StepTotals()
    comm = read_comm_graph(run_dir) if plots else None
    lam = LambdaTracks(lambda_clusters(comm)) if plots else None
    for chunk in scan.steps():
        if fleet is not None:
            fleet.add(chunk)
        else:
            steps.add(chunk)
        if lam is not None:
            lam.add(chunk)
    fields = KPI_GRID_FIELDS if kpis else PLOT_GRID_FIELDS
    batch, ids = _grid_batch(run_dir, fields)
    return ReportData(steps=steps, fleet=fleet, lam=lam, grid=batch, element_ids=ids,
                      comm=comm)


def read_comm_graph(run_dir: Path) -> tuple[nx.Graph[int], list[str]] | None:
    """The run's communication graph and building ids, None without ``comm_graph.json``."""
    path = run_dir / "comm_graph.json"
    return graph_from_json(path.read_text()) if path.is_file() else None


def lambda_clusters(comm: tuple[nx.Graph[int], list[str]] | None) -> list[list[str]] | None:
    """Building ids of each community of the communication graph ``comm`` (from
    :func:`read_comm_graph`; at most :data:`LAMBDA_CLUSTERS_MAX`), None without one."""
    if comm is None:
        return None
    graph, names = comm
    return [[names[i] for i in group]
            for group in communities(graph, max_communities=LAMBDA_CLUSTERS_MAX)]


def _kpis(data: ReportData, limit_kwh: float, dt_h: float, lambda_max: float,
          scenario_name: str, extra: dict[str, Any] | None) -> dict[str, Any]:
    if data.fleet is None:
        raise ValueError("the report data were read without the KPI columns")
    fleet = data.fleet.kpis(limit_kwh, dt_h, lambda_max=lambda_max)
    grid = compute_grid_kpis(data.grid, dt_h) if data.grid is not None else {}
    kpis: dict[str, Any] = json_safe({
        "scenario": scenario_name,
        "limit_kwh": float(limit_kwh),
        "fleet": fleet,
        "grid": grid,
        "units": {"fleet": FLEET_KPI_UNITS, "grid": {k: GRID_KPI_UNITS[k] for k in grid}},
        **(extra or {}),
    })
    return kpis


def compute_kpis(run_dir: Path, limit_kwh: float, dt_h: float, lambda_max: float,
                 scenario_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The KPIs of a run from its tables: fleet and grid KPIs with units, plus ``extra``.

    ``limit_kwh`` is the district grid limit (kWh per step), ``dt_h`` the step length in hours.
    """
    data = read_report_data(run_dir, kpis=True, plots=False)
    return _kpis(data, limit_kwh, dt_h, lambda_max, scenario_name, extra)


def write_report(run_dir: Path, built: Any, *, plots: bool = True,
                 wall_s: float | None = None, steps_run: int | None = None) -> dict[str, Any]:
    """KPIs, plots; ``wall_s`` is the time of the ``steps_run`` steps this process ran
    (fewer than the scenario's after ``--resume``)."""
    sc = built.scenario
    steps_run = sc.time.steps if steps_run is None else steps_run
    extra = {"wall_s": wall_s, "steps_per_s": steps_run / wall_s} if wall_s else {}
    plan = getattr(built, "oracle", None)
    if plan is not None:  # controller kind oracle: which limit it met, what it planned
        extra["oracle"] = {"limit": plan.limit, "planned_cost": plan.cost,
                           "planned_mean_district_grid_kwh": plan.mean_district_grid_kwh,
                           "planned_peak_district_grid_kwh": plan.peak_district_grid_kwh}
    data = read_report_data(run_dir, kpis=True, plots=plots)
    constraints = _constraint_frame(run_dir)
    if constraints is not None:
        from cosim.results.constraint_report import constraint_kpis, constraint_totals

        extra["grid_constraints"] = constraint_kpis(constraints, sc.time.step_h)
        extra["grid_constraint_totals"] = constraint_totals(constraints, sc.time.step_h)
    kpis = _kpis(data, built.limit_kwh, sc.time.step_h, sc.duals.lambda_max, sc.name, extra)
    write_json(run_dir / "kpis.json", kpis)  # strict: allow_nan=False, fails on NaN
    if plots:
        write_plots(run_dir, kpis, data, net=built.grid.feeder if built.grid else None)
        if constraints is not None:
            from cosim.results.constraint_report import plot_constraints

            plot_constraints(constraints, run_dir / "plots" / "grid_constraints.png",
                             title=f"{sc.name}: grid constraints and their multipliers")
    return kpis


def _constraint_frame(run_dir: Path) -> Any:
    """The run's ``constraints`` table, or None for a run without grid constraints."""
    from cosim.results.parts import expected_tables
    from cosim.results.readers import read_table

    if "constraints" not in expected_tables(run_dir):
        return None
    return read_table(run_dir, "constraints")


def write_plots(run_dir: Path, kpis: dict[str, Any], data: ReportData | None = None,
                net: Any = None) -> list[Path]:
    """The plots of docs/equations.md into ``run_dir/plots``.

    ``net``: the feeder for the feeder map (default: read from ``feeder.json``).

    ``data``: what :func:`read_report_data` read (with ``plots=True``); without it the
    plots read only what they draw (:data:`PLOT_BUILDING_COLUMNS`, :data:`PLOT_GRID_FIELDS`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    if data is None or data.lam is None:
        data = read_report_data(run_dir, kpis=False, plots=True)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    limit = kpis["limit_kwh"]
    paths = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)

    g = data.steps.district_grid_kwh()
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(g.index, g.to_numpy(), lw=0.6, label="district grid energy")
    window = min(168, max(1, len(g) // 10))
    ax.plot(g.index, g.rolling(window, min_periods=1).mean(), lw=1.5,
            label=f"moving mean ({window} steps)")
    ax.axhline(limit, color="red", ls="--", label=f"limit c = {limit:.2f} kWh")
    ax.set(xlabel="step", ylabel="kWh per step", title="District grid energy")
    ax.legend(loc="upper right")
    save(fig, "district_grid.png")

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
    save(fig, "lambda.png")

    cu = data.steps.cumulative_average_unmet_kwh()
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(cu.index, cu.to_numpy())
    ax.set(xlabel="step", ylabel="kWh per step",
           title="Cumulative average unmet demand (1/t) sum unmet")
    save(fig, "unmet.png")

    batch = data.grid
    if batch is not None:
        ids, none = data.element_ids, np.zeros(0, dtype=np.int64)
        for name, arr, element_ids, title in (
                ("trafo_duration.png", batch.trafo_loading_percent, ids.get("trafos", none),
                 "Transformer loading duration curve"),
                ("line_duration.png", batch.line_loading_percent, ids.get("lines", none),
                 "Line loading duration curve")):
            fig, ax = plt.subplots(figsize=(8, 3.8))
            _duration_curves(ax, arr, element_ids, "trafo" if "trafo" in name else "line")
            ax.set(xlabel="steps, sorted by loading", ylabel="loading [%]", title=title)
            save(fig, name)

        vm = batch.bus_vm_pu
        bus_ids = ids.get("buses", none)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: unknown steps
            low, high = np.nanmin(vm, axis=1), np.nanmax(vm, axis=1)
        fig, ax = plt.subplots(figsize=(10, 3.5))
        ax.fill_between(batch.steps, low, high, alpha=0.5, label="min-max over buses")
        _voltage_bands(ax, vm)
        ax.set(xlabel="step", ylabel="vm [pu]", title="Voltage envelope")
        ax.legend(loc="upper right", fontsize=8)
        save(fig, "voltage_envelope.png")

        fig, ax = plt.subplots(figsize=(10, 3.5))
        worst = worst_buses(vm)
        for j, label in worst:
            ax.plot(batch.steps, vm[:, j], lw=0.8,
                    label=f"bus {bus_ids[j] if j < len(bus_ids) else j} ({label})")
        _voltage_bands(ax, vm[:, [j for j, _ in worst]] if worst else vm)
        ax.set(xlabel="step", ylabel="vm [pu]", title="The worst buses' voltage")
        ax.legend(loc="upper right", fontsize=8)
        save(fig, "worst_bus_voltage.png")

        if net is None and (run_dir / "feeder.json").is_file():
            from grid_models.feeders import read_feeder_json

            net = read_feeder_json(run_dir / "feeder.json")
        if net is not None:
            from cosim.results.feeder_map import draw_feeder_map, element_extremes

            paths.append(draw_feeder_map(
                net,
                element_extremes(batch.line_loading_percent, ids.get("lines", none), "max"),
                element_extremes(batch.trafo_loading_percent, ids.get("trafos", none), "max"),
                element_extremes(vm, bus_ids, "min"), out / "feeder_map.png",
                title=f"{kpis.get('scenario', '')}: maximum loading and minimum voltage "
                      "over the run"))

    if data.comm is not None:
        graph, names = data.comm
        fig, ax = plt.subplots(figsize=(6.5, 5))
        # a force-directed layout costs O(n^2) per iteration: minutes for 10,000 agents
        pos = (nx.spring_layout(graph, seed=0) if graph.number_of_nodes() <= SPRING_LAYOUT_MAX
               else nx.circular_layout(graph))
        final = {name: np.nan if value is None else value  # null in kpis.json
                 for name, value in zip(names, kpis["fleet"]["final_lambda"], strict=False)}
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
        mappable = plt.cm.ScalarMappable(cmap="viridis",
                                         norm=Normalize(vmin=vmin, vmax=vmax))
        fig.colorbar(mappable, ax=ax, shrink=0.8, label="final lambda")
        ax.set(title="Communication graph (colour: final lambda)")
        ax.axis("off")
        save(fig, "comm_graph.png")
    return paths


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


def _unknown(value: Any) -> bool:
    """A KPI value that is not known: null in kpis.json, NaN before it is written."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def summary_table(kpis: dict[str, Any]) -> str:
    """The KPI table printed at the end of ``cosim run``.

    Grid hours with unknown steps read "at least X (unknown for Y steps)"; a value
    that is not known at all (null in ``kpis.json``) reads "unknown".
    """
    rows = []
    units = kpis["units"]
    for section in ("fleet", "grid"):
        values = kpis[section]
        for key, value in values.items():
            if section == "grid" and key.endswith(UNKNOWN_SUFFIX) and \
                    key[: -len(UNKNOWN_SUFFIX)] in values:
                continue  # folded into its hours row
            if key == "final_lambda":
                value = "[" + ", ".join("unknown" if _unknown(v) else f"{v:.2f}"
                                        for v in value[:10]) + \
                    (", ..." if len(value) > 10 else "") + "]"
            elif section == "grid" and key in HOURS_KEYS and value is not None:
                value = hours_text(values, key)
            elif _unknown(value):  # unknown is never zero (nor "nan")
                value = "unknown"
            elif isinstance(value, float):
                value = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.1f}"
            rows.append((section, key, str(value), units[section].get(key, "")))
    totals = kpis.get("grid_constraint_totals")
    if totals:  # runs with grid constraints: the totals and the most violated constraint
        rows.append(("gc", "grid_constraints", str(totals["grid_constraints"]), "1"))
        rows.append(("gc", "grid_constraint_violation_hours",
                     f"{totals['grid_constraint_violation_hours']:g}", "h"))
        per = kpis.get("grid_constraints") or {}
        if per:
            name, worst = max(per.items(), key=lambda kv: kv[1]["violation_hours"] or 0.0)
            rows.append(("gc", f"most violated: {name}", f"{worst['violation_hours']:g}",
                         "h"))
    width = max(len(r[1]) for r in rows)
    lines = [f"{'':5} {'KPI':<{width}}  {'value':>14}  unit"]
    for section, key, value, unit in rows:
        lines.append(f"{section:5} {key:<{width}}  {value:>14}  {unit}")
    return "\n".join(lines)


def load_kpis(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``kpis.json``, read back."""
    kpis: dict[str, Any] = json.loads((Path(run_dir) / "kpis.json").read_text())
    return kpis
