"""A slow, agent-by-agent implementation of the dual dynamics, for tests only.

It repeats :meth:`agents.consensus.duals.DualDynamics.update` with Python loops over
agents and messages, reading neighbours from the networkx graph rather than
from the sparse operators, so that a test can compare the two. It works on the
same ``DualDynamics`` object (its multipliers, V1 history, message buffers and
random generator), so the two implementations may even be interleaved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from agents.consensus.duals import DualDynamics, DualState


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _exchange(dyn: DualDynamics, values: list[float], step: int) -> dict[tuple[int, int], float]:
    """Send every message one by one; return (sender, receiver) -> last value received."""
    ch = dyn._channel
    assert ch is not None
    faults = ch.faults
    m = ch.n_messages
    draws = ch.rng.random(m) if faults.drop_probability > 0.0 else None
    sent = np.empty(m)
    ok = np.empty(m, dtype=bool)
    for e in range(m):
        sender = int(ch.src[e])
        silent = any(a == sender and s <= step < t for a, s, t in faults.silent)
        dropped = draws is not None and bool(draws[e] < faults.drop_probability)
        sent[e] = values[sender]
        ok[e] = not silent and not dropped
    ch.pending.append((sent, ok))
    if len(ch.pending) > ch.delay_exchanges:
        arrived, delivered = ch.pending.popleft()
        for e in range(m):
            if delivered[e]:
                ch.received[e] = arrived[e]
    return {(int(ch.src[e]), int(ch.dst[e])): float(ch.received[e]) for e in range(m)}


def _v1(dyn: DualDynamics, grid: list[float]) -> list[float]:
    w = dyn.config.v1_window
    if w == 1:
        return grid
    dyn._v1_hist[dyn._v1_count % w] = grid
    dyn._v1_count += 1
    rows = min(dyn._v1_count, w)
    return [sum(float(dyn._v1_hist[k, i]) for k in range(rows)) / rows for i in range(dyn.n)]


def reference_update(dyn: DualDynamics, grid_kwh: np.ndarray, r2_kwh: np.ndarray) -> DualState:
    """One step of docs/equations.md, agent by agent."""
    cfg, n, g = dyn.config, dyn.n, dyn.graph
    grid = [float(x) for x in dyn._vector("grid_kwh", grid_kwh)]
    r2 = [float(x) for x in dyn._vector("r2_kwh", r2_kwh)]
    v1 = _v1(dyn, grid)
    dyn._v1 = np.asarray(v1, dtype=np.float64)
    lam = [float(x) for x in dyn._lam]
    mu = [float(x) for x in dyn._mu]
    share = dyn.limit_kwh / n
    neighbours = {i: sorted(int(j) for j in g.neighbors(i)) for i in range(n)}
    deg = {i: len(neighbours[i]) for i in range(n)}

    def weight(i: int, j: int) -> float:  # Metropolis
        return 1.0 / (1.0 + max(deg[i], deg[j]))

    def combine(x: list[float]) -> list[float]:  # K rounds x_i <- W_ii x_i + sum_j W_ij xhat_ij
        for _ in range(cfg.rounds):
            heard = _exchange(dyn, x, dyn._step) if dyn._channel is not None else None
            nxt = []
            for i in range(n):
                total, w_sum = 0.0, 0.0
                for j in neighbours[i]:
                    total += weight(i, j) * (x[j] if heard is None else heard[(j, i)])
                    w_sum += weight(i, j)
                nxt.append((1.0 - w_sum) * x[i] + total)
            x = nxt
        return x

    new_lam = [0.0] * n
    new_mu = list(mu)
    if cfg.mode == "paper":
        heard = _exchange(dyn, lam, dyn._step) if dyn._channel is not None else None
        for i in range(n):
            vals = [lam[j] if heard is None else heard[(j, i)] for j in neighbours[i]]
            nb_mean = sum(vals) / len(vals) if vals else lam[i]
            new_lam[i] = _clip(lam[i] - cfg.alpha * (share - v1[i] + mu[i]), 0.0, cfg.lambda_max)
            new_mu[i] = mu[i] + cfg.beta * (lam[i] - nb_mean)
    elif cfg.mode == "pi":
        heard = _exchange(dyn, lam, dyn._step) if dyn._channel is not None else None
        for i in range(n):
            lap = sum(weight(i, j) * (lam[i] - (lam[j] if heard is None else heard[(j, i)]))
                      for j in neighbours[i])
            new_lam[i] = _clip(lam[i] - cfg.alpha * (share - v1[i] + mu[i]) - cfg.gamma * lap,
                               0.0, cfg.lambda_max)
            new_mu[i] = mu[i] + cfg.beta * lap
    elif cfg.mode == "atc":
        x = combine([lam[i] - cfg.alpha * (share - v1[i]) for i in range(n)])
        new_lam = [_clip(x[i], 0.0, cfg.lambda_max) for i in range(n)]
    elif cfg.mode == "averaging":
        x = combine(lam)
        for i in range(n):
            new_lam[i] = _clip(x[i] - cfg.alpha * (share - v1[i]), 0.0, cfg.lambda_max)
    elif cfg.mode == "independent":
        for i in range(n):
            new_lam[i] = _clip(lam[i] - cfg.alpha * (share - v1[i]), 0.0, cfg.lambda_max)
    else:  # centralized
        total = sum(v1)
        common = _clip(lam[0] - cfg.alpha * (dyn.limit_kwh - total) / n, 0.0, cfg.lambda_max)
        new_lam = [common] * n
    new_nu = [_clip(float(dyn._nu[i]) - cfg.eta * r2[i], cfg.nu_min, cfg.nu_max)
              for i in range(n)]
    dyn._lam = np.asarray(new_lam, dtype=np.float64)
    dyn._mu = np.asarray(new_mu, dtype=np.float64)
    dyn._nu = np.asarray(new_nu, dtype=np.float64)
    dyn._step += 1
    return dyn.state
