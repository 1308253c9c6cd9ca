"""The one table of KPI labels: a short header (its unit in it), the unit ``kpis.json``
records, and a one-line explanation, per KPI name.

Used by ``agents.fleet.kpis`` (the units of the fleet KPIs), ``cosim.results.report``
(the units of the grid KPIs), ``cosim.results.html`` (the explanations in
``report.html``) and ``cosim.tools.study`` (the headers of ``study.md``). The names
carry their units (``_kwh``, ``_h``/``hours``, ``_percent``, ``_pu``). It lives here, the
lowest layer that has KPIs of its own; the grid's names come from ``grid_models.kpis``
and the study's own columns (``cost``, ``hours_over_limit``, ...) are listed too, so
that every label is written once.
"""

from __future__ import annotations

from typing import NamedTuple

from grid_models.kpis import HOURS_KEYS, UNKNOWN_SUFFIX


class KpiLabel(NamedTuple):
    """How one KPI is shown: ``header`` (short, unit included: ``study.md``), ``unit``
    (what ``kpis.json``'s ``units`` say; empty for the study's own columns) and
    ``explanation`` (one line: ``report.html``; empty where none is shown)."""

    header: str
    unit: str
    explanation: str


#: The fleet KPIs (``agents.fleet.kpis.fleet_kpis``), in ``kpis.json``'s order.
FLEET_KPI_LABELS: dict[str, KpiLabel] = {
    "n_buildings": KpiLabel("buildings", "1", "buildings in the fleet"),
    "steps": KpiLabel("steps", "1", "steps run"),
    "total_cost": KpiLabel("cost $", "$", "what the fleet paid for grid energy"),
    "mean_district_grid_kwh": KpiLabel(
        "grid kWh/step", "kWh per step",
        "the fleet's grid energy per step, averaged over the run"),
    "limit_kwh": KpiLabel("c kWh/step", "kWh per step",
                          "the district limit c the duals enforce on that average"),
    "steps_over_limit": KpiLabel("steps over c", "steps",
                                 "steps in which the fleet's grid energy exceeded c"),
    "final_avg_unmet_kwh": KpiLabel(
        "cum. avg unmet kWh", "kWh per step",
        "cumulative average unmet demand at the end (backlog and dropped)"),
    "dropped_kwh": KpiLabel("dropped kWh", "kWh",
                            "demand lost above the backlog cap (never silently)"),
    "peak_district_import_kwh": KpiLabel("peak kWh/step", "kWh per step",
                                         "the largest grid energy of the fleet in one step"),
    "peak_district_import_kw": KpiLabel("peak kW", "kW", "the same as power"),
    "peak_to_average": KpiLabel("peak/mean", "1", "peak over mean of the fleet's grid energy"),
    "ramping_kwh": KpiLabel("ramping kWh", "kWh",
                            "sum of step-to-step changes of the fleet's grid energy"),
    "lambda_spread_last10pct": KpiLabel(
        "lambda spread, last 10 %", "1 (multiplier units)",
        "consensus error: largest max-min of lambda over the last 10 %"),
    "lambda_spread_last10pct_mean": KpiLabel("mean lambda spread, last 10 %",
                                             "1 (multiplier units)",
                                             "its mean over the last 10 % of steps"),
    "lambda_spread_last10pct_rel": KpiLabel("spread / lambda_max", "1 (fraction of lambda_max)",
                                            "the consensus error as a share of lambda_max"),
    "final_lambda": KpiLabel("final lambda", "1 (multiplier units), per building",
                             "each building's lambda at the last step"),
    "agents_at_lambda_max": KpiLabel("at lambda_max", "agents",
                                     "buildings whose lambda ends at its upper bound"),
}

#: The trajectory KPIs (``agents.fleet.kpis.trajectory_kpis``: kpis.json's ``trajectory``).
TRAJECTORY_KPI_LABELS: dict[str, KpiLabel] = {
    "final_backlog_kwh": KpiLabel("final backlog kWh", "kWh",
                                  "the fleet's backlog after the last step"),
    "unmet_slope_first_third": KpiLabel(
        "unmet slope, first third", "kWh per step per step",
        "slope of the cumulative average unmet demand over the first third of the run"),
    "unmet_slope_last_third": KpiLabel(
        "unmet slope, last third", "kWh per step per step",
        "the same over the last third (near 0: the backlog settles)"),
    "double_share_at_lambda_max": KpiLabel(
        "double agents' time at lambda_max", "1 (fraction of steps x double agents)",
        "how often a double agent's lambda sat at lambda_max"),
    "double_share_near_lambda_max": KpiLabel(
        "... >= 0.9 lambda_max", "1 (fraction of steps x double agents)",
        "how often it was at 90 % of lambda_max or more"),
}

