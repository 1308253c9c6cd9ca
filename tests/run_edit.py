"""Test helpers on run directories: corrupt a copy of a finished run on purpose
(``cosim verify`` and ``cosim compare`` must catch it), and compare two runs' tables."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def copy_run(run: Path, out: Path) -> Path:
    """A copy of the run directory ``run`` at ``out``."""
    shutil.copytree(run, out)
    return out


def edit_table(run: Path, table: str, edit: Callable[[pd.DataFrame], None]) -> None:
    """Apply ``edit`` (in place) to ``<run>/<table>.parquet`` and write it back."""
    path = run / f"{table}.parquet"
    frame = pd.read_parquet(path)
    edit(frame)
    frame.to_parquet(path, index=False)


def assert_same_tables(run: Path, ref: Path) -> None:
    """Every table ``ref`` lists in ``status.json`` equals ``run``'s, bit for bit."""
    from cosim.results import read_status, read_table

    for table in read_status(ref)["tables"]:
        pd.testing.assert_frame_equal(read_table(run, table), read_table(ref, table),
                                      check_exact=True, obj=table)
