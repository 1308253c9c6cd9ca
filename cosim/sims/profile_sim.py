"""ProfileSim: exogenous data per building (demand, PV, price, hour) and the background.

In-process it receives the built run (``cosim.build.Built``); it only looks up rows.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3

from cosim.sims.meta import meta


class ProfileSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(meta("ProfileSim"))
        self.entities: dict[str, tuple[str, int]] = {}

    def init(self, sid: str, time_resolution: float = 1.0, built: Any = None,
             start_step: int = 0) -> dict:
        if built is None:
            raise ValueError("ProfileSim needs built= (a cosim.build.Built)")
        self.built = built
        self.setup = built.setup
        self.background = built.grid.background if built.grid is not None else None
        self.start_step = int(start_step)  # the run's step at mosaik time 0 (--resume)
        self.t = self.start_step
        return self.meta

    def create(self, num: int, model: str, index: int | None = None) -> list[dict]:
        out = []
        for k in range(num):
            if model == "Building":
                i = int(index) + k
                eid = self.built.names[i]
            else:
                i = -1
                eid = f"Background-{len(self.entities)}"
            self.entities[eid] = (model, i)
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.t = self.start_step + time
        return time + 1

    def get_data(self, outputs: dict) -> dict:
        t, s = self.t, self.setup
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            model, i = self.entities[eid]
            if model == "Building":
                values = {
                    "base_demand_kwh": float(s.base_demand_kwh[t, i]),
                    "solar_w_per_kw": float(s.solar_w_per_kw[t, i]),
                    "price_per_kwh": float(s.price_per_kwh[t]),
                    "hour_of_day": float(s.hour_of_day(t)),
                }
                values["exogenous"] = dict(values)
            else:
                bg = self.background
                values = {
                    "load_p_mw": bg.load_p_mw[t], "load_q_mvar": bg.load_q_mvar[t],
                    "sgen_p_mw": bg.sgen_p_mw[t], "sgen_q_mvar": bg.sgen_q_mvar[t],
                }
                values["background"] = dict(values)
            data[eid] = {a: values[a] for a in attrs}
        return data
