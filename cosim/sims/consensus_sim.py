"""ConsensusSim: the communication network and the dual dynamics (agents.duals).

Its outputs at step t are the multipliers after the update with step t's grid
energy; the agents read them through a time-shifted connection (initial 0).
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

from cosim.sims.checkpoints import Checkpoints
from cosim.sims.meta import meta

DUALS_COMPONENT = "duals"


class ConsensusSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(meta("ConsensusSim"))
        self.eids: list[str] = []
        self.index: dict[str, int] = {}

    def init(self, sid: str, time_resolution: float = 1.0, built: Any = None,
             run_dir: str | None = None, start_step: int = 0,
             checkpoint_every: int = 0) -> dict:
        if built is None:
            raise ValueError("ConsensusSim needs built= (a cosim.build.Built)")
        self.built = built
        self.duals = built.duals
        self.checkpoints = Checkpoints(run_dir, start_step, checkpoint_every,
                                       built.scenario.time.steps)
        if start_step:
            self.duals.restore(self.checkpoints.load(DUALS_COMPONENT))
        return self.meta

    def create(self, num: int, model: str, index: int = 0) -> list[dict]:
        out = []
        for i in range(int(index), int(index) + num):
            eid = self.built.names[i]
            self.eids.append(eid)
            self.index[eid] = i
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        n = self.duals.n
        grid = np.zeros(n)
        r2 = np.zeros(n)
        for eid, attrs in inputs.items():
            i = self.index[eid]
            grid[i] = float(next(iter(attrs["grid_kwh"].values())))
            r2[i] = float(next(iter(attrs["r2_kwh"].values())))
        self.duals.update(grid, r2)
        self.checkpoints.after_step(time, DUALS_COMPONENT, self.duals.snapshot)
        return time + 1

    def get_data(self, outputs: dict) -> dict:
        s = self.duals.state
        arrays = {"lambda": s.lam, "mu": s.mu, "nu": s.nu}
        return {eid: {a: float(arrays[a][self.index[eid]]) for a in attrs}
                for eid, attrs in outputs.items()}
