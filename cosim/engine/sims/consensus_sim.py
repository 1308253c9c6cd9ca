"""ConsensusSim: the communication network and the dual dynamics (agents.consensus.duals).

One ``Duals`` entity for the whole fleet: it takes every shard's ``grid_kwh`` and
``r2_kwh`` arrays, updates the multipliers once, and offers ``lambda``, ``mu``,
``nu`` and ``lambda_eff`` as arrays over all buildings (each shard reads its slice).
With grid constraints it also holds their multipliers (``cosim.scenario.grid_constraints``):
the grid simulator's measurement of step t arrives in the same step (the grid solves
after the fleet), the step's ``constraints`` row goes to the collector, and
``lambda_eff`` (lambda plus the weighted grid multipliers) reaches the shards at t+1
over the time-shifted connection, which closes the loop fleet -> grid -> duals -> fleet.
Its outputs at step t are the multipliers after the update with step t's grid energy;
the shards read them through a time-shifted connection (initially the duals' state:
zero, or the saved state after ``--resume``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mosaik_api_v3
import numpy as np
from numpy.typing import NDArray

from cosim.engine.checkpoint import DUALS_COMPONENT, Checkpoints
from cosim.engine.sims.building_sim import as_wire, shard_start
from cosim.engine.sims.meta import meta

if TYPE_CHECKING:
    from mosaik_api_v3.types import CreateResult, InputData, Meta, OutputData, OutputRequest

    from cosim.scenario.build import Built

DUALS_EID = "Duals"


# Any: mosaik's input values (arrays in-process, lists between processes)
def gather(sources: dict[str, Any], n: int) -> NDArray[np.float64]:
    """One array over all buildings from the shards' arrays (keyed by their entity ids)."""
    out = np.empty(n)
    filled = 0
    for src, values in sources.items():
        arr = np.asarray(values, dtype=np.float64)
        start = shard_start(src)
        out[start:start + arr.shape[0]] = arr
        filled += arr.shape[0]
    if filled != n:
        raise ValueError(f"got values for {filled} of {n} buildings")
    return out


class ConsensusSim(mosaik_api_v3.Simulator):
    """The mosaik simulator of the fleet's multipliers: one ``Duals`` entity (module docstring)."""

    def __init__(self) -> None:
        # mosaik_api_v3 leaves Simulator.__init__ unannotated
        super().__init__(meta("ConsensusSim"))  # type: ignore[no-untyped-call]

    # mosaik passes a simulator's own parameters as keywords; its base class declares them
    # as **sim_params (and **model_params in create), which a simulator names instead
    def init(self, sid: str, time_resolution: float = 1.0,  # type: ignore[override]
             built: Built | None = None, run_dir: str | None = None, start_step: int = 0,
             checkpoint_every: int = 0, lists: bool = False) -> Meta:
        """Take the built run's duals and grid constraints; restore them when resuming.

        ``lists``: send lists instead of arrays (some reader is another process). Raises
        ``ValueError`` without ``built``.
        """
        if built is None:
            raise ValueError("ConsensusSim needs built= (a cosim.scenario.build.Built)")
        self.built = built
        # only a shard built without the feeder (topology "feeder") lacks the duals; this
        # simulator gets the main process's build
        assert built.duals is not None
        self.duals = built.duals
        self.constraints = built.grid_constraints  # None without grid constraints
        self.row: dict[str, Any] | None = None  # the step's constraints row
        self.lists = lists  # some reader is another process: send lists
        self.checkpoints = Checkpoints(run_dir, start_step, checkpoint_every,
                                       built.scenario.time.steps)
        if start_step:
            snap = self.checkpoints.load(DUALS_COMPONENT)
            self.duals.restore({k: v for k, v in snap.items() if not k.startswith("gridmu_")})
            if self.constraints is not None:
                self.constraints.restore({k.removeprefix("gridmu_"): v for k, v in snap.items()
                                          if k.startswith("gridmu_")})
        return self.meta

    def create(self, num: int, model: str) -> list[CreateResult]:  # type: ignore[override]
        """Create the one ``Duals`` entity; ``ValueError`` for more than one."""
        if num != 1:
            raise ValueError("ConsensusSim holds one Duals entity")
        return [{"eid": DUALS_EID, "type": model}]

    def step(self, time: int, inputs: InputData, max_advance: int) -> int:
        """Update the multipliers with the shards' ``grid_kwh`` and ``r2_kwh`` of the step.

        With grid constraints, also their multipliers from the grid's measurement, which
        makes the step's ``constraints`` row. The state is saved at checkpoints.
        """
        attrs = inputs[DUALS_EID]
        n = self.duals.n
        self.duals.update(gather(attrs["grid_kwh"], n), gather(attrs["r2_kwh"], n))
        run_step = self.checkpoints.start_step + time
        if self.constraints is not None:
            measured = next(iter(attrs["constraint_measured"].values()))
            sign = next(iter(attrs["constraint_sign"].values()))
            self.row = {"time": run_step, **self.constraints.step(
                np.asarray(measured, dtype=np.float64), np.asarray(sign, dtype=np.float64))}
        self.checkpoints.after_step(run_step, DUALS_COMPONENT, self._snapshot)
        return time + 1

    def _snapshot(self) -> dict[str, NDArray[Any]]:  # Any: state arrays of several dtypes
        snap = self.duals.snapshot()
        if self.constraints is not None:
            snap.update({f"gridmu_{k}": v for k, v in self.constraints.snapshot().items()})
        return snap

    def _effective(self, lam: NDArray[np.float64]) -> NDArray[np.float64]:
        return lam if self.constraints is None else self.constraints.effective_lambda(lam)

    def get_data(self, outputs: OutputRequest) -> OutputData:
        """The multipliers after this step's update as arrays over all buildings.

        ``constraints`` is the step's constraints row, left out without grid constraints.
        """
        s = self.duals.state
        arrays = {"lambda": s.lam, "mu": s.mu, "nu": s.nu, "lambda_eff": self._effective(s.lam)}
        out: dict[str, dict[str, Any]] = {}  # Any: mosaik's OutputData values
        for eid, attrs in outputs.items():
            out[eid] = {}
            for a in attrs:
                if a == "constraints":
                    if self.row is not None:
                        out[eid][a] = self.row
                else:
                    out[eid][a] = as_wire(arrays[a], self.lists)
        return out
