"""The local-LP teacher of the warm start in closed loop: what information is worth.

    python benchmarks/teacher_closed_loop.py [--fractions 0.2,0.27,0.5] [--steps 3000]

On ``paper_fig1d`` (plain engine, pi consensus), each building runs the teacher of
``agents/learning/teacher.py`` as its controller: its 24-hour local LP with its current lambda_eff
held and its backlog valued at ``max(0, 1.05 max price + nu)``, first step applied. The
forecast of demand and PV is ``perfect`` (the data) or ``persistence`` (yesterday's
values); the tariff is the data's in both. Reported per c: the cost over the run-average
oracle's, for each forecast. The learned policies see neither forecast (only the tariff
ahead): the gap between the two rows bounds what a demand and PV forecast could bring.
The last line holds the headline figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

from agents.control.coupling import Forecast  # noqa: E402
from agents.fleet.actions import model_actions  # noqa: E402
from agents.fleet.data import load_citylearn  # noqa: E402
from agents.fleet.observation import FleetObservation  # noqa: E402
from agents.learning.teacher import best_response  # noqa: E402
from cosim.engine.run import execute, prepare_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HORIZON = 24


class TeacherController:
    """Every building's local LP (agents/learning/teacher.py) on a forecast, in closed loop."""

    name = "teacher"

    def __init__(self, forecast: Forecast, params) -> None:
        self.forecast, self.params, self.t = forecast, params, 0

    def act(self, obs: FleetObservation) -> np.ndarray:
        demand, pv, price = self.forecast.window(self.t, HORIZON)
        demand, pv = demand.T.copy(), pv.T.copy()
        demand[:, 0], pv[:, 0] = obs.demand_kwh, obs.pv_kwh  # the step's own, observed
        prices = np.ascontiguousarray(np.broadcast_to(price, (obs.n, HORIZON)))
        grid, battery = best_response(self.params, obs, demand, pv, prices)
        self.t += 1
        return model_actions(grid, battery, obs.demand_kwh + obs.backlog_kwh)


def _cost(fraction: float, steps: int, kind: str | None, mode: str | None) -> float:
    sets = [("constraint.fraction_of_peak", fraction), ("output.plots", False)]
    if kind:
        sets.append(("controller.kind", kind))
    sc, built = prepare_scenario(ROOT / "scenarios" / "paper_fig1d.yaml", sets, steps=steps)
    if mode is not None:
        forecast = Forecast.from_citylearn(load_citylearn(), built.profiles,
                                           built.setup.params, sc.time.start, steps, HORIZON,
                                           mode)
        built.controller = TeacherController(forecast, built.setup.params)
    with tempfile.TemporaryDirectory() as tmp:
        execute(sc, built, Path(tmp) / "run", engine="plain", progress=False)
        return float(json.loads((Path(tmp) / "run" / "kpis.json").read_text())
                     ["fleet"]["total_cost"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", default="0.2,0.27,0.5")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    figures = {}
    print(f"{'c':>6}{'oracle $':>12}{'perfect':>10}{'persistence':>13}")
    for c in (float(x) for x in args.fractions.split(",")):
        oracle = _cost(c, args.steps, "oracle", None)
        perfect = _cost(c, args.steps, None, "perfect") / oracle
        persistence = _cost(c, args.steps, None, "persistence") / oracle
        print(f"{c:6.2f}{oracle:12,.0f}{perfect:10.3f}{persistence:13.3f}")
        figures[f"perfect_{c:g}"] = perfect
        figures[f"persistence_{c:g}"] = persistence
    print(" ".join(f"{k}={v:.4f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
