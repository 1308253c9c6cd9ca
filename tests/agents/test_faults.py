"""Message faults: drops, delays, silent agents; receivers keep the last value."""

from __future__ import annotations

import numpy as np
import pytest

from agents.consensus.duals import DualConfig, DualDynamics
from agents.consensus.faults import FaultModel, MessageChannel
from agents.consensus.graphs import directed_edges, make_graph

LAMBDA_ATOL = 1e-12
MU_ATOL = 1e-12


def _channel(faults: FaultModel, topology: str = "line", n: int = 3, exchanges: int = 1,
             seed: int = 0) -> MessageChannel:
    src, dst = directed_edges(make_graph(topology, n))
    return MessageChannel(faults, src, dst, n, exchanges, np.random.default_rng(seed))


def test_fault_model_validation():
    with pytest.raises(ValueError, match=r"drop_probability must lie in \[0, 1\]"):
        FaultModel(drop_probability=1.5)
    with pytest.raises(ValueError, match="delay_steps must be an integer >= 0"):
        FaultModel(delay_steps=-1)
    with pytest.raises(ValueError, match=r"silent\[0\] must be \(agent, start_step, end_step\)"):
        FaultModel(silent=[(1, 2)])
    with pytest.raises(ValueError, match=r"silent\[0\].*0 <= start_step <= end_step"):
        FaultModel(silent=[(1, 5, 2)])
    with pytest.raises(ValueError, match="agent 9 does not exist"):
        DualDynamics(DualConfig(), make_graph("ring", 4), 4.0, FaultModel(silent=[(9, 0, 1)]))
    assert FaultModel().is_trivial and FaultModel(silent=[(0, 3, 3)]).is_trivial
    assert not FaultModel(delay_steps=1).is_trivial


def test_perfect_channel_delivers_current_values():
    ch = _channel(FaultModel(silent=[(0, 5, 6)]))  # not trivial, but silent later only
    values = np.array([1.0, 2.0, 3.0])
    received = ch.exchange(values, step=0)
    np.testing.assert_array_equal(received, values[ch.src])


def test_delay_delivers_the_value_sent_d_steps_earlier():
    d = 2
    ch = _channel(FaultModel(delay_steps=d))
    history = []
    for t in range(6):
        values = np.array([10.0 * t + 1, 10.0 * t + 2, 10.0 * t + 3])
        history.append(values)
        received = ch.exchange(values, step=t)
        expected = history[t - d][ch.src] if t >= d else np.zeros(ch.n_messages)
        np.testing.assert_array_equal(received, expected)


def test_delay_counts_averaging_rounds_per_step():
    ch = _channel(FaultModel(delay_steps=1), exchanges=3)
    sent = []
    for t in range(3):
        for k in range(3):
            values = np.full(3, 100.0 * t + k)
            sent.append(values)
            received = ch.exchange(values, step=t)
            if t == 0:
                np.testing.assert_array_equal(received, 0.0)
            else:  # round k of step t - 1
                np.testing.assert_array_equal(received, 100.0 * (t - 1) + k)


def test_silent_agent_sends_nothing_during_its_interval():
    ch = _channel(FaultModel(silent=[(1, 2, 4)]))  # agent 1 silent at steps 2 and 3
    from_1 = ch.src == 1
    for t in range(6):
        values = np.full(3, float(t + 1))
        received = ch.exchange(values, step=t)
        expected_from_1 = 2.0 if t in (2, 3) else float(t + 1)  # last value sent at step 1
        np.testing.assert_array_equal(received[from_1], expected_from_1)
        np.testing.assert_array_equal(received[~from_1], float(t + 1))


def test_dropped_message_leaves_last_received_value():
    ch = _channel(FaultModel(drop_probability=0.5), topology="complete", n=6, seed=3)
    last = np.zeros(ch.n_messages)
    delivered_any = dropped_any = False
    for t in range(20):
        values = np.arange(6) + 100.0 * (t + 1)
        received = ch.exchange(values, step=t).copy()
        fresh = received == values[ch.src]
        np.testing.assert_array_equal(received[~fresh], last[~fresh])
        delivered_any |= fresh.any()
        dropped_any |= (~fresh).any()
        last = received
    assert delivered_any and dropped_any


