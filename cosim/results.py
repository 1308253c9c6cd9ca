"""The run directory of DESIGN.md §7: streamed while the run goes, finalised at the end.

While a run goes, every ``flush`` writes one complete Parquet file per table
under ``<run>/.parts/<table>/part-NNNNN.parquet`` (written to a temporary name,
then renamed), so a run killed half-way keeps readable results up to its last
flush. ``status.json`` says ``running``, ``complete`` or ``failed``. On success
the parts of each table are joined into ``<run>/<table>.parquet`` and the parts
removed. ``read_table`` reads a table either way.

Tables (units in the column names):
    buildings  time, building, bus, demand_kwh, backlog_kwh, grid_kwh, battery_kwh,
               unmet_kwh, dropped_kwh, soc_kwh, pv_kwh, export_kwh, price, cost,
               lambda, mu, nu
    buses      time, bus, vm_pu, p_mw, q_mvar
    lines      time, line, loading_percent, i_ka
    trafos     time, trafo, loading_percent, p_hv_mw
    grid       time, converged, losses_mw, ext_grid_p_mw, ext_grid_q_mvar
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agents.runner import RESULT_COLUMNS

BUILDING_COLUMNS = RESULT_COLUMNS
BUILDING_VALUE_COLUMNS = RESULT_COLUMNS[3:]
TABLES = ("buildings", "buses", "lines", "trafos", "grid")
PARTS_DIR = ".parts"
STATUS_FILE = "status.json"


class RunDirError(ValueError):
    """A run directory cannot be used or read."""


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def prepare_run_dir(path: Path, force: bool = False) -> Path:
    """Create ``path`` for a new run; an earlier run there is replaced, anything else refused."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise RunDirError(f"{path}: exists and is not a directory")
        if any(path.iterdir()):
            if not (path / STATUS_FILE).is_file() and not force:
                raise RunDirError(f"{path}: exists, is not empty and is not a run directory; "
                                  "choose another --out or pass --force")
            shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunWriter:
    """Buffers per-step results and flushes them as Parquet parts."""

    def __init__(self, run_dir: Path, building_ids: Sequence[str], building_bus: np.ndarray,
                 bus_ids: np.ndarray | None, line_ids: np.ndarray | None,
                 trafo_ids: np.ndarray | None, total_steps: int, flush_every: int = 100) -> None:
        self.run_dir = Path(run_dir)
        self.building_ids = np.asarray(list(building_ids), dtype=object)
        self.building_bus = np.asarray(building_bus, dtype=np.int64)
        self.bus_ids, self.line_ids, self.trafo_ids = bus_ids, line_ids, trafo_ids
        self.total_steps = int(total_steps)
        self.flush_every = int(flush_every)
        self._buf: dict[str, list[tuple[int, Any]]] = {"buildings": [], "grid": []}
        self._part = 0
        self.steps_done = 0
        self.started = time.time()
        for table in TABLES:
            (self.run_dir / PARTS_DIR / table).mkdir(parents=True, exist_ok=True)
        self.set_status("running")

    def set_status(self, state: str, **extra: Any) -> None:
        _write_json(self.run_dir / STATUS_FILE, {
            "state": state, "steps_done": self.steps_done, "steps": self.total_steps,
            "started_unix": round(self.started, 3), "updated_unix": round(time.time(), 3),
            **extra,
        })

    def add_buildings(self, t: int, values: dict[str, np.ndarray]) -> None:
        self._buf["buildings"].append((t, values))

    def add_grid(self, t: int, result: Any) -> None:
        self._buf["grid"].append((t, result))

    def step_done(self, t: int) -> None:
        self.steps_done = t + 1
        if self.steps_done % self.flush_every == 0:
            self.flush()

    def _building_frame(self) -> pd.DataFrame | None:
        rows = self._buf["buildings"]
        if not rows:
            return None
        n = len(self.building_ids)
        times = np.array([t for t, _ in rows], dtype=np.int64)
        frame: dict[str, Any] = {
            "time": np.repeat(times, n),
            "building": np.tile(self.building_ids, len(rows)),
            "bus": np.tile(self.building_bus, len(rows)),
        }
        for col in BUILDING_VALUE_COLUMNS:
            frame[col] = np.concatenate([np.asarray(v[col], dtype=np.float64) for _, v in rows])
        return pd.DataFrame(frame, columns=list(BUILDING_COLUMNS))

    def _grid_frames(self) -> dict[str, pd.DataFrame]:
        rows = self._buf["grid"]
        if not rows or self.bus_ids is None:
            return {}
        times = np.array([t for t, _ in rows], dtype=np.int64)

        def long(ids: np.ndarray, key: str, cols: dict[str, str]) -> pd.DataFrame:
            frame: dict[str, Any] = {"time": np.repeat(times, len(ids)),
                                     key: np.tile(np.asarray(ids, dtype=np.int64), len(rows))}
            for out, attr in cols.items():
                frame[out] = np.concatenate([np.asarray(getattr(r, attr), dtype=float)
                                             for _, r in rows])
            return pd.DataFrame(frame)

        return {
            "buses": long(self.bus_ids, "bus",
                          {"vm_pu": "bus_vm_pu", "p_mw": "bus_p_mw", "q_mvar": "bus_q_mvar"}),
            "lines": long(self.line_ids, "line", {"loading_percent": "line_loading_percent",
                                                  "i_ka": "line_i_ka"}),
            "trafos": long(self.trafo_ids, "trafo", {"loading_percent": "trafo_loading_percent",
                                                     "p_hv_mw": "trafo_p_hv_mw"}),
            "grid": pd.DataFrame({
                "time": times,
                "converged": np.array([bool(r.converged) for _, r in rows]),
                "losses_mw": np.array([r.losses_mw for _, r in rows], dtype=float),
                "ext_grid_p_mw": np.array([r.ext_grid_p_mw for _, r in rows], dtype=float),
                "ext_grid_q_mvar": np.array([r.ext_grid_q_mvar for _, r in rows], dtype=float),
            }),
        }

    def flush(self) -> None:
        frames: dict[str, pd.DataFrame] = {}
        b = self._building_frame()
        if b is not None:
            frames["buildings"] = b
        frames.update(self._grid_frames())
        for table, frame in frames.items():
            target = self.run_dir / PARTS_DIR / table / f"part-{self._part:05d}.parquet"
            tmp = target.with_name(target.name + ".tmp")
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
            os.replace(tmp, target)
        if frames:
            self._part += 1
        self._buf = {"buildings": [], "grid": []}
        self.set_status("running")

    def finalize(self) -> None:
        """Flush, then join each table's parts into ``<table>.parquet``."""
        self.flush()
        for table in TABLES:
            parts = sorted((self.run_dir / PARTS_DIR / table).glob("part-*.parquet"))
            if not parts:
                continue
            joined = pa.concat_tables([pq.read_table(p) for p in parts])
            tmp = self.run_dir / f"{table}.parquet.tmp"
            pq.write_table(joined, tmp)
            os.replace(tmp, self.run_dir / f"{table}.parquet")
        shutil.rmtree(self.run_dir / PARTS_DIR, ignore_errors=True)


