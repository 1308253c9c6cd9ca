"""Where an interrupted run continues (``--resume``): the newest checkpoint whose parts
are all on disk, and dropping what lies beyond it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cosim.engine.checkpoint import load_arrays, prune
from cosim.results.parts import ALL_TABLES, PART, PARTS_DIR, complete_parts, expected_tables


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
                m = PART.match(p.name)
                if p.name.endswith(".tmp") or (m and int(m.group(1)) >= next_part):
                    p.unlink()
    prune(run_dir, 0 if steps_done == 0 else steps_done, keep_until=steps_done)
