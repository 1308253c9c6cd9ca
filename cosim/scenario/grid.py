"""The feeder side of a scenario: a Scenario mapped onto :mod:`grid_models.grid_model`.

The grid model itself (calendar mapping, background stitching, injections, per-step and
batched power flow) is :class:`grid_models.grid_model.GridModel`; this module only maps a
:class:`~cosim.scenario.model.Scenario` to its parameters and turns grid_models' errors into
:class:`~cosim.scenario.errors.ScenarioError` naming the scenario field. ``GridModel``,
``hour_of_year``, ``CITYLEARN_ROW0_HOUR_OF_YEAR`` and ``HOURS_PER_YEAR`` are re-exported
from here for compatibility.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cosim.scenario.errors import ScenarioError
from cosim.scenario.model import Scenario
from grid_models.errors import BackgroundError, GridModelError, IslandedBusError, SupplyError
from grid_models.feeders import load_feeder
from grid_models.grid_model import (
    CITYLEARN_ROW0_HOUR_OF_YEAR,
    HOURS_PER_YEAR,
    GridModel,
    hour_of_year,
)
from grid_models.physics import FeederPhysicsError, check_physics
from grid_models.placement import MAX_LISTED_BUILDINGS, place_buildings
from grid_models.topology import check_supply

if TYPE_CHECKING:
    from cosim.scenario.build import BuildingRow

__all__ = ["CITYLEARN_ROW0_HOUR_OF_YEAR", "HOURS_PER_YEAR", "GridModel",
           "build_grid", "hour_of_year"]


def _islanded_errors(exc: IslandedBusError, rows: list[BuildingRow]) -> list[tuple[str, str]]:
    """(field, message) per building on a bus that is not energised (the first few)."""
    explicit: list[tuple[str, str]] = []
    generated: list[str] = []
    for pos, bus, reason in zip(exc.positions, exc.buses, exc.reasons, strict=True):
        path, building_id = rows[pos].field_path, rows[pos].id
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


def build_grid(sc: Scenario, rows: list[BuildingRow], source: str) -> GridModel:
    """``rows``: one :class:`BuildingRow` per building.

    Refuses (as :class:`ScenarioError` naming the field) a feeder without an in-service
    external grid or with values no real equipment has (``feeder.source``,
    :mod:`grid_models.physics`) and buildings on buses that are not energised.
    """
    try:
        feeder = load_feeder(sc.feeder.source)
    except GridModelError as exc:
        raise ScenarioError(source, [("feeder.source", str(exc))]) from None
    except (OSError, ValueError) as exc:
        raise ScenarioError(source, [("feeder.source", f"cannot load feeder: {exc}")]) from None
    try:
        check_supply(feeder)
        check_physics(feeder, f"feeder {sc.feeder.source!r}")
    except (SupplyError, FeederPhysicsError) as exc:
        raise ScenarioError(source, [("feeder.source", str(exc))]) from None
    explicit = [r.bus for r in rows]
    try:
        if all(b is None for b in explicit):
            buses = place_buildings(feeder, len(rows), seed=sc.seed)
        elif any(b is None for b in explicit):
            missing = [r.field_path for r in rows if r.bus is None]
            raise ScenarioError(source, [(f"{missing[0]}.bus", "give a bus for every building "
                                          "or for none (automatic placement)")])
        else:
            # every building names its bus here (the list only narrows the type)
            buses = place_buildings(feeder, len(rows),
                                    buses=[b for b in explicit if b is not None])
    except IslandedBusError as exc:
        raise ScenarioError(source, _islanded_errors(exc, rows)) from None
    except GridModelError as exc:
        valid = set(feeder.bus.index.tolist())
        bad = next((r for r in rows if r.bus is not None and r.bus not in valid), rows[0])
        field = f"{bad.field_path}.bus" if bad.field_path.startswith("buildings.explicit") else \
            "buildings.generate.buses"
        raise ScenarioError(source, [(field, str(exc))]) from None
    try:
        # a step with non-finite inputs is an unknown step in the KPIs, not a crash mid-run
        return GridModel.build(
            feeder, building_bus=buses, n_steps=sc.time.steps, backend=sc.feeder.backend,
            start_row=sc.time.start, dt_h=sc.time.step_h,
            background_mode=sc.feeder.background.mode,
            background_scale=sc.feeder.background.scale,
            power_factor=sc.feeder.power_factor, fleet_scale=sc.feeder.fleet_scale,
            nonfinite="unknown")
    except BackgroundError as exc:
        raise ScenarioError(source, [("feeder.background.mode", str(exc))]) from None
    except GridModelError as exc:
        raise ScenarioError(source, [("feeder.backend", str(exc))]) from None
