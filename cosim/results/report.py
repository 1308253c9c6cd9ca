"""KPIs (``kpis.json``), plots (``plots/*.png``, drawn by :mod:`cosim.results.plots`) and
the printed summary of a run.

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
pandas, bit for bit (``tests/cosim/test_streamed_results.py``). ``kpis.json``'s
``trajectory`` (:func:`agents.fleet.kpis.trajectory_kpis`) is what ``cosim study`` adds to
its table, computed here in the same pass.
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
from agents.fleet.kpi_labels import FLEET_KPI_LABELS, GRID_KPI_LABELS, TRAJECTORY_KPI_LABELS
from agents.fleet.kpis import (
    FLEET_KPI_COLUMNS,
    FLEET_KPI_UNITS,
    DoubleShares,
    FleetKpiStream,
    StepTotals,
    trajectory_kpis,
)
from cosim.results.jsonio import json_safe, write_json
from cosim.results.readers import TableScan, read_table
from grid_models.kpis import HOURS_KEYS, UNKNOWN_SUFFIX, hours_text
from grid_models.kpis import grid_kpis as compute_grid_kpis
from grid_models.powerflow.interface import BatchGridResult

#: The unit of each trajectory KPI (``kpis.json``'s ``units.trajectory``).
TRAJECTORY_KPI_UNITS = {name: label.unit for name, label in TRAJECTORY_KPI_LABELS.items()}
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
#: What the plots draw from the buildings table.
PLOT_BUILDING_COLUMNS = ("time", "building", "grid_kwh", "unmet_kwh", "lambda")
#: What the report (KPIs and plots) reads from the buildings table.
REPORT_BUILDING_COLUMNS = (*FLEET_KPI_COLUMNS, "backlog_kwh")
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
    """What :func:`compute_kpis` and :func:`cosim.results.plots.write_plots` take from the
    run's tables."""

    steps: StepTotals
    fleet: FleetKpiStream | None
    lam: LambdaTracks | None
    grid: BatchGridResult | None
    #: element ids of each grid table read (``{"buses": ids, ...}``), in column order
    element_ids: dict[str, np.ndarray] = field(default_factory=dict)
    #: the communication graph and building ids (``comm_graph.json``), read for the plots
    comm: tuple[nx.Graph[int], list[str]] | None = None
    #: the double agents' time at lambda_max (read when the classes were given)
    shares: DoubleShares | None = None


def read_report_data(run_dir: Path, *, kpis: bool = True, plots: bool = True,
                     classes: Sequence[str] | None = None,
                     lambda_max: float | None = None) -> ReportData:
    """One pass over the buildings table (only the columns used) and the grid arrays used.

    ``classes`` and ``lambda_max`` (with ``kpis``): also count the double agents' time at
    lambda_max (:class:`agents.fleet.kpis.DoubleShares`, for the trajectory KPIs).
    """
    columns = REPORT_BUILDING_COLUMNS if kpis else PLOT_BUILDING_COLUMNS
    scan = TableScan(run_dir, "buildings", columns)
    fleet = FleetKpiStream(scan.num_rows) if kpis else None
    steps = fleet.steps if fleet is not None else StepTotals()
    comm = read_comm_graph(run_dir) if plots else None
    lam = LambdaTracks(lambda_clusters(comm)) if plots else None
    shares = (DoubleShares(list(classes), lambda_max)
              if kpis and classes is not None and lambda_max is not None else None)
    for chunk in scan.steps():
        if fleet is not None:
            fleet.add(chunk)
        else:
            steps.add(chunk)
        if lam is not None:
            lam.add(chunk)
        if shares is not None:
            shares.add(chunk)
    fields = KPI_GRID_FIELDS if kpis else PLOT_GRID_FIELDS
    batch, ids = _grid_batch(run_dir, fields)
    return ReportData(steps=steps, fleet=fleet, lam=lam, grid=batch, element_ids=ids,
                      comm=comm, shares=shares)


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
        "units": {"fleet": FLEET_KPI_UNITS, "grid": {k: GRID_KPI_UNITS[k] for k in grid},
                  **({"trajectory": TRAJECTORY_KPI_UNITS} if "trajectory" in (extra or {})
                     else {})},
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
    data = read_report_data(run_dir, kpis=True, plots=plots, classes=built.classes,
                            lambda_max=sc.duals.lambda_max)
    assert data.shares is not None
    # what the study table adds (cosim.tools.study.metrics), computed here once
    extra["trajectory"] = trajectory_kpis(data.steps, data.shares)
    constraints = _constraint_frame(run_dir)
    if constraints is not None:
        from cosim.results.constraint_report import constraint_kpis, constraint_totals

        extra["grid_constraints"] = constraint_kpis(constraints, sc.time.step_h)
        extra["grid_constraint_totals"] = constraint_totals(constraints, sc.time.step_h)
    kpis = _kpis(data, built.limit_kwh, sc.time.step_h, sc.duals.lambda_max, sc.name, extra)
    write_json(run_dir / "kpis.json", kpis)  # strict: allow_nan=False, fails on NaN
    if plots:
        from cosim.results.plots import write_plots

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
