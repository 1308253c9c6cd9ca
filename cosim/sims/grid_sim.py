"""GridSim: the feeder's AC power flow (pandapower or power-grid-model backend).

Inputs: ``p_kw`` arrays of every fleet shard (net consumption; Q from the scenario's
power factor); the feeder's background of the step is read inside (the same
``GridModel.solve`` as the plain engine). Outputs: the step's ``GridResult`` fields.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3

from cosim.sims.checkpoints import Checkpoints
from cosim.sims.consensus_sim import gather
from cosim.sims.meta import meta

GRID_COMPONENT = "grid"


class GridSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(meta("GridSim"))
        self.result: Any = None

    def init(self, sid: str, time_resolution: float = 1.0, built: Any = None,
             run_dir: str | None = None, start_step: int = 0,
             checkpoint_every: int = 0) -> dict:
        if built is None or built.grid is None:
            raise ValueError("GridSim needs built= with a feeder")
        self.built = built
        self.grid = built.grid
        self.start_step = int(start_step)  # the run's step at mosaik time 0 (--resume)
        self.checkpoints = Checkpoints(run_dir, start_step, checkpoint_every,
                                       built.scenario.time.steps)
        if start_step:
            self.grid.powerflow.set_warm_start_state(self.checkpoints.load(GRID_COMPONENT))
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        if num != 1:
            raise ValueError("GridSim holds one Grid entity")
        return [{"eid": "Grid", "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        t = self.start_step + time
        p_kw = gather(inputs["Grid"]["p_kw"], self.built.n)
        self.result = self.grid.solve(t, p_kw)  # the feeder's background of step t inside
        self.checkpoints.after_step(time, GRID_COMPONENT, self.grid.powerflow.warm_start_state)
        return time + 1

    def get_data(self, outputs: dict) -> dict:
        r = self.result
        return {eid: {a: r if a == "result" else getattr(r, a) for a in attrs}
                for eid, attrs in outputs.items()}
