"""The columns of ``study.csv`` for one finished run: its KPIs (read from its
``kpis.json``, never recomputed), the controller's messages and timing, and the cost
gap to the oracle across the study's rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cosim.results.rundir import (
    read_marker,
)

#: Columns of study.csv measured in wall time: they differ between two runs of a study.
TIMING_COLUMNS = ("wall_ms_per_step", "controller_ms_per_step")


def run_metrics(run_dir: Path, uses_duals: bool = True) -> dict[str, Any]:
    """The study table's columns for one finished run.

    Every KPI comes from the run's own ``kpis.json`` (``cosim.results.report``), where
    it is computed once: ``fleet`` and ``grid``, and ``trajectory`` for what the study
    adds (the backlog at the end, the slopes of the cumulative average unmet demand,
    the double agents' time at lambda_max); nothing is recomputed from the tables.
    ``uses_duals`` False (no control, rule, oracle):
    the multipliers are still computed and recorded but steer nothing, so their columns
    are left empty.
    """
    kpis = json.loads((run_dir / "kpis.json").read_text())
    fleet, grid, trajectory = kpis["fleet"], kpis["grid"], kpis["trajectory"]
    steps = fleet["steps"]
    first, last = _floats([trajectory["unmet_slope_first_third"],
                           trajectory["unmet_slope_last_third"]])
    nan = float("nan")
    duals = {
        "lambda_mean_final": float(np.asarray(_floats(fleet["final_lambda"])).mean()),
        **{k: _floats([fleet.get(k)])[0] for k in SPREAD_KPIS},
        "agents_at_lambda_max": fleet["agents_at_lambda_max"],
        **{k: _floats([trajectory[k]])[0] for k in DOUBLE_SHARES},
    }
    if not uses_duals:
        duals = dict.fromkeys(duals, nan)
    return {
        "cost": fleet["total_cost"],
        "mean_district_grid_kwh": fleet["mean_district_grid_kwh"],
        "limit_kwh": kpis["limit_kwh"],
        "grid_over_limit": fleet["mean_district_grid_kwh"] / kpis["limit_kwh"],
        "final_backlog_kwh": _floats([trajectory["final_backlog_kwh"]])[0],
        "final_avg_unmet_kwh": fleet["final_avg_unmet_kwh"],
        "unmet_slope_first_third": first,
        "unmet_slope_last_third": last,
        "unmet_slope_ratio": last / first if first > 0 else float("nan"),
        "dropped_kwh": fleet["dropped_kwh"],
        # steps whose district grid energy exceeds c (the per-step reading of the limit)
        "hours_over_limit": fleet["steps_over_limit"],
        **duals,
        **controller_metrics(run_dir, steps),
        "trafo_overload_hours": grid.get("trafo_overload_hours", float("nan")),
        "max_trafo_loading_percent": grid.get("max_trafo_loading_percent", float("nan")),
        "line_overload_hours": grid.get("line_overload_hours", float("nan")),
        "hours_outside_095_105_pu": grid.get("hours_outside_095_105_pu", float("nan")),
        "hours_outside_090_110_pu": grid.get("hours_outside_090_110_pu", float("nan")),
        # the hours above are lower bounds when some power flows gave no answer
        "grid_unknown_steps": grid.get("unknown_steps", float("nan")),
        # hours with any declared grid constraint violated (runs with grid_constraints)
        "grid_constraint_violation_hours": (kpis.get("grid_constraint_totals") or {}).get(
            "grid_constraint_violation_hours", float("nan")),
    }


#: the consensus-error KPIs of ``kpis.json`` the study table repeats
SPREAD_KPIS = ("lambda_spread_last10pct", "lambda_spread_last10pct_mean",
               "lambda_spread_last10pct_rel")


#: the double agents' time at (near) lambda_max, from ``kpis.json``'s ``trajectory``
DOUBLE_SHARES = ("double_share_at_lambda_max", "double_share_near_lambda_max")


def _floats(values: list[Any]) -> list[float]:
    """``kpis.json`` numbers as floats; null (not a finite number) as NaN."""
    return [float("nan") if v is None else float(v) for v in values]


def controller_metrics(run_dir: Path, steps: int) -> dict[str, float]:
    """Messages and compute time per step of a run (NaN where the run did not record them).

    ``messages_per_step``: what a planning controller (dmpc, epos) exchanged, from its
    decision tables; ``wall_ms_per_step``: the whole run's wall time (status.json) per
    step; ``controller_ms_per_step``: the planning controller's own time (solver and
    negotiation, or plan making and selection) per step.
    """
    from cosim.results.decisions import DECISIONS_DIR, read_decisions

    nan = float("nan")
    out = {"messages_per_step": nan, "negotiation_iterations_mean": nan,
           "wall_ms_per_step": nan, "controller_ms_per_step": nan}
    wall = (read_marker(run_dir, "run") or {}).get("wall_s")
    if wall is not None and steps:
        out["wall_ms_per_step"] = 1e3 * float(wall) / steps
    dmpc = read_decisions(run_dir, "dmpc_steps")
    if dmpc is not None and len(dmpc):
        out["messages_per_step"] = float(dmpc["messages"].mean())
        out["negotiation_iterations_mean"] = float(dmpc["iterations"].mean())
    epos = read_decisions(run_dir, "epos_days")
    if epos is not None and len(epos) and steps:
        out["messages_per_step"] = float(epos["messages"].sum()) / steps
        out["negotiation_iterations_mean"] = float(epos["iterations"].mean())
    timing_path = run_dir / DECISIONS_DIR / "timing.json"
    if timing_path.is_file() and steps:
        timing = json.loads(timing_path.read_text())
        spent = sum(float(v) for k, v in timing.items() if k.endswith("_s"))
        out["controller_ms_per_step"] = 1e3 * spent / steps
    return out


def add_oracle_gap(table: pd.DataFrame, sweep_keys: list[str]) -> pd.DataFrame:
    """``cost_gap_to_oracle``: (cost - oracle cost) / oracle cost at the same sweep point."""
    if "cost" not in table or not (table["variant"] == "oracle").any():
        return table
    oracle = table[(table["variant"] == "oracle") & (table["status"] == "ok")]
    gaps = []
    for _, row in table.iterrows():
        match = oracle
        for k in sweep_keys:
            match = match[match[k] == row[k]]
        if row.get("status") != "ok" or match.empty:
            gaps.append(float("nan"))
        else:
            ref = float(match["cost"].iloc[0])
            gaps.append((row["cost"] - ref) / ref)
    table = table.copy()
    table["cost_gap_to_oracle"] = gaps
    return table
