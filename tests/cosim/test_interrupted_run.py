"""A run killed half-way (SIGKILL: no cleanup at all) leaves readable results.

Every flush writes complete Parquet parts (temporary name, then rename), so
after a kill ``read_table`` returns whole flushed steps only, and ``status.json``
still says ``running``: an interrupted run is never presented as complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cosim.results.parts import PARTS_DIR
from cosim.results.readers import read_status, read_table

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 600
FLUSH_EVERY = 100
N_BUILDINGS = 7
PARTS_BEFORE_KILL = 2
WAIT_S = 60.0
POLL_S = 0.01


def _parts(run_dir: Path, table: str) -> list[Path]:
    return sorted((run_dir / PARTS_DIR / table).glob("part-*.parquet"))


def _whole_flushes(times: np.ndarray) -> int:
    """Number of flushes ``k`` if ``times`` are exactly 0..k*FLUSH_EVERY-1, else fail."""
    steps = np.unique(times)
    k, rest = divmod(len(steps), FLUSH_EVERY)
    assert rest == 0, f"{len(steps)} steps is not a whole number of flushes"
    np.testing.assert_array_equal(steps, np.arange(k * FLUSH_EVERY))
    return k


@pytest.mark.slow
def test_killed_run_keeps_whole_flushed_steps(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cosim.cli", "run", str(SCENARIO), "--steps", str(STEPS),
         "--set", f"output.flush_every={FLUSH_EVERY}", "--out", str(run_dir), "--quiet"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while len(_parts(run_dir, "buildings")) < PARTS_BEFORE_KILL:
            assert proc.poll() is None, (
                f"the run ended (rc {proc.returncode}) before {PARTS_BEFORE_KILL} flushes "
                f"were seen: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, f"no {PARTS_BEFORE_KILL} flushes in {WAIT_S} s"
            time.sleep(POLL_S)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    status = read_status(run_dir)
    assert status["state"] == "running"
    assert status["steps"] == STEPS
    assert not (run_dir / "buildings.parquet").exists()
    assert not (run_dir / "kpis.json").exists()

    buildings = read_table(run_dir, "buildings")
    k = _whole_flushes(buildings["time"].to_numpy())
    assert PARTS_BEFORE_KILL <= k < STEPS // FLUSH_EVERY
    assert len(buildings) == k * FLUSH_EVERY * N_BUILDINGS
    per_step = buildings.groupby("time")["building"].apply(lambda s: sorted(s))
    expected = [f"B{i}" for i in range(1, N_BUILDINGS + 1)]
    assert all(ids == expected for ids in per_step), "every building, once, every step"
    # status.json is rewritten just after each flush's parts
    assert (k - 1) * FLUSH_EVERY <= status["steps_done"] <= k * FLUSH_EVERY

    # The grid tables are flushed right after the buildings: whole flushes too,
    # at most one behind if the kill fell between the two writes.
    buses = read_table(run_dir, "buses")
    assert _whole_flushes(buses["time"].to_numpy()) in (k - 1, k)
