"""I-EPOS plan selection with decentralised hard constraints (``controller.kind: epos``).

After I-EPOS (Pournaras, Pilgerstorfer & Asikis 2018) and its hard-constraint extension
(Majumdar, Qin & Pournaras, AAMAS 2023). Pure domain code (numpy, networkx).

- :mod:`~agents.control.epos.plans`: every building's k candidate day plans, simulated with
  the building model, and the local hard constraint "serve the demand";
- :mod:`~agents.control.epos.tree`: the tree overlays (a BFS spanning tree of a graph, a
  shuffled balanced tree for a reorganisation);
- :mod:`~agents.control.epos.problem`: the hard bounds, a selection and the objective;
- :mod:`~agents.control.epos.rounds`: one bottom-up pass (each agent's plan and approvals);
- :mod:`~agents.control.epos.selection`: I-EPOS itself (iterations, cold starts,
  reorganisations; the objective and the hard bounds are described there);
- :mod:`~agents.control.epos.controller`: the controller that plans each day and follows
  the plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from agents.control.epos.controller import EposConfig, EposController
    from agents.control.epos.plans import Plans, candidate_plans, serving_plans
    from agents.control.epos.problem import HardBounds, Selection
    from agents.control.epos.selection import select_plans
    from agents.control.epos.tree import shuffled_tree, tree_from_graph

_API = {
    "EposConfig": "controller",
    "EposController": "controller",
    "Plans": "plans",
    "candidate_plans": "plans",
    "serving_plans": "plans",
    "HardBounds": "problem",
    "Selection": "problem",
    "select_plans": "selection",
    "shuffled_tree": "tree",
    "tree_from_graph": "tree",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
