"""The run directory of docs/results_contract.md: streamed while the run goes, finalised at the end.

While a run goes, every ``flush`` writes one complete Parquet file per table
under ``<run>/.parts/<table>/part-NNNNN.parquet`` (written to a temporary name,
then renamed), so a run killed half-way keeps readable results up to its last
flush. A flush writes every table's part to a temporary name first and renames
them only when all are written, so no table runs ahead of another; a reader
takes only the part numbers every table holds. ``status.json`` is the run's
marker (format, run id, see ``cosim.results.rundir``) and says ``running`` (with pid,
host and a heartbeat time refreshed every few seconds), ``complete`` or
``failed`` (with the reason). Each regular flush is also a checkpoint for
``--resume`` (``cosim.engine.checkpoint``). On success the parts of each table are
joined into ``<run>/<table>.parquet`` and the parts and checkpoints removed.
``read_table`` reads a table either way.

Tables (units in the column names):
    buildings  time, datetime, building, bus, demand_kwh, backlog_kwh, grid_kwh, battery_kwh,
               unmet_kwh, dropped_kwh, soc_kwh, pv_kwh, export_kwh, price, cost,
               lambda, mu, nu
    buses      time, bus, vm_pu, p_mw, q_mvar
    lines      time, line, loading_percent, i_ka
    trafos     time, trafo, loading_percent, p_hv_mw
    grid       time, datetime, converged, losses_mw, ext_grid_p_mw, ext_grid_q_mvar
    constraints  time, constraint, kind, measured, limit, excess, mu, mu_spread, sign
               (only with grid constraints; see cosim.scenario.grid_constraints)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agents.fleet.calendar import row_datetimes
from agents.fleet.records import RESULT_COLUMNS
from cosim.engine.checkpoint import KEEP_CHECKPOINTS, STATE_DIR, load_arrays, prune, save_arrays
from cosim.results import rundir
from cosim.results.provenance import code_fingerprint
from cosim.results.rundir import (
    STATUS_FILE,
    RunDirError,
    holder_alive,
    new_marker,
    process_start_ticks,
    read_marker,
)
from grid_models.errors import RunError

BUILDING_COLUMNS = RESULT_COLUMNS
BUILDING_VALUE_COLUMNS = RESULT_COLUMNS[3:]
TABLES = ("buildings", "buses", "lines", "trafos", "grid")
GRID_TABLES = TABLES[1:]
#: tables a run writes only when it has them (grid constraints)
OPTIONAL_TABLES = ("constraints",)
ALL_TABLES = TABLES + OPTIONAL_TABLES
#: the constraints table's value columns (one row per grid constraint per step)
CONSTRAINT_VALUE_COLUMNS = ("measured", "limit", "excess", "mu", "mu_spread", "sign")
PARTS_DIR = ".parts"
HEARTBEAT_S = 5.0
#: Seconds ``status.json``'s writer waits for the heartbeat's lock before writing anyway.
STATUS_LOCK_S = 2 * HEARTBEAT_S
_PROCESS_START_TICKS = process_start_ticks(os.getpid())
_PART = re.compile(r"^part-(\d{5})\.parquet$")

__all__ = ["ALL_TABLES", "BUILDING_COLUMNS", "BUILDING_VALUE_COLUMNS", "PARTS_DIR",
           "STATUS_FILE", "TABLES", "RunDirError", "RunStopped", "RunWriteError", "RunWriter",
           "read_status", "read_table", "recorded_bus_loads", "request_stop", "stops_at_once",
           "write_json"]


class RunWriteError(RunError, RuntimeError):
    """Results could not be written (disk full, permissions, ...); the run stopped."""


class RunStopped(KeyboardInterrupt):
    """A stop was requested (Ctrl-C, SIGTERM); raised at the end of a whole step.

    ``exit_code``: what the command exits with (128 + the signal's number: 130 for
    SIGINT, 143 for SIGTERM)."""

    def __init__(self, reason: str, exit_code: int = 143) -> None:
        super().__init__(reason)
        self.exit_code = int(exit_code)


_STOP = threading.Event()
_STOP_AT_ONCE = threading.Event()
_STOP_REASON: list[str] = []
_STOP_CODE: list[int] = []


def request_stop(reason: str, exit_code: int = 143) -> None:
    """Ask the running engine to stop after the step it is in (e.g. from a signal handler).

    Safe in a signal handler: while the engine steps it only sets a flag (checked at the
    end of every step), so no exception lands inside the event loop, a lock or a file
    write. A second request while the first is pending, or a request while no engine
    steps (set-up after :func:`stops_at_once`, joining the results, the report), raises
    at once, wherever the program is.
    """
    if _STOP.is_set() or _STOP_AT_ONCE.is_set():
        raise RunStopped(reason, exit_code)
    _STOP_REASON[:] = [reason]
    _STOP_CODE[:] = [int(exit_code)]
    _STOP.set()


def _pending_stop() -> RunStopped:
    return RunStopped(_STOP_REASON[0] if _STOP_REASON else "stop requested",
                      _STOP_CODE[0] if _STOP_CODE else 143)


def stops_at_once() -> None:
    """Nothing steps yet (set-up): stop requests raise at once until :func:`steps_starting`."""
    _STOP_AT_ONCE.set()


def steps_starting() -> None:
    """An engine starts stepping: stop requests wait for the end of a step again."""
    _STOP_AT_ONCE.clear()


def steps_finished() -> None:
    """The engine's steps are over: a pending stop request raises now, later ones at once."""
    _STOP_AT_ONCE.set()
    if _STOP.is_set():
        raise _pending_stop()


