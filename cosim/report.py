"""KPIs (``kpis.json``), plots (``plots/*.png``) and the printed summary of a run.

Everything here is computed from the files of the run directory, so a reviewer
gets the same numbers from the files alone. ``kpis.json`` is strict JSON: a value
that is not a finite number (an extreme over no known step) is ``null``. Grid hours
are lower bounds when some steps are unknown (see :mod:`grid_models.kpis`); the
summary prints them as "at least X (unknown for Y steps)".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from agents.fleet_kpis import FLEET_KPI_UNITS, cumulative_average_unmet_kwh, district_grid_kwh
from agents.fleet_kpis import fleet_kpis as compute_fleet_kpis
from agents.graphs import graph_from_json
from cosim.results import json_safe, read_table, write_json
from grid_models.kpis import HOURS_KEYS, UNKNOWN_SUFFIX, hours_text
from grid_models.kpis import grid_kpis as compute_grid_kpis
from grid_models.powerflow import BatchGridResult

GRID_KPI_UNITS = {
    "steps": "1",
    "nonconverged_steps": "steps",
    "unknown_steps": "steps",
    "trafo_overload_hours": "h",
    "line_overload_hours": "h",
    "max_trafo_loading_percent": "%",
    "max_line_loading_percent": "%",
    "hours_outside_095_105_pu": "h",
    "hours_outside_090_110_pu": "h",
    "min_vm_pu": "pu",
    "max_vm_pu": "pu",
    "losses_mwh": "MWh",
    **{key + UNKNOWN_SUFFIX: "steps" for key in HOURS_KEYS},
}


def strict_json(obj: Any) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_safe`); raises on anything left over."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False)


def _wide(frame: pd.DataFrame, key: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    wide = frame.pivot(index="time", columns=key, values=value).sort_index()
    return wide.columns.to_numpy(), wide.to_numpy(dtype=float)


def grid_batch(run_dir: Path) -> BatchGridResult | None:
    """The run's power-flow results, rebuilt from its Parquet tables."""
    try:
        g = read_table(run_dir, "grid").sort_values("time")
    except ValueError:
        return None
    buses, lines, trafos = (read_table(run_dir, t) for t in ("buses", "lines", "trafos"))
    _, vm = _wide(buses, "bus", "vm_pu")
    _, p = _wide(buses, "bus", "p_mw")
    _, q = _wide(buses, "bus", "q_mvar")
    steps = len(g)

    def wide_or_empty(frame: pd.DataFrame, key: str, value: str) -> np.ndarray:
        return _wide(frame, key, value)[1] if len(frame) else np.zeros((steps, 0))

    return BatchGridResult(
        bus_vm_pu=vm, bus_va_degree=np.full_like(vm, np.nan),  # angles are not recorded
        bus_p_mw=p,
        bus_q_mvar=q,
        line_loading_percent=wide_or_empty(lines, "line", "loading_percent"),
        line_i_ka=wide_or_empty(lines, "line", "i_ka"),
        trafo_loading_percent=wide_or_empty(trafos, "trafo", "loading_percent"),
        trafo_p_hv_mw=wide_or_empty(trafos, "trafo", "p_hv_mw"),
        losses_mw=g["losses_mw"].to_numpy(), ext_grid_p_mw=g["ext_grid_p_mw"].to_numpy(),
        ext_grid_q_mvar=g["ext_grid_q_mvar"].to_numpy(), converged=g["converged"].to_numpy(),
        steps=g["time"].to_numpy(),
    )


