"""Dual dynamics of docs/equations.md: modes, closed forms, agreement, vectorised == loop."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from agents.consensus.duals import DUAL_MODES, DualConfig, DualDynamics
from agents.consensus.faults import FaultModel
from agents.consensus.graphs import GraphError, make_graph
from tests.agents.duals_reference import ReferenceDuals

# Named tolerances.
LAMBDA_ATOL = 1e-12  # vectorised vs agent-by-agent loop; closed forms over <= 100 steps
MU_ATOL = 1e-12
NU_ATOL = 1e-12
MEAN_ATOL = 1e-12  # mean of lambda across averaging rounds (sums of ~50 numbers <= 15)
AGREEMENT_ATOL = 1e-9  # spread of lambda once agreement is reached

STEPS_TO_AGREE = 6000  # pi at alpha = beta = 0.05 closes a gap of 1e-9 in ~4000 steps
GRAPH_MODES = ("paper", "pi", "atc", "averaging")  # the modes that exchange messages


def _dyn(mode="pi", graph=None, limit=7.0, faults=None, seed=0, **cfg):
    graph = make_graph("complete", 7) if graph is None else graph
    return DualDynamics(DualConfig(mode=mode, **cfg), graph, limit, faults, seed)


# --- configuration and validation ----------------------------------------------------------------


def test_config_validation_messages():
    with pytest.raises(ValueError, match="DualConfig.mode: unknown mode 'gossip'; valid: paper, "
                                         "pi, atc, averaging, independent, centralized"):
        DualConfig(mode="gossip")
    with pytest.raises(ValueError, match=r"DualConfig.mode: 'consensus' was renamed 'paper' \(the "
                                         r"paper's literal eqs. 10-11, unstable\); the stable "
                                         "default is 'pi'"):
        DualConfig(mode="consensus")
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        DualConfig(gamma=-0.5)
    with pytest.raises(ValueError, match="gamma must be finite"):
        DualConfig(gamma=float("nan"))
    for bad in (dict(gamma=1.01), dict(gamma=0.01), dict(alpha=1.0, beta=0.6, gamma=0.6)):
        with pytest.raises(ValueError, match=r"DualConfig.gamma: mode 'pi' is stable only for "
                                             r"alpha\*beta < gamma <= 1, got gamma="):
            DualConfig(**bad)
    for mode in (m for m in DUAL_MODES if m != "pi"):  # gamma is pi's alone
        DualConfig(mode=mode, gamma=5.0)
    assert DualConfig().mode == "pi" and DualConfig().gamma == 0.5
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


@pytest.mark.parametrize("mode", GRAPH_MODES)
def test_disconnected_graph_refused_for_graph_modes_unless_allowed(mode):
    g = nx.Graph()
    g.add_nodes_from(range(4))
    g.add_edges_from([(0, 1), (2, 3)])
    with pytest.raises(GraphError, match=r"disconnected communication graph \(2 components"):
        _dyn(mode, graph=g)
    g.graph["allow_disconnected"] = True
    d = _dyn(mode, graph=g, limit=2.0)
    # allowed: each component runs on its own, exactly as two separate fleets of two
    # (the per-agent limit c/N is the same 0.5); component {0, 1} is over it, {2, 3} under
    apart = [_dyn(mode, graph=nx.complete_graph(2), limit=1.0) for _ in range(2)]
    rng = np.random.default_rng(1)
    for _ in range(20):
        v1 = np.concatenate([0.9 + 0.1 * rng.random(2), 0.1 * rng.random(2)])
        both = d.update(v1, np.zeros(4))
        alone = np.concatenate([a.update(v1[k:k + 2], np.zeros(2)).lam
                                for a, k in zip(apart, (0, 2), strict=True)])
        np.testing.assert_allclose(both.lam, alone, rtol=0, atol=LAMBDA_ATOL)
    assert (both.lam[:2] > 0).all() and (both.lam[2:] < both.lam[:2].min()).all()


def test_independent_and_centralized_accept_any_graph():
    """Neither mode sends messages, so a disconnected graph is accepted, and the step is
    the mode's own: per agent alpha (V1_i - c/N), or alpha (sum V1 - c)/N for all."""
    g = make_graph("random_geometric", 20, radius=0.01, allow_disconnected=True)
    g.graph["allow_disconnected"] = False
    assert not nx.is_connected(g)
    v1 = np.linspace(0.0, 2.0, 20)  # c/N = 0.35
    state = _dyn("independent", graph=g, alpha=0.1).update(v1, np.zeros(20))
    np.testing.assert_allclose(state.lam, np.clip(0.1 * (v1 - 0.35), 0.0, None), atol=1e-15)
    state = _dyn("centralized", graph=g, alpha=0.1).update(v1, np.zeros(20))
    np.testing.assert_allclose(state.lam, 0.1 * (v1.sum() - 7.0) / 20, atol=1e-15)


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