def read_status(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {STATUS_FILE}; not a run directory")
    return json.loads(path.read_text())


def read_table(run_dir: str | Path, table: str) -> pd.DataFrame:
    """A table of a run, complete or (from its flushed parts) interrupted."""
    if table not in TABLES:
        raise RunDirError(f"unknown table {table!r}; valid: {', '.join(TABLES)}")
    run_dir = Path(run_dir)
    final = run_dir / f"{table}.parquet"
    if final.is_file():
        return pd.read_parquet(final)
    parts = sorted((run_dir / PARTS_DIR / table).glob("part-*.parquet"))
    if not parts:
        raise RunDirError(f"{run_dir}: no {table} results")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def write_json(path: Path, obj: Any) -> None:
    _write_json(Path(path), obj)


def recorded_bus_loads(run_dir: str | Path, slack_buses: Sequence[int]
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Net consumption per step and bus (time x bus, MW and Mvar) as the run recorded it.

    ``buses.p_mw``/``q_mvar`` are pandapower's ``res_bus``, which at the slack bus
    includes the external grid's supply; that is taken out again (from
    ``grid.parquet``), so the frames are the loads to put on ``feeder.json``'s buses
    (its own loads and generators switched off) to recompute the run's power flow.
    """
    slack = [int(b) for b in slack_buses]
    if len(slack) != 1:
        raise RunDirError(f"{run_dir}: need exactly one external grid, got buses {slack}")
    buses = read_table(run_dir, "buses")
    grid = read_table(run_dir, "grid").set_index("time")
    p = buses.pivot(index="time", columns="bus", values="p_mw")
    q = buses.pivot(index="time", columns="bus", values="q_mvar")
    p[slack[0]] += grid.loc[p.index, "ext_grid_p_mw"]
    q[slack[0]] += grid.loc[q.index, "ext_grid_q_mvar"]
    return p, q
