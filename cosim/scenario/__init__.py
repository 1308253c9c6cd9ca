"""Scenario files: a strict pydantic schema, one loader, errors that name the field.

A scenario is YAML, read by the bounded reader (``grid_models.support.safe_yaml``: no
duplicate keys, no alias bombs). Unknown keys are rejected everywhere and types are
strict (``steps: true`` or ``steps: 24.5`` are errors, not coerced; a float field takes
an integer). Every count, window and free-form mapping has an upper bound (``limits``).
``load_scenario`` returns a validated ``Scenario`` with every default filled in, or
raises one ``ScenarioError`` listing every problem of the schema; the checks that need
data (does the feeder exist, is the bus in it, are there enough hours, is the policy
file there) run when the scenario is built (``build``) and are collected the same way.

The modules, in reading order:

- ``errors``: ``ScenarioError``, ``ScenarioInfeasible`` and the ``Problems`` collector;
- ``limits``, ``fields``: the bounds of a file and the constrained field types;
- ``fleet``, ``controller``, ``coordination``: the sections (``time`` ... ``sharding``;
  ``controller``; ``duals``, ``grid_constraints``, ``communication``); the defaults and
  bounds of the agents' settings come from their domain classes (``settings``);
- ``model``: ``Scenario``, the whole file; ``checks``: the checks across sections;
- ``overrides``, ``messages``, ``loader``: ``--set``/``--steps``, pydantic's errors in
  the scenario's words, and reading a file;
- ``doc_tables``: the tables of fields, defaults and bounds in README.md and docs/;
- ``build``, ``grid``, ``grid_constraints``: the domain objects a run is built from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from cosim.scenario.build import Built, build
    from cosim.scenario.errors import ScenarioError, ScenarioInfeasible
    from cosim.scenario.grid import build_grid
    from cosim.scenario.grid_constraints import GridConstraintSet, build_grid_constraints
    from cosim.scenario.loader import load_scenario
    from cosim.scenario.model import Scenario

_API = {
    "Built": "build",
    "build": "build",
    "build_grid": "grid",
    "GridConstraintSet": "grid_constraints",
    "build_grid_constraints": "grid_constraints",
    "Scenario": "model",
    "ScenarioError": "errors",
    "ScenarioInfeasible": "errors",
    "load_scenario": "loader",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
