"""Fleet size scaling: steps/s and peak memory for 1,000 and 10,000 buildings.

    python benchmarks/scale.py [--steps 48 | --full-year] [--sizes 1000,10000]
                               [--engine mosaik|plain] [--plots] [--keep]

Each case is ``scenarios/mv_urban_10000.yaml`` (SimBench ``1-MV-urban--0-sw`` with
background, policies, small-world consensus) with ``buildings.generate.count`` set to
the case's size, run through the project's CLI as its own process::

    python -m cosim.cli run scenarios/mv_urban_10000.yaml --out TMP/n1000 --quiet \\
        --steps 48 --engine mosaik --set output.plots=false --set buildings.generate.count=1000

so that no case inherits another's imports, caches or heap. Per case it reports

* ``steps/s``: steps / the engine's wall time (``kpis.json`` ``wall_s``: the steps,
  the power flow and the results stream, not building the scenario or the report);
* ``process [s]``: the whole process (imports, scenario build, run, parts joined,
  KPIs, plots if ``--plots``), i.e. what a user waits for;
* ``peak RSS``: the process's maximum resident set size (``ru_maxrss`` from
  ``os.wait4`` on that very child, so cases cannot pollute each other; with
  ``sharding.mode: cmd`` it is the largest single process, not the sum);
* the grid's non-converged steps and maximum transformer loading, as a sanity check.

``--full-year`` runs 8,760 steps (data rows 0-8759; ``time.start`` is 0). The runs go
into a temporary directory this script creates and removes (``--keep`` leaves it and
prints its path). The last line holds the figures as key=value pairs; a failed case
gets ``nan`` and the script exits 1 after printing its error tail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "mv_urban_10000.yaml"
FULL_YEAR = 8760
_STEPS_LINE = re.compile(r"^(\d+) steps in ([0-9.]+) s", re.MULTILINE)


def run_case(scenario: Path, n: int, steps: int, engine: str, out: Path, plots: bool,
             timeout: float | None) -> dict:
    """Run one case as a child process; its wall times, peak RSS and grid sanity figures."""
    cmd = [sys.executable, "-m", "cosim.cli", "run", str(scenario), "--out", str(out),
           "--quiet", "--steps", str(steps), "--engine", engine,
           "--set", f"output.plots={'true' if plots else 'false'}",
           "--set", f"buildings.generate.count={n}"]
    log = out.parent / f"{out.name}.log"
    t0 = time.perf_counter()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        try:
            rc, rusage = _wait(proc, timeout)
        except BaseException:  # Ctrl-C: do not leave the child running
            if proc.returncode is None:
                proc.kill()
                proc.wait()
            raise
    process_s = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    result = {"n": n, "steps": steps, "rc": rc, "process_s": process_s,
              "peak_rss_mb": rusage.ru_maxrss / 1024.0 if rusage else math.nan,  # KiB on Linux
              "wall_s": math.nan, "steps_per_s": math.nan, "nonconverged": None,
              "max_trafo_pct": None, "cmd": cmd, "tail": "\n".join(text.splitlines()[-15:])}
    if rc != 0:
        return result
    kpis_path = out / "kpis.json"
    kpis = json.loads(kpis_path.read_text()) if kpis_path.is_file() else {}
    if kpis.get("wall_s"):
        result["wall_s"] = float(kpis["wall_s"])
    else:  # fall back on the CLI's "N steps in X s" line (one decimal only)
        match = _STEPS_LINE.search(text)
        if match:
            result["wall_s"] = float(match.group(2))
    if result["wall_s"] > 0:
        result["steps_per_s"] = steps / result["wall_s"]
    grid = kpis.get("grid") or {}
    result["nonconverged"] = grid.get("nonconverged_steps")
    result["max_trafo_pct"] = grid.get("max_trafo_loading_percent")
    return result


def _wait(proc: subprocess.Popen, timeout: float | None):
    """Reap ``proc`` with ``os.wait4`` (its own rusage); kill it after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, rusage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from reaping again
            return proc.returncode, rusage
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return 124, rusage
        time.sleep(0.2)


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(int(value) if spec == "d" else value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=SCENARIO,
                        help="scenario with buildings.generate (default: %(default)s)")
    parser.add_argument("--sizes", default="1000,10000",
                        help="comma-separated fleet sizes (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=48, help="steps per case (default: 48)")
    parser.add_argument("--full-year", action="store_true",
                        help=f"run {FULL_YEAR} steps (overrides --steps)")
    parser.add_argument("--engine", choices=("mosaik", "plain"), default="mosaik")
    parser.add_argument("--plots", action="store_true", help="also write the plots")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per case before it is killed (default: none)")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="folder in which to create the temporary run folder")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run directories and print where they are")
    args = parser.parse_args()
    steps = FULL_YEAR if args.full_year else args.steps
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: integers separated by commas, got {args.sizes!r}")
    if steps < 1 or not sizes or min(sizes) < 1:
        parser.error("--steps and --sizes must be positive")

    tmp = Path(tempfile.mkdtemp(prefix="fleetcosim_scale_", dir=args.tmp))
    results = []
    try:
        for n in sizes:
            print(f"running {n} buildings x {steps} steps ({args.engine}) ...", flush=True)
            r = run_case(args.scenario.resolve(), n, steps, args.engine, tmp / f"n{n}",
                         args.plots, args.timeout)
            results.append(r)
            if r["rc"] != 0:
                print(f"  FAILED (exit {r['rc']}): {' '.join(r['cmd'])}\n{r['tail']}",
                      flush=True)
    finally:
        if args.keep:
            print(f"runs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)  # the folder mkdtemp made above, only

    print(f"\n{args.scenario.name}, engine {args.engine}, {steps} steps, "
          f"plots {'on' if args.plots else 'off'}")
    head = (f"{'buildings':>9} {'steps':>6} {'engine [s]':>10} {'ms/step':>9} {'steps/s':>8} "
            f"{'process [s]':>11} {'peak RSS [MB]':>13} {'nonconv':>7} {'max trafo %':>11}")
    print(head)
    print("-" * len(head))
    for r in results:
        wall = r["wall_s"]
        print(f"{r['n']:>9} {r['steps']:>6} {_fmt(wall, '.2f'):>10} "
              f"{_fmt(wall / r['steps'] * 1e3, '.1f'):>9} {_fmt(r['steps_per_s'], '.2f'):>8} "
              f"{_fmt(r['process_s'], '.1f'):>11} {_fmt(r['peak_rss_mb'], '.0f'):>13} "
              f"{_fmt(r['nonconverged'], 'd'):>7} {_fmt(r['max_trafo_pct'], '.1f'):>11}"
              + ("" if r["rc"] == 0 else f"  FAILED (exit {r['rc']})"))
    figures = {"steps": steps}
    for r in results:
        figures[f"steps_per_s_{r['n']}"] = r["steps_per_s"]
        figures[f"process_s_{r['n']}"] = r["process_s"]
        figures[f"peak_rss_mb_{r['n']}"] = r["peak_rss_mb"]
    print(" ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.2f}"
                   for k, v in figures.items()))
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
