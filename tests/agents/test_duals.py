"""Dual dynamics of docs/equations.md: modes, closed forms, agreement, vectorised == loop."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from agents.duals import DUAL_MODES, DualConfig, DualDynamics
from agents.faults import FaultModel
from agents.graphs import GraphError, make_graph

# Named tolerances.
LAMBDA_ATOL = 1e-12  # vectorised vs agent-by-agent loop; closed forms over <= 100 steps
MU_ATOL = 1e-12
NU_ATOL = 1e-12
MEAN_ATOL = 1e-12  # mean of lambda across averaging rounds (sums of ~50 numbers <= 15)
AGREEMENT_ATOL = 1e-9  # spread of lambda once agreement is reached

STEPS_TO_AGREE = 3000


def _dyn(mode="consensus", graph=None, limit=7.0, faults=None, seed=0, **cfg):
    graph = make_graph("complete", 7) if graph is None else graph
    return DualDynamics(DualConfig(mode=mode, **cfg), graph, limit, faults, seed)


# --- configuration and validation ----------------------------------------------------------------


def test_config_validation_messages():
    with pytest.raises(ValueError, match="unknown mode 'gossip'; valid: consensus, averaging"):
        DualConfig(mode="gossip")
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        DualConfig(alpha=-0.1)
    with pytest.raises(ValueError, match="lambda_max must be > 0"):
        DualConfig(lambda_max=0.0)
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        DualConfig(rounds=0)
    with pytest.raises(ValueError, match="v1_window must be an integer >= 1"):
        DualConfig(v1_window=1.5)
    with pytest.raises(ValueError, match="nu_min <= 0 <= nu_max"):
        DualConfig(nu_min=1.0)
    with pytest.raises(ValueError, match="limit_kwh must be finite"):
        _dyn(limit=-1.0)


@pytest.mark.parametrize("mode", ["consensus", "averaging"])
def test_disconnected_graph_refused_for_graph_modes_unless_allowed(mode):
    g = nx.Graph()
    g.add_nodes_from(range(4))
    g.add_edges_from([(0, 1), (2, 3)])
    with pytest.raises(GraphError, match=r"disconnected communication graph \(2 components"):
        _dyn(mode, graph=g)
    g.graph["allow_disconnected"] = True
    d = _dyn(mode, graph=g)
    d.update(np.ones(4), np.zeros(4))


def test_independent_and_centralized_accept_any_graph():
    g = make_graph("random_geometric", 20, radius=0.01, allow_disconnected=True)
    g.graph["allow_disconnected"] = False
    for mode in ("independent", "centralized"):
        _dyn(mode, graph=g).update(np.ones(20), np.zeros(20))


def test_graph_nodes_must_be_agent_indices():
    g = nx.relabel_nodes(nx.path_graph(3), {0: "a", 1: "b", 2: "c"})
    with pytest.raises(GraphError, match="agent indices 0..2"):
        _dyn(graph=g)


def test_update_checks_shapes():
    d = _dyn()
    with pytest.raises(ValueError, match="grid_kwh: expected a scalar or 7 values"):
        d.update(np.ones(6), np.zeros(7))


def test_initial_state_is_zero():
    s = _dyn().state
    for arr in (s.lam, s.mu, s.nu):
        np.testing.assert_array_equal(arr, np.zeros(7))
    assert s.step == 0


# --- closed forms --------------------------------------------------------------------------------


def test_two_node_consensus_matches_closed_form():
    """Two agents, fixed V1, no bound active.

    With delta_i = c/2 - V1_i, s = lambda_1 + lambda_2, d = lambda_1 - lambda_2,
    m = (mu_1 - mu_2)/2 and sigma = mu_1 + mu_2 (conserved):
        s_k = s_0 - k alpha (delta_1 + delta_2 + sigma)
        u + i v, with u = d, v = sqrt(2 alpha / beta) (m + Delta/2), Delta = delta_1 - delta_2,
        is multiplied by (1 + i omega) each step, omega = sqrt(2 alpha beta).
    """
    alpha, beta, c = 0.02, 0.05, 4.0
    v1 = np.array([2.3, 1.6])
    lam0, mu0 = np.array([6.0, 7.5]), np.array([0.3, -0.1])
    d = _dyn(graph=make_graph("complete", 2), limit=c, alpha=alpha, beta=beta)
    d.reset(lam=lam0, mu=mu0)

    delta = c / 2 - v1
    big_delta = delta[0] - delta[1]
    sigma = mu0.sum()
    omega = np.sqrt(2 * alpha * beta)
    scale = np.sqrt(2 * alpha / beta)
    z0 = (lam0[0] - lam0[1]) + 1j * scale * ((mu0[0] - mu0[1]) / 2 + big_delta / 2)
    for k in range(1, 101):
        state = d.update(v1, np.zeros(2))
        s = lam0.sum() - k * alpha * (delta.sum() + sigma)
        z = (1 + 1j * omega) ** k * z0
        diff, m = z.real, z.imag / scale - big_delta / 2
        np.testing.assert_allclose(state.lam, [(s + diff) / 2, (s - diff) / 2],
                                   rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_allclose(state.mu, [sigma / 2 + m, sigma / 2 - m], rtol=0, atol=MU_ATOL)
        assert (state.lam > 0).all() and (state.lam < 15).all()  # no bound was active


def test_centralized_closed_form():
    alpha, c = 0.01, 5.0
    v1 = np.array([1.0, 2.0, 0.5, 2.5])  # total 6 > c
    d = _dyn("centralized", graph=make_graph("ring", 4), limit=c, alpha=alpha)
    for k in range(1, 50):
        state = d.update(v1, np.zeros(4))
        np.testing.assert_allclose(state.lam, np.full(4, k * alpha * (v1.sum() - c)),
                                   rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_array_equal(state.mu, np.zeros(4))


def test_nu_rises_with_unmet_demand_and_stays_in_bounds():
    d = _dyn("independent", eta=0.5, nu_min=-2.0, nu_max=3.0)
    r2 = np.array([-1.0, 1.0, 0.0, -10.0, 10.0, -0.2, 0.2])  # served - demand
    state = d.update(np.zeros(7), r2)
    np.testing.assert_allclose(state.nu, [0.5, -0.5, 0.0, 3.0, -2.0, 0.1, -0.1],
                               rtol=0, atol=NU_ATOL)


def test_v1_moving_average_over_window():
    alpha, c = 0.1, 0.0
    d = _dyn("independent", graph=make_graph("complete", 1), limit=c, alpha=alpha, v1_window=3)
    grid = [3.0, 0.0, 6.0, 9.0]
    expected_v1 = [3.0, 1.5, 3.0, 5.0]  # mean over the last min(t+1, 3) steps
    lam = 0.0
    for g, v1 in zip(grid, expected_v1, strict=True):
        state = d.update(np.array([g]), np.zeros(1))
        lam = min(max(lam + alpha * v1, 0.0), 15.0)
        np.testing.assert_allclose(state.lam, [lam], rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_allclose(d.v1_kwh, [v1], rtol=0, atol=LAMBDA_ATOL)


# --- agreement and the limit ---------------------------------------------------------------------

AGREE_GRAPHS = [("complete", 7), ("ring", 7), ("line", 7), ("two_clusters", 7),
                ("small_world", 20), ("random_geometric", 20)]


def _heavy_v1(n: int) -> np.ndarray:
    v1 = np.full(n, 0.5)
    v1[0] = 3.0  # one agent well above c/N
    return v1


@pytest.mark.parametrize("topology,n", AGREE_GRAPHS)
@pytest.mark.parametrize("per_agent_limit", [1.0, 0.3])  # sum V1 below c, above c
def test_consensus_reaches_a_common_lambda_with_fixed_v1(topology, n, per_agent_limit):
    v1 = _heavy_v1(n)
    c = n * per_agent_limit
    d = _dyn(graph=make_graph(topology, n, seed=1), limit=c, alpha=0.05, beta=0.05)
    for _ in range(STEPS_TO_AGREE):
        state = d.update(v1, np.zeros(n))
    assert np.ptp(state.lam) <= AGREEMENT_ATOL
    # the common value is the one the district's total calls for
    expected = 0.0 if v1.sum() < c else 15.0
    np.testing.assert_allclose(state.lam, expected, rtol=0, atol=AGREEMENT_ATOL)


@pytest.mark.parametrize("topology", ["complete", "ring", "two_clusters", "small_world"])
def test_independent_drives_heavy_agent_to_lambda_max_consensus_keeps_it_below(topology):
    n = 7
    v1 = _heavy_v1(n)  # total 6 kWh below c = 7 kWh, but agent 0 above c/N = 1 kWh
    g = make_graph(topology, n, seed=1)
    traj = {}
    for mode in ("independent", "consensus", "averaging"):
        d = _dyn(mode, graph=g, limit=7.0, alpha=0.05, beta=0.05)
        traj[mode] = np.array([d.update(v1, np.zeros(n)).lam for _ in range(STEPS_TO_AGREE)])
    assert traj["independent"][-1, 0] == 15.0
    np.testing.assert_array_equal(traj["independent"][-1, 1:], 0.0)
    assert traj["consensus"][:, 0].max() < 15.0
    assert traj["averaging"][:, 0].max() < 15.0


# --- averaging ------------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["two_clusters", "star", "small_world", "random_geometric"])
def test_averaging_preserves_the_mean_of_lambda(topology):
    n = 30
    g = make_graph(topology, n, seed=2)
    d = _dyn("averaging", graph=g, limit=0.0, alpha=0.0, rounds=1)
    w = d.metropolis_matrix().toarray()
    np.testing.assert_allclose(w, w.T, rtol=0, atol=0)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=0, atol=MEAN_ATOL)
    rng = np.random.default_rng(0)
    lam = rng.uniform(0.0, 15.0, n)
    d.reset(lam=lam)
    for _ in range(5):  # five single-round steps; alpha = 0 leaves only the rounds
        before = d.state.lam
        after = d.update(rng.random(n), np.zeros(n)).lam
        assert abs(after.mean() - before.mean()) <= MEAN_ATOL
    assert np.ptp(after) < np.ptp(lam)  # and it contracts the spread


# --- vectorised == agent-by-agent loop ------------------------------------------------------------

FAULTS = {
    "none": None,
    "drops": FaultModel(drop_probability=0.3),
    "all": FaultModel(drop_probability=0.2, delay_steps=2, silent=[(1, 3, 9), (4, 0, 5)]),
}


@pytest.mark.parametrize("faults", list(FAULTS))
@pytest.mark.parametrize("mode", DUAL_MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_update_equals_per_agent_loop(mode, faults, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    topology = ("random_geometric", "small_world", "two_clusters")[seed]
    g = make_graph(topology, n, seed=seed)
    cfg = dict(alpha=0.3, beta=0.2, eta=0.4, rounds=int(rng.integers(1, 4)),
               v1_window=int(rng.integers(1, 4)), lambda_max=3.0)
    fast = _dyn(mode, graph=g, limit=0.8 * n, faults=FAULTS[faults], seed=seed, **cfg)
    slow = _dyn(mode, graph=g, limit=0.8 * n, faults=FAULTS[faults], seed=seed, **cfg)
    for _ in range(25):
        grid, r2 = rng.uniform(0, 2, n), rng.normal(0, 1, n)
        a, b = fast.update(grid, r2), slow.reference_update(grid, r2)
        np.testing.assert_allclose(a.lam, b.lam, rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_allclose(a.mu, b.mu, rtol=0, atol=MU_ATOL)
        np.testing.assert_allclose(a.nu, b.nu, rtol=0, atol=NU_ATOL)
    assert 0 < a.lam.max() <= 3.0  # lambda moved, within its bounds


def test_same_seed_same_trajectory():
    g = make_graph("small_world", 25, seed=0)
    faults = FaultModel(drop_probability=0.5)
    runs = []
    for seed in (7, 7, 8):
        d = _dyn("consensus", graph=g, limit=20.0, faults=faults, seed=seed)
        rng = np.random.default_rng(0)
        runs.append([d.update(rng.random(25) * 2, np.zeros(25)).mu for _ in range(20)])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
