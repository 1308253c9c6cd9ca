"""Dual dynamics at execution (docs/equations.md), vectorised over all agents.

One :meth:`DualDynamics.update` applies one step for every agent with numpy and
scipy.sparse; no Python loop runs over agents or edges. With c the district
limit per step (kWh), N agents, ``V1_i`` the agent's grid energy of this step
(``v1_window = 1``) or its mean over the last ``v1_window`` steps (fewer at the
start of a run), ``delta_i = c/N - V1_i`` and ``r2_i = served_i - d_i``. Every
line of a step uses the values from before the step.

Metropolis weights ``W_ij = 1 / (1 + max(deg_i, deg_j))`` on edges,
``W_ii = 1 - sum_j W_ij``: W is symmetric and doubly stochastic with
``W_ii > 0``; ``L = I - W`` is the Metropolis Laplacian, with eigenvalues
``l`` in ``[0, 2)`` (``l = 0`` once, for the agreement vector, on a connected
graph). ``(L lambda)_i = sum_j W_ij (lambda_i - lambdahat_ij)``, where
``lambdahat_ij`` is the last lambda agent i received from neighbour j (the
neighbour's current value when there are no faults). One exchange of messages
is one value per directed edge.

paper (the paper's literal Algorithm 1, eqs. 10-11; linearly unstable, kept to
reproduce the paper)::

    lambda_i <- clip(lambda_i - alpha (delta_i + mu_i), 0, lambda_max)
    mu_i     <- mu_i + beta (lambda_i - mean_{j in N(i)} lambdahat_ij)

  one exchange per step. An agent without neighbours (only on a graph allowed
  to be disconnected) uses its own lambda, so its mu stays put.

pi (proportional-integral consensus, the default; one exchange per step)::

    lambda_i <- clip(lambda_i - alpha (delta_i + mu_i) - gamma (L lambda)_i, 0, lambda_max)
    mu_i     <- mu_i + beta (L lambda)_i

atc (adapt-then-combine; K = ``rounds`` exchanges per step)::

    lambda <- clip(W^K (lambda - alpha delta), 0, lambda_max),  mu = 0

averaging (combine-then-adapt, the follow-up paper; K exchanges per step)::

    lambda <- clip(W^K lambda - alpha delta, 0, lambda_max),  mu = 0

independent: ``lambda_i <- clip(lambda_i - alpha delta_i, 0, lambda_max)``; mu = 0.

centralized (oracle, no messages, graph unused): one value for all agents,
``lambda <- clip(lambda - alpha (c - sum_i V1_i) / N, 0, lambda_max)``; mu = 0.
The step is the mean of the agents' steps, so the mean of lambda moves as in
pi, atc, averaging and independent (earlier versions moved it N times faster).

every mode: ``nu_i <- clip(nu_i - eta r2_i, nu_min, nu_max)`` (unmet demand raises nu).

Initial lambda = mu = nu = 0. Faults (:mod:`agents.consensus.faults`) act on the messages
of the graph modes (paper, pi, atc, averaging), one exchange at a time.

Linear behaviour, with V1 held fixed and no bound active (the update is then
affine; its matrix has these eigenvalues, checked in
``tests/agents/test_dual_stability.py``):

- paper: the state (lambda, mu) is mapped by ``[[I, -alpha I], [beta L_rw, I]]``
  with ``L_rw = I - D^-1 A`` the random-walk Laplacian. Per eigenvalue ``l`` of
  ``L_rw`` (real, in [0, 2]) the block ``[[1, -alpha], [beta l, 1]]`` has
  eigenvalues ``1 +- i sqrt(alpha beta l)``, of modulus ``sqrt(1 + alpha beta l) > 1``
  for every ``l > 0``: forward Euler applied to an undamped oscillator. Every
  disagreement mode grows, whatever the step sizes; agreement comes only from the
  projection onto ``[0, lambda_max]`` or, in closed loop, from the policies. The
  neighbour mean weighs by ``1/deg_i`` (not symmetric), so on irregular graphs
  ``sum_i mu_i`` drifts (``sum_i deg_i mu_i`` is what stays 0) and biases the
  common value: on a 7-agent star whose hub alone has V1 above c/N (and
  ``sum V1 < c``) every lambda ends at lambda_max, where a regular graph takes
  them all to 0.
- pi: per eigenvalue ``l`` of L the block ``[[1 - gamma l, -alpha], [beta l, 1]]``
  has the characteristic polynomial ``z^2 - (2 - gamma l) z + (1 - gamma l + alpha beta l)``.
  By the Jury criterion both roots lie inside the unit circle iff
  ``alpha beta l > 0``, ``(gamma - alpha beta) l > 0``, ``(gamma - alpha beta) l < 2``
  and ``(2 gamma - alpha beta) l < 4``; for every ``l`` in (0, 2), i.e. on every
  connected graph, iff ``0 < alpha beta < gamma <= 1 + alpha beta / 2``.
  :class:`DualConfig` asks for ``alpha beta < gamma <= 1``, inside that region,
  which also keeps ``I - gamma L = (1 - gamma) I + gamma W`` a non-negative
  averaging matrix. (``alpha beta = 0`` switches the integral action off: a root
  stays at 1, bounded but without exact agreement.) ``l = 0`` gives the double
  root 1 of the agreement mode. Because L is symmetric and mu starts at 0,
  ``sum_i mu_i`` stays 0 with perfect links, so the mean of lambda moves by
  ``alpha (sum V1 - c) / N`` per step, like centralized; a fixed point with no
  bound active has ``L lambda = 0`` (lambda equal everywhere), ``mu = -delta`` and
  ``sum V1 = c``. When every non-zero ``l`` exceeds ``4 alpha beta / gamma^2`` the
  slowest root is about ``1 - alpha beta / gamma`` (time constant
  ``gamma / (alpha beta)`` steps, 50 at the defaults); below that the roots are
  complex with modulus ``sqrt(1 - (gamma - alpha beta) l)``. Lost or late messages
  make the exchanged differences asymmetric, so under faults ``sum_i mu_i`` can drift.
- atc and averaging: ``W^K``, eigenvalues ``(1 - l)^K``, below 1 in modulus except
  for the agreement mode. With heterogeneous ``delta`` neither reaches exact
  agreement at a constant step: the fixed point (``sum V1 = c``) keeps a spread,
  averaging's ``-alpha (I - W^K)^+ delta`` (about ``alpha max|delta_i - delta_j|``,
  more on poorly connected graphs), atc's ``-alpha (I - W^K)^+ W^K delta``,
  smaller by the mixing of its K rounds.
- independent and centralized: the identity (every eigenvalue 1; centralized's
  one state is the common value, the mean direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp

from agents.consensus.faults import FaultModel, MessageChannel
from agents.consensus.graphs import (
    ALLOW_DISCONNECTED_KEY,
    GraphError,
    check_agent_nodes,
    directed_edges,
)
from agents.consensus.metropolis import metropolis_from_edges
from grid_models.support.settings import check_settings, setting

DUAL_MODES = ("paper", "pi", "atc", "averaging", "independent", "centralized")
_GRAPH_MODES = ("paper", "pi", "atc", "averaging")  # exchange messages on the graph
_MU_MODES = ("paper", "pi")  # the only modes with a non-zero mu
_ROUND_MODES = ("atc", "averaging")  # K = rounds exchanges per step (the others: 1)
RENAMED_MODES = {
    "consensus": "'consensus' was renamed 'paper' (the paper's literal eqs. 10-11, unstable); "
                 "the stable default is 'pi'",
}


def mode_problem(mode: str) -> str:
    """Why ``mode`` is not a dual mode ("" if it is); shared with the scenario schema."""
    if mode in DUAL_MODES:
        return ""
    if mode in RENAMED_MODES:
        return RENAMED_MODES[mode]
    return f"unknown mode {mode!r}; valid: {', '.join(DUAL_MODES)}"


def pi_gain_problem(alpha: float, beta: float, gamma: float) -> str:
    """Why (alpha, beta, gamma) leave mode 'pi' unstable ("" if they do not).

    Asks for ``alpha beta < gamma <= 1``, inside the region
    ``0 < alpha beta < gamma <= 1 + alpha beta / 2`` where every disagreement mode
    decays on every connected graph (module docstring).
    """
    if alpha * beta < gamma <= 1.0:
        return ""
    return (f"mode 'pi' is stable only for alpha*beta < gamma <= 1, got gamma={gamma:g} "
            f"with alpha*beta={alpha * beta:g} (alpha={alpha:g}, beta={beta:g})")


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"DualConfig.{name} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class DualConfig:
    """Step sizes and bounds of the dual dynamics (docs/equations.md)."""

    mode: str = setting("pi", doc="pi|paper|atc|averaging|independent|centralized; pi: the "
                        "stable proportional-integral consensus, paper: the paper's eqs. "
                        "10-11 (linearly unstable)")
    alpha: float = setting(0.1, ge=0, doc="step of lambda")
    beta: float = setting(0.1, ge=0, doc="step of mu (paper, pi)")
    gamma: float = setting(0.5, ge=0, doc="pi's proportional gain on L lambda; "
                           "alpha*beta < gamma <= 1")
    eta: float = setting(1.0, ge=0, doc="step of nu per kWh of unmet demand (0.1 lets backlog "
                         "outrun the shipped policies)")
    rounds: int = setting(3, ge=1, integer=True, doc="K, Metropolis rounds per step "
                          "(atc, averaging)")
    lambda_max: float = setting(15.0, gt=0, doc="upper bound of lambda")
    nu_min: float = setting(-20.0, le=0, doc="lower bound of nu (nu starts at 0)")
    nu_max: float = setting(20.0, ge=0, doc="upper bound of nu (nu starts at 0)")
    v1_window: int = setting(1, ge=1, integer=True, doc="1: the step's grid energy; > 1: "
                             "moving average over that many steps")

    def __post_init__(self) -> None:
        problem = mode_problem(self.mode)
        if problem:
            raise ValueError(f"DualConfig.mode: {problem}")
        for name in ("nu_min", "nu_max"):
            _finite(name, getattr(self, name))
        nu_min, nu_max = float(self.nu_min), float(self.nu_max)
        if not nu_min <= 0.0 <= nu_max or nu_min == nu_max:
            raise ValueError(
                f"DualConfig: need nu_min <= 0 <= nu_max and nu_min < nu_max (the initial nu is "
                f"0), got nu_min={nu_min}, nu_max={nu_max}"
            )
        check_settings(self, "DualConfig.")
        if self.mode == "pi":
            problem = pi_gain_problem(self.alpha, self.beta, self.gamma)
            if problem:
                raise ValueError(f"DualConfig.gamma: {problem}")


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
        graph: communication graph over agents ``0..N-1`` (see ``agents.consensus.graphs``).
            The graph modes (paper, pi, atc, averaging) refuse a disconnected graph
            unless ``graph.graph["allow_disconnected"]`` is true.
        limit_kwh: c, the district's grid-energy limit per step, kWh.
        faults: message faults (graph modes only); None: perfect links.
        seed: seeds the generator of the message drops.
    """

    def __init__(
        self,
        config: DualConfig,
        graph: nx.Graph[int],
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
        exchanges = config.rounds if config.mode in _ROUND_MODES else 1
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
        weights = metropolis_from_edges(src, dst, n)
        deg = weights.degree
        self.degree = deg
        self._isolated = (deg == 0).astype(np.float64)
        inv_deg = np.divide(1.0, deg, out=np.zeros(n), where=deg > 0)
        edge_ids = np.arange(m)
        # Mean over neighbours: of the current lambdas (P), of received values per edge (Q).
        self._mean_nodes = (sp.csr_array((inv_deg[dst], (dst, src)), shape=(n, n))
                            + sp.diags_array(self._isolated)).tocsr()
        self._mean_edges = sp.csr_array((inv_deg[dst], (dst, edge_ids)), shape=(n, m))
        # Metropolis weights W and the Laplacian L = I - W (diagonal: the weighted degree).
        self._w_deg = weights.weighted_degree
        self._w_self = weights.self_weight
        self._w_nodes = weights.matrix()
        self._lap_nodes = weights.laplacian()
        self._w_edges = weights.per_edge()

    def metropolis_matrix(self) -> sp.csr_array:
        """The averaging matrix W (symmetric, rows and columns sum to 1)."""
        return self._w_nodes.copy()

    def metropolis_laplacian(self) -> sp.csr_array:
        """L = I - W, the Laplacian mode 'pi' uses (symmetric, rows sum to 0)."""
        return self._lap_nodes.copy()

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
        if cfg.mode not in _MU_MODES and (self._mu != 0).any():
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
        """A copy of the multipliers and the step count."""
        return DualState(self._lam.copy(), self._mu.copy(), self._nu.copy(), self._step)

    @property
    def step(self) -> int:
        """Number of updates applied since the last reset."""
        return self._step

    @property
    def v1_kwh(self) -> np.ndarray:
        """V1 of the last update (zeros before the first)."""
        result: np.ndarray = self._v1.copy()
        return result

    def _vector(self, name: str, value: np.ndarray | float) -> np.ndarray:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(self.n, float(arr))
        if arr.shape != (self.n,):
            raise ValueError(f"{name}: expected a scalar or {self.n} values, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: every value must be finite")
        result: np.ndarray = arr.copy()
        return result

    def _push_v1(self, grid_kwh: np.ndarray) -> np.ndarray:
        w = self.config.v1_window
        if w == 1:
            return grid_kwh
        self._v1_hist[self._v1_count % w] = grid_kwh
        self._v1_count += 1
        result: np.ndarray = self._v1_hist[: min(self._v1_count, w)].mean(axis=0)
        return result

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
        if cfg.mode == "paper":
            if self._channel is None:
                nb_mean = self._mean_nodes @ lam
            else:
                received = self._channel.exchange(lam, self._step)
                nb_mean = self._mean_edges @ received + self._isolated * lam
            new_lam = np.clip(lam - cfg.alpha * (share - v1 + mu), 0.0, cfg.lambda_max)
            self._mu = mu + cfg.beta * (lam - nb_mean)
        elif cfg.mode == "pi":
            lap = self._laplacian(lam)
            new_lam = np.clip(lam - cfg.alpha * (share - v1 + mu) - cfg.gamma * lap,
                              0.0, cfg.lambda_max)
            self._mu = mu + cfg.beta * lap
        elif cfg.mode == "atc":
            new_lam = np.clip(self._combine(lam - cfg.alpha * (share - v1)), 0.0, cfg.lambda_max)
        elif cfg.mode == "averaging":
            new_lam = np.clip(self._combine(lam) - cfg.alpha * (share - v1), 0.0, cfg.lambda_max)
        elif cfg.mode == "independent":
            new_lam = np.clip(lam - cfg.alpha * (share - v1), 0.0, cfg.lambda_max)
        else:  # centralized
            common = float(lam[0])  # all agents hold the same value
            step = cfg.alpha * (self.limit_kwh - float(v1.sum())) / self.n
            new_lam = np.full(self.n, min(max(common - step, 0.0), cfg.lambda_max))
        self._lam = new_lam
        self._nu = np.clip(self._nu - cfg.eta * r2, cfg.nu_min, cfg.nu_max)
        self._step += 1
        return self.state

    def _laplacian(self, x: np.ndarray) -> np.ndarray:
        """``(L x)_i = sum_j W_ij (x_i - xhat_ij)`` after one exchange of ``x``."""
        if self._channel is None:
            result: np.ndarray = self._lap_nodes @ x
            return result
        received = self._channel.exchange(x, self._step)
        result = self._w_deg * x - self._w_edges @ received
        return result

    def _combine(self, x: np.ndarray) -> np.ndarray:
        """K = ``rounds`` Metropolis rounds ``x <- W x``, one exchange each."""
        for _ in range(self.config.rounds):
            if self._channel is None:
                x = self._w_nodes @ x
            else:
                received = self._channel.exchange(x, self._step)
                x = self._w_self * x + self._w_edges @ received
        return x