def clear_stop() -> None:
    _STOP.clear()
    _STOP_AT_ONCE.clear()
    _STOP_REASON.clear()
    _STOP_CODE.clear()


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf; numpy scalars too) as ``None``,
    numpy scalars and arrays as plain Python values: what strict JSON can hold."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def json_text(obj: Any) -> str:
    """``obj`` as the strict, indented JSON text cosim writes (:func:`json_safe` first)."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"


def _write_json(path: Path, obj: Any) -> None:
    rundir.write_atomic(path, json_text(obj))


def _part_indices(run_dir: Path, table: str) -> set[int]:
    folder = Path(run_dir) / PARTS_DIR / table
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for m in (_PART.match(p.name) for p in folder.iterdir()) if m}


def complete_parts(run_dir: Path, tables: Sequence[str]) -> int:
    """How many parts (0, 1, ... without a gap) every one of ``tables`` holds."""
    count = None
    for table in tables:
        have = _part_indices(run_dir, table)
        k = 0
        while k in have:
            k += 1
        count = k if count is None else min(count, k)
    return count or 0


def expected_tables(run_dir: Path) -> list[str]:
    """The tables a run writes (from ``status.json``; older runs: those with parts)."""
    status = read_marker(run_dir, "run") or {}
    tables = status.get("tables")
    if isinstance(tables, list) and tables and all(t in ALL_TABLES for t in tables):
        return list(tables)
    return [t for t in ALL_TABLES if _part_indices(run_dir, t)]


class RunWriter:
    """Buffers per-step results and flushes them as Parquet parts.

    ``start_step``/``next_part`` continue a run from a checkpoint (``--resume``).
    """

    def __init__(self, run_dir: Path, building_ids: Sequence[str], building_bus: np.ndarray,
                 bus_ids: np.ndarray | None, line_ids: np.ndarray | None,
                 trafo_ids: np.ndarray | None, total_steps: int, flush_every: int = 100, *,
                 marker: dict[str, Any] | None = None, start_step: int = 0, next_part: int = 0,
                 engine: str = "", grid_solve: str = "",
                 history: list[dict[str, Any]] | None = None,
                 heartbeat_s: float = HEARTBEAT_S,
                 constraints: Sequence[tuple[str, str]] | None = None,
                 start_row: int = 0, recorded: dict[str, Any] | None = None,
                 begin: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.start_row = int(start_row)  # data row of step 0: the steps' datetimes
        self.building_ids = np.asarray(list(building_ids), dtype=object)
        self._ids_arrow = pa.array(list(building_ids), type=pa.string())
        self.building_bus = np.asarray(building_bus, dtype=np.int64)
        self.bus_ids, self.line_ids, self.trafo_ids = bus_ids, line_ids, trafo_ids
        self.total_steps = int(total_steps)
        self.flush_every = int(flush_every)
        self.tables = ["buildings", *(GRID_TABLES if bus_ids is not None else ())]
        # (name, kind) of each grid constraint, in the order of the constraints rows
        self.constraints = list(constraints or [])
        if self.constraints:
            self.tables.append("constraints")
        self.marker = dict(marker) if marker else new_marker("run")
        self.engine = engine
        self.grid_solve = grid_solve  # "batch" or "per_step" (cosim.engine.run.grid_solve_mode)
        self.history = list(history or [])
        self._buf: dict[str, list[tuple[int, Any]]] = self._empty_buffer()
        self._part = int(next_part)
        self.steps_done = int(start_step)
        self.started = time.time()
        self.state = "running"
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_s = heartbeat_s
        # fields every status.json of the run repeats (the set-up's progress, the inputs'
        # hashes: cosim.engine.inputs)
        self.recorded: dict[str, Any] = dict(recorded or {})
        if begin:
            self.begin()
        else:  # the marker comes first; the caller writes the set-up files, then begin()
            self.set_status("running")

    def begin(self) -> None:
        """Make the part folders, say ``running`` and start the heartbeat (the steps start)."""
        for table in self.tables:
            (self.run_dir / PARTS_DIR / table).mkdir(parents=True, exist_ok=True)
        self.set_status("running")
        if self._heartbeat_s > 0 and self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, args=(self._heartbeat_s,),
                                               name="cosim-heartbeat", daemon=True)
            self._heartbeat.start()

    # --- status ---------------------------------------------------------------------------

    def set_status(self, state: str, *, best_effort: bool = False, **extra: Any) -> None:
        """Write ``status.json``; ``best_effort``: a write error is swallowed (failure paths)."""
        self.state = state
        now = round(time.time(), 3)
        content = {
            **self.marker, "kind": "run", "state": state, "steps_done": self.steps_done,
            "steps": self.total_steps, "engine": self.engine, "tables": self.tables,
            "grid_solve": self.grid_solve, "code": code_fingerprint(),
            "checkpoint_every": self.flush_every, "pid": os.getpid(),
            "host": socket.gethostname(), "start_ticks": _PROCESS_START_TICKS,
            "started_unix": round(self.started, 3),
            "heartbeat_unix": now, "updated_unix": now, "resumes": self.history,
            **self.recorded, **extra,
        }
        # a timeout, not a plain ``with``: an interrupt that lands between a lock's
        # acquire and its release (a second Ctrl-C) leaves it held for good, and the
        # failure path that follows must still say failed
        held = self._status_lock.acquire(timeout=STATUS_LOCK_S)
        try:
            _write_json(self.run_dir / STATUS_FILE, content)
            self._last_status = content
        except OSError:
            if not best_effort:
                raise
        finally:
            if held:
                self._status_lock.release()

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with contextlib.suppress(OSError, AttributeError):
                with self._status_lock:
                    content = {**self._last_status, "heartbeat_unix": round(time.time(), 3)}
                    if content.get("state") != "running":
                        return
                    _write_json(self.run_dir / STATUS_FILE, content)
                    self._last_status = content

    def close(self) -> None:
        """Stop the heartbeat (the status is left as it is)."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=2 * HEARTBEAT_S)

    # --- buffering ------------------------------------------------------------------------

    def add_buildings(self, t: int, values: dict[str, np.ndarray]) -> None:
        """Buffer step ``t``'s building values until the next flush."""
        self._buf["buildings"].append((t, values))

    def add_grid(self, t: int, result: Any) -> None:
        """Buffer step ``t``'s power flow result until the next flush."""
        self._buf["grid"].append((t, result))

    def add_constraints(self, t: int, row: dict[str, np.ndarray]) -> None:
        """Step ``t``'s row of every grid constraint (``CONSTRAINT_VALUE_COLUMNS``)."""
        self._buf["constraints"].append((t, row))

    @staticmethod
    def _empty_buffer() -> dict[str, list[tuple[int, Any]]]:
        return {"buildings": [], "grid": [], "constraints": []}

    def _constraint_table(self) -> pa.Table | None:
        rows = self._buf["constraints"]
        if not rows or not self.constraints:
            return None
        k = len(self.constraints)
        times = np.array([t for t, _ in rows], dtype=np.int64)
        names = pa.array([c[0] for c in self.constraints], type=pa.string())
        kinds = pa.array([c[1] for c in self.constraints], type=pa.string())
        pick = pa.array(np.tile(np.arange(k), len(rows)))
        columns: dict[str, pa.Array] = {"time": pa.array(np.repeat(times, k)),
                                        "constraint": names.take(pick),
                                        "kind": kinds.take(pick)}
        for col in CONSTRAINT_VALUE_COLUMNS:
            columns[col] = pa.array(np.concatenate([np.asarray(r[col], dtype=np.float64)
                                                    for _, r in rows]))
        return pa.table(columns)

    def step_done(self, t: int) -> None:
        """Mark step ``t`` done; flush at every ``flush_every`` steps.

        Raises :class:`RunStopped` when a stop was requested, after the step is counted.
        """
        self.steps_done = t + 1
        if self.steps_done % self.flush_every == 0:
            self.flush()
        if _STOP.is_set():
            raise _pending_stop()

    def _building_table(self) -> pa.Table | None:
        """The buffered steps' building rows as an Arrow table (no pandas in between)."""
        rows = self._buf["buildings"]
        if not rows:
            return None
        n = len(self.building_ids)
        times = np.array([t for t, _ in rows], dtype=np.int64)
        columns: dict[str, pa.Array] = {
            "time": pa.array(np.repeat(times, n)),
            "datetime": pa.array(np.repeat(row_datetimes(self.start_row, times), n)),
            "building": self._ids_arrow.take(pa.array(np.tile(np.arange(n), len(rows)))),
            "bus": pa.array(np.tile(self.building_bus, len(rows))),
        }
        for col in BUILDING_VALUE_COLUMNS:
            columns[col] = pa.array(np.concatenate([np.asarray(v[col], dtype=np.float64)
                                                    for _, v in rows]))
        return pa.table(columns)

    def _grid_tables(self) -> dict[str, pa.Table]:
        rows = self._buf["grid"]
        if not rows or self.bus_ids is None:
            return {}
        line_ids, trafo_ids = self.line_ids, self.trafo_ids
        assert line_ids is not None and trafo_ids is not None  # given with bus_ids (the feeder)
        times = np.array([t for t, _ in rows], dtype=np.int64)

        def long(ids: np.ndarray, key: str, cols: dict[str, str]) -> pa.Table:
            columns: dict[str, pa.Array] = {
                "time": pa.array(np.repeat(times, len(ids))),
                key: pa.array(np.tile(np.asarray(ids, dtype=np.int64), len(rows)))}
            for out, attr in cols.items():
                columns[out] = pa.array(np.concatenate([np.asarray(getattr(r, attr), dtype=float)
                                                        for _, r in rows]))
            return pa.table(columns)

        return {
            "buses": long(self.bus_ids, "bus",
                          {"vm_pu": "bus_vm_pu", "p_mw": "bus_p_mw", "q_mvar": "bus_q_mvar"}),
            "lines": long(line_ids, "line", {"loading_percent": "line_loading_percent",
                                                  "i_ka": "line_i_ka"}),
            "trafos": long(trafo_ids, "trafo", {"loading_percent": "trafo_loading_percent",
                                                     "p_hv_mw": "trafo_p_hv_mw"}),
            "grid": pa.table({
                "time": pa.array(times),
                "datetime": pa.array(row_datetimes(self.start_row, times)),
                "converged": pa.array(np.array([bool(r.converged) for _, r in rows])),
                "losses_mw": pa.array(np.array([r.losses_mw for _, r in rows], dtype=float)),
                "ext_grid_p_mw": pa.array(np.array([r.ext_grid_p_mw for _, r in rows],
                                                   dtype=float)),
                "ext_grid_q_mvar": pa.array(np.array([r.ext_grid_q_mvar for _, r in rows],
                                                     dtype=float)),
            }),
        }

    # --- writing --------------------------------------------------------------------------

    def _write_parts(self) -> None:
        """One part per table for the buffered steps: all written, then all renamed."""
        frames: dict[str, pa.Table] = {}
        b = self._building_table()
        if b is not None:
            frames["buildings"] = b
        frames.update(self._grid_tables())
        c = self._constraint_table()
        if c is not None:
            frames["constraints"] = c
        if not frames:
            return
        missing = [t for t in self.tables if t not in frames]
        if missing:
            raise RuntimeError(f"flush without results for {missing} (steps "
                               f"{self._buf['buildings'][0][0]}..)")
        staged: list[tuple[Path, Path]] = []
        try:
            for table in self.tables:
                target = self.run_dir / PARTS_DIR / table / f"part-{self._part:05d}.parquet"
                tmp = target.with_name(target.name + ".tmp")
                staged.append((tmp, target))
                pq.write_table(frames[table], tmp)
        except OSError as exc:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
            raise RunWriteError(f"{self.run_dir}: cannot write results of steps "
                                f"{self._buf['buildings'][0][0]}..{self.steps_done - 1}: "
                                f"{exc.strerror or exc}") from exc
        for tmp, target in staged:
            os.replace(tmp, target)
        self._part += 1

    def flush(self) -> None:
        """Write the buffered steps; at a multiple of ``flush_every`` also a checkpoint."""
        self._write_parts()
        self._buf = self._empty_buffer()
        try:
            if self.steps_done % self.flush_every == 0 and self.steps_done > 0:
                save_arrays(self.run_dir, self.steps_done, "writer", {
                    "steps_done": np.array(self.steps_done, dtype=np.int64),
                    "next_part": np.array(self._part, dtype=np.int64)})
                prune(self.run_dir, self.steps_done - (KEEP_CHECKPOINTS - 1) * self.flush_every)
            self.set_status("running")
        except OSError as exc:
            raise RunWriteError(f"{self.run_dir}: cannot write the run's state at step "
                                f"{self.steps_done}: {exc.strerror or exc}") from exc

    def flush_whole_steps(self) -> str | None:
        """After a failure: write the buffered steps every table holds; never raises.

        Returns None, or the reason the results could not be written.
        """
        done = self.steps_done
        self._buf = {k: [(t, v) for t, v in rows if t < done] for k, rows in self._buf.items()}
        if self.bus_ids is not None:  # a step counts once both its tables' rows are there
            grid_times = {t for t, _ in self._buf["grid"]}
            self._buf["buildings"] = [(t, v) for t, v in self._buf["buildings"]
                                      if t in grid_times]
        if self.constraints:
            rows_times = {t for t, _ in self._buf["constraints"]}
            self._buf["buildings"] = [(t, v) for t, v in self._buf["buildings"]
                                      if t in rows_times]
            kept = {t for t, _ in self._buf["buildings"]}
            self._buf["grid"] = [(t, v) for t, v in self._buf["grid"] if t in kept]
            self._buf["constraints"] = [(t, v) for t, v in self._buf["constraints"]
                                        if t in kept]
        try:
            self._write_parts()
        except (RunWriteError, RuntimeError, OSError) as exc:
            return str(exc)
        finally:
            self._buf = self._empty_buffer()
        return None

    def fail(self, reason: str) -> str | None:
        """Flush whole steps, mark the run failed (best effort), stop the heartbeat."""
        problem = self.flush_whole_steps()
        self.set_status("failed", best_effort=True, error=reason)
        self.close()
        return problem

    def finalize(self) -> None:
        """Flush, then append each table's parts, one part at a time, to ``<table>.parquet``.

        Every table is written under ``<table>.parquet.tmp`` (one row group per part,
        see :func:`write_joined`) and renamed only when all are complete, so a run killed
        here keeps its parts and never leaves a half-written file under a final name. The
        parts and checkpoints are removed after the renames.
        """
        self.flush()
        staged: list[tuple[Path, Path]] = []
        try:
            for table in self.tables:
                parts = sorted((self.run_dir / PARTS_DIR / table).glob("part-*.parquet"))
                if not parts:
                    continue
                target = self.run_dir / f"{table}.parquet"
                tmp = target.with_name(target.name + ".tmp")
                staged.append((tmp, target))
                write_joined(parts, tmp)
            for tmp, target in staged:
                os.replace(tmp, target)
            _fsync(self.run_dir, directory=True)
        except BaseException as exc:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise RunWriteError(f"{self.run_dir}: cannot join the results: "
                                    f"{exc.strerror or exc}") from exc
            raise
        shutil.rmtree(self.run_dir / PARTS_DIR, ignore_errors=True)
        shutil.rmtree(self.run_dir / STATE_DIR, ignore_errors=True)


