"""The feeder side of a scenario: net, building placement, background, power flow.

``GridModel.solve(t, p_kw)`` turns the buildings' net consumption of step ``t``
into bus injections (with the scenario's power factor and fleet scale), applies
the background of step ``t`` and solves one AC power flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosim.scenario import Scenario, ScenarioError
from grid_models.background import BackgroundProfiles, background_profiles
from grid_models.errors import GridModelError, IslandedBusError, SupplyError
from grid_models.feeders import load_feeder
from grid_models.placement import MAX_LISTED_BUILDINGS, bus_injections, place_buildings
from grid_models.powerflow import GridResult, PowerFlow, make_powerflow
from grid_models.topology import check_supply

HOURS_PER_YEAR = 8760
#: CityLearn 2022 row 0 is "Month 7, Hour 24" (the last hour of 31 July, 0-based
#: hour-of-year 5087 of a non-leap year); background profiles follow the same hours.
CITYLEARN_ROW0_HOUR_OF_YEAR = 212 * 24 - 1


def hour_of_year(row: int) -> int:
    return (CITYLEARN_ROW0_HOUR_OF_YEAR + row) % HOURS_PER_YEAR


@dataclass
class GridModel:
    net: Any  # the PowerFlow's own pandapower net (feeder + injection loads)
    powerflow: PowerFlow
    building_bus: np.ndarray
    background: BackgroundProfiles
    q_per_p: float  # tan(phi) of the buildings' power factor
    fleet_scale: float

    def injections(self, p_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.asarray(p_kw, dtype=float)
        return bus_injections(self.building_bus, p, p * self.q_per_p,
                              bus_ids=self.powerflow.bus_ids, scale=self.fleet_scale)

    def solve(self, t: int, p_kw: np.ndarray) -> GridResult:
        """Power flow of step ``t`` (position in the run) for building loads ``p_kw``."""
        p_mw, q_mvar = self.injections(p_kw)
        self.background.apply(self.powerflow, t)
        return self.powerflow.solve(p_mw, q_mvar, step=t)


def _background(net: Any, sc: Scenario, source: str) -> BackgroundProfiles:
    bg = sc.feeder.background
    start, steps, dt_h = sc.time.start, sc.time.steps, sc.time.step_h
    try:
        if bg.mode != "simbench":
            return background_profiles(net, steps, dt_h=dt_h, mode=bg.mode, scale=bg.scale)
        pieces = []
        t = 0
        while t < steps:  # the run may wrap around the end of the year
            h0 = hour_of_year(start + t)
            n = min(steps - t, HOURS_PER_YEAR - h0)
            pieces.append(background_profiles(net, n, start=h0, dt_h=dt_h, mode="simbench",
                                              scale=bg.scale))
            t += n
    except GridModelError as exc:
        raise ScenarioError(source, [("feeder.background.mode", str(exc))]) from None
    if len(pieces) == 1:
        return pieces[0]
    first = pieces[0]
    return BackgroundProfiles(
        *(np.concatenate([getattr(p, f) for p in pieces])
          for f in ("load_p_mw", "load_q_mvar", "sgen_p_mw", "sgen_q_mvar")),
        first.load_ids, first.sgen_ids, first.dt_h, first.start, first.mode,
    )


def _islanded_errors(exc: IslandedBusError, rows: list[tuple]) -> list[tuple[str, str]]:
    """(field, message) per building on a bus that is not energised (the first few)."""
    explicit: list[tuple[str, str]] = []
    generated: list[str] = []
    for pos, bus, reason in zip(exc.positions, exc.buses, exc.reasons, strict=True):
        path, building_id = rows[pos][0], rows[pos][1]
        text = f"building {building_id} is on bus {bus}, which is not energised ({reason})"
        if path.startswith("buildings.explicit"):
            explicit.append((f"{path}.bus", text))
        else:
            generated.append(text)
    errors = explicit[:MAX_LISTED_BUILDINGS]
    if len(explicit) > MAX_LISTED_BUILDINGS:
        errors.append(("buildings.explicit", f"and {len(explicit) - MAX_LISTED_BUILDINGS} more "
                       "buildings on buses that are not energised"))
    if generated:
        more = len(generated) - MAX_LISTED_BUILDINGS
        errors.append(("buildings.generate.buses", "; ".join(generated[:MAX_LISTED_BUILDINGS])
                       + (f"; and {more} more" if more > 0 else "")))
    return errors


def build_grid(sc: Scenario, rows: list[tuple], source: str) -> GridModel:
    """``rows``: (field path, id, profile, scale, class, battery, pv, bus) per building.

    Refuses (as :class:`ScenarioError` naming the field) a feeder without an in-service
    external grid (``feeder.source``) and buildings on buses that are not energised.
    """
    try:
        feeder = load_feeder(sc.feeder.source)
    except GridModelError as exc:
        raise ScenarioError(source, [("feeder.source", str(exc))]) from None
    except (OSError, ValueError) as exc:
        raise ScenarioError(source, [("feeder.source", f"cannot load feeder: {exc}")]) from None
    try:
        check_supply(feeder)
    except SupplyError as exc:
        raise ScenarioError(source, [("feeder.source", str(exc))]) from None
    explicit = [r[7] for r in rows]
    try:
        if all(b is None for b in explicit):
            buses = place_buildings(feeder, len(rows), seed=sc.seed)
        elif any(b is None for b in explicit):
            missing = [r[0] for r in rows if r[7] is None]
            raise ScenarioError(source, [(f"{missing[0]}.bus", "give a bus for every building "
                                          "or for none (automatic placement)")])
        else:
            buses = place_buildings(feeder, len(rows), buses=explicit)
    except IslandedBusError as exc:
        raise ScenarioError(source, _islanded_errors(exc, rows)) from None
    except GridModelError as exc:
        valid = set(feeder.bus.index.tolist())
        bad = next((r for r in rows if r[7] is not None and r[7] not in valid), rows[0])
        field = f"{bad[0]}.bus" if bad[0].startswith("buildings.explicit") else \
            "buildings.generate.buses"
        raise ScenarioError(source, [(field, str(exc))]) from None
    try:
        # a step with non-finite inputs is an unknown step in the KPIs, not a crash mid-run
        pf = make_powerflow(feeder, sc.feeder.backend, nonfinite="unknown")
    except GridModelError as exc:
        raise ScenarioError(source, [("feeder.backend", str(exc))]) from None
    background = _background(feeder, sc, source)
    if not np.array_equal(background.load_ids, pf.load_ids):
        raise ScenarioError(source, [("feeder.source", "background loads do not match the "
                                      "power flow's load table")])
    q_per_p = math.tan(math.acos(sc.feeder.power_factor))
    return GridModel(pf.net, pf, np.asarray(buses, dtype=np.int64), background, q_per_p,
                     sc.feeder.fleet_scale)
