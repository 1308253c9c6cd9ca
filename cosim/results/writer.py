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
``cosim.results.readers.read_table`` reads a table either way; the parts and their
joining are in ``cosim.results.parts``, resuming in ``cosim.results.resume``, stop
requests in ``cosim.results.stop``, JSON in ``cosim.results.jsonio``.

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
import os
import shutil
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agents.fleet.calendar import row_datetimes
from cosim.engine.checkpoint import KEEP_CHECKPOINTS, STATE_DIR, prune, save_arrays
from cosim.results.jsonio import write_json
from cosim.results.parts import (
    BUILDING_VALUE_COLUMNS,
    CONSTRAINT_VALUE_COLUMNS,
    GRID_TABLES,
    PARTS_DIR,
    fsync,
    write_joined,
)
from cosim.results.provenance import code_fingerprint
from cosim.results.rundir import STATUS_FILE, new_marker, process_start_ticks
from cosim.results.stop import raise_if_stop_requested
from grid_models.errors import RunError

HEARTBEAT_S = 5.0


#: Seconds ``status.json``'s writer waits for the heartbeat's lock before writing anyway.
STATUS_LOCK_S = 2 * HEARTBEAT_S


_PROCESS_START_TICKS = process_start_ticks(os.getpid())


class RunWriteError(RunError, RuntimeError):
    """Results could not be written (disk full, permissions, ...); the run stopped."""


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
            write_json(self.run_dir / STATUS_FILE, content)
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
                    write_json(self.run_dir / STATUS_FILE, content)
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
        raise_if_stop_requested()

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
            fsync(self.run_dir, directory=True)
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
