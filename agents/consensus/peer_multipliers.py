"""The buildings' own grid multipliers (peer mode), agreed by consensus.

Each constraint's cluster of buildings runs the district's dual dynamics
(:class:`agents.consensus.duals.DualDynamics`) on its communication subgraph, fed with
local residuals (:mod:`agents.consensus.grid_multipliers`, "Peer update").
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np

from agents.consensus.duals import _GRAPH_MODES, DualConfig, DualDynamics, mode_problem
from agents.consensus.graphs import check_agent_nodes
from agents.consensus.grid_constraint import GridConstraint
from agents.consensus.grid_multiplier_base import GridMultipliersBase


def _cluster_masks(
    clusters: Sequence[np.ndarray | Sequence[bool]] | None,
    constraints: Sequence[GridConstraint],
) -> np.ndarray:
    """The clusters (K, N) as booleans, checked (default: the non-zero weights)."""
    k, n = len(constraints), constraints[0].n_buildings
    if clusters is None:
        return np.stack([c.weights != 0 for c in constraints])
    clusters = list(clusters)
    if len(clusters) != k:
        raise ValueError(f"PeerMultipliers.clusters must hold one mask per constraint ({k}), "
                         f"got {len(clusters)}")
    masks = []
    for c, mask in zip(constraints, clusters, strict=True):
        m = np.asarray(mask)
        where = f"PeerMultipliers.clusters[{c.name!r}]"
        if m.shape != (n,) or m.dtype.kind not in "bui":
            raise ValueError(f"{where} must be a boolean mask of shape ({n},), got dtype "
                             f"{m.dtype}, shape {m.shape}")
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"{where} must hold only True/False (or 1/0)")
        m = m.astype(bool)
        if not m.any():
            raise ValueError(f"{where} is empty: no building holds this constraint's multiplier")
        if not (c.weights[m] != 0).any():
            raise ValueError(f"{where}: every building of the cluster has weight 0, none acts "
                             "on the constraint")
        masks.append(m)
    return np.stack(masks)


def _cluster_graph(graph: nx.Graph[int] | None, members: np.ndarray) -> nx.Graph[int]:
    """The subgraph of ``graph`` induced by ``members``, relabelled 0..n_k-1 in order."""
    sub: nx.Graph[int] = nx.Graph()
    sub.add_nodes_from(range(members.size))
    if graph is not None:
        index = {int(b): i for i, b in enumerate(members)}
        sub.add_edges_from((index[u], index[v]) for u, v in graph.subgraph(index).edges()
                           if u != v)
    return sub


class PeerMultipliers(GridMultipliersBase):
    """Multipliers of K grid constraints held by the buildings themselves (module docstring).

    Building i of constraint k's cluster C_k holds its own ``mu_ki``; the members agree
    by the district's consensus dynamics (:class:`agents.consensus.duals.DualDynamics`, one per
    constraint, over the communication subgraph of the cluster). Same interface as
    :class:`OperatorMultipliers`; ``mu`` is the mean over each cluster.

    Arguments:
        constraints, alpha, mu_max: as :class:`OperatorMultipliers`.
        graph: the communication graph over buildings ``0..N-1``; may be None for the
            modes that send no messages (independent, centralized).
        mode: the consensus mode, one of :data:`agents.consensus.duals.DUAL_MODES`.
        beta, gamma, rounds: as :class:`agents.consensus.duals.DualConfig` (``alpha_k beta < gamma
            <= 1`` in mode pi).
        clusters: K boolean masks (N,), the buildings holding each constraint's
            multiplier; default: the buildings whose weight is non-zero. A cluster may
            hold buildings of weight 0 (relays), not only such buildings.
        seed: constraint k's dynamics get ``seed + k`` (used by message faults only).
    """

    def __init__(
        self,
        constraints: Sequence[GridConstraint],
        alpha: float | np.ndarray | Sequence[float],
        mu_max: float,
        graph: nx.Graph[int] | None,
        *,
        mode: str = "pi",
        beta: float = 10.0,
        gamma: float = 0.9,
        rounds: int = 3,
        clusters: Sequence[np.ndarray | Sequence[bool]] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(constraints, alpha, mu_max)
        problem = mode_problem(mode)
        if problem:
            raise ValueError(f"PeerMultipliers.mode: {problem}")
        graph_mode = mode in _GRAPH_MODES
        if graph is None and graph_mode:
            raise ValueError(f"PeerMultipliers: mode {mode!r} exchanges messages and needs "
                             "the communication graph")
        if graph is not None:
            n = check_agent_nodes(graph)
            if n != self.n_buildings:
                raise ValueError(f"PeerMultipliers.graph has {n} agents, the constraints "
                                 f"{self.n_buildings} buildings")
        self.mode = mode
        self.clusters = _cluster_masks(clusters, self.constraints)
        self.clusters.setflags(write=False)
        self._members = tuple(np.flatnonzero(m) for m in self.clusters)
        # r_ki = e_k |W_ki| / mean_{j in C_k} |W_kj|
        self._residual_share = tuple(
            np.abs(w[m]) / np.abs(w[m]).mean() for w, m in zip(self.weights, self._members,
                                                               strict=True))
        self._dynamics = tuple(
            self._cluster_dynamics(k, graph, mode, beta, gamma, rounds, seed + k)
            for k in range(self.n_constraints))
        self.reset()

    def _cluster_dynamics(
        self, k: int, graph: nx.Graph[int] | None, mode: str, beta: float, gamma: float,
        rounds: int, seed: int,
    ) -> DualDynamics:
        name = self.names[k]
        sub = _cluster_graph(graph, self._members[k])
        if mode in _GRAPH_MODES and not nx.is_connected(sub):
            raise ValueError(
                f"the buildings concerned by constraint {name!r} are not connected in the "
                f"communication graph ({nx.number_connected_components(sub)} components); "
                "use communication.topology: feeder or the operator mode")
        try:
            config = DualConfig(mode=mode, alpha=float(self.alpha[k]), beta=beta, gamma=gamma,
                                eta=0.0, rounds=rounds, lambda_max=self.mu_max, v1_window=1)
        except ValueError as exc:
            raise ValueError(f"PeerMultipliers, constraint {name!r}: {exc}") from None
        return DualDynamics(config, sub, limit_kwh=0.0, seed=seed)

    # --- state ------------------------------------------------------------------------

    def reset(self, mu: np.ndarray | float | None = None) -> np.ndarray:
        """Every member's mu_k to ``mu[k]`` (default 0), the signs to +1 and the step
        count to 0; returns mu."""
        value = self._initial_mu(mu)
        for dyn, v in zip(self._dynamics, value, strict=True):
            dyn.reset(lam=float(v))
        self._signs = np.ones(self.n_constraints)
        self._step = 0
        return self.mu

    @property
    def mu_per_building(self) -> np.ndarray:
        """Each building's multiplier of each constraint (K, N), 0 outside a cluster."""
        out = np.zeros((self.n_constraints, self.n_buildings))
        for k, (dyn, members) in enumerate(zip(self._dynamics, self._members, strict=True)):
            out[k, members] = dyn.state.lam
        return out

    @property
    def mu(self) -> np.ndarray:
        """The mean (K,) of mu_k over each constraint's cluster."""
        return np.array([dyn.state.lam.mean() for dyn in self._dynamics])

    @property
    def mu_spread(self) -> np.ndarray:
        """max - min (K,) of mu_k over each cluster (0: the members agree)."""
        return np.array([np.ptp(dyn.state.lam) for dyn in self._dynamics])

    def snapshot(self) -> dict[str, np.ndarray]:
        """The state, as named arrays (``cluster{k}_*``: constraint k's dynamics):
        ``restore(snapshot())`` on an instance built with the same arguments continues
        bit for bit."""
        snap = {"step": np.array(self._step, dtype=np.int64), "signs": self._signs.copy()}
        for k, dyn in enumerate(self._dynamics):
            snap.update({f"cluster{k}_{key}": v for key, v in dyn.snapshot().items()})
        return snap

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Set the state saved by :meth:`snapshot`; shapes and bounds are checked, and
        nothing changes when a check fails.

        A snapshot without ``signs`` (saved before signs existed) sets every sign to +1.
        """
        signs = self._signs_from_snapshot(snap)
        parts = []
        for k, members in enumerate(self._members):
            prefix = f"cluster{k}_"
            part = {key.removeprefix(prefix): v for key, v in snap.items()
                    if key.startswith(prefix)}
            if not part:
                raise ValueError(f"grid multiplier snapshot: no state of constraint "
                                 f"{self.names[k]!r} ({prefix}*); is it an operator snapshot?")
            lam = np.asarray(part.get("lam", np.zeros(0)), dtype=np.float64)
            if lam.shape != (members.size,):
                raise ValueError(f"grid multiplier snapshot '{prefix}lam': shape {lam.shape}, "
                                 f"expected ({members.size},)")
            self._check_mu(lam)
            parts.append(part)
        before = [dyn.snapshot() for dyn in self._dynamics]
        try:
            for dyn, part in zip(self._dynamics, parts, strict=True):
                dyn.restore(part)
        except (KeyError, ValueError) as exc:
            for dyn, old in zip(self._dynamics, before, strict=True):
                dyn.restore(old)
            raise ValueError(f"grid multiplier snapshot: {exc}") from None
        self._signs = signs
        self._step = int(snap["step"])

    # --- the step ---------------------------------------------------------------------

    def _ascend(self, e: np.ndarray) -> None:
        """One consensus step per constraint (module docstring); :meth:`update` returns
        the new mean mu (K,)."""
        for e_k, dyn, share in zip(e, self._dynamics, self._residual_share, strict=True):
            if np.isfinite(e_k):
                dyn.update(e_k * share, np.zeros(share.size))

    def price_shift(self) -> np.ndarray:
        """``sum_k sign_k W_ki mu_ki`` (N,), what the grid constraints add to each lambda
        (0 for a building outside every cluster)."""
        result: np.ndarray = (self._signed_weights() * self.mu_per_building).sum(axis=0)
        return result