def resume_point(run_dir: Path, components: Sequence[str]) -> tuple[int, int]:
    """(steps done, next part) of the newest checkpoint whose parts are all on disk.

    ``(0, 0)`` when there is none (the run starts again from step 0).
    """
    from cosim.engine.checkpoint import complete_checkpoints

    run_dir = Path(run_dir)
    have = complete_parts(run_dir, expected_tables(run_dir))
    for k in reversed(complete_checkpoints(run_dir, ["writer", *components])):
        saved = load_arrays(run_dir, k, "writer")
        if int(saved["steps_done"]) == k and int(saved["next_part"]) <= have:
            return k, int(saved["next_part"])
    return 0, 0


def truncate_parts(run_dir: Path, next_part: int, steps_done: int) -> None:
    """Drop what lies beyond a checkpoint: later parts, ``.tmp`` leftovers (of parts and of
    a finalize that was killed), later states."""
    for table in ALL_TABLES:
        (Path(run_dir) / f"{table}.parquet.tmp").unlink(missing_ok=True)
    root = Path(run_dir) / PARTS_DIR
    if root.is_dir():
        for folder in root.iterdir():
            if not folder.is_dir() or folder.is_symlink():
                continue
            for p in folder.iterdir():
                m = _PART.match(p.name)
                if p.name.endswith(".tmp") or (m and int(m.group(1)) >= next_part):
                    p.unlink()
    prune(run_dir, 0 if steps_done == 0 else steps_done, keep_until=steps_done)


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``status.json``; a file without cosim's run marker is refused."""
    status = read_marker(run_dir, "run")
    if status is None:
        raise RunDirError(f"{run_dir}: no {STATUS_FILE} with a cosim run marker; not a run "
                          "directory made by cosim")
    return status


