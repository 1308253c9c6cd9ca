"""Building agents, in four subpackages.

- ``agents.fleet``: the fleet model (buildings, data, observations, the plain loop, KPIs);
- ``agents.consensus``: communication graphs, faults, the dual dynamics, grid multipliers;
- ``agents.control``: the controller contract, rule-based controllers, DMPC, EPOS, oracle;
- ``agents.learning``: training environments, training, trained policies, evaluation.
"""

__all__ = ["consensus", "control", "fleet", "learning"]
