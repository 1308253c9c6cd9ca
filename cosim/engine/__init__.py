"""The engines that step a run: mosaik (its World and simulators) and the plain loop;
resume, checkpoints and user controllers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from cosim.engine.checkpoint import Checkpoints
    from cosim.engine.fleet_env import FleetParallelEnv, SharedPolicyVecEnv
    from cosim.engine.plain import run_plain_into
    from cosim.engine.run import RunOutcome, execute, resume, run_directory
    from cosim.engine.world import run_world

_API = {
    "Checkpoints": "checkpoint",
    "FleetParallelEnv": "fleet_env",
    "SharedPolicyVecEnv": "fleet_env",
    "run_plain_into": "plain",
    "RunOutcome": "run",
    "execute": "run",
    "resume": "run",
    "run_directory": "run",
    "run_world": "world",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
