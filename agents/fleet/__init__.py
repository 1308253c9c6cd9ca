"""The fleet model: buildings, their data and calendar, observations, records, the
plain loop and fleet KPIs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from agents.fleet.actions import model_actions
    from agents.fleet.building import FleetParams, FleetState, StepResult, step_fleet
    from agents.fleet.data import (
        BatteryParams,
        BuildingData,
        CityLearnData,
        DataError,
        load_citylearn,
    )
    from agents.fleet.kpis import FleetKpiStream, fleet_kpis
    from agents.fleet.observation import (
        FleetObservation,
        ObservationScales,
        fleet_observation,
        observation_matrix,
    )
    from agents.fleet.records import Column
    from agents.fleet.runner import (
        FleetLoop,
        FleetSetup,
        GridConstraints,
        district_limit_kwh,
        run_plain,
    )

_API = {
    "model_actions": "actions",
    "FleetParams": "building",
    "FleetState": "building",
    "StepResult": "building",
    "step_fleet": "building",
    "BatteryParams": "data",
    "BuildingData": "data",
    "CityLearnData": "data",
    "DataError": "data",
    "load_citylearn": "data",
    "FleetKpiStream": "kpis",
    "fleet_kpis": "kpis",
    "FleetObservation": "observation",
    "ObservationScales": "observation",
    "fleet_observation": "observation",
    "observation_matrix": "observation",
    "Column": "records",
    "FleetLoop": "runner",
    "FleetSetup": "runner",
    "GridConstraints": "runner",
    "district_limit_kwh": "runner",
    "run_plain": "runner",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
