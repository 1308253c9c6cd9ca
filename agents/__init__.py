"""Building agents: the fleet model, controllers, trained policies and their multipliers.

Import the modules: ``agents.building`` (the building model), ``agents.controllers`` and
``agents.policy`` (what acts), ``agents.duals`` and ``agents.grid_multipliers`` (the
multipliers), ``agents.runner`` (the plain loop without mosaik), ``agents.env`` and
``agents.training`` (training), ``agents.oracle`` (the perfect-foresight optimum).
"""
