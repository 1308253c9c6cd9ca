"""Fleet size scaling: steps/s and peak memory per process, by fleet size and shards.

    python benchmarks/scale.py [--steps 48 | --full-year] [--sizes 1000,10000]
                               [--shards 1,2,4] [--modes cmd,connect] [--scenario FILE]
                               [--engine mosaik|plain] [--plots] [--keep]

    # the grid of docs/scaling.md (SimBench HV/MV, 1k/10k/100k homes x 1/2/4 shards):
    python benchmarks/scale.py --scenario scenarios/hv_mv_100000.yaml \
        --sizes 1000,10000,100000 --shards 1,2,4 --steps 24
    # the same shards connected over TCP (cosim shard processes this script starts)
    python benchmarks/scale.py --scenario scenarios/hv_mv_100000.yaml \
        --sizes 10000 --shards 2 --modes cmd,connect --steps 24

Each case is ``scenarios/mv_urban_10000.yaml`` (SimBench ``1-MV-urban--0-sw`` with
background, policies, small-world consensus) with ``buildings.generate.count`` set to
the case's size, run through the project's CLI as its own process::

    python -m cosim.cli run scenarios/mv_urban_10000.yaml --out TMP/n1000 --quiet \\
        --steps 48 --engine mosaik --set output.plots=false --set buildings.generate.count=1000

so that no case inherits another's imports, caches or heap. Per case it reports

* ``steps/s``: steps / the engine's wall time (``kpis.json`` ``wall_s``: the steps,
  the power flow and the results stream, not building the scenario or the report; with
  cmd-mode shards it includes starting the shard processes, which build their slices
  one after the other);
* ``loop [s]`` and ``loop steps/s``: the stepping alone, from the elapsed time of
  mosaik's progress bar (started once every simulator is up; whole seconds, so shown
  from 2 s on), and ``start [s]`` = engine - loop: starting the simulators;
* ``process [s]``: the whole process (imports, scenario build, run, parts joined,
  KPIs, plots if ``--plots``), i.e. what a user waits for;
* ``peak RSS``: the run process's maximum resident set size (``ru_maxrss`` from
  ``os.wait4`` on that very child, so cases cannot pollute each other);
* with ``--shards K`` each case runs once per ``--modes`` entry (default ``cmd``):
  ``cmd`` (K > 1: ``sharding: {shards: K, mode: cmd}``, each shard its own process that
  the run starts, over TCP on loopback; K = 1: ``sharding: {shards: 1, mode:
  inprocess}``), ``inprocess`` (the K shards in the run's process) or ``connect``
  (``sharding: {shards: K, mode: connect}``: this script first starts K ``cosim shard
  127.0.0.1:PORT`` processes on free ports and waits until each listens, ``shards up
  [s]``, then the run connects to them over TCP, as it would to shards on other hosts;
  their interpreter start and imports are thus outside the run's engine time, building
  their slices is inside). It reports each shard process's peak RSS: for ``cmd``, its
  ``VmHWM`` (the kernel's high-water mark of its resident set) read from ``/proc``
  every 0.2 s while it lives (the last reading before it exits, so a peak in its last
  0.2 s can be missed); for ``connect``, ``ru_maxrss`` from ``os.wait4`` once it has
  ended by itself with the run (exact). And the sum over all processes (run + shards:
  an upper bound on what the case needed at once);
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
#: the progress bar's last "N/N [mm:ss<..." or "[h:mm:ss<..."
_BAR = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)[<\]]")


MODES = ("inprocess", "cmd", "connect")


class _CaseFailed(Exception):
    """A case that failed before its run started (its shards did not come up)."""
#: seconds a started ``cosim shard`` has to listen, and to end by itself after its run
SHARD_UP_S = 120.0
SHARD_END_S = 60.0
#: the line a listening ``cosim shard`` prints (cosim.engine.sims.building_sim.LISTENING)
LISTENING = "shard: listening at"


def case_mode(shards: int | None, mode: str) -> str | None:
    """The ``sharding.mode`` of a case (None: the scenario's): ``cmd`` for one shard is the
    in-process run, as it always was here."""
    if shards is None:
        return None
    return "inprocess" if mode == "cmd" and shards == 1 else mode


def run_case(scenario: Path, n: int, steps: int, engine: str, out: Path, plots: bool,
             timeout: float | None, shards: int | None = None, mode: str = "cmd") -> dict:
    """Run one case as a child process; its wall times, peak RSS and grid sanity figures.

    ``shards``: None keeps the scenario's sharding; else K shards in ``mode``
    (:func:`case_mode`; ``connect``: K ``cosim shard`` processes started here first)."""
    cmd = [sys.executable, "-m", "cosim.cli", "run", str(scenario), "--out", str(out),
           "--steps", str(steps), "--engine", engine,
           "--set", f"output.plots={'true' if plots else 'false'}",
           "--set", f"buildings.generate.count={n}"]
    mode_of_case = case_mode(shards, mode)
    if shards is not None:
        cmd += ["--set", f"sharding.shards={shards}", "--set", f"sharding.mode={mode_of_case}"]
    log = out.parent / f"{out.name}.log"
    peaks: dict[int, int] = {}  # pid of a descendant (a shard) -> its VmHWM in KiB
    started: list[subprocess.Popen] = []
    shard_kib: list[int] = []
    shards_up_s = process_s = math.nan
    rc, rusage, failure = 1, None, ""
    t0 = time.perf_counter()
    try:
        if mode_of_case == "connect":
            assert shards is not None
            try:
                started, shards_up_s = start_shards(shards, out.parent / f"{out.name}_shard")
            except RuntimeError as exc:
                failure = str(exc)
                raise _CaseFailed from None
            addresses = [a for a, _ in started]
            cmd += ["--set", f"sharding.connect={json.dumps(addresses)}"]
            t0 = time.perf_counter()
        with open(log, "wb") as sink:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
            try:
                rc, rusage = _wait(proc, timeout, peaks)
            except BaseException:  # Ctrl-C: do not leave the child running
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
                raise
        process_s = time.perf_counter() - t0
        for _, shard in started:  # each ends by itself once its run has ended
            shard_rc, shard_rusage = _wait(shard, SHARD_END_S)
            shard_kib.append(shard_rusage.ru_maxrss if shard_rusage else 0)
            if shard_rc != 0 and rc == 0:
                rc = shard_rc
    except _CaseFailed:
        pass
    finally:
        for _, shard in started:
            if shard.returncode is None:
                shard.kill()
                shard.wait()
    text = log.read_text(errors="replace") if log.is_file() else failure
    main_mb = rusage.ru_maxrss / 1024.0 if rusage else math.nan  # KiB on Linux
    shard_mb = sorted((kib / 1024.0 for kib in [*peaks.values(), *shard_kib]), reverse=True)
    result = {"n": n, "steps": steps, "rc": rc, "process_s": process_s, "loop_s": math.nan,
              "shards": shards, "mode": mode_of_case, "shards_up_s": shards_up_s,
              "peak_rss_mb": main_mb, "shard_peak_mb": shard_mb,
              "total_peak_mb": main_mb + sum(shard_mb),
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
    bars = [m for m in _BAR.finditer(text) if m.group(1) == m.group(2) == str(steps)]
    result["loop_s"] = math.nan
    if bars:
        h, mm, ss = bars[-1].group(3), bars[-1].group(4), bars[-1].group(5)
        loop_s = int(h or 0) * 3600 + int(mm) * 60 + int(ss)
        if loop_s >= 2:
            result["loop_s"] = float(loop_s)
    grid = kpis.get("grid") or {}
    result["nonconverged"] = grid.get("nonconverged_steps")
    result["max_trafo_pct"] = grid.get("max_trafo_loading_percent")
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_shards(count: int, log_stem: Path) -> tuple[list[tuple[str, subprocess.Popen]], float]:
    """``count`` ``cosim shard`` processes on free loopback ports, each waited for until it
    prints that it listens (a probe connection would use up its one accept); the
    (address, process) pairs and the seconds until all listened. Raises RuntimeError (after
    killing them) when one exits or does not listen within :data:`SHARD_UP_S`."""
    started: list[tuple[str, subprocess.Popen]] = []
    logs = []
    t0 = time.perf_counter()
    try:
        for i in range(count):
            address = f"127.0.0.1:{_free_port()}"
            log = log_stem.with_name(f"{log_stem.name}{i}.log")
            with open(log, "wb") as sink:
                started.append((address, subprocess.Popen(
                    [sys.executable, "-m", "cosim.cli", "shard", address, "--timeout",
                     str(int(SHARD_UP_S))], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)))
            logs.append(log)
        deadline = time.monotonic() + SHARD_UP_S
        for (address, proc), log in zip(started, logs, strict=True):
            while LISTENING not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the shard at {address} did not listen: "
                                       f"{log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
    except BaseException:
        for _, proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        raise
    return started, time.perf_counter() - t0


def _hwm_kib(pid: int) -> int | None:
    """The ``VmHWM`` (peak resident set, KiB) of a live process, from /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (psutil when installed, else /proc's children)."""
    try:
        import psutil
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # the process is gone
        return []
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        found += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return found


def _wait(proc: subprocess.Popen, timeout: float | None, peaks: dict[int, int] | None = None):
    """Reap ``proc`` with ``os.wait4`` (its own rusage); kill it after ``timeout`` seconds.

    ``peaks`` collects the peak RSS of ``proc``'s descendants while they live."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if peaks is not None:
            for child in _descendants(proc.pid):
                hwm = _hwm_kib(child)
                if hwm is not None:
                    peaks[child] = max(peaks.get(child, 0), hwm)
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
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
    parser.add_argument("--shards", default=None,
                        help="comma-separated shard counts, e.g. 1,2,4 (1: in-process, K > 1: "
                             "K cmd-mode processes; default: the scenario's sharding)")
    parser.add_argument("--modes", default="cmd",
                        help="comma-separated sharding modes of each --shards count: "
                             "inprocess, cmd (1 shard: in-process), connect (shard processes "
                             "started here, connected over TCP); default: %(default)s")
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
    shard_counts: list[int | None] = [None]
    if args.shards:
        try:
            shard_counts = [int(s) for s in args.shards.split(",") if s.strip()]
        except ValueError:
            parser.error(f"--shards: integers separated by commas, got {args.shards!r}")
        if not shard_counts or min(shard_counts) < 1:
            parser.error("--shards must be positive")
        if args.engine != "mosaik" and max(shard_counts) > 1:
            parser.error("--shards above 1 needs --engine mosaik")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: some of {', '.join(MODES)} separated by commas, got "
                     f"{args.modes!r}")
    if not args.shards and modes != ["cmd"]:
        parser.error("--modes needs --shards (the shard counts each mode runs)")
    if args.engine != "mosaik" and modes != ["cmd"]:
        parser.error("--modes needs --engine mosaik")
    cases = [(k, m) for k in shard_counts for m in modes]
    cases = [c for i, c in enumerate(cases)  # 1 shard: cmd is inprocess, once
             if (c[0], case_mode(*c)) not in [(k, case_mode(k, m)) for k, m in cases[:i]]]

    tmp = Path(tempfile.mkdtemp(prefix="fleetcosim_scale_", dir=args.tmp))
    results = []
    try:
        for n in sizes:
            for k, mode in cases:
                label = "" if k is None else \
                    f", {k} shard{'s' if k > 1 else ''} {case_mode(k, mode)}"
                print(f"running {n} buildings x {steps} steps ({args.engine}{label}) ...",
                      flush=True)
                name = f"n{n}" if k is None else f"n{n}_s{k}_{case_mode(k, mode)}"
                r = run_case(args.scenario.resolve(), n, steps, args.engine, tmp / name,
                             args.plots, args.timeout, shards=k, mode=mode)
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
    head = (f"{'buildings':>9} {'shards':>6} {'mode':>9} {'shards up [s]':>13} {'steps':>6} "
            f"{'engine [s]':>10} {'ms/step':>9} "
            f"{'steps/s':>8} {'loop [s]':>8} {'loop steps/s':>12} {'start [s]':>9} "
            f"{'process [s]':>11} {'run RSS [MB]':>12} "
            f"{'shard RSS [MB]':>14} {'sum RSS [MB]':>12} {'nonconv':>7} {'max trafo %':>11}")
    print(head)
    print("-" * len(head))
    for r in results:
        wall = r["wall_s"]
        shard_mb = "/".join(f"{m:.0f}" for m in r["shard_peak_mb"]) or "-"
        print(f"{r['n']:>9} {_fmt(r['shards'], 'd'):>6} {r['mode'] or '-':>9} "
              f"{_fmt(r['shards_up_s'], '.1f'):>13} {r['steps']:>6} "
              f"{_fmt(wall, '.2f'):>10} "
              f"{_fmt(wall / r['steps'] * 1e3, '.1f'):>9} {_fmt(r['steps_per_s'], '.2f'):>8} "
              f"{_fmt(r['loop_s'], '.0f'):>8} {_fmt(r['steps'] / r['loop_s'], '.2f'):>12} "
              f"{_fmt(wall - r['loop_s'], '.1f'):>9} "
              f"{_fmt(r['process_s'], '.1f'):>11} {_fmt(r['peak_rss_mb'], '.0f'):>12} "
              f"{shard_mb:>14} {_fmt(r['total_peak_mb'], '.0f'):>12} "
              f"{_fmt(r['nonconverged'], 'd'):>7} {_fmt(r['max_trafo_pct'], '.1f'):>11}"
              + ("" if r["rc"] == 0 else f"  FAILED (exit {r['rc']})"))
    figures: dict[str, float | int] = {"steps": steps}
    for r in results:
        key = f"{r['n']}" if r["shards"] is None else f"{r['n']}_s{r['shards']}"
        if r["mode"] not in (None, "inprocess" if r["shards"] == 1 else "cmd"):
            key += f"_{r['mode']}"  # the keys of the default modes stay as they were
        figures[f"steps_per_s_{key}"] = r["steps_per_s"]
        figures[f"loop_steps_per_s_{key}"] = r["steps"] / r["loop_s"]
        figures[f"process_s_{key}"] = r["process_s"]
        figures[f"peak_rss_mb_{key}"] = r["peak_rss_mb"]
        figures[f"sum_rss_mb_{key}"] = r["total_peak_mb"]
    print(" ".join(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.2f}"
                   for k, v in figures.items()))
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