def run_state(run_dir: str | Path) -> str:
    """``complete``, ``failed``, ``running`` (its process is alive), ``dead`` (status says
    running but its process is gone: killed) or ``unknown`` (running on another host)."""
    status = read_status(run_dir)
    state = str(status.get("state"))
    if state != "running":
        return state
    alive = holder_alive(status)
    return "running" if alive else ("unknown" if alive is None else "dead")


#: Rows per piece when a table is read in pieces (:class:`TableScan`).
SCAN_BATCH_ROWS = 1 << 20


def _fsync(path: Path, *, directory: bool = False) -> None:
    """Push ``path`` (a file, or a directory's entries) to disk; a directory that cannot
    be synced (some file systems) is let be."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with dictionary-typed columns as their value type (the contract's types)."""
    return pa.schema([pa.field(f.name, f.type.value_type, f.nullable, f.metadata)
                      if pa.types.is_dictionary(f.type) else f for f in schema],
                     metadata=schema.metadata)


def write_joined(parts: Sequence[Path], path: Path) -> int:
    """Append the Parquet files ``parts``, in order, to a new Parquet file ``path``.

    One part is in memory at a time and becomes one row group (``ParquetWriter``); the
    schema, its pandas metadata included, is the first part's, so ``pd.read_parquet``
    gives what joining the parts in memory gave. The file is synced before this returns.
    Returns the number of rows written.
    """
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    rows = 0
    try:
        for part in parts:
            table = pq.read_table(part)
            if writer is None or schema is None:
                schema = _plain_schema(table.schema)
                writer = pq.ParquetWriter(path, schema)
            if not table.schema.equals(schema, check_metadata=False):
                table = table.cast(schema)
            if table.num_rows:
                writer.write_table(table, row_group_size=table.num_rows)
            rows += table.num_rows
            del table
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        _fsync(path)
    return rows


