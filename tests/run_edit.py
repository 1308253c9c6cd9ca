"""Test helpers on run directories: corrupt a copy of a finished run on purpose
(``cosim verify`` and ``cosim compare`` must catch it), compare two runs' tables, and
stop a run by Ctrl-C at a given step (to resume it)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    from cosim.results.readers import read_status, read_table

    for table in read_status(ref)["tables"]:
        pd.testing.assert_frame_equal(read_table(run, table), read_table(ref, table),
                                      check_exact=True, obj=table)


def stopped_at(step: int, argv: list[str], monkeypatch: Any) -> int:
    """``cosim`` with ``argv``, stopped by Ctrl-C inside the fleet engine (either engine) at
    ``step``; its exit code (the engine is whole again afterwards)."""
    from agents.fleet.runner import FleetLoop
    from cosim.cli import main

    original_step = FleetLoop.step

    def crashing(self: FleetLoop, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.t == step:
            raise KeyboardInterrupt("stopped for the test")
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(FleetLoop, "step", crashing)
    try:
        return main(argv)
    finally:
        monkeypatch.setattr(FleetLoop, "step", original_step)
