"""The plain-loop engine: the same domain objects as the mosaik run, no mosaik.

Buildings, controller and duals run through ``agents.runner.run_plain``; the
feeder's power flow is then solved step by step with the same ``GridModel``
(the fleet does not react to the grid, so the order does not change a number).
It is the reference for the co-simulation's wiring and the yardstick of its
overhead.
"""

from __future__ import annotations

from agents.runner import run_plain
from cosim.build import Built
from cosim.results import BUILDING_VALUE_COLUMNS, RunWriter


def run_plain_into(built: Built, writer: RunWriter, *, progress: bool = False) -> None:
    setup = built.setup
    frame = run_plain(setup, built.controller, built.duals, progress=progress)
    steps, n = setup.n_steps, setup.n
    cols = {c: frame[c].to_numpy().reshape(steps, n) for c in BUILDING_VALUE_COLUMNS}
    p_kw = (cols["grid_kwh"] - cols["export_kwh"]) / setup.dt_h
    for t in range(steps):
        writer.add_buildings(t, {c: v[t] for c, v in cols.items()})
        if built.grid is not None:
            writer.add_grid(t, built.grid.solve(t, p_kw[t]))
        writer.step_done(t)