def compute_kpis(run_dir: Path, limit_kwh: float, dt_h: float, lambda_max: float,
                 scenario_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    buildings = read_table(run_dir, "buildings")
    fleet = compute_fleet_kpis(buildings, limit_kwh, dt_h, lambda_max=lambda_max)
    batch = grid_batch(run_dir)
    grid = compute_grid_kpis(batch, dt_h) if batch is not None else {}
    return json_safe({
        "scenario": scenario_name,
        "limit_kwh": float(limit_kwh),
        "fleet": fleet,
        "grid": grid,
        "units": {"fleet": FLEET_KPI_UNITS, "grid": {k: GRID_KPI_UNITS[k] for k in grid}},
        **(extra or {}),
    })


def write_report(run_dir: Path, built: Any, *, plots: bool = True,
                 wall_s: float | None = None, steps_run: int | None = None) -> dict[str, Any]:
    """KPIs, plots; ``wall_s`` is the time of the ``steps_run`` steps this process ran
    (fewer than the scenario's after ``--resume``)."""
    sc = built.scenario
    steps_run = sc.time.steps if steps_run is None else steps_run
    extra = {"wall_s": wall_s, "steps_per_s": steps_run / wall_s} if wall_s else {}
    kpis = compute_kpis(run_dir, built.limit_kwh, sc.time.step_h, sc.duals.lambda_max, sc.name,
                        extra)
    strict_json(kpis)  # fails here, not in a reader, if anything non-finite is left
    write_json(run_dir / "kpis.json", kpis)
    if plots:
        write_plots(run_dir, kpis)
    return kpis


def write_plots(run_dir: Path, kpis: dict[str, Any]) -> list[Path]:
    """The plots of docs/equations.md into ``run_dir/plots``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    b = read_table(run_dir, "buildings")
    limit = kpis["limit_kwh"]
    paths = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)

    g = district_grid_kwh(b)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(g.index, g.to_numpy(), lw=0.6, label="district grid energy")
    window = min(168, max(1, len(g) // 10))
    ax.plot(g.index, g.rolling(window, min_periods=1).mean(), lw=1.5,
            label=f"moving mean ({window} steps)")
    ax.axhline(limit, color="red", ls="--", label=f"limit c = {limit:.2f} kWh")
    ax.set(xlabel="step", ylabel="kWh per step", title="District grid energy")
    ax.legend(loc="upper right")
    save(fig, "district_grid.png")

    lam = b.pivot(index="time", columns="building", values="lambda")
    fig, ax = plt.subplots(figsize=(10, 3.5))
    if lam.shape[1] <= 20:
        for col in lam.columns:
            ax.plot(lam.index, lam[col].to_numpy(), lw=0.8, label=str(col))
        ax.legend(ncol=min(7, lam.shape[1]), fontsize=7, loc="upper right")
    else:
        q = np.nanpercentile(lam.to_numpy(), [0, 50, 100], axis=1)
        ax.fill_between(lam.index, q[0], q[2], alpha=0.3, label="min-max over agents")
        ax.plot(lam.index, q[1], label="median")
        ax.legend()
    ax.set(xlabel="step", ylabel="lambda", title="Global multiplier per agent")
    save(fig, "lambda.png")

    cu = cumulative_average_unmet_kwh(b)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(cu.index, cu.to_numpy())
    ax.set(xlabel="step", ylabel="kWh per step",
           title="Cumulative average unmet demand (1/t) sum unmet")
    save(fig, "unmet.png")

    batch = grid_batch(run_dir)
    if batch is not None:
        tl = batch.trafo_loading_percent
        fig, ax = plt.subplots(figsize=(7, 3.5))
        if tl.shape[1]:
            for j in range(tl.shape[1]):
                curve = np.sort(tl[:, j][np.isfinite(tl[:, j])])[::-1]
                ax.plot(np.arange(1, len(curve) + 1), curve, label=f"trafo {j}")
            ax.axhline(100, color="red", ls="--", lw=0.8)
            ax.legend()
        ax.set(xlabel="hours (sorted)", ylabel="loading [%]",
               title="Transformer loading duration curve")
        save(fig, "trafo_duration.png")

        vm = batch.bus_vm_pu
        fig, ax = plt.subplots(figsize=(10, 3.5))
        with np.errstate(all="ignore"):
            ax.fill_between(batch.steps, np.nanmin(vm, axis=1), np.nanmax(vm, axis=1),
                            alpha=0.5, label="min-max over buses")
        for y in (0.95, 1.05):
            ax.axhline(y, color="orange", ls="--", lw=0.8)
        for y in (0.90, 1.10):
            ax.axhline(y, color="red", ls="--", lw=0.8)
        ax.set(xlabel="step", ylabel="vm [pu]", title="Voltage envelope")
        ax.legend()
        save(fig, "voltage_envelope.png")

    comm = run_dir / "comm_graph.json"
    if comm.is_file():
        graph, names = graph_from_json(comm.read_text())
        fig, ax = plt.subplots(figsize=(5, 5))
        pos = nx.spring_layout(graph, seed=0)
        final = {name: np.nan if value is None else value  # null in kpis.json
                 for name, value in zip(names, kpis["fleet"]["final_lambda"], strict=False)}
        colors = [final.get(names[n], 0.0) if isinstance(n, int) else final.get(n, 0.0)
                  for n in graph.nodes]
        nx.draw_networkx(graph, pos, ax=ax, node_color=colors, cmap="viridis",
                         with_labels=graph.number_of_nodes() <= 40, node_size=300
                         if graph.number_of_nodes() <= 40 else 20, font_size=7)
        ax.set(title="Communication graph (colour: final lambda)")
        ax.axis("off")
        save(fig, "comm_graph.png")
    return paths


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
                value = "[" + ", ".join("unknown" if v is None else f"{v:.2f}"
                                        for v in value[:10]) + \
                    (", ..." if len(value) > 10 else "") + "]"
            elif section == "grid" and key in HOURS_KEYS and value is not None:
                value = hours_text(values, key)
            elif value is None:
                value = "unknown"
            elif isinstance(value, float):
                value = f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.1f}"
            rows.append((section, key, str(value), units[section].get(key, "")))
    width = max(len(r[1]) for r in rows)
    lines = [f"{'':5} {'KPI':<{width}}  {'value':>14}  unit"]
    for section, key, value, unit in rows:
        lines.append(f"{section:5} {key:<{width}}  {value:>14}  {unit}")
    return "\n".join(lines)


def load_kpis(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "kpis.json").read_text())
