"""Collector: receives every fleet shard's record and the grid's result, streams them to disk.

It is the one place where the results of a step meet (shards may be other
processes); one connection per shard and one from the grid, each carrying arrays.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

from cosim.results import BUILDING_VALUE_COLUMNS, RunWriter
from cosim.sims.meta import meta


class Collector(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(meta("Collector"))
        self.progress = None

    def init(self, sid: str, time_resolution: float = 1.0, writer: RunWriter | None = None,
             names: list[str] | None = None, progress: Any = None,
             start_step: int = 0) -> dict:
        if writer is None or names is None:
            raise ValueError("Collector needs writer= (a cosim.results.RunWriter) and names=")
        self.writer = writer
        self.n = len(names)
        self.progress = progress
        self.start_step = int(start_step)  # the run's step at mosaik time 0 (--resume)
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        return [{"eid": "Monitor", "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        attrs = inputs.get("Monitor", {})
        t = self.start_step + time
        building = {c: np.empty(self.n) for c in BUILDING_VALUE_COLUMNS}
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

    def get_data(self, outputs: dict) -> dict:
        return {}
