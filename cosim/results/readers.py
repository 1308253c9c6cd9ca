"""Reading a run directory, complete or interrupted: its status, its state and its
tables (whole, or in pieces of whole steps for tables larger than memory).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cosim.results.parts import ALL_TABLES, PARTS_DIR, complete_parts, expected_tables
from cosim.results.rundir import STATUS_FILE, RunDirError, holder_alive, read_marker


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
        """How many rows the scan's files hold."""
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
