"""One table declares every simulator's models and attributes (with units in the names).

The building columns come from the one record schema, ``agents.fleet.records``.

``meta(sim)`` builds the mosaik META dict of a simulator from it, so attributes
are declared once (the habit of mosaik-pandapower-2's ``MODEL_TO_ELEMENT_SPECS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from agents.fleet.records import MULTIPLIER_COLUMNS, VALUE_COLUMNS

if TYPE_CHECKING:
    from mosaik_api_v3.types import Meta, ModelDescription

API_VERSION: Final = "3.0"


@dataclass(frozen=True)
class ModelSpec:
    """One mosaik model: its parameters, the attributes it reads and provides, a description."""

    public: bool = True
    params: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # attrs this model reads
    outputs: tuple[str, ...] = ()  # attrs this model provides
    any_inputs: bool = False
    doc: str = ""
    # hybrid simulators: the inputs that trigger a step, the outputs that persist
    trigger: tuple[str, ...] | None = None
    persistent: tuple[str, ...] | None = None


MULTIPLIERS = MULTIPLIER_COLUMNS
#: a fleet shard's outputs to the duals and the grid (arrays over its buildings)
FLEET_FLOWS = ("grid_kwh", "r2_kwh", "p_kw")
#: the grid's measurement of each grid constraint and the sign of the buildings'
#: influence on it (arrays over the constraints), to the duals
CONSTRAINT_FLOWS = ("constraint_measured", "constraint_sign")
GRID_RESULTS = (
    "bus_vm_pu", "bus_p_mw", "bus_q_mvar", "line_loading_percent", "line_i_ka",
    "trafo_loading_percent", "trafo_p_hv_mw", "losses_mw", "ext_grid_p_mw", "ext_grid_q_mvar",
    "converged",
)


@dataclass(frozen=True)
class SimSpec:
    """One simulator: its mosaik step type and its models by name."""

    step_type: Literal["time-based", "event-based", "hybrid"] = "time-based"
    models: dict[str, ModelSpec] = field(default_factory=dict)


SIMULATORS: dict[str, SimSpec] = {
    "FleetSim": SimSpec(models={
        "Fleet": ModelSpec(
            params=("index", "count"), inputs=MULTIPLIERS,
            outputs=FLEET_FLOWS + ("record",),
            doc="a shard of the fleet (buildings + controller, exogenous data read inside); "
                "every attribute is an array over the shard's buildings; 'record' holds the "
                "results-contract columns (agents.fleet.records) and the shard's first index",
        ),
        "Building": ModelSpec(
            params=("building",), inputs=("extra_demand_kwh",),
            outputs=VALUE_COLUMNS + ("p_kw", "r2_kwh"),
            doc="one building of a shard, for third-party simulators: 'extra_demand_kwh' adds "
                "demand to its step (after the demand scale); outputs are its values of the "
                "step (floats)",
        ),
    }),
    "ConsensusSim": SimSpec(models={
        "Duals": ModelSpec(inputs=("grid_kwh", "r2_kwh") + CONSTRAINT_FLOWS,
                           outputs=MULTIPLIERS + ("constraints",),
                           doc="the communication graph, the dual dynamics of the whole "
                               "fleet and the grid constraints' multipliers; inputs from "
                               "every shard and (grid constraints) from the grid, multipliers "
                               "as arrays; 'constraints': the step's constraints row"),
    }),
    "GridSim": SimSpec(models={
        "Grid": ModelSpec(inputs=("p_kw",), outputs=GRID_RESULTS + CONSTRAINT_FLOWS
                          + ("result",),
                          doc="AC power flow of the feeder; p_kw arrays from every shard, the "
                              "feeder's background read inside; 'result': the step's "
                              "GridResult (in-process only)"),
    }),
    "ControlledFleetSim": SimSpec(step_type="hybrid", models={
        "Fleet": ModelSpec(
            params=("index", "count"), inputs=MULTIPLIERS + ("actions",),
            outputs=FLEET_FLOWS + ("record", "observation"),
            trigger=("actions",), persistent=FLEET_FLOWS + ("record",) + MULTIPLIERS,
            doc="the whole fleet with its controller in another process: at each step it "
                "sends 'observation' (fields of agents.fleet.observation.FleetObservation as "
                "lists) "
                "and steps once the 'actions' (N rows u_grid, u_batt) come back (a same-time "
                "loop); otherwise a FleetSim Fleet",
        ),
    }),
    "ControllerSim": SimSpec(step_type="event-based", models={
        "Controller": ModelSpec(inputs=("observation",), outputs=("actions",),
                                doc="a user's controller in its own process "
                                    "(cosim.engine.sims.controller_sim): observation in, actions "
                                    "out, in the same step"),
    }),
    "Collector": SimSpec(models={
        "Monitor": ModelSpec(any_inputs=True, doc="streams results to the run directory"),
    }),
}


def meta(sim: str) -> Meta:
    """The mosaik META dict of simulator ``sim`` (a key of ``SIMULATORS``)."""
    spec = SIMULATORS[sim]
    models: dict[str, ModelDescription] = {}
    for name, m in spec.models.items():
        models[name] = {
            "public": m.public,
            "params": list(m.params),
            "attrs": sorted(set(m.inputs) | set(m.outputs)),
        }
        if m.any_inputs:
            models[name]["any_inputs"] = True
        attrs = set(m.inputs) | set(m.outputs)
        if m.trigger is not None:
            models[name]["trigger"] = sorted(m.trigger)
            models[name]["non-trigger"] = sorted(attrs - set(m.trigger))
        if m.persistent is not None:
            models[name]["persistent"] = sorted(m.persistent)
            models[name]["non-persistent"] = sorted(attrs - set(m.persistent))
    return {"api_version": API_VERSION, "type": spec.step_type, "models": models}
