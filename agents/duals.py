"""Dual dynamics at execution (docs/equations.md), vectorised over all agents.

One :meth:`DualDynamics.update` applies one step for every agent with numpy and
scipy.sparse; no Python loop runs over agents or edges. With c the district
limit per step (kWh), N agents, ``V1_i`` the agent's grid energy of this step
(``v1_window = 1``) or its mean over the last ``v1_window`` steps (fewer at the
start of a run), and ``r2_i = served_i - d_i``:

consensus (the paper's Algorithm 1; both lines use the values before this step)::

    lambda_i <- clip(lambda_i - alpha (c/N - V1_i + mu_i), 0, lambda_max)
    mu_i     <- mu_i + beta (lambda_i - mean_{n in N(i)} lambdahat_in)

  ``lambdahat_in`` is the last lambda agent i received from neighbour n (the
  neighbour's current lambda when there are no faults). An agent without
  neighbours (only on a graph allowed to be disconnected) uses its own lambda,
  so its mu stays put.

averaging (the follow-up paper): K rounds ``lambda <- W lambda`` with Metropolis
weights ``W_ij = 1 / (1 + max(deg_i, deg_j))`` on edges, ``W_ii = 1 - sum_j W_ij``
(each round is one exchange of messages), then
``lambda_i <- clip(lambda_i - alpha (c/N - V1_i), 0, lambda_max)``; mu = 0.

independent: ``lambda_i <- clip(lambda_i - alpha (c/N - V1_i), 0, lambda_max)``; mu = 0.

centralized (oracle, no messages): ``lambda <- clip(lambda - alpha (c - sum_i V1_i),
0, lambda_max)``, one value broadcast to all agents (the graph is not used); mu = 0.

every mode: ``nu_i <- clip(nu_i - eta r2_i, nu_min, nu_max)`` (unmet demand raises nu).

Initial lambda = mu = nu = 0. Faults (:mod:`agents.faults`) act on the messages
of consensus and averaging only.

Behaviour worth knowing: with V1 held fixed and no bound active, the consensus
pair (lambda, mu) is the forward-Euler discretisation of an undamped
oscillator; on two agents the disagreement ``lambda_1 - lambda_2`` rotates with
modulus growing by ``sqrt(1 + 2 alpha beta)`` per step (see the tests'
closed form). Agreement therefore comes from the projection onto
``[0, lambda_max]`` (fixed V1 with ``sum V1 != c``) or, in closed loop, from the
policies' response to lambda. The neighbour mean weighs neighbours by
``1/deg_i``, which is not symmetric, so on irregular graphs ``sum_i mu_i`` drifts
and biases the common value: on a 7-agent star whose hub alone has V1 above c/N
(and ``sum V1 < c``) every lambda ends at lambda_max, where a regular graph
takes them all to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp

from agents.faults import FaultModel, MessageChannel
from agents.graphs import (
    ALLOW_DISCONNECTED_KEY,
    GraphError,
    check_agent_nodes,
    directed_edges,
)

DUAL_MODES = ("consensus", "averaging", "independent", "centralized")
_GRAPH_MODES = ("consensus", "averaging")


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"DualConfig.{name} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class DualConfig:
    """Step sizes and bounds of the dual dynamics (docs/equations.md)."""

    mode: str = "consensus"
    alpha: float = 0.1  # step of lambda
    beta: float = 0.1  # step of mu (consensus)
    eta: float = 1.0  # step of nu per kWh of r2 (0.1 lets backlog outrun the shipped policies)
    rounds: int = 3  # K, averaging rounds per step
    lambda_max: float = 15.0
    nu_min: float = -20.0
    nu_max: float = 20.0
    v1_window: int = 1  # 1: the step's grid energy; > 1: moving average over that many steps

    def __post_init__(self) -> None:
        if self.mode not in DUAL_MODES:
            raise ValueError(
                f"DualConfig.mode: unknown mode {self.mode!r}; valid: {', '.join(DUAL_MODES)}"
            )
        for name in ("alpha", "beta", "eta"):
            value = _finite(name, getattr(self, name))
            if value < 0:
                raise ValueError(f"DualConfig.{name} must be >= 0, got {value}")
            object.__setattr__(self, name, value)
        for name in ("rounds", "v1_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"DualConfig.{name} must be an integer >= 1, got {value}")
            object.__setattr__(self, name, int(value))
        lam_max = _finite("lambda_max", self.lambda_max)
        if lam_max <= 0:
            raise ValueError(f"DualConfig.lambda_max must be > 0, got {lam_max}")
        nu_min, nu_max = _finite("nu_min", self.nu_min), _finite("nu_max", self.nu_max)
        if not nu_min <= 0.0 <= nu_max or nu_min == nu_max:
            raise ValueError(
                f"DualConfig: need nu_min <= 0 <= nu_max and nu_min < nu_max (the initial nu is "
                f"0), got nu_min={nu_min}, nu_max={nu_max}"
            )
        object.__setattr__(self, "lambda_max", lam_max)
        object.__setattr__(self, "nu_min", nu_min)
        object.__setattr__(self, "nu_max", nu_max)


@dataclass(frozen=True)
class DualState:
    """The multipliers of every agent, arrays of shape (N,), after ``step`` updates."""

    lam: np.ndarray
    mu: np.ndarray
    nu: np.ndarray
    step: int = 0


class DualDynamics:
    """Multipliers lambda, mu, nu of N agents on a communication graph.

    Arguments:
        config: step sizes, bounds and the mode (``DUAL_MODES``).
        graph: communication graph over agents ``0..N-1`` (see ``agents.graphs``).
            consensus and averaging refuse a disconnected graph unless
            ``graph.graph["allow_disconnected"]`` is true.
        limit_kwh: c, the district's grid-energy limit per step, kWh.
        faults: message faults (consensus and averaging only); None: perfect links.
        seed: seeds the generator of the message drops.
    """

    def __init__(
        self,
        config: DualConfig,
        graph: nx.Graph,
        limit_kwh: float,
        faults: FaultModel | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(config, DualConfig):
            raise TypeError(f"config must be a DualConfig, got {type(config).__name__}")
        self.config = config
        self.graph = graph
        self.n = n = check_agent_nodes(graph)
        if config.mode in _GRAPH_MODES and not graph.graph.get(ALLOW_DISCONNECTED_KEY, False):
            if not nx.is_connected(graph):
                raise GraphError(
                    f"mode {config.mode!r} on a disconnected communication graph "
                    f"({nx.number_connected_components(graph)} components of {n} agents) cannot "
                    "reach agreement; build the graph with allow_disconnected=True to run anyway"
                )
        limit = float(limit_kwh)
        if not np.isfinite(limit) or limit < 0:
            raise ValueError(f"limit_kwh must be finite and >= 0, got {limit_kwh}")
        self.limit_kwh = limit
        self.faults = faults
        self.seed = seed
        self.src, self.dst = directed_edges(graph)
        self._build_operators()
        exchanges = config.rounds if config.mode == "averaging" else 1
        self._channel: MessageChannel | None = None
        if faults is not None and config.mode in _GRAPH_MODES:
            faults.check_agents(n)
            if not faults.is_trivial:
                rng = np.random.default_rng(seed)
                self._channel = MessageChannel(faults, self.src, self.dst, n, exchanges, rng)
        self._v1_hist = np.zeros((config.v1_window, n))
        self._v1_count = 0
        self.reset()

    # --- set-up ---------------------------------------------------------------------------

    def _build_operators(self) -> None:
        n, src, dst = self.n, self.src, self.dst
        m = src.shape[0]
        deg = np.bincount(dst, minlength=n).astype(np.float64)
        self.degree = deg
        self._isolated = (deg == 0).astype(np.float64)
        inv_deg = np.divide(1.0, deg, out=np.zeros(n), where=deg > 0)
        edge_ids = np.arange(m)
        # Mean over neighbours: of the current lambdas (P), of received values per edge (Q).
        self._mean_nodes = (sp.csr_array((inv_deg[dst], (dst, src)), shape=(n, n))
                            + sp.diags_array(self._isolated)).tocsr()
        self._mean_edges = sp.csr_array((inv_deg[dst], (dst, edge_ids)), shape=(n, m))
        # Metropolis weights.
        w_edge = 1.0 / (1.0 + np.maximum(deg[src], deg[dst]))
        self._w_self = 1.0 - np.bincount(dst, weights=w_edge, minlength=n)
        self._w_nodes = (sp.csr_array((w_edge, (dst, src)), shape=(n, n))
                         + sp.diags_array(self._w_self)).tocsr()
        self._w_edges = sp.csr_array((w_edge, (dst, edge_ids)), shape=(n, m))

    def metropolis_matrix(self) -> sp.csr_array:
        """The averaging matrix W (symmetric, rows and columns sum to 1)."""
        return self._w_nodes.copy()

    def reset(
        self,
        lam: np.ndarray | float | None = None,
        mu: np.ndarray | float | None = None,
        nu: np.ndarray | float | None = None,
    ) -> DualState:
        """Set the multipliers (default 0), forget V1 history and messages in flight.

        Every receiver then holds its neighbours' new lambda as "last received".
        """
        cfg = self.config
        self._lam = self._vector("lam", 0.0 if lam is None else lam)
        self._mu = self._vector("mu", 0.0 if mu is None else mu)
        self._nu = self._vector("nu", 0.0 if nu is None else nu)
        if ((self._lam < 0) | (self._lam > cfg.lambda_max)).any():
            raise ValueError(f"lam must lie in [0, {cfg.lambda_max}]")
        if ((self._nu < cfg.nu_min) | (self._nu > cfg.nu_max)).any():
            raise ValueError(f"nu must lie in [{cfg.nu_min}, {cfg.nu_max}]")
        if cfg.mode != "consensus" and (self._mu != 0).any():
            raise ValueError(f"mode {cfg.mode!r} keeps mu = 0; got a non-zero mu")
        if cfg.mode == "centralized" and (self._lam != self._lam[0]).any():
            raise ValueError("mode 'centralized' holds one lambda for all agents; "
                             "got differing values")
        self._step = 0
        self._v1_hist[:] = 0.0
        self._v1_count = 0
        self._v1 = np.zeros(self.n)
        if self._channel is not None:
            self._channel.reset(self._lam)
        return self.state

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> DualState:
        return DualState(self._lam.copy(), self._mu.copy(), self._nu.copy(), self._step)

    @property
    def step(self) -> int:
        """Number of updates applied since the last reset."""
        return self._step

    @property
    def v1_kwh(self) -> np.ndarray:
        """V1 of the last update (zeros before the first)."""
        return self._v1.copy()

    def _vector(self, name: str, value: np.ndarray | float) -> np.ndarray:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(self.n, float(arr))
        if arr.shape != (self.n,):
            raise ValueError(f"{name}: expected a scalar or {self.n} values, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: every value must be finite")
        return arr.copy()

    def _push_v1(self, grid_kwh: np.ndarray) -> np.ndarray:
        w = self.config.v1_window
        if w == 1:
            return grid_kwh
        self._v1_hist[self._v1_count % w] = grid_kwh
        self._v1_count += 1
        return self._v1_hist[: min(self._v1_count, w)].mean(axis=0)

    # --- snapshots (resume) -------------------------------------------------------------------

    def snapshot(self) -> dict[str, np.ndarray]:
        """Everything the next updates depend on, as named arrays (no pickled objects).

        ``restore(snapshot())`` on a DualDynamics built from the same config, graph,
        limit, faults and seed continues bit for bit, message-fault RNG included.
        """
        snap = {
            "lam": self._lam.copy(), "mu": self._mu.copy(), "nu": self._nu.copy(),
            "step": np.array(self._step, dtype=np.int64), "v1": self._v1.copy(),
            "v1_hist": self._v1_hist.copy(), "v1_count": np.array(self._v1_count, dtype=np.int64),
        }
        if self._channel is not None:
            snap.update({f"channel_{k}": v for k, v in self._channel.snapshot().items()})
        return snap

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Set the state saved by :meth:`snapshot`; shapes are checked."""
        for key, ref in (("lam", self._lam), ("mu", self._mu), ("nu", self._nu),
                         ("v1", self._v1), ("v1_hist", self._v1_hist)):
            arr = np.asarray(snap[key], dtype=np.float64)
            if arr.shape != ref.shape:
                raise ValueError(f"dual snapshot {key!r}: shape {arr.shape}, expected {ref.shape}")
        self._lam = np.array(snap["lam"], dtype=np.float64)
        self._mu = np.array(snap["mu"], dtype=np.float64)
        self._nu = np.array(snap["nu"], dtype=np.float64)
        self._v1 = np.array(snap["v1"], dtype=np.float64)
        self._v1_hist = np.array(snap["v1_hist"], dtype=np.float64)
        self._step = int(snap["step"])
        self._v1_count = int(snap["v1_count"])
        has_channel = any(k.startswith("channel_") for k in snap)
        if (self._channel is not None) != has_channel:
            raise ValueError("dual snapshot: message-fault channel state does not match the "
                             "fault model")
        if self._channel is not None:
            self._channel.restore({k.removeprefix("channel_"): v for k, v in snap.items()
                                   if k.startswith("channel_")})

    # --- the step -----------------------------------------------------------------------------

    def update(self, grid_kwh: np.ndarray, r2_kwh: np.ndarray) -> DualState:
        """One step of §5 for all agents from their grid energy and ``served - demand``."""
        grid = self._vector("grid_kwh", grid_kwh)
        r2 = self._vector("r2_kwh", r2_kwh)
        cfg = self.config
        v1 = self._v1 = self._push_v1(grid)
        lam, mu = self._lam, self._mu
        share = self.limit_kwh / self.n
        if cfg.mode == "consensus":
            if self._channel is None:
                nb_mean = self._mean_nodes @ lam
            else:
                received = self._channel.exchange(lam, self._step)
                nb_mean = self._mean_edges @ received + self._isolated * lam
            new_lam = np.clip(lam - cfg.alpha * (share - v1 + mu), 0.0, cfg.lambda_max)
            self._mu = mu + cfg.beta * (lam - nb_mean)
        elif cfg.mode == "averaging":
            x = lam
            for _ in range(cfg.rounds):
                if self._channel is None:
                    x = self._w_nodes @ x
                else:
                    received = self._channel.exchange(x, self._step)
                    x = self._w_self * x + self._w_edges @ received
            new_lam = np.clip(x - cfg.alpha * (share - v1), 0.0, cfg.lambda_max)
        elif cfg.mode == "independent":
            new_lam = np.clip(lam - cfg.alpha * (share - v1), 0.0, cfg.lambda_max)
        else:  # centralized
            common = float(lam[0])  # all agents hold the same value
            common = min(max(common - cfg.alpha * (self.limit_kwh - float(v1.sum())), 0.0),
                         cfg.lambda_max)
            new_lam = np.full(self.n, common)
        self._lam = new_lam
        self._nu = np.clip(self._nu - cfg.eta * r2, cfg.nu_min, cfg.nu_max)
        self._step += 1
        return self.state

    def reference_update(self, grid_kwh: np.ndarray, r2_kwh: np.ndarray) -> DualState:
        """The same step as :meth:`update`, agent by agent in Python (slow; for tests)."""
        from agents.duals_reference import reference_update

        return reference_update(self, grid_kwh, r2_kwh)
