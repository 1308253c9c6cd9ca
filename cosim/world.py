"""The mosaik World of a scenario (docs/architecture.md).

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

import shlex
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


def shard_command(executable: str = sys.executable) -> str:
    """The "cmd" of a BuildingAgentSim shard process, for mosaik's CmdStarter.

    ``-I`` (isolated mode) keeps the working directory (and PYTHON* variables and the
    user's site-packages) off the shard's ``sys.path``: a shard imports only the
    installed project, never an ``agents/`` or ``cosim/`` lying in the directory the
    run was started from. The interpreter path is shell-quoted (the starter is told to
    split POSIX-style, see :data:`SHARD_STARTER`) and its ``%`` escaped for mosaik's
    ``%(addr)s`` substitution, so paths with spaces work.
    """
    exe = shlex.quote(executable).replace("%", "%%")
    return f"{exe} -I -m cosim.sims.building_sim %(addr)s"


#: mosaik 3.6's CmdStarter splits the command with ``shlex.split(cmd, posix=...)`` and
#: defaults to ``posix = (os.name == "nt")``, i.e. non-POSIX splitting on Linux, which
#: keeps quotes inside the arguments; ask for POSIX splitting where it applies.
SHARD_STARTER = {"posix": sys.platform != "win32"}


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous (start, count) of each shard."""
    parts = np.array_split(np.arange(n), shards)
    return [(int(p[0]), len(p)) for p in parts if len(p)]


def run_world(built: Built, writer: RunWriter, *, scenario_path: Path | None = None,
              progress: bool = True, start_step: int = 0) -> None:
    """Build the World, run the steps from ``start_step`` to the end, shut it down.

    mosaik's time 0 is the run's step ``start_step``: after ``--resume`` every
    simulator adds it to mosaik's time and starts from the state saved with
    that checkpoint in the run directory.
    """
    sc = built.scenario
    _quiet_logging()
    sim_config: dict[str, Any] = {name: {"python": path} for name, path in SIM_MODULES.items()}
    sharded_cmd = sc.sharding.mode == "cmd"
    if sharded_cmd:
        if scenario_path is None:
            raise ValueError("cmd-mode shards need the resolved scenario file")
        sim_config["BuildingAgentShard"] = {"cmd": shard_command(), **SHARD_STARTER}
    world = mosaik.World(sim_config, time_resolution=3600.0 * sc.time.step_h,
                         skip_greetings=True, configure_logging=False, cache=False)
    try:
        ckpt = {"run_dir": str(writer.run_dir), "start_step": int(start_step),
                "checkpoint_every": int(writer.flush_every)}
        _wire(world, built, writer, sharded_cmd, scenario_path, ckpt)
        world.run(until=sc.time.steps - start_step, print_progress=progress,
                  lazy_stepping=False)
    finally:
        world.shutdown()  # idempotent: run() already shut down after a normal end


def _wire(world: mosaik.World, built: Built, writer: RunWriter, sharded_cmd: bool,
          scenario_path: Path | None, ckpt: dict[str, Any]) -> None:
    n = built.n
    start_step = ckpt["start_step"]
    profile = world.start("ProfileSim", built=built, start_step=start_step)
    exo = profile.Building.create(n, index=0)
    agents: list[Any] = []
    for start, count in shard_bounds(n, built.scenario.sharding.shards):
        if sharded_cmd:
            sim = world.start("BuildingAgentShard", scenario_path=str(scenario_path), **ckpt)
        else:
            sim = world.start("BuildingAgentSim", built=built, **ckpt)
        agents.extend(sim.Agent.create(count, index=start))
    consensus_sim = world.start("ConsensusSim", built=built, **ckpt)
    consensus = consensus_sim.Agent.create(n, index=0)
    multipliers = built.duals.state  # restored by ConsensusSim's init on --resume
    collector = world.start("Collector", writer=writer, names=built.names,
                            start_step=start_step).Monitor.create(1)[0]
    grid = None
    if built.grid is not None:
        grid = world.start("GridSim", built=built, **ckpt).Grid.create(1)[0]
        background = profile.Background.create(1)[0]
        world.connect(background, grid, "background")
        world.connect(grid, collector, "result")
    initial = {"lambda": multipliers.lam, "mu": multipliers.mu, "nu": multipliers.nu}
    for i, (e, a, c) in enumerate(zip(exo, agents, consensus, strict=True)):
        world.connect(e, a, "exogenous")
        world.connect(a, c, "grid_kwh", "r2_kwh")
        world.connect(c, a, *MULTIPLIERS, time_shifted=True,
                      initial_data={m: float(initial[m][i]) for m in MULTIPLIERS})
        world.connect(a, collector, "record")
        if grid is not None:
            world.connect(a, grid, "p_kw")
