"""One record schema: the columns of ``buildings.parquet``, their units and meanings.

The results writer, the mosaik META of the fleet simulator and the fleet engine
(``agents.fleet.runner.FleetLoop``) all take their column names from here, so a column
is declared once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column of the record: its name, unit and meaning."""

    name: str  # the unit is part of the name where there is one
    unit: str
    meaning: str


BUILDING_RECORD: tuple[Column, ...] = (
    Column("time", "step", "step index from the run's start"),
    Column("building", "", "building id"),
    Column("bus", "", "feeder bus of the building (-1: none)"),
    Column("demand_kwh", "kWh", "new demand d of the step (demand scale applied)"),
    Column("backlog_kwh", "kWh", "postponed demand at the END of the step"),
    Column("grid_kwh", "kWh", "energy bought from the grid g"),
    Column("battery_kwh", "kWh", "energy delivered by the battery x"),
    Column("unmet_kwh", "kWh", "D - g - x (backlog plus dropped)"),
    Column("dropped_kwh", "kWh", "unmet demand above the backlog cap, lost and counted"),
    Column("soc_kwh", "kWh", "battery energy at the END of the step"),
    Column("pv_kwh", "kWh", "PV yield s of the step"),
    Column("export_kwh", "kWh", "PV exported to the feeder"),
    Column("price", "$/kWh", "electricity price of the step"),
    Column("cost", "$", "price x grid_kwh"),
    Column("lambda", "1", "global multiplier the agent used in the step"),
    Column("mu", "1", "consensus auxiliary variable the agent used in the step"),
    Column("nu", "1", "local demand multiplier the agent used in the step"),
    Column("lambda_eff", "1", "multiplier the policy saw: lambda plus the weighted grid "
           "multipliers, clipped to [0, lambda_max] (= lambda without grid constraints)"),
)
RESULT_COLUMNS: tuple[str, ...] = tuple(c.name for c in BUILDING_RECORD)
#: the per-building values of one step (everything but the keys time, building, bus)
VALUE_COLUMNS: tuple[str, ...] = RESULT_COLUMNS[3:]
MULTIPLIER_COLUMNS: tuple[str, ...] = ("lambda", "mu", "nu", "lambda_eff")
UNITS: dict[str, str] = {c.name: c.unit for c in BUILDING_RECORD}
