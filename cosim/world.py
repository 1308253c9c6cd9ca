"""The mosaik World of a scenario (DESIGN.md §6).

    ProfileSim.Building    --exogenous------------------> BuildingAgentSim.Agent
    BuildingAgentSim.Agent --grid_kwh, r2_kwh-------------> ConsensusSim.Agent
    ConsensusSim.Agent     --lambda, mu, nu (time-shifted)-> BuildingAgentSim.Agent
    BuildingAgentSim.Agent --p_kw-------------------------> GridSim.Grid
    ProfileSim.Background  --background loads------------> GridSim.Grid
    BuildingAgentSim.Agent, GridSim.Grid -----------------> Collector.Monitor -> run directory

One simulator instance each (entities inside), except that the buildings may be
split over several BuildingAgentSim shards, in-process or each its own process
started by mosaik's "cmd" mode on loopback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import mosaik
import numpy as np

from cosim.build import Built
from cosim.results import RunWriter
from cosim.sims.meta import MULTIPLIERS

SIM_MODULES = {
    "ProfileSim": "cosim.sims.profile_sim:ProfileSim",
    "BuildingAgentSim": "cosim.sims.building_sim:BuildingAgentSim",
    "ConsensusSim": "cosim.sims.consensus_sim:ConsensusSim",
    "GridSim": "cosim.sims.grid_sim:GridSim",
    "Collector": "cosim.sims.collector:Collector",
}


def _quiet_logging() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous (start, count) of each shard."""
    parts = np.array_split(np.arange(n), shards)
    return [(int(p[0]), len(p)) for p in parts if len(p)]


def run_world(built: Built, writer: RunWriter, *, scenario_path: Path | None = None,
              progress: bool = True) -> None:
    """Build the World, run ``built.scenario.time.steps`` steps, shut it down."""
    sc = built.scenario
    _quiet_logging()
    sim_config: dict[str, Any] = {name: {"python": path} for name, path in SIM_MODULES.items()}
    sharded_cmd = sc.sharding.mode == "cmd"
    if sharded_cmd:
        if scenario_path is None:
            raise ValueError("cmd-mode shards need the resolved scenario file")
        sim_config["BuildingAgentShard"] = {
            "cmd": f"{sys.executable} -m cosim.sims.building_sim %(addr)s",
        }
    world = mosaik.World(sim_config, time_resolution=3600.0 * sc.time.step_h,
                         skip_greetings=True, configure_logging=False, cache=False)
    try:
        _wire(world, built, writer, sharded_cmd, scenario_path)
        world.run(until=sc.time.steps, print_progress=progress, lazy_stepping=False)
    finally:
        world.shutdown()  # idempotent: run() already shut down after a normal end


def _wire(world: mosaik.World, built: Built, writer: RunWriter, sharded_cmd: bool,
          scenario_path: Path | None) -> None:
    n = built.n
    profile = world.start("ProfileSim", built=built)
    exo = profile.Building.create(n, index=0)
    agents: list[Any] = []
    for start, count in shard_bounds(n, built.scenario.sharding.shards):
        if sharded_cmd:
            sim = world.start("BuildingAgentShard", scenario_path=str(scenario_path))
        else:
            sim = world.start("BuildingAgentSim", built=built)
        agents.extend(sim.Agent.create(count, index=start))
    consensus = world.start("ConsensusSim", built=built).Agent.create(n, index=0)
    collector = world.start("Collector", writer=writer, names=built.names).Monitor.create(1)[0]
    grid = None
    if built.grid is not None:
        grid = world.start("GridSim", built=built).Grid.create(1)[0]
        background = profile.Background.create(1)[0]
        world.connect(background, grid, "background")
        world.connect(grid, collector, "result")
    for e, a, c in zip(exo, agents, consensus, strict=True):
        world.connect(e, a, "exogenous")
        world.connect(a, c, "grid_kwh", "r2_kwh")
        world.connect(c, a, *MULTIPLIERS, time_shifted=True,
                      initial_data=dict.fromkeys(MULTIPLIERS, 0.0))
        world.connect(a, collector, "record")
        if grid is not None:
            world.connect(a, grid, "p_kw")