def test_two_node_paper_matches_closed_form():
    """The paper's eqs. (10)-(11) on two agents, fixed V1, no bound active.

    With delta_i = c/2 - V1_i, s = lambda_1 + lambda_2, d = lambda_1 - lambda_2,
    m = (mu_1 - mu_2)/2 and sigma = mu_1 + mu_2 (conserved):
        s_k = s_0 - k alpha (delta_1 + delta_2 + sigma)
        u + i v, with u = d, v = sqrt(2 alpha / beta) (m + Delta/2), Delta = delta_1 - delta_2,
        is multiplied by (1 + i omega) each step, omega = sqrt(2 alpha beta).
    """
    alpha, beta, c = 0.02, 0.05, 4.0
    v1 = np.array([2.3, 1.6])
    lam0, mu0 = np.array([6.0, 7.5]), np.array([0.3, -0.1])
    d = _dyn("paper", graph=make_graph("complete", 2), limit=c, alpha=alpha, beta=beta)
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
    """The common lambda moves by alpha (sum V1 - c) / N per step (not N times that)."""
    alpha, c, n = 0.01, 5.0, 4
    v1 = np.array([1.0, 2.0, 0.5, 2.5])  # total 6 > c
    d = _dyn("centralized", graph=make_graph("ring", n), limit=c, alpha=alpha)
    for k in range(1, 50):
        state = d.update(v1, np.zeros(n))
        np.testing.assert_allclose(state.lam, np.full(n, k * alpha * (v1.sum() - c) / n),
                                   rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_array_equal(state.mu, np.zeros(n))


def test_centralized_step_is_the_mean_of_the_independent_steps():
    """One step of 0.1 * (3 - 7) / 7 downwards from 1: would be 0.4 with the old N-times step."""
    alpha, c, n = 0.1, 3.0, 7
    v1 = np.ones(n)  # sum 7 > c = 3: lambda rises
    cen = _dyn("centralized", graph=make_graph("ring", n), limit=c, alpha=alpha)
    ind = _dyn("independent", graph=make_graph("ring", n), limit=c, alpha=alpha)
    cen.reset(lam=1.0)
    ind.reset(lam=1.0)
    a, b = cen.update(v1, np.zeros(n)).lam, ind.update(v1, np.zeros(n)).lam
    np.testing.assert_allclose(a, 1.0 + alpha * (v1.sum() - c) / n, rtol=0, atol=LAMBDA_ATOL)
    np.testing.assert_allclose(a, b.mean(), rtol=0, atol=LAMBDA_ATOL)
    assert a[0] - 1.0 == pytest.approx(4.0 / 70.0, abs=LAMBDA_ATOL)


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
@pytest.mark.parametrize("mode", ["paper", "pi"])
def test_paper_and_pi_reach_a_common_bound_with_fixed_v1(mode, topology, n, per_agent_limit):
    """sum V1 != c: the common value is a bound (paper gets there only through the bounds)."""
    v1 = _heavy_v1(n)
    c = n * per_agent_limit
    d = _dyn(mode, graph=make_graph(topology, n, seed=1), limit=c, alpha=0.05, beta=0.05)
    for _ in range(STEPS_TO_AGREE):
        state = d.update(v1, np.zeros(n))
    assert np.ptp(state.lam) <= AGREEMENT_ATOL
    # the common value is the one the district's total calls for
    expected = 0.0 if v1.sum() < c else 15.0
    np.testing.assert_allclose(state.lam, expected, rtol=0, atol=AGREEMENT_ATOL)


@pytest.mark.parametrize("topology", ["complete", "ring", "two_clusters", "small_world"])
def test_independent_drives_heavy_agent_to_lambda_max_graph_modes_keep_it_below(topology):
    n = 7
    v1 = _heavy_v1(n)  # total 6 kWh below c = 7 kWh, but agent 0 above c/N = 1 kWh
    g = make_graph(topology, n, seed=1)
    traj = {}
    for mode in ("independent", *GRAPH_MODES):
        d = _dyn(mode, graph=g, limit=7.0, alpha=0.05, beta=0.05)
        traj[mode] = np.array([d.update(v1, np.zeros(n)).lam for _ in range(3000)])
    assert traj["independent"][-1, 0] == 15.0
    np.testing.assert_array_equal(traj["independent"][-1, 1:], 0.0)
    for mode in GRAPH_MODES:
        assert traj[mode][:, 0].max() < 15.0, mode


def test_pi_removes_the_star_bias_of_paper():
    """A 7-agent star whose hub alone has V1 above c/N, sum V1 < c: paper's 1/deg_i
    neighbour mean lets sum mu drift and takes every lambda to lambda_max; pi's symmetric
    Laplacian keeps sum mu = 0 and takes them all to 0, as a regular graph does."""
    n = 7
    v1 = _heavy_v1(n)
    end = {}
    for mode in ("paper", "pi"):
        d = _dyn(mode, graph=make_graph("star", n), limit=7.0, alpha=0.05, beta=0.05)
        for _ in range(STEPS_TO_AGREE):
            state = d.update(v1, np.zeros(n))
        end[mode] = state
    np.testing.assert_array_equal(end["paper"].lam, 15.0)
    np.testing.assert_allclose(end["pi"].lam, 0.0, rtol=0, atol=AGREEMENT_ATOL)
    assert abs(end["pi"].mu.sum()) <= AGREEMENT_ATOL


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
    slow = ReferenceDuals(DualConfig(mode=mode, **cfg), g, 0.8 * n, FAULTS[faults], seed)
    for _ in range(25):
        grid, r2 = rng.uniform(0, 2, n), rng.normal(0, 1, n)
        a, b = fast.update(grid, r2), slow.update(grid, r2)
        np.testing.assert_allclose(a.lam, b.lam, rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_allclose(a.mu, b.mu, rtol=0, atol=MU_ATOL)
        np.testing.assert_allclose(a.nu, b.nu, rtol=0, atol=NU_ATOL)
    assert 0 < a.lam.max() <= 3.0  # lambda moved, within its bounds


@pytest.mark.parametrize("mode", GRAPH_MODES)
def test_same_seed_same_trajectory(mode):
    g = make_graph("small_world", 25, seed=0)
    faults = FaultModel(drop_probability=0.5)
    runs = []
    for seed in (7, 7, 8):
        d = _dyn(mode, graph=g, limit=20.0, faults=faults, seed=seed)
        rng = np.random.default_rng(0)
        runs.append([np.concatenate([s.lam, s.mu]) for s in
                     (d.update(rng.random(25) * 2, np.zeros(25)) for _ in range(20))])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])



