"""BuildingAgentSim: building dynamics plus controller for many buildings at once.

One ``step`` stacks the inputs of all its entities, asks the controller once
(one forward pass per policy class) and steps the fleet with
``agents.building.step_fleet``. In-process it receives the built run; started
as its own process (mosaik "cmd" mode, a shard of the fleet) it builds the
fleet from the resolved scenario file::

    python -m cosim.sims.building_sim HOST:PORT --remote
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

from agents.building import FleetState, step_fleet
from agents.observation import fleet_observation
from cosim.sims.meta import BUILDING_RESULTS, EXOGENOUS, MULTIPLIERS, meta

RECORD = BUILDING_RESULTS + MULTIPLIERS


def _single(values: dict[str, Any]) -> float:
    if len(values) != 1:
        raise ValueError(f"expected one source per input, got {list(values)}")
    return float(next(iter(values.values())))


class BuildingAgentSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(meta("BuildingAgentSim"))
        self.eids: list[str] = []
        self.index: list[int] = []

    def init(self, sid: str, time_resolution: float = 1.0, built: Any = None,
             scenario_path: str | None = None) -> dict:
        if built is None:
            if scenario_path is None:
                raise ValueError("BuildingAgentSim needs built= or scenario_path=")
            from cosim.build import build
            from cosim.scenario import load_scenario

            built = build(load_scenario(scenario_path), scenario_path, with_grid=False)
        self.built = built
        self.outputs: dict[str, dict[str, float]] = {}
        return self.meta

    def create(self, num: int, model: str, index: int = 0) -> list[dict]:
        start = int(index)
        out = []
        for i in range(start, start + num):
            eid = self.built.names[i]
            self.eids.append(eid)
            self.index.append(i)
            out.append({"eid": eid, "type": model})
        return out

    def setup_done(self) -> None:
        from cosim.build import controller_for

        idx = np.asarray(self.index)
        self.params = self.built.setup.params.select(idx)
        self.controller = controller_for(self.built, idx)
        self.state = FleetState.initial(self.params, self.built.setup.initial_soc_fraction)
        self.dt_h = self.built.setup.dt_h

    def _column(self, inputs: dict, attr: str) -> np.ndarray:
        values = []
        for e in self.eids:
            given = inputs[e]
            if attr in given:
                values.append(_single(given[attr]))
            else:  # the bundled 'exogenous' dict of ProfileSim
                values.append(float(next(iter(given["exogenous"].values()))[attr]))
        return np.array(values)

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        cols = {a: self._column(inputs, a) for a in EXOGENOUS + ("lambda", "mu", "nu")}
        hour = cols["hour_of_day"][0]
        obs = fleet_observation(self.params, self.state, cols["base_demand_kwh"],
                                cols["solar_w_per_kw"], cols["price_per_kwh"], hour,
                                cols["lambda"], cols["nu"], self.dt_h)
        act = np.asarray(self.controller.act(obs), dtype=np.float64)
        self.state, r = step_fleet(self.params, self.state, cols["base_demand_kwh"],
                                   cols["solar_w_per_kw"], cols["price_per_kwh"],
                                   act[:, 0], act[:, 1], self.dt_h)
        values = {name: getattr(r, name if name != "price" else "price_per_kwh")
                  for name in BUILDING_RESULTS}
        values["r2_kwh"] = r.served_kwh - r.demand_kwh
        values["p_kw"] = r.net_load_kw(self.dt_h)
        values["lambda"], values["mu"], values["nu"] = cols["lambda"], cols["mu"], cols["nu"]
        self.outputs = {e: {k: float(v[j]) for k, v in values.items()}
                        for j, e in enumerate(self.eids)}
        for out in self.outputs.values():
            out["record"] = {k: out[k] for k in RECORD}
        return time + 1

    def get_data(self, outputs: dict) -> dict:
        return {eid: {a: self.outputs[eid][a] for a in attrs} for eid, attrs in outputs.items()}


def main() -> int:
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    return mosaik_api_v3.start_simulation(BuildingAgentSim(), "fleetcosim BuildingAgentSim",
                                          configure_logging=False)


if __name__ == "__main__":
    main()
