"""The study's figures (``<out>/*.png``): unmet demand per c, lambda trajectories,
grid energy against c and grid hours per variant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cosim.results.readers import read_table


def study_figures(table: pd.DataFrame, out: Path) -> None:
    """Cumulative average unmet demand per c (one panel per variant), lambda
    trajectories, and district grid energy against c."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.consensus.duals import DUAL_MODES
    from agents.fleet.kpis import cumulative_average_unmet_kwh
    from cosim.results.plots import run_time, step_datetimes, time_axis

    ok = table[table["status"] == "ok"]
    if ok.empty:
        return
    key = next((c for c in table.columns if c.endswith("fraction_of_peak")), None)
    variants = list(dict.fromkeys(ok["variant"]))
    ncols = min(4, len(variants))
    nrows = -(-len(variants) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.2 * nrows), sharey=True,
                             squeeze=False)
    for ax, variant in zip(axes.flat, variants, strict=False):
        for _, row in ok[ok["variant"] == variant].iterrows():
            b = read_table(out / row["run_dir"], "buildings",
                           columns=["time", "unmet_kwh"])
            cu = cumulative_average_unmet_kwh(b)
            label = f"c={row[key]:g}" if key else row["run"]
            start_row = run_time(out / row["run_dir"])[0]
            ax.plot(step_datetimes(cu.index, start_row), cu.to_numpy(), label=label)
        ax.set(title=variant, ylabel="cumulative avg unmet [kWh/step]")
        time_axis(ax, start_row, short=True)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    for ax in list(axes.flat)[len(variants):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "unmet_by_c.png", dpi=100)
    plt.close(fig)

    modes = [v for v in variants if v in DUAL_MODES]  # variants named after a dual mode
    if modes:
        points = sorted(ok[key].unique()) if key else [None]
        fig, axes = plt.subplots(len(modes), len(points),
                                 figsize=(3.6 * len(points), 2.6 * len(modes)),
                                 sharey=True, squeeze=False)
        for r, variant in enumerate(modes):
            for c, point in enumerate(points):
                ax = axes[r][c]
                sel = ok[(ok["variant"] == variant) & ((ok[key] == point) if key else True)]
                if sel.empty:
                    ax.axis("off")
                    continue
                b = read_table(out / sel["run_dir"].iloc[0], "buildings",
                               columns=["time", "building", "lambda"])
                lam = b.pivot(index="time", columns="building", values="lambda")
                start_row = run_time(out / sel["run_dir"].iloc[0])[0]
                x = step_datetimes(lam.index, start_row)
                for col in lam.columns:
                    ax.plot(x, lam[col].to_numpy(), lw=0.4)
                time_axis(ax, start_row, short=True)
                ax.set_title(f"{variant}, c={point:g}" if key else variant, fontsize=9)
                if c == 0:
                    ax.set_ylabel("lambda")
                if r != len(modes) - 1:
                    ax.set_xlabel("")
        fig.tight_layout()
        fig.savefig(out / "lambda_trajectories.png", dpi=90)
        plt.close(fig)

    gc_hours = ok.get("grid_constraint_violation_hours")
    if gc_hours is not None and gc_hours.notna().any():
        grid_hours_figure(ok, out / "grid_hours.png")

    if key:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for variant in variants:
            part = ok[ok["variant"] == variant].sort_values("limit_kwh")
            ax.plot(part["limit_kwh"], part["mean_district_grid_kwh"], "o-", label=variant)
        lim = ok["limit_kwh"]
        ax.plot([lim.min(), lim.max()], [lim.min(), lim.max()], "k--", lw=0.8, label="= c")
        ax.set(xlabel="limit c [kWh/step]", ylabel="mean district grid [kWh/step]",
               title="District grid energy against c")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        fig.savefig(out / "grid_vs_c.png", dpi=100)
        plt.close(fig)


#: the grid KPIs of ``grid_hours.png`` (column, label)
GRID_HOURS = (("trafo_overload_hours", "transformer > 100 %"),
              ("line_overload_hours", "any line > 100 %"),
              ("hours_outside_095_105_pu", "a voltage outside 0.95-1.05 pu"))


def grid_hours_figure(ok: pd.DataFrame, path: Path) -> None:
    """Bars per variant: transformer and line overload hours and hours outside the voltage
    band (one point per variant: a study with grid constraints, no sweep), with the
    cost relative to the first variant written above each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(v) for v in ok["variant"]]
    x = np.arange(len(labels))
    width = 0.8 / len(GRID_HOURS)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels)), 4))
    for j, (col, name) in enumerate(GRID_HOURS):
        ax.bar(x + (j - 1) * width, ok[col].to_numpy(dtype=float), width, label=name)
    top = np.nanmax(ok[[c for c, _ in GRID_HOURS]].to_numpy(dtype=float))
    for xi, cost in zip(x, ok["cost"].to_numpy(dtype=float), strict=True):
        ax.text(float(xi), top * 1.02, f"${cost:,.0f}", ha="center", fontsize=7)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set(ylabel="hours", title="Grid limits by controller (cost above)")
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
