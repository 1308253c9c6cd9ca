"""Feeders, building placement, AC power flow (pandapower / power-grid-model), grid KPIs.

Pure domain code: no mosaik, no torch, nothing heavy at import. Import the modules:
``grid_models.feeders``, ``grid_models.placement``, ``grid_models.background``,
``grid_models.powerflow``, ``grid_models.grid_model`` (a run's feeder: calendar,
background, per-step and batched power flow), ``grid_models.kpis`` (see
``grid_models/README.md``).
"""