#: The grid KPIs (``grid_models.kpis.grid_kpis``); ``steps`` is the fleet's label.
GRID_KPI_LABELS: dict[str, KpiLabel] = {
    "nonconverged_steps": KpiLabel("non-converged steps", "steps",
                                   "power flows that did not converge"),
    "unknown_steps": KpiLabel("unknown grid steps", "steps",
                              "steps the power flow said nothing about (hours are lower "
                              "bounds)"),
    "trafo_overload_hours": KpiLabel("trafo >100 % h", "h",
                                     "hours with a transformer above 100 % loading"),
    "line_overload_hours": KpiLabel("line >100 % h", "h", "hours with a line above 100 % loading"),
    "max_trafo_loading_percent": KpiLabel("max trafo %", "%", "the highest transformer loading"),
    "max_line_loading_percent": KpiLabel("max line %", "%", "the highest line loading"),
    "hours_outside_095_105_pu": KpiLabel("V outside 0.95-1.05 h", "h",
                                         "hours with a bus voltage outside 0.95-1.05 pu"),
    "hours_outside_090_110_pu": KpiLabel(
        "V outside 0.90-1.10 h", "h", "hours with a bus voltage outside 0.90-1.10 pu (EN 50160)"),
    "min_vm_pu": KpiLabel("min V pu", "pu", "the lowest bus voltage"),
    "max_vm_pu": KpiLabel("max V pu", "pu", "the highest bus voltage"),
    "losses_mwh": KpiLabel("losses MWh", "MWh", "energy lost in lines and transformers"),
    **{key + UNKNOWN_SUFFIX: KpiLabel(
        f"{key} unknown steps", "steps",
        f"steps for which {key} could not be told (unknown power flow)")
       for key in HOURS_KEYS},
}

#: The grid constraints' totals (``cosim.results.constraint_report``).
CONSTRAINT_KPI_LABELS: dict[str, KpiLabel] = {
    "grid_constraints": KpiLabel("grid constraints", "", "grid constraints declared"),
    "grid_constraint_violation_hours": KpiLabel(
        "grid constraint violated h", "", "hours in which any grid constraint was violated"),
    "grid_constraint_unknown_steps": KpiLabel("grid constraint unknown steps", "",
                                              "steps with a constraint's quantity unknown"),
}

#: The study's own columns of ``study.csv`` (``cosim.tools.study.metrics``).
STUDY_COLUMN_LABELS: dict[str, KpiLabel] = {
    "variant": KpiLabel("variant", "", ""),
    "fraction_of_peak": KpiLabel("c", "", ""),
    "status": KpiLabel("status", "", ""),
    "cost": KpiLabel("cost $", "", ""),  # total_cost
    "cost_gap_to_oracle": KpiLabel("gap to oracle", "", ""),
    "grid_over_limit": KpiLabel("grid/c", "", ""),
    "unmet_slope_ratio": KpiLabel("unmet slope last/first", "", ""),
    "hours_over_limit": KpiLabel("h over c", "", ""),  # steps_over_limit
    "lambda_mean_final": KpiLabel("mean lambda", "", ""),
    "grid_unknown_steps": KpiLabel("unknown grid steps (hours are lower bounds)", "", ""),
    "messages_per_step": KpiLabel("messages/step", "", ""),
    "negotiation_iterations_mean": KpiLabel("negotiation iterations", "", ""),
    "wall_ms_per_step": KpiLabel("wall ms/step", "", ""),
    "controller_ms_per_step": KpiLabel("controller ms/step", "", ""),
}

#: Every label: fleet, trajectory, grid, constraint KPIs and the study's columns, by name.
KPI_LABELS: dict[str, KpiLabel] = {**FLEET_KPI_LABELS, **TRAJECTORY_KPI_LABELS,
                                   **GRID_KPI_LABELS, **CONSTRAINT_KPI_LABELS,
                                   **STUDY_COLUMN_LABELS}


def header(name: str) -> str:
    """The short header of ``name`` (unit included); the name itself when unlabelled."""
    label = KPI_LABELS.get(name)
    return label.header if label else name
