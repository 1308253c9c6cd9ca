"""One table declares every simulator's models and attributes (with units in the names).

``meta(sim)`` builds the mosaik META dict of a simulator from it, so attributes
are declared once (the habit of mosaik-pandapower-2's ``MODEL_TO_ELEMENT_SPECS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

API_VERSION = "3.0"


@dataclass(frozen=True)
class ModelSpec:
    public: bool = True
    params: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # attrs this model reads
    outputs: tuple[str, ...] = ()  # attrs this model provides
    any_inputs: bool = False
    doc: str = ""


EXOGENOUS = ("base_demand_kwh", "solar_w_per_kw", "price_per_kwh", "hour_of_day")
MULTIPLIERS = ("lambda", "mu", "nu")
BUILDING_RESULTS = (
    "demand_kwh", "backlog_kwh", "grid_kwh", "battery_kwh", "unmet_kwh", "dropped_kwh",
    "soc_kwh", "pv_kwh", "export_kwh", "price", "cost",
)
BACKGROUND = ("load_p_mw", "load_q_mvar", "sgen_p_mw", "sgen_q_mvar")
GRID_RESULTS = (
    "bus_vm_pu", "bus_p_mw", "bus_q_mvar", "line_loading_percent", "line_i_ka",
    "trafo_loading_percent", "trafo_p_hv_mw", "losses_mw", "ext_grid_p_mw", "ext_grid_q_mvar",
    "converged",
)


@dataclass(frozen=True)
class SimSpec:
    step_type: str = "time-based"
    models: dict[str, ModelSpec] = field(default_factory=dict)


SIMULATORS: dict[str, SimSpec] = {
    "ProfileSim": SimSpec(models={
        "Building": ModelSpec(params=("index",), outputs=EXOGENOUS + ("exogenous",),
                              doc="exogenous data of one building ('exogenous': all as a dict)"),
        "Background": ModelSpec(outputs=BACKGROUND + ("background",),
                                doc="the feeder's other customers (arrays per load/sgen; "
                                    "'background': all four as a dict)"),
    }),
    "BuildingAgentSim": SimSpec(models={
        "Agent": ModelSpec(
            params=("index",), inputs=EXOGENOUS + ("exogenous",) + MULTIPLIERS,
            outputs=BUILDING_RESULTS + MULTIPLIERS + ("r2_kwh", "p_kw", "record"),
            doc="building dynamics and its controller; lambda/mu/nu are echoed as used; "
                "'record' is a dict of all results (one transfer instead of fourteen)",
        ),
    }),
    "ConsensusSim": SimSpec(models={
        "Agent": ModelSpec(params=("index",), inputs=("grid_kwh", "r2_kwh"),
                           outputs=MULTIPLIERS, doc="dual variables of one agent"),
    }),
    "GridSim": SimSpec(models={
        "Grid": ModelSpec(inputs=("p_kw", "background") + BACKGROUND,
                          outputs=GRID_RESULTS + ("result",),
                          doc="AC power flow of the feeder; p_kw from each building; "
                              "'result': the step's GridResult (in-process only)"),
    }),
    "Collector": SimSpec(models={
        "Monitor": ModelSpec(any_inputs=True, doc="streams results to the run directory"),
    }),
}


def meta(sim: str) -> dict[str, Any]:
    spec = SIMULATORS[sim]
    models = {}
    for name, m in spec.models.items():
        models[name] = {
            "public": m.public,
            "params": list(m.params),
            "attrs": sorted(set(m.inputs) | set(m.outputs)),
        }
        if m.any_inputs:
            models[name]["any_inputs"] = True
    return {"api_version": API_VERSION, "type": spec.step_type, "models": models}
