"""`cosim demo`: the quickstart's first look at the project.

Until the co-simulation exists this runs the plain building loop over the
CityLearn 2022 data with no control (every kWh from the grid) and prints a summary.
"""

from __future__ import annotations

import numpy as np

from agents.building import FleetParams, FleetState, step_fleet
from agents.data import load_citylearn

DEMO_BUILDINGS = [f"Building_{i}" for i in range(1, 8)]
DEMO_DEMAND_SCALE = [1.0, 1.0, 2.0, 1.0, 1.0, 2.0, 1.0]  # two "double demand" agents
DEMO_STEPS = 3000


def run_demo(steps: int = DEMO_STEPS) -> dict[str, float]:
    data = load_citylearn()
    params = FleetParams.from_buildings(
        [data.building(n) for n in DEMO_BUILDINGS], demand_scale=DEMO_DEMAND_SCALE
    )
    state = FleetState.initial(params)
    demand, solar, price = data.window(DEMO_BUILDINGS, 0, steps)
    district_kwh = np.empty(steps)
    totals = dict(demand_kwh=0.0, grid_kwh=0.0, export_kwh=0.0, cost=0.0)
    for t in range(steps):
        state, r = step_fleet(params, state, demand[t], solar[t], price[t],
                              u_grid=1.0, u_batt=0.0, dt_h=data.hours_per_step)
        district_kwh[t] = r.grid_kwh.sum()
        for key in totals:
            totals[key] += float(getattr(r, key).sum())
    return dict(
        buildings=float(params.n),
        steps=float(steps),
        total_demand_kwh=totals["demand_kwh"],
        total_grid_kwh=totals["grid_kwh"],
        total_export_kwh=totals["export_kwh"],
        total_cost=totals["cost"],
        peak_district_import_kwh=float(district_kwh.max()),
        mean_district_import_kwh=float(district_kwh.mean()),
        peak_to_average=float(district_kwh.max() / district_kwh.mean()),
    )


def main() -> int:
    summary = run_demo()
    print("Demo: 7 CityLearn 2022 buildings, no control, plain loop "
          f"({int(summary['steps'])} hourly steps)")
    for key, value in summary.items():
        print(f"  {key:<28} {value:12.3f}")
    return 0
