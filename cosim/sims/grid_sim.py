"""GridSim: the feeder's AC power flow (pandapower or power-grid-model backend).

Inputs: ``p_kw`` of every building (net consumption; Q from the scenario's power
factor) and the background arrays. Outputs: the step's ``GridResult`` fields.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

from cosim.sims.checkpoints import Checkpoints
from cosim.sims.meta import BACKGROUND, meta

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
        self.position = {name: i for i, name in enumerate(built.names)}
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
        attrs = inputs["Grid"]
        p_kw = np.zeros(len(self.position))
        for src, value in attrs["p_kw"].items():
            p_kw[self.position[src.rsplit(".", 1)[1]]] = float(value)
        bundled = next(iter(attrs["background"].values())) if "background" in attrs else {}
        bg = {a: np.asarray(bundled[a] if a in bundled else next(iter(attrs[a].values())),
                            dtype=float)
              for a in BACKGROUND if a in bundled or a in attrs}
        pf = self.grid.powerflow
        pf.set_background(bg.get("load_p_mw"), bg.get("load_q_mvar"), bg.get("sgen_p_mw"),
                          bg.get("sgen_q_mvar"))
        p_mw, q_mvar = self.grid.injections(p_kw)
        self.result = pf.solve(p_mw, q_mvar, step=self.start_step + time)
        self.checkpoints.after_step(time, GRID_COMPONENT, pf.warm_start_state)
        return time + 1

    def get_data(self, outputs: dict) -> dict:
        r = self.result
        return {eid: {a: r if a == "result" else getattr(r, a) for a in attrs}
                for eid, attrs in outputs.items()}