def _alone(mode: str, lam: float, mu: float, delta: float, alpha: float, beta: float,
           gamma: float, rounds: int, w_self: float) -> tuple[float, float]:
    """One step of an agent that hears only the initial 0 from every neighbour."""
    def clip(x: float) -> float:
        return min(max(x, 0.0), 15.0)

    w_deg = 1.0 - w_self  # sum of its Metropolis weights
    if mode == "paper":  # neighbour mean 0
        return clip(lam - alpha * (delta + mu)), mu + beta * lam
    if mode == "pi":  # (L lambda)_0 = sum_j W_0j (lambda_0 - 0)
        return clip(lam - alpha * (delta + mu) - gamma * w_deg * lam), mu + beta * w_deg * lam
    if mode == "atc":  # each round keeps W_00 of the own value
        return clip(w_self ** rounds * (lam - alpha * delta)), 0.0
    return clip(w_self ** rounds * lam - alpha * delta), 0.0  # averaging


@pytest.mark.parametrize("mode", ["paper", "pi", "atc", "averaging"])
def test_drop_probability_one_isolates_agents(mode):
    """With every message lost, each lambda evolves alone: neighbours count as their
    initial 0 forever, whatever they do."""
    n, alpha, beta, gamma, rounds, c = 6, 0.05, 0.1, 0.4, 2, 6.0
    g = make_graph("complete", n)
    rng = np.random.default_rng(0)
    grid_a = rng.uniform(0, 2, (40, n))
    grid_b = grid_a.copy()
    grid_b[:, 1:] = rng.uniform(0, 3, (40, n - 1))  # the others behave differently
    runs = []
    for grid in (grid_a, grid_b):
        d = DualDynamics(DualConfig(mode=mode, alpha=alpha, beta=beta, gamma=gamma,
                                    rounds=rounds), g, c, FaultModel(drop_probability=1.0), seed=1)
        runs.append(np.array([[*d.update(row, np.zeros(n)).lam[:1], d.state.mu[0]]
                              for row in grid]))
    np.testing.assert_array_equal(runs[0], runs[1])
    w_self = 1.0 - (n - 1) / n  # complete graph: W_0j = 1/n
    lam = mu = 0.0  # agent 0 alone, hearing only the initial 0 from its neighbours
    for t in range(40):
        lam, mu = _alone(mode, lam, mu, c / n - grid_a[t, 0], alpha, beta, gamma, rounds, w_self)
        assert abs(runs[0][t, 0] - lam) <= LAMBDA_ATOL
        assert abs(runs[0][t, 1] - mu) <= MU_ATOL
    assert runs[0][:, 0].max() > 0


@pytest.mark.parametrize("mode", ["paper", "pi", "atc", "averaging"])
def test_trivial_faults_equal_no_faults(mode):
    g = make_graph("small_world", 20, seed=0)
    rng = np.random.default_rng(0)
    a = DualDynamics(DualConfig(mode=mode), g, 15.0, None)
    b = DualDynamics(DualConfig(mode=mode), g, 15.0, FaultModel(silent=[(3, 4, 4)]))
    for _ in range(10):
        grid = rng.uniform(0, 2, 20)
        np.testing.assert_array_equal(a.update(grid, grid).lam, b.update(grid, grid).lam)


def test_faults_leave_modes_without_messages_alone():
    g = make_graph("ring", 5)
    grid = np.array([3.0, 0.0, 1.0, 0.5, 2.0])
    for mode in ("independent", "centralized"):
        a = DualDynamics(DualConfig(mode=mode), g, 4.0)
        b = DualDynamics(DualConfig(mode=mode), g, 4.0, FaultModel(drop_probability=1.0))
        np.testing.assert_array_equal(a.update(grid, grid).lam, b.update(grid, grid).lam)
