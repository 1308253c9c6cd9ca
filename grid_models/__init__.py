"""Feeders, building placement, AC power flow (pandapower / power-grid-model), grid KPIs.

Pure domain code: no mosaik, no torch, nothing heavy at import. The feeder modules sit
here: ``feeders`` (sources), ``placement``, ``background``, ``topology``, ``physics``,
``sensitivity``, ``constraint_probe``, ``grid_model`` (a run's feeder) and ``kpis``; the
power flow and its two backends in the subpackage ``grid_models.powerflow``.
"""

__all__ = ["background", "constraint_probe", "errors", "feeders", "grid_model", "kpis",
           "lazy_api", "physics", "placement", "powerflow", "sensitivity", "topology"]
