"""The plain-loop engine: the same domain objects as the mosaik run, no mosaik.

One step: ``agents.fleet.runner.FleetLoop`` (observation, controller, building model,
duals), then the feeder's power flow with the same ``GridModel`` through a
``GridFeed`` (per step, or batched up to each flush), then, with grid constraints,
their multipliers from the step's measurement (``cosim.scenario.grid_constraints``), then the
writer. It is the reference for the co-simulation's wiring and the yardstick of
its overhead. At every checkpoint of the writer the fleet's state is saved, so
that ``--resume`` continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from cosim.engine.checkpoint import FLEET_COMPONENT, GRID_COMPONENT, Checkpoints
from cosim.results.decisions import write_decisions
from cosim.results.writer import RunWriter
from cosim.scenario.build import Built

if TYPE_CHECKING:
    from cosim.scenario.grid_constraints import GridConstraintSet
    from grid_models.grid_model import GridFeed
    from grid_models.powerflow.interface import GridResult

#: one solved step: (step, power-flow result, grid constraints row or None)
GridStep = tuple[int, "GridResult", "dict[str, np.ndarray] | None"]


def grid_step(feed: GridFeed, constraints: GridConstraintSet | None, t: int,
              p_kw: np.ndarray) -> list[GridStep]:
    """Feed step ``t``'s net loads (kW per building) to the feeder; the steps solved now.

    With grid constraints (solved per step) each step's measurement updates their
    multipliers, which the buildings see from step t+1 on, and its row comes back.
    The plain engine and the multi-agent env (cosim.engine.fleet_env) step the grid through it.
    """
    out: list[GridStep] = []
    for step, result in feed.add(t, p_kw):
        row = None
        if constraints is not None:  # the multipliers of step t+1
            measured, sign = constraints.probe.measure(result, p_kw)
            row = constraints.step(measured, sign)
        out.append((step, result, row))
    return out


def run_plain_into(built: Built, writer: RunWriter, *, progress: bool = False,
                   start_step: int = 0, grid_solve: str = "batch") -> None:
    """Run the fleet loop and the feeder's power flow step by step into ``writer``.

    From ``start_step`` on (resumed from the writer's checkpoints when > 0); the fleet's
    and the grid's state is saved at each checkpoint. Raises ``ValueError`` when the
    scenario has grid constraints and ``grid_solve`` is not ``"per_step"``.
    """
    from agents.fleet.runner import FleetLoop
    from grid_models.grid_model import GridFeed

    setup = built.setup
    constraints = built.grid_constraints
    loop = FleetLoop(setup, built.controller, built.duals, constraints)
    grid = built.grid
    if constraints is not None and grid_solve != "per_step":
        raise ValueError("grid constraints need the grid solved per step")
    feed = GridFeed(grid, grid_solve, writer.flush_every, setup.n_steps) if grid else None
    checkpoints = Checkpoints(str(writer.run_dir), start_step, writer.flush_every,
                              setup.n_steps)
    if start_step:
        loop.restore(checkpoints.load(FLEET_COMPONENT))
        if grid is not None:
            grid.powerflow.set_warm_start_state(checkpoints.load(GRID_COMPONENT))
    steps: Iterable[int] = range(start_step, setup.n_steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="plain run", unit="step", initial=start_step,
                     total=setup.n_steps)
    for t in steps:
        values = loop.step()
        writer.add_buildings(t, values)
        if feed is not None:
            for step, result, row in grid_step(feed, constraints, t, values["p_kw"]):
                writer.add_grid(step, result)
                if row is not None:
                    writer.add_constraints(step, row)
        writer.step_done(t)
        checkpoints.after_step(t, FLEET_COMPONENT, loop.snapshot)
        if grid is not None:
            checkpoints.after_step(t, GRID_COMPONENT, grid.powerflow.warm_start_state)
    write_decisions(writer.run_dir, built.controller)
