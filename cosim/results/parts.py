"""The tables of a run directory, their columns, and the Parquet parts a running run
flushes (``<run>/.parts/<table>/part-NNNNN.parquet``); joining the parts at the end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from agents.fleet.records import RESULT_COLUMNS
from cosim.results.rundir import read_marker

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


PART = re.compile(r"^part-(\d{5})\.parquet$")


def part_indices(run_dir: Path, table: str) -> set[int]:
    """The numbers of ``table``'s part files on disk."""
    folder = Path(run_dir) / PARTS_DIR / table
    if not folder.is_dir():
        return set()
    return {int(m.group(1)) for m in (PART.match(p.name) for p in folder.iterdir()) if m}


def complete_parts(run_dir: Path, tables: Sequence[str]) -> int:
    """How many parts (0, 1, ... without a gap) every one of ``tables`` holds."""
    count = None
    for table in tables:
        have = part_indices(run_dir, table)
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
    return [t for t in ALL_TABLES if part_indices(run_dir, t)]


def fsync(path: Path, *, directory: bool = False) -> None:
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
        fsync(path)
    return rows
