"""Collector: receives every building's and the grid's outputs, streams them to disk."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import mosaik_api_v3
import numpy as np

from cosim.results import BUILDING_VALUE_COLUMNS, RunWriter
from cosim.sims.meta import GRID_RESULTS, meta


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
        self.position = {n: i for i, n in enumerate(names)}
        self.n = len(names)
        self.progress = progress
        self.start_step = int(start_step)  # the run's step at mosaik time 0 (--resume)
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        return [{"eid": "Monitor", "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        attrs = inputs.get("Monitor", {})
        mosaik_time, time = time, self.start_step + time
        building = {c: np.full(self.n, np.nan) for c in BUILDING_VALUE_COLUMNS}
        grid: dict[str, Any] = {}
        for attr, sources in attrs.items():
            if attr == "result":  # GridSim's whole GridResult
                self.writer.add_grid(time, next(iter(sources.values())))
                continue
            if attr in GRID_RESULTS:
                grid[attr] = next(iter(sources.values()))
                continue
            if attr == "record":  # one dict per building with all its results
                for src, record in sources.items():
                    j = self.position[src.rsplit(".", 1)[1]]
                    for col, value in record.items():
                        if col in building:
                            building[col][j] = value
                continue
            if attr not in building:
                continue
            col = building[attr]
            for src, value in sources.items():
                col[self.position[src.rsplit(".", 1)[1]]] = value
        self.writer.add_buildings(time, building)
        if grid:
            self.writer.add_grid(time, SimpleNamespace(**grid))
        self.writer.step_done(time)
        if self.progress is not None:
            self.progress(time)
        return mosaik_time + 1

    def get_data(self, outputs: dict) -> dict:
        return {}
