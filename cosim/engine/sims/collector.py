"""Collector: receives every fleet shard's record and the grid's result, streams them to disk.

It is the one place where the results of a step meet (shards may be other
processes); one connection per shard and one from the grid, each carrying arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import mosaik_api_v3
import numpy as np
from numpy.typing import NDArray

from cosim.engine.sims.meta import meta
from cosim.results.parts import BUILDING_VALUE_COLUMNS
from cosim.results.writer import RunWriter

if TYPE_CHECKING:
    from mosaik_api_v3.types import CreateResult, InputData, Meta, OutputData, OutputRequest


class Collector(mosaik_api_v3.Simulator):
    """The mosaik simulator that gathers each step's results into the run writer."""

    def __init__(self) -> None:
        # mosaik_api_v3 leaves Simulator.__init__ unannotated
        super().__init__(meta("Collector"))  # type: ignore[no-untyped-call]
        self.progress: Callable[[int], object] | None = None

    # mosaik passes a simulator's own parameters as keywords; its base class declares them
    # as **sim_params (and **model_params in create), which a simulator names instead
    def init(  # type: ignore[override]
            self, sid: str, time_resolution: float = 1.0, writer: RunWriter | None = None,
            names: list[str] | None = None, progress: Callable[[int], object] | None = None,
            start_step: int = 0) -> Meta:
        """Take the run writer, the building names and an optional progress callback.

        ``start_step`` is the run's step at mosaik time 0 (resumed runs). Raises ``ValueError``
        without ``writer`` or ``names``.
        """
        if writer is None or names is None:
            raise ValueError("Collector needs writer= (a cosim.results.writer.RunWriter) and "
                             "names=")
        self.writer = writer
        self.n = len(names)
        self.progress = progress
        self.start_step = int(start_step)  # the run's step at mosaik time 0 (--resume)
        return self.meta

    def create(self, num: int, model: str) -> list[CreateResult]:  # type: ignore[override]
        """Create the one ``Monitor`` entity."""
        return [{"eid": "Monitor", "type": model}]

    def step(self, time: int, inputs: InputData, max_advance: int) -> int:
        """Hand the step's building records, grid results and constraint rows to the writer.

        Raises ``RuntimeError`` when the records do not cover every building.
        """
        attrs = inputs.get("Monitor", {})
        t = self.start_step + time
        building: dict[str, NDArray[np.float64]] = {c: np.empty(self.n)
                                                     for c in BUILDING_VALUE_COLUMNS}
        filled = 0
        for record in attrs.get("record", {}).values():
            start = int(record["index"])
            for col in BUILDING_VALUE_COLUMNS:
                values = np.asarray(record[col], dtype=np.float64)
                building[col][start:start + values.shape[0]] = values
            filled += values.shape[0]
        if filled != self.n:
            raise RuntimeError(f"step {t}: records of {filled} of {self.n} buildings arrived")
        self.writer.add_buildings(t, building)
        for results in attrs.get("result", {}).values():  # GridSim's (step, GridResult) pairs
            for step, result in results:
                self.writer.add_grid(step, result)
        for row in attrs.get("constraints", {}).values():  # the duals' constraints row
            self.writer.add_constraints(int(row["time"]), row)
        self.writer.step_done(t)
        if self.progress is not None:
            self.progress(t)
        return time + 1

    def get_data(self, outputs: OutputRequest) -> OutputData:
        """Nothing: the collector has no outputs."""
        return {}
