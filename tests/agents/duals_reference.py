"""A slow, agent-by-agent implementation of the dual dynamics, for tests only.

:class:`ReferenceDuals` repeats :meth:`agents.consensus.duals.DualDynamics.update` with
Python loops over agents and messages, reading neighbours from the networkx graph
rather than from sparse operators, so that a test can compare the two. It holds its
own state (multipliers, V1 history, messages in flight and the random generator of the
drops), built from the same public inputs as ``DualDynamics`` (config, graph, limit,
faults, seed); it touches nothing private of the production class. The Metropolis
weights come from :mod:`agents.consensus.metropolis`, their one builder.
"""

from __future__ import annotations

from collections import deque

import networkx as nx
import numpy as np

from agents.consensus.duals import DualConfig, DualState
from agents.consensus.faults import FaultModel
from agents.consensus.graphs import directed_edges
from agents.consensus.metropolis import metropolis_matrix

_GRAPH_MODES = ("paper", "pi", "atc", "averaging")
_ROUND_MODES = ("atc", "averaging")


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


class _Channel:
    """Messages one by one along the directed edges, in the fault model's draw order."""

    def __init__(self, faults: FaultModel, graph: nx.Graph[int], exchanges: int,
                 seed: int) -> None:
        src, dst = directed_edges(graph)
        self.edges = [(int(s), int(d)) for s, d in zip(src, dst, strict=True)]
        self.faults = faults
        self.rng = np.random.default_rng(seed)
        self.delay = faults.delay_steps * exchanges
        self.received = [0.0] * len(self.edges)  # the initial lambda is 0
        self.pending: deque[tuple[list[float], list[bool]]] = deque()

    def exchange(self, values: list[float], step: int) -> dict[tuple[int, int], float]:
        """Send every message; return (sender, receiver) -> last value received."""
        faults, m = self.faults, len(self.edges)
        draws = self.rng.random(m) if faults.drop_probability > 0.0 else None
        sent, ok = [], []
        for e, (sender, _) in enumerate(self.edges):
            silent = any(a == sender and s <= step < t for a, s, t in faults.silent)
            dropped = draws is not None and bool(draws[e] < faults.drop_probability)
            sent.append(values[sender])
            ok.append(not silent and not dropped)
        self.pending.append((sent, ok))
        if len(self.pending) > self.delay:
            arrived, delivered = self.pending.popleft()
            for e in range(m):
                if delivered[e]:
                    self.received[e] = arrived[e]
        return {edge: self.received[e] for e, edge in enumerate(self.edges)}


class ReferenceDuals:
    """The dual dynamics of docs/equations.md, agent by agent (same arguments as
    ``DualDynamics``; starts from lambda = mu = nu = 0)."""

    def __init__(self, config: DualConfig, graph: nx.Graph[int], limit_kwh: float,
                 faults: FaultModel | None = None, seed: int = 0) -> None:
        self.config, self.graph, self.limit_kwh = config, graph, float(limit_kwh)
        self.n = n = graph.number_of_nodes()
        self.lam, self.mu, self.nu = [0.0] * n, [0.0] * n, [0.0] * n
        self.step = 0
        self.v1_hist: list[list[float]] = []
        self.channel: _Channel | None = None
        if faults is not None and not faults.is_trivial and config.mode in _GRAPH_MODES:
            exchanges = config.rounds if config.mode in _ROUND_MODES else 1
            self.channel = _Channel(faults, graph, exchanges, seed)
        self.w = metropolis_matrix(graph, n).toarray()
        self.neighbours = {i: sorted(int(j) for j in graph.neighbors(i)) for i in range(n)}

    def _v1(self, grid: list[float]) -> list[float]:
        w = self.config.v1_window
        if w == 1:
            return grid
        self.v1_hist = ([*self.v1_hist, grid])[-w:]
        rows = len(self.v1_hist)
        return [sum(row[i] for row in self.v1_hist) / rows for i in range(self.n)]

    def _heard(self, x: list[float]) -> dict[tuple[int, int], float] | None:
        return self.channel.exchange(x, self.step) if self.channel is not None else None

    def _combine(self, x: list[float]) -> list[float]:
        """K rounds ``x_i <- W_ii x_i + sum_j W_ij xhat_ij``."""
        for _ in range(self.config.rounds):
            heard = self._heard(x)
            nxt = []
            for i in range(self.n):
                total = sum(self.w[i, j] * (x[j] if heard is None else heard[(j, i)])
                            for j in self.neighbours[i])
                nxt.append(self.w[i, i] * x[i] + total)
            x = nxt
        return x

    def update(self, grid_kwh: np.ndarray, r2_kwh: np.ndarray) -> DualState:
        """One step of docs/equations.md, agent by agent."""
        cfg, n, nbrs, w = self.config, self.n, self.neighbours, self.w
        grid = [float(x) for x in grid_kwh]
        r2 = [float(x) for x in r2_kwh]
        v1 = self._v1(grid)
        lam, mu = self.lam, self.mu
        share = self.limit_kwh / n
        new_lam, new_mu = [0.0] * n, list(mu)
        if cfg.mode == "paper":
            heard = self._heard(lam)
            for i in range(n):
                vals = [lam[j] if heard is None else heard[(j, i)] for j in nbrs[i]]
                nb_mean = sum(vals) / len(vals) if vals else lam[i]
                new_lam[i] = _clip(lam[i] - cfg.alpha * (share - v1[i] + mu[i]), 0.0,
                                   cfg.lambda_max)
                new_mu[i] = mu[i] + cfg.beta * (lam[i] - nb_mean)
        elif cfg.mode == "pi":
            heard = self._heard(lam)
            for i in range(n):
                lap = sum(w[i, j] * (lam[i] - (lam[j] if heard is None else heard[(j, i)]))
                          for j in nbrs[i])
                new_lam[i] = _clip(lam[i] - cfg.alpha * (share - v1[i] + mu[i]) - cfg.gamma * lap,
                                   0.0, cfg.lambda_max)
                new_mu[i] = mu[i] + cfg.beta * lap
        elif cfg.mode == "atc":
            x = self._combine([lam[i] - cfg.alpha * (share - v1[i]) for i in range(n)])
            new_lam = [_clip(x[i], 0.0, cfg.lambda_max) for i in range(n)]
        elif cfg.mode == "averaging":
            x = self._combine(lam)
            new_lam = [_clip(x[i] - cfg.alpha * (share - v1[i]), 0.0, cfg.lambda_max)
                       for i in range(n)]
        elif cfg.mode == "independent":
            new_lam = [_clip(lam[i] - cfg.alpha * (share - v1[i]), 0.0, cfg.lambda_max)
                       for i in range(n)]
        else:  # centralized
            common = _clip(lam[0] - cfg.alpha * (self.limit_kwh - sum(v1)) / n, 0.0,
                           cfg.lambda_max)
            new_lam = [common] * n
        self.lam, self.mu = new_lam, new_mu
        self.nu = [_clip(self.nu[i] - cfg.eta * r2[i], cfg.nu_min, cfg.nu_max) for i in range(n)]
        self.step += 1
        return DualState(np.asarray(self.lam), np.asarray(self.mu), np.asarray(self.nu),
                         self.step)
