"""Study speed-up on dask workers: the paper reproduction study with 1 worker against N.

    python benchmarks/study_workers.py [--steps 720 | --steps 0] [--workers 2] [--keep]

Each pass runs ``scenarios/studies/paper_reproduction.yaml`` (60 runs: 5 values of c x
12 variants, mosaik engine) through the project's CLI as its own process::

    COSIM_STUDY_WORKERS=K python -m cosim.cli study scenarios/studies/paper_reproduction.yaml \\
        --out TMP/workers_K --quiet --steps 720

first with K = 1 (every run in the study's process, one after the other), then with
K = ``--workers`` (a dask ``LocalCluster`` of K single-threaded worker processes, one
run each at a time). ``--steps 0`` keeps the study's 3,000 steps per run (some 4-5
minutes a pass on two cores, extrapolated from 240 and 720 steps); the default 720
steps (30 days) keeps both passes under three minutes. The wall
time is the whole process (imports, cluster start, every run, the table, figures and
report), i.e. what a user waits for. Both passes must give the same ``study.csv``
(checked). The runs go into a temporary directory this script creates and removes
(``--keep`` leaves it and prints its path); nothing is written into the repository.
The last line holds the figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "scenarios" / "studies" / "paper_reproduction.yaml"


def one_pass(out: Path, workers: int, steps: int) -> float:
    """Wall seconds of ``cosim study`` with ``workers`` into ``out``."""
    cmd = [sys.executable, "-m", "cosim.cli", "study", str(STUDY), "--out", str(out), "--quiet"]
    if steps:
        cmd += ["--steps", str(steps)]
    env = {**os.environ, "COSIM_STUDY_WORKERS": str(workers)}
    env.pop("COSIM_DASK_SCHEDULER", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"workers={workers}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=720,
                        help="steps per run (0: the study's own 3,000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the study folders")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="study_workers_"))
    try:
        walls = {}
        for k in (1, args.workers):
            walls[k] = one_pass(tmp / f"workers_{k}", k, args.steps)
            print(f"workers={k}: {walls[k]:.1f} s", flush=True)
        one = pd.read_csv(tmp / "workers_1" / "study.csv")
        many = pd.read_csv(tmp / f"workers_{args.workers}" / "study.csv")
        pd.testing.assert_frame_equal(one, many)
        ok = int((one["status"] == "ok").sum())
        speedup = walls[1] / walls[args.workers]
        print(f"{len(one)} runs ({ok} ok), {args.steps or 'all'} steps each, "
              f"{os.cpu_count()} cores; the same study.csv from both passes")
        print(f"speed-up with {args.workers} workers: {speedup:.2f}x")
        print(f"runs={len(one)} steps={args.steps or 'all'} cores={os.cpu_count()} "
              f"wall_1_s={walls[1]:.1f} wall_{args.workers}_s={walls[args.workers]:.1f} "
              f"speedup={speedup:.2f}")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