# --- faults in every graph mode, against a dense model -------------------------------------------


def _dense_step(mode, g, cfg, limit, lam, mu, v1, hear):
    """One step of docs/equations.md with dense matrices; ``hear(x)`` is one exchange:
    it returns, per sender j, the value of j its receivers hold afterwards (with no
    drops every receiver of j holds the same value)."""
    n = len(lam)
    a = nx.to_numpy_array(g, nodelist=range(n))
    deg = a.sum(axis=1)
    w = np.where(a > 0, 1.0 / (1.0 + np.maximum.outer(deg, deg)), 0.0)
    w_deg = w.sum(axis=1)
    delta = limit / n - v1
    if mode == "paper":
        nb_mean = (a @ hear(lam)) / deg
        return (np.clip(lam - cfg.alpha * (delta + mu), 0, cfg.lambda_max),
                mu + cfg.beta * (lam - nb_mean))
    if mode == "pi":
        lap = w_deg * lam - w @ hear(lam)
        return (np.clip(lam - cfg.alpha * (delta + mu) - cfg.gamma * lap, 0, cfg.lambda_max),
                mu + cfg.beta * lap)

    def combine(x):
        for _ in range(cfg.rounds):
            x = (1 - w_deg) * x + w @ hear(x)
        return x

    if mode == "atc":
        return np.clip(combine(lam - cfg.alpha * delta), 0, cfg.lambda_max), mu
    return np.clip(combine(lam) - cfg.alpha * delta, 0, cfg.lambda_max), mu  # averaging


