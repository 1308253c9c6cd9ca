"""Consensus on the multipliers: communication graphs and faults, the dual dynamics,
the grid-constraint multipliers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from agents.consensus.duals import DualConfig, DualDynamics, DualState
    from agents.consensus.faults import FaultModel, MessageChannel
    from agents.consensus.feeder_graph import build_feeder_graph
    from agents.consensus.graphs import (
        GraphError,
        graph_from_file,
        graph_from_json,
        graph_to_json,
        make_graph,
    )
    from agents.consensus.grid_constraint import GridConstraint
    from agents.consensus.grid_multipliers import make_grid_multipliers
    from agents.consensus.metropolis import MetropolisWeights, metropolis_matrix
    from agents.consensus.operator_multipliers import OperatorMultipliers
    from agents.consensus.peer_multipliers import PeerMultipliers

_API = {
    "DualConfig": "duals",
    "DualDynamics": "duals",
    "DualState": "duals",
    "FaultModel": "faults",
    "MessageChannel": "faults",
    "build_feeder_graph": "feeder_graph",
    "GraphError": "graphs",
    "graph_from_file": "graphs",
    "graph_from_json": "graphs",
    "graph_to_json": "graphs",
    "make_graph": "graphs",
    "MetropolisWeights": "metropolis",
    "metropolis_matrix": "metropolis",
    "GridConstraint": "grid_constraint",
    "OperatorMultipliers": "operator_multipliers",
    "PeerMultipliers": "peer_multipliers",
    "make_grid_multipliers": "grid_multipliers",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
