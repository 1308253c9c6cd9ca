"""GridSim: the feeder's AC power flow (pandapower or power-grid-model backend).

Inputs: ``p_kw`` arrays of every fleet shard (net consumption; Q from the scenario's
power factor); the feeder's background of the step is read inside (the same
``GridModel.solve`` as the plain engine). Outputs: the step's ``GridResult`` fields
and, with grid constraints, each constraint's measured quantity and sign
(``cosim.scenario.grid_constraints``) for the duals simulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mosaik_api_v3
import numpy as np
from numpy.typing import NDArray

from cosim.engine.checkpoint import GRID_COMPONENT, Checkpoints
from cosim.engine.sims.consensus_sim import gather
from cosim.engine.sims.meta import meta
from grid_models.grid_model import GridFeed
from grid_models.powerflow.interface import GridResult

if TYPE_CHECKING:
    from mosaik_api_v3.types import CreateResult, InputData, Meta, OutputData, OutputRequest

    from cosim.scenario.build import Built


class GridSim(mosaik_api_v3.Simulator):
    """The mosaik simulator of the feeder's power flow: one ``Grid`` entity (module docstring)."""

    def __init__(self) -> None:
        # mosaik_api_v3 leaves Simulator.__init__ unannotated
        super().__init__(meta("GridSim"))  # type: ignore[no-untyped-call]

    # mosaik passes a simulator's own parameters as keywords; its base class declares them
    # as **sim_params (and **model_params in create), which a simulator names instead
    def init(self, sid: str, time_resolution: float = 1.0,  # type: ignore[override]
             built: Built | None = None, run_dir: str | None = None, start_step: int = 0,
             checkpoint_every: int = 0, grid_solve: str = "per_step",
             batch_every: int = 1) -> Meta:
        """Take the built run's feeder, solving per step or in batches of ``batch_every``.

        Restores the power flow's warm start when resuming. Raises ``ValueError`` when
        ``built`` is missing or has no feeder.
        """
        if built is None or built.grid is None:
            raise ValueError("GridSim needs built= with a feeder")
        self.built = built
        self.grid = built.grid
        self.start_step = int(start_step)  # the run's step at mosaik time 0 (--resume)
        self.feed = GridFeed(self.grid, grid_solve, batch_every, built.scenario.time.steps)
        self.results: list[tuple[int, GridResult]] = []
        self.constraints = built.grid_constraints  # None without grid constraints
        self.constraint_flows: dict[str, NDArray[np.float64]] = {}
        self.checkpoints = Checkpoints(run_dir, start_step, checkpoint_every,
                                       built.scenario.time.steps)
        if start_step:
            self.grid.powerflow.set_warm_start_state(self.checkpoints.load(GRID_COMPONENT))
        return self.meta

    def create(self, num: int, model: str) -> list[CreateResult]:  # type: ignore[override]
        """Create the one ``Grid`` entity; ``ValueError`` for more than one."""
        if num != 1:
            raise ValueError("GridSim holds one Grid entity")
        return [{"eid": "Grid", "type": model}]

    def step(self, time: int, inputs: InputData, max_advance: int) -> int:
        """Solve the feeder with the shards' ``p_kw`` (batched: at the batch's end).

        With grid constraints, also measures them from the step's result; they need the grid
        solved per step, else ``ValueError``. The warm start is saved at checkpoints.
        """
        t = self.start_step + time
        p_kw = gather(inputs["Grid"]["p_kw"], self.built.n)
        # the feeder's background of step t inside; batched: results at the batch's end
        self.results = self.feed.add(t, p_kw)
        if self.constraints is not None:
            if self.feed.mode != "per_step":
                raise ValueError("grid constraints need the grid solved per step")
            measured, sign = self.constraints.probe.measure(self.results[0][1], p_kw)
            self.constraint_flows = {"constraint_measured": measured, "constraint_sign": sign}
        self.checkpoints.after_step(t, GRID_COMPONENT, self.grid.powerflow.warm_start_state)
        return time + 1

    def get_data(self, outputs: OutputRequest) -> OutputData:
        """``result``: the (step, GridResult) pairs solved at this step (in-process only);
        the other attributes: the fields of this step's result when solved per step."""
        data: dict[str, dict[str, Any]] = {}  # Any: mosaik's OutputData values
        for eid, attrs in outputs.items():
            data[eid] = {}
            for a in attrs:
                if a == "result":
                    data[eid][a] = self.results
                elif a in self.constraint_flows:
                    data[eid][a] = self.constraint_flows[a]
                elif self.feed.mode != "per_step":
                    raise ValueError(f"GridSim solves in batches; {a!r} is not available per "
                                     "step (start it with grid_solve='per_step')")
                else:
                    data[eid][a] = getattr(self.results[0][1], a)
        return data