FAULT_CFG = dict(alpha=0.2, beta=0.1, gamma=0.6, rounds=2, lambda_max=5.0)


@pytest.mark.parametrize("mode", GRAPH_MODES)
@pytest.mark.parametrize("delay", [1, 3])
def test_delay_delivers_values_sent_delay_steps_earlier_in_every_graph_mode(mode, delay):
    n, limit = 9, 8.0
    g = make_graph("small_world", n, seed=3)
    d = _dyn(mode, graph=g, limit=limit, faults=FaultModel(delay_steps=delay), **FAULT_CFG)
    cfg = d.config
    exchanges = cfg.rounds if mode in ("atc", "averaging") else 1
    sent: list[np.ndarray] = []

    def hear(x):  # the exchange delay * exchanges before this one, else the initial 0
        sent.append(x.copy())
        back = len(sent) - 1 - delay * exchanges
        return sent[back] if back >= 0 else np.zeros(n)

    rng = np.random.default_rng(delay)
    lam, mu = np.zeros(n), np.zeros(n)
    for _ in range(20):
        v1 = rng.uniform(0, 2, n)
        lam, mu = _dense_step(mode, g, cfg, limit, lam, mu, v1, hear)
        state = d.update(v1, np.zeros(n))
        np.testing.assert_allclose(state.lam, lam, rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_allclose(state.mu, mu, rtol=0, atol=MU_ATOL)
    assert state.lam.max() > 0


@pytest.mark.parametrize("mode", GRAPH_MODES)
def test_silent_agent_is_heard_at_its_last_value_in_every_graph_mode(mode):
    n, limit, silent = 9, 8.0, (2, 4, 11)  # agent 2 sends nothing at steps 4..10
    g = make_graph("small_world", n, seed=3)
    d = _dyn(mode, graph=g, limit=limit, faults=FaultModel(silent=[silent]), **FAULT_CFG)
    held = np.zeros(n)
    clock = [0]  # the step being computed

    def hear(x):
        quiet = silent[1] <= clock[0] < silent[2]
        held[:] = np.where(np.arange(n) == silent[0], held if quiet else x, x)
        return held.copy()

    rng = np.random.default_rng(0)
    lam, mu = np.zeros(n), np.zeros(n)
    differs = False
    free = _dyn(mode, graph=g, limit=limit, **FAULT_CFG)  # the same run without faults
    for step in range(16):
        clock[0] = step
        v1 = rng.uniform(0, 2, n)
        lam, mu = _dense_step(mode, g, d.config, limit, lam, mu, v1, hear)
        state = d.update(v1, np.zeros(n))
        np.testing.assert_allclose(state.lam, lam, rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_allclose(state.mu, mu, rtol=0, atol=MU_ATOL)
        differs |= not np.allclose(free.update(v1, np.zeros(n)).lam, state.lam)
    assert differs  # the silence mattered


@pytest.mark.parametrize("mode", GRAPH_MODES)
def test_drops_leave_the_last_received_value_in_every_graph_mode(mode):
    """Half the messages lost: the vectorised step equals the loop (same random draws), the
    lambdas stay in bounds, and the run differs from the loss-free one."""
    n, limit = 12, 10.0
    g = make_graph("two_clusters", n)
    faults = FaultModel(drop_probability=0.5)
    fast = _dyn(mode, graph=g, limit=limit, faults=faults, seed=4, **FAULT_CFG)
    slow = ReferenceDuals(DualConfig(mode=mode, **FAULT_CFG), g, limit, faults, 4)
    free = _dyn(mode, graph=g, limit=limit, **FAULT_CFG)
    rng = np.random.default_rng(1)
    for _ in range(30):
        v1 = rng.uniform(0, 2, n)
        a, b = fast.update(v1, np.zeros(n)), slow.update(v1, np.zeros(n))
        c = free.update(v1, np.zeros(n))
        np.testing.assert_allclose(a.lam, b.lam, rtol=0, atol=LAMBDA_ATOL)
        np.testing.assert_allclose(a.mu, b.mu, rtol=0, atol=MU_ATOL)
    assert (a.lam >= 0).all() and (a.lam <= FAULT_CFG["lambda_max"]).all()
    assert not np.allclose(a.lam, c.lam)


# --- bounds and boundaries (written after mutation testing, ``make mutation``) -------------


@pytest.mark.parametrize("mode", DUAL_MODES)
def test_lambda_saturates_at_lambda_max_in_every_mode(mode):
    """Far over the limit for long enough, every mode's lambda stops at lambda_max."""
    d = _dyn(mode, limit=0.7, lambda_max=2.0, alpha=0.5, gamma=0.5, beta=0.5)
    for _ in range(400):
        state = d.update(np.full(7, 5.0), np.zeros(7))
    np.testing.assert_allclose(state.lam, 2.0, rtol=0, atol=LAMBDA_ATOL)
    assert (state.lam <= 2.0).all()


def test_an_isolated_agent_keeps_its_own_lambda():
    """An agent with no neighbours (allowed) updates like an independent one."""
    g = nx.complete_graph(3)
    g.add_node(3)
    g.graph["allow_disconnected"] = True
    for mode in GRAPH_MODES:
        d = _dyn(mode, graph=g, limit=4.0)
        alone = _dyn("independent", graph=nx.empty_graph(1), limit=1.0)
        for k in range(10):
            v1 = np.array([0.2, 0.3, 0.4, 1.0 + 0.1 * k])
            lam = d.update(v1, np.zeros(4)).lam
            np.testing.assert_allclose(lam[3], alone.update(v1[3:], np.zeros(1)).lam[0],
                                       rtol=0, atol=LAMBDA_ATOL, err_msg=mode)


def test_configuration_boundaries_are_inclusive_where_documented():
    assert DualConfig(mode="pi", alpha=0.05, beta=1.0, gamma=1.0).gamma == 1.0  # <= 1
    with pytest.raises(ValueError, match=r"alpha\*beta=0\.5 \(alpha=1, beta=0\.5\)"):
        DualConfig(mode="pi", alpha=1.0, beta=0.5, gamma=0.4)
    assert DualConfig(lambda_max=0.5).lambda_max == 0.5  # any positive value
    assert DualConfig(nu_min=0.0, nu_max=1.0).nu_min == 0.0  # 0 may be either end
    assert DualConfig(nu_min=-1.0, nu_max=0.0).nu_max == 0.0
    for field in ("lambda_max", "nu_min", "nu_max"):
        with pytest.raises(ValueError, match=field):
            DualConfig(**{field: float("nan")})


def test_reset_accepts_the_bounds_and_names_what_is_outside():
    d = _dyn("pi", lambda_max=3.0, nu_min=-1.0, nu_max=2.0)
    d.reset(lam=np.full(7, 3.0), nu=np.full(7, -1.0))
    assert d.state.lam.tolist() == [3.0] * 7 and d.state.nu.tolist() == [-1.0] * 7
    d.reset(nu=np.full(7, 2.0))
    assert d.state.nu.tolist() == [2.0] * 7 and d.state.lam.tolist() == [0.0] * 7
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 3\.0\]"):
        d.reset(lam=np.full(7, 3.5))
    with pytest.raises(ValueError, match="nu"):
        d.reset(nu=np.full(7, 2.5))
    for name, kwargs in (("lam", {"lam": np.ones(3)}), ("mu", {"mu": np.ones(3)}),
                         ("nu", {"nu": np.ones(3)})):
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            d.reset(**kwargs)
    with pytest.raises(ValueError, match=r"^r2_kwh\b"):
        d.update(np.ones(7), np.ones(3))


@pytest.mark.parametrize("mode", DUAL_MODES)
@pytest.mark.parametrize("faulty", [False, True])
def test_a_restored_snapshot_continues_bit_for_bit(mode, faulty):
    """What --resume relies on: restore(snapshot()) into a fresh DualDynamics built the same
    way continues exactly, the moving V1 window and the message faults' RNG included."""
    faults = FaultModel(drop_probability=0.3, delay_steps=2) if faulty else None
    cfg = {**FAULT_CFG, "v1_window": 4}
    rng = np.random.default_rng(5)
    inputs = [(rng.uniform(0.5, 2.0, 7), rng.uniform(-0.5, 0.0, 7)) for _ in range(40)]
    first = _dyn(mode, faults=faults, seed=3, **cfg)
    for grid, r2 in inputs[:20]:
        first.update(grid, r2)
    snap = first.snapshot()
    assert all(isinstance(v, np.ndarray) for v in snap.values())
    second = _dyn(mode, faults=faults, seed=3, **cfg)
    second.restore(snap)
    assert second.state.lam.tolist() == first.state.lam.tolist()
    for grid, r2 in inputs[20:]:
        a, b = first.update(grid, r2), second.update(grid, r2)
        for x, y in ((a.lam, b.lam), (a.mu, b.mu), (a.nu, b.nu)):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(first.v1_kwh, second.v1_kwh)


def test_a_snapshot_of_another_fleet_is_refused():
    snap = _dyn("pi").snapshot()
    small = _dyn("pi", graph=make_graph("complete", 5), limit=5.0)
    with pytest.raises(ValueError, match=r"dual snapshot 'lam': shape \(7,\), expected \(5,\)"):
        small.restore(snap)
    faulty = _dyn("pi", faults=FaultModel(drop_probability=0.3), seed=1)
    with pytest.raises(ValueError, match="message-fault channel state does not match"):
        faulty.restore(snap)


def test_v1_is_the_mean_over_the_moving_window():
    """V1 of step t: the mean grid energy of the last min(t, v1_window) steps."""
    d = _dyn("independent", graph=nx.empty_graph(2), limit=2.0, v1_window=3)
    for grid, want in ((1.0, 1.0), (2.0, 1.5), (3.0, 2.0), (4.0, 3.0), (8.0, 5.0)):
        d.update(np.array([grid, 2 * grid]), np.zeros(2))
        np.testing.assert_allclose(d.v1_kwh, [want, 2 * want], rtol=0, atol=1e-15)
    d.reset()  # a reset forgets the window
    d.update(np.array([6.0, 6.0]), np.zeros(2))
    np.testing.assert_allclose(d.v1_kwh, [6.0, 6.0], rtol=0, atol=1e-15)
