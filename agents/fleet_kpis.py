"""Fleet KPIs of docs/equations.md from a results table (``buildings.parquet``).

Definitions, with G_t = sum_i grid_kwh_i,t the district's grid energy of step t
and T the number of steps:

    total_cost                 sum of ``cost`` over buildings and steps ($)
    mean_district_grid_kwh     (1/T) sum_t G_t, to compare with ``limit_kwh`` (c per step)
    steps_over_limit           number of steps with G_t > c
    final_avg_unmet_kwh        the paper's cumulative average unmet demand at the end,
                               (1/T) sum_t sum_i unmet_i,t; ``unmet`` = demand to serve
                               not served in the step (backlog carried on + dropped), so
                               demand postponed for k steps counts k times
    dropped_kwh                demand dropped above the backlog cap, total
    peak_district_import_kwh   max_t G_t (kWh per step); ``..._kw`` = that / dt_h
    peak_to_average            max_t G_t / mean_t G_t (None when the mean is 0)
    ramping_kwh                sum_t |G_t - G_{t-1}|
    consensus_error            max_i |lambda_i - mean_j lambda_j| at the last step
    final_lambda               lambda per building at the last step (building order)
    agents_at_lambda_max       how many of those lie within 1e-9 of lambda_max

"At the last step" means the values the agents used in the run's last step, the
last ones the table holds (the dual update after the last step is not recorded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

LAMBDA_MAX_ATOL = 1e-9

FLEET_KPI_UNITS = {
    "n_buildings": "1",
    "steps": "1",
    "total_cost": "$",
    "mean_district_grid_kwh": "kWh per step",
    "limit_kwh": "kWh per step",
    "steps_over_limit": "steps",
    "final_avg_unmet_kwh": "kWh per step",
    "dropped_kwh": "kWh",
    "peak_district_import_kwh": "kWh per step",
    "peak_district_import_kw": "kW",
    "peak_to_average": "1",
    "ramping_kwh": "kWh",
    "consensus_error": "1 (multiplier units)",
    "final_lambda": "1 (multiplier units), per building",
    "agents_at_lambda_max": "agents",
}


def district_grid_kwh(df: pd.DataFrame) -> pd.Series:
    """G_t, the district's grid energy per step, indexed by ``time``."""
    return df.groupby("time", sort=True)["grid_kwh"].sum()


def cumulative_average_unmet_kwh(df: pd.DataFrame) -> pd.Series:
    """(1/t) sum_{tau <= t} sum_i unmet_i,tau per step t (t counted from 1)."""
    unmet = df.groupby("time", sort=True)["unmet_kwh"].sum()
    return unmet.cumsum() / np.arange(1, len(unmet) + 1)


def fleet_kpis(
    df: pd.DataFrame, limit_kwh: float, dt_h: float, lambda_max: float = 15.0
) -> dict[str, Any]:
    """The fleet KPIs named in ``FLEET_KPI_UNITS`` (plain Python values, JSON-ready)."""
    if df.empty:
        raise ValueError("fleet_kpis: the results table is empty")
    if not dt_h > 0:
        raise ValueError(f"fleet_kpis: dt_h must be > 0, got {dt_h}")
    grid = district_grid_kwh(df).to_numpy()
    steps = int(grid.shape[0])
    mean_grid = float(grid.mean())
    peak = float(grid.max())
    last = df[df["time"] == df["time"].max()]
    lam = last["lambda"].to_numpy(dtype=np.float64)
    return {
        "n_buildings": int(df["building"].nunique()),
        "steps": steps,
        "total_cost": float(df["cost"].sum()),
        "mean_district_grid_kwh": mean_grid,
        "limit_kwh": float(limit_kwh),
        "steps_over_limit": int((grid > limit_kwh).sum()),
        "final_avg_unmet_kwh": float(cumulative_average_unmet_kwh(df).iloc[-1]),
        "dropped_kwh": float(df["dropped_kwh"].sum()),
        "peak_district_import_kwh": peak,
        "peak_district_import_kw": peak / dt_h,
        "peak_to_average": peak / mean_grid if mean_grid > 0 else None,
        "ramping_kwh": float(np.abs(np.diff(grid)).sum()),
        "consensus_error": float(np.abs(lam - lam.mean()).max()),
        "final_lambda": [float(x) for x in lam],
        "agents_at_lambda_max": int((lam >= lambda_max - LAMBDA_MAX_ATOL).sum()),
    }