def table_files(run_dir: str | Path, table: str) -> list[Path]:
    """The files that hold a table: ``[<table>.parquet]`` for a complete run, else the
    parts 0..k-1 that every table of the run holds."""
    if table not in ALL_TABLES:
        raise RunDirError(f"unknown table {table!r}; valid: {', '.join(ALL_TABLES)}")
    run_dir = Path(run_dir)
    final = run_dir / f"{table}.parquet"
    if final.is_file():
        return [final]
    tables = expected_tables(run_dir)
    count = complete_parts(run_dir, tables if table in tables else [table])
    if count == 0:
        raise RunDirError(f"{run_dir}: no {table} results")
    folder = run_dir / PARTS_DIR / table
    return [folder / f"part-{k:05d}.parquet" for k in range(count)]


def _checked_columns(path: Path, table: str, columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    columns = list(columns)
    have = pq.read_schema(path).names
    unknown = [c for c in columns if c not in have]
    if unknown:
        raise RunDirError(f"{table} has no column {', '.join(map(repr, unknown))}; "
                          f"valid: {', '.join(have)}")
    return columns


def read_table(run_dir: str | Path, table: str,
               columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A table of a run, complete or (from its flushed parts) interrupted.

    ``columns``: read only these (in this order); None reads all.
    """
    files = table_files(run_dir, table)
    columns = _checked_columns(files[0], table, columns)
    if files[0].parent == Path(run_dir):
        return pd.read_parquet(files[0], columns=columns)
    return pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)


class TableScan:
    """A table of a run read in pieces, for reductions over tables larger than memory.

    The files are fixed when the scan is made (:func:`table_files`: the final file, or
    the parts every table holds), so a table that grows meanwhile is read as it was.
    ``columns``: read only these (None: all). ``batches()`` yields the rows in file
    order in pieces of at most ``batch_rows`` rows; ``steps()`` yields them in pieces of
    whole steps (every row of a ``time`` in one piece; rows are ordered by time).
    """

    def __init__(self, run_dir: str | Path, table: str, columns: Sequence[str] | None = None,
                 *, batch_rows: int | None = None) -> None:
        self.table = table
        self.files = table_files(run_dir, table)
        self.columns = _checked_columns(self.files[0], table, columns)
        self.batch_rows = max(1, int(SCAN_BATCH_ROWS if batch_rows is None else batch_rows))

    @property
    def num_rows(self) -> int:
        return sum(pq.read_metadata(f).num_rows for f in self.files)

    def batches(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """The rows in file order; ``columns`` (default: the scan's) picks the columns."""
        cols = self.columns if columns is None else _checked_columns(
            self.files[0], self.table, columns)
        for path in self.files:
            # a row group at a time (a part of the run: what its writer held in memory);
            # larger ones in batches. iter_batches over a whole file holds far more.
            with pq.ParquetFile(path, pre_buffer=False) as pf:
                for i in range(pf.num_row_groups):
                    if pf.metadata.row_group(i).num_rows <= self.batch_rows:
                        yield pf.read_row_group(i, columns=cols).to_pandas()
                        continue
                    for batch in pf.iter_batches(batch_size=self.batch_rows, row_groups=[i],
                                                 columns=cols, use_threads=False):
                        yield batch.to_pandas()

    def steps(self) -> Iterator[pd.DataFrame]:
        """The rows in pieces of whole steps, in time order (``time`` is always read)."""
        cols = self.columns
        if cols is not None and "time" not in cols:
            cols = ["time", *cols]
        carry: pd.DataFrame | None = None
        last = None
        for frame in self.batches(cols):
            if frame.empty:
                continue
            times = frame["time"].to_numpy()
            if (last is not None and times[0] < last) or bool((np.diff(times) < 0).any()):
                raise RunDirError(f"{self.table}: rows are not ordered by time")
            last = times[-1]
            cut = int(np.searchsorted(times, last, side="left"))
            if cut == 0:  # the whole piece is one step
                if carry is not None and carry["time"].iat[0] == last:
                    carry = pd.concat([carry, frame], ignore_index=True)
                    continue
                if carry is not None:
                    yield carry
                carry = frame
                continue
            head = frame.iloc[:cut]
            yield head if carry is None else pd.concat([carry, head], ignore_index=True)
            carry = frame.iloc[cut:].reset_index(drop=True)
        if carry is not None:
            yield carry


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    _write_json(Path(path), obj)


def recorded_bus_loads(run_dir: str | Path, slack_buses: Sequence[int], *,
                       buses: pd.DataFrame | None = None, grid: pd.DataFrame | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Net consumption per step and bus (time x bus, MW and Mvar) as the run recorded it.

    ``buses.p_mw``/``q_mvar`` are pandapower's ``res_bus``, which at the slack bus
    includes the external grid's supply; that is taken out again (from
    ``grid.parquet``), so the frames are the loads to put on ``feeder.json``'s buses
    (its own loads and generators switched off) to recompute the run's power flow.
    ``buses`` and ``grid``: the run's tables when the caller has read them already.
    """
    slack = [int(b) for b in slack_buses]
    if len(slack) != 1:
        raise RunDirError(f"{run_dir}: need exactly one external grid, got buses {slack}")
    buses = read_table(run_dir, "buses") if buses is None else buses
    grid = (read_table(run_dir, "grid") if grid is None else grid).set_index("time")
    p = buses.pivot(index="time", columns="bus", values="p_mw")
    q = buses.pivot(index="time", columns="bus", values="q_mvar")
    p[slack[0]] += grid.loc[p.index, "ext_grid_p_mw"]
    q[slack[0]] += grid.loc[q.index, "ext_grid_q_mvar"]
    return p, q
