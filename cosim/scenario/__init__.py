"""Scenario files: the schema, the bounded YAML reader, the limits, and the domain
objects a run is built from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.lazy_api import lazy_api

if TYPE_CHECKING:
    from cosim.scenario.build import Built, build
    from cosim.scenario.grid import build_grid
    from cosim.scenario.grid_constraints import GridConstraintSet, build_grid_constraints
    from cosim.scenario.safe_yaml import read_yaml
    from cosim.scenario.schema import Scenario, ScenarioError, ScenarioInfeasible, load_scenario

_API = {
    "Built": "build",
    "build": "build",
    "build_grid": "grid",
    "GridConstraintSet": "grid_constraints",
    "build_grid_constraints": "grid_constraints",
    "read_yaml": "safe_yaml",
    "Scenario": "schema",
    "ScenarioError": "schema",
    "ScenarioInfeasible": "schema",
    "load_scenario": "schema",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
