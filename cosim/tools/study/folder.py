"""The study folder: its marker and lock, ``study.csv`` written atomically, and the
state of each run folder in it (new, complete, interrupted, changed, foreign).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from cosim.results.provenance import other_code
from cosim.results.rundir import (
    STUDY_MARKER,
    DirLock,
    RunDirError,
    claim_directory,
    new_marker,
    read_marker,
    unmarked_entries,
)
from cosim.tools.study.schema import Study

MAX_NOTE = 300  # longest note of a failed run


def claim_study_dir(out: Path, study: Study, *, force: bool) -> DirLock:
    """Take the study folder: new, empty, or a study cosim made (continued); lock it."""
    out = Path(out)
    lock = claim_directory(out, "study", force=force, reuse=True)
    try:
        marker = read_marker(out, "study") or new_marker("study")
        write_study_marker(out, {**marker, "kind": "study", "name": study.name,
                                  "scenario": str(study.scenario), "state": "running"})
    except BaseException:
        lock.release()
        raise
    return lock


def write_study_marker(out: Path, content: dict[str, Any]) -> None:
    """The study's marker ``study.json``, written atomically."""
    from cosim.results.jsonio import write_json

    write_json(out / STUDY_MARKER, content)


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` as CSV to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def existing_run(run_dir: Path, resolved: str) -> str:
    """``new``, ``complete`` or ``incomplete`` (same scenario and code), ``changed``
    (another scenario), ``other_code`` (made by other code, ``cosim.results.provenance``) or
    ``foreign``."""
    if not run_dir.exists() and not run_dir.is_symlink():
        return "new"
    status = read_marker(run_dir, "run")
    if run_dir.is_symlink():
        return "foreign"
    if status is None:
        # a run killed while it claimed its folder leaves only its lock file (and perhaps
        # a half-written marker): cosim's own leftovers, taken like a new folder
        return "new" if run_dir.is_dir() and not unmarked_entries(run_dir, "run") else "foreign"
    try:
        same = (run_dir / "scenario.yaml").read_text() == resolved
    except OSError:
        same = False
    if not same:
        return "changed"
    if other_code(status) is not None:  # older runs record no code: taken as they are
        return "other_code"
    return "complete" if status.get("state") == "complete" else "incomplete"


def failure_note(exc: BaseException) -> str:
    """A failed run's ``note``: the exception's type and message on one short line."""
    text = " ".join(str(exc).split())
    note = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return note if len(note) <= MAX_NOTE else note[:MAX_NOTE - 3] + "..."


def study_run_dir(out: Path, run_id: str) -> Path:
    """The folder of run ``run_id``: ``<out>/runs/<run_id>``, refused if it lies elsewhere."""
    runs_root = out / "runs"
    run_dir = runs_root / run_id
    if run_dir.resolve().parent != runs_root.resolve():
        raise RunDirError(f"{run_dir}: run folder outside {runs_root}")
    return run_dir


def check_run_state(run_dir: Path, state: str, force: bool) -> None:
    """Refuse a foreign run folder, and a changed or other-code one without ``force``."""
    if state == "foreign":
        raise RunDirError(f"{run_dir}: exists and is not a run made by cosim; "
                          "nothing was touched")
    if state == "changed" and not force:
        raise RunDirError(f"{run_dir}: holds a run of a different scenario (the study "
                          "changed); pass --force to replace the changed runs, or "
                          "choose another --out")
    if state == "other_code" and not force:
        raise RunDirError(f"{run_dir}: holds a run made by other code (cosim.results.provenance: "
                          "the sources changed since); its results would sit beside "
                          "today's in one table. Pass --force to run it again with this "
                          "code, or choose another --out")
