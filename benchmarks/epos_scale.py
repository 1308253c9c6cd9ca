"""EPOS planning step at 1,000 buildings: the vectorised selection against the agent-by-agent
one it replaced, side by side in one process.

    python benchmarks/epos_scale.py [--days 3] [--scenario mv_rural_1000]

The scenario (``mv_rural_1000``: 1,000 distinct buildings on the SimBench MV rural feeder,
``controller.kind: epos``) is built once; its EPOS controller's settings, forecast,
coupling rows (the hard bounds) and tree overlay are used as the controller uses them.
For each of ``--days`` days (seeded per day as the controller seeds them) one planning
step is timed in three parts: making the candidate plans (``plans``), selecting them by
the vectorised I-EPOS (``select``) and by the agent-by-agent reference
(``tests/agents/epos_reference.py``, ``select (loop)``); both selections must pick the
same plans. Reported: ms per planning step (plans + selection) of both, their ratio, and
the breakdown. Timings depend on the machine and its load; compare the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from agents.control.epos.controller import EposController  # noqa: E402
from agents.control.epos.plans import candidate_plans, serving_plans  # noqa: E402
from agents.control.epos.problem import HardBounds  # noqa: E402
from agents.control.epos.selection import select_plans  # noqa: E402
from agents.fleet.building import FleetState  # noqa: E402
from cosim.engine.run import prepare_scenario  # noqa: E402
from cosim.scenario.build import controller_for  # noqa: E402
from tests.agents.epos_reference import reference_select_plans  # noqa: E402


def main() -> None:
    """Time the planning steps and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--scenario", default="mv_rural_1000")
    args = ap.parse_args()
    overrides = [("output.plots", False), ("controller.kind", "epos")]
    _, built = prepare_scenario(ROOT / "scenarios" / f"{args.scenario}.yaml", overrides,
                                steps=24 * args.days)
    ctl = controller_for(built, np.arange(built.n))
    assert isinstance(ctl, EposController)
    cfg, state = ctl.config, FleetState.initial(ctl.params, 0.5)
    rows = []
    for day in range(args.days):
        t = 24 * day
        demand, pv, _ = ctl.forecast.window(t, cfg.day_steps)
        rng = np.random.default_rng([ctl.seed, day])
        t0 = time.perf_counter()
        plans = serving_plans(candidate_plans(ctl.params, state.backlog_kwh, state.soc_kwh,
                                              demand, pv, cfg.plans, rng, ctl.forecast.dt_h,
                                              ctl._caps(demand)))
        hard = None
        if ctl.rows is not None:
            w_g, w_e = ctl.rows.w_grid.T, ctl.rows.w_export.T
            hard = HardBounds(plans.grid_kwh[:, :, None, :] * w_g[:, None, :, None]
                              - plans.export_kwh[:, :, None, :] * w_e[:, None, :, None],
                              ctl.rows.offset_window(t, cfg.day_steps).T, ctl.rows.upper)
        t1 = time.perf_counter()
        kwargs = dict(alpha=cfg.alpha, beta=cfg.beta, iterations=cfg.iterations, hard=hard,
                      reorganisations=cfg.reorganisations)
        times, found = [], []
        for select in (select_plans, reference_select_plans):
            s0 = time.perf_counter()
            found.append(select(plans.grid_kwh, plans.discomfort, ctl.parent,
                                rng=np.random.default_rng([ctl.seed, day, 1]), **kwargs))
            times.append(time.perf_counter() - s0)
        assert np.array_equal(found[0].index, found[1].index), f"day {day}: selections differ"
        rows.append((t1 - t0, *times, found[0].iterations, found[0].reorganisations))
    print(f"{args.scenario}: {built.n} buildings, {cfg.plans} plans, tree overlay "
          f"height {_height(ctl.parent)}, {args.days} planning steps")
    print(f"{'day':>4} {'plans ms':>9} {'select ms':>10} {'select (loop) ms':>17} "
          f"{'iterations':>11} {'reorg.':>7}")
    for day, (p, s, loop, it, reorg) in enumerate(rows):
        print(f"{day:>4} {1e3 * p:>9.1f} {1e3 * s:>10.1f} {1e3 * loop:>17.1f} {it:>11d} "
              f"{reorg:>7d}")
    p, s, loop = (float(np.mean([r[i] for r in rows])) for i in range(3))
    print(f"per planning step: vectorised {1e3 * (p + s):.1f} ms (plans {1e3 * p:.1f}, "
          f"selection {1e3 * s:.1f}); agent by agent {1e3 * (p + loop):.1f} ms "
          f"(selection {1e3 * loop:.1f}); ratio {(p + loop) / (p + s):.1f}x "
          f"(selection alone {loop / s:.1f}x)")
    print(f"epos_step_ms={1e3 * (p + s):.1f} epos_step_loop_ms={1e3 * (p + loop):.1f} "
          f"epos_select_ms={1e3 * s:.1f} epos_plans_ms={1e3 * p:.1f}")


def _height(parent: np.ndarray) -> int:
    depth = np.zeros(parent.shape[0], dtype=np.int64)
    for _ in range(parent.shape[0]):
        nxt = np.where(parent < 0, 0, depth[np.maximum(parent, 0)] + 1)
        if np.array_equal(nxt, depth):
            break
        depth = nxt
    return int(depth.max())


if __name__ == "__main__":
    main()
