"""Compute time per step of the model-based controllers, measured side by side in one run.

    python benchmarks/controllers.py [--small-steps 240] [--large-steps 168]
                                     [--engine mosaik] [--kinds none,dmpc,epos]

For ``paper_fig1d`` (7 buildings, the CIGRE LV feeder) and ``mv_rural_1000`` (1,000
buildings, the SimBench MV rural feeder with its background, one week by default),
each controller kind runs the same scenario through the same engine (mosaik by
default) into a temporary run directory. Reported per kind:

- ``wall ms/step``: the run's wall time per step (building the scenario excluded;
  building the controller's forecast and coupling rows, the simulation, the power
  flow and writing the run directory included);
- ``controller ms/step``: the controller's own time per step, from its
  ``decisions/timing.json`` (DMPC: the local problems ``solve_s``, the master problem
  ``master_s`` and the rest of the negotiation; EPOS: making the candidate plans and
  selecting them);
- ``solver share``: the solver's part of the wall time (DMPC: ``solve_s + master_s``; EPOS:
  plans and selection, it calls no LP solver), the figure the issue asks for;
- ``vs none``: wall time per step over that of no control (the same power flows,
  fleet model and writing, without any planning).

Timings depend on the machine and its load; the ratios in one run are what to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from cosim.engine.run import execute, prepare_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(scenario: str, kind: str, steps: int, out: Path, engine: str) -> dict[str, float]:
    """Run ``scenario`` with ``controller.kind`` ``kind``; wall and controller seconds."""
    overrides = [("output.plots", False), ("controller.kind", kind)]
    sc, built = prepare_scenario(ROOT / "scenarios" / scenario, overrides, steps=steps)
    t0 = time.perf_counter()
    execute(sc, built, out, progress=False, engine=engine, force=True)
    wall = time.perf_counter() - t0
    timing_path = out / "decisions" / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    solver = float(timing.get("solve_s", timing.get("plans_s", 0.0)
                              + timing.get("select_s", 0.0)))
    solver += float(timing.get("master_s", 0.0))
    spent = sum(float(v) for k, v in timing.items() if k.endswith("_s"))
    return {"wall_s": wall, "controller_s": spent, "solver_s": solver, "steps": steps}


def main() -> None:
    """Time every kind on both scenarios and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-steps", type=int, default=240, help="paper_fig1d steps")
    ap.add_argument("--large-steps", type=int, default=168, help="mv_rural_1000 steps")
    ap.add_argument("--engine", default="mosaik", choices=("mosaik", "plain"))
    ap.add_argument("--kinds", default="none,dmpc,epos")
    ap.add_argument("--scenarios", default="paper_fig1d,mv_rural_1000")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios.split(","):
            steps = args.small_steps if scenario == "paper_fig1d" else args.large_steps
            base = None
            for kind in kinds:
                r = timed(f"{scenario}.yaml", kind, steps, Path(tmp) / f"{scenario}_{kind}",
                          args.engine)
                if kind == "none":
                    base = r["wall_s"] / steps
                rows.append((scenario, kind, r, base))
                print(f"  done {scenario} {kind}: {r['wall_s']:.1f} s", flush=True)
    print(f"\n{args.engine} engine")
    print(f"{'scenario':<14} {'kind':<6} {'steps':>6} {'wall ms/step':>13} "
          f"{'controller ms/step':>19} {'solver share':>13} {'vs none':>8}")
    for scenario, kind, r, base in rows:
        per = 1e3 * r["wall_s"] / r["steps"]
        ctl = 1e3 * r["controller_s"] / r["steps"]
        share = r["solver_s"] / r["wall_s"] if r["wall_s"] else float("nan")
        ratio = (r["wall_s"] / r["steps"]) / base if base else float("nan")
        print(f"{scenario:<14} {kind:<6} {r['steps']:>6} {per:>13.1f} {ctl:>19.1f} "
              f"{share:>13.1%} {ratio:>8.2f}")
    figures = []
    for scenario, kind, r, _ in rows:
        if kind == "none":
            continue
        size = "7" if scenario == "paper_fig1d" else scenario.rsplit("_", 1)[-1]
        figures.append(f"{kind}_{size}_ms_per_step={1e3 * r['wall_s'] / r['steps']:.1f}")
        figures.append(f"{kind}_{size}_solver_share={r['solver_s'] / r['wall_s']:.3f}")
    print(" ".join(figures))


if __name__ == "__main__":
    main()
