"""Grid-constraint multipliers ("operator" duals) and the buildings' effective lambda.

Grid limits (a transformer's or a line's loading, a bus voltage band, a district peak)
become constraints the buildings act on without new policies: each constraint k gets a
multiplier ``mu_k >= 0`` and building i's policy is fed the effective multiplier
``clip(lambda_i + sum_k W_ki mu_k, 0, lambda_max)`` in place of its own lambda_i
(:mod:`agents.consensus.duals`).

Constraints (:class:`GridConstraint`), with ``h_k`` the measured quantity (loading %,
voltage pu, district kW), ``L_k`` its limit and ``s_k > 0`` its scale::

    e_k = (h_k - L_k) / s_k       loading_max, voltage_max, peak_kw_max
    e_k = (L_k - h_k) / s_k       voltage_min

``e_k > 0`` means violated (:func:`normalised_excess`). The scale makes the excesses of
different constraints comparable (e.g. the limit itself for a loading or a peak, the
half-width of the voltage band, 0.05 pu, for a voltage).

Operator update (:class:`OperatorMultipliers`), a projected dual ascent on the
normalised constraint, per constraint step ``alpha_k``::

    mu_k <- clip(mu_k + alpha_k e_k(h_k), 0, mu_max)
    lambda_eff_i = clip(lambda_i + sum_k W_ki mu_k, 0, lambda_max)

A measurement that is not finite (NaN from a failed power flow step) carries no
information about the constraint: that mu_k keeps its value (it is neither raised,
lowered nor turned into NaN).

**Time shift.** The constraint is measured by the power flow *after* the buildings
acted, so the multipliers the buildings see at step t come from ``update`` with the
measurement of step t-1 (at step 0: the initial mu, 0 by default).

**Why the policies need no retraining (the Lagrangian).** The fleet minimises its cost
subject to the district energy limit and the grid limits,
``min sum_i cost_i(g_i)  s.t.  sum_i g_i <= c,  h_k(p) <= L_k``, with ``g_i`` building
i's grid energy and p the buildings' consumption. Its Lagrangian is::

    L = sum_i cost_i(g_i) + lambda (sum_i g_i - c) + sum_k mu_k (h_k(p) - L_k)

With ``h_k`` linearised around the operating point, ``h_k(p) ~ h_k(p0) + sum_i
(dh_k/dp_i) (p_i - p0_i)`` and, per step, ``dL/dg_i = price_i + lambda +
sum_k mu_k dh_k/dp_i``. A building that faces ``lambda_i + sum_k W_ki mu_k`` with
``W_ki`` proportional to ``dh_k/dp_i`` therefore faces the joint problem's marginal
price of consumption: the shipped state-augmented policies, trained to respond to
lambda, respond to the grid constraints too. The factor between ``W_k`` and
``dh_k/dp`` (here ``1 / max_i |dh_k/dp_i|``, so the most concerned building has
``|W_ki| = 1``) and the scale ``s_k`` of the excess are absorbed into mu_k, which is then
in units of lambda.

**Signs of the weights.** ``W_ki > 0`` where more consumption of building i worsens
constraint k (loading of an element that imports power, under-voltage, the peak), so a
positive mu_k raises the building's price and makes it consume less; ``W_ki < 0`` where
more consumption relieves it (over-voltage under PV export: consumption lowers the
voltage), so mu_k lowers the building's price (clipped at 0) and makes it consume more.
With ``vm_pu_per_kw`` (negative under load, :mod:`grid_models.sensitivity`):
``voltage_max: W = vm / max|vm|`` (negative) and ``voltage_min: W = -vm / max|vm|``
(positive); a loading ``W = loading_pp_per_kw / max|.|`` is positive downstream of an
importing element and negative where the element carries reverse flow that consumption
relieves.

**Signs of loading constraints (flow direction).** A loading is a magnitude, ``|S|``:
whether more consumption of a downstream building raises or lowers it depends on the
direction of the flow through the element (forward import, or reverse flow under PV
export, which consumption relieves). Linearised at the measured operating point,
``d loading/d p_i = sign(flow) * |d S/d p_i|``. Each constraint therefore carries a sign
``sign_k`` (+1 initially), which ``update(measured, sign)`` re-sets from the direction
of the flow measured at the previous step (``sign = np.sign(p_flow)`` relative to the
direction the weights were built for, e.g. forward import for the membership weights of
:func:`grid_models.constraint_probe.constraint_weights`; a 0 or non-finite entry keeps
the previous sign), and the buildings see::

    lambda_eff_i = clip(lambda_i + sum_k sign_k W_ki mu_k, 0, lambda_max)

The sign changes only the price shift, not mu_k: the excess of a magnitude is violated
whichever way the flow goes.

Peer update (:class:`PeerMultipliers`), with no operator: the buildings of constraint
k's cluster ``C_k`` (default: the buildings with ``W_ki != 0``) each hold ``mu_ki`` and
run the district's consensus dual dynamics (:mod:`agents.consensus.duals`, one
:class:`~agents.consensus.duals.DualDynamics` per constraint on the communication subgraph induced
by C_k, relabelled in ascending building order, ``limit_kwh = 0``, ``lambda_max =
mu_max``), fed with the local residual::

    r_ki = e_k |W_ki| / mean_{j in C_k} |W_kj|        (mean over C_k: e_k)

in place of V1 (so ``delta_i = -r_ki``: an excess raises mu_ki). In mode pi, for
example, ``mu_k <- clip(mu_k + alpha_k (r_k - z_k) - gamma L_k mu_k, 0, mu_max)``
with the integral state ``z_k <- z_k + beta L_k mu_k`` (DualDynamics' own "mu"). Because
the residuals average to e_k and L_k's columns sum to 0, the mean of mu_k over C_k moves
like the operator's mu_k (projected ascent on e_k) as long as no member hits a bound,
while the members reach agreement by the consensus mode (centralized: one shared value
per cluster, exactly the operator's update). Building i then sees ``lambda_i + sum_k
sign_k W_ki mu_ki``; a building outside C_k gets nothing from constraint k. The graph
modes (paper, pi, atc, averaging) need every cluster to be connected in the
communication graph (a feeder topology connects the buildings downstream of an element).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np

from agents.consensus.grid_constraint import GridConstraint
from agents.consensus.operator_multipliers import OperatorMultipliers
from agents.consensus.peer_multipliers import PeerMultipliers

GRID_MULTIPLIER_MODES = ("operator", "peer")


def make_grid_multipliers(
    mode: str,
    constraints: Sequence[GridConstraint],
    alpha: float | np.ndarray | Sequence[float],
    mu_max: float,
    *,
    graph: nx.Graph[int] | None = None,
    consensus_mode: str = "pi",
    beta: float = 10.0,
    gamma: float = 0.9,
    rounds: int = 3,
    clusters: Sequence[np.ndarray | Sequence[bool]] | None = None,
    seed: int = 0,
) -> OperatorMultipliers | PeerMultipliers:
    """:class:`OperatorMultipliers` (mode "operator"; the keyword arguments are unused)
    or :class:`PeerMultipliers` (mode "peer", ``consensus_mode`` its ``mode``)."""
    if mode == "operator":
        return OperatorMultipliers(constraints, alpha, mu_max)
    if mode == "peer":
        return PeerMultipliers(constraints, alpha, mu_max, graph, mode=consensus_mode,
                               beta=beta, gamma=gamma, rounds=rounds, clusters=clusters,
                               seed=seed)
    raise ValueError(f"grid multiplier mode must be one of {', '.join(GRID_MULTIPLIER_MODES)}, "
                     f"got {mode!r}")
