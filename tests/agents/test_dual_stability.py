"""Linear stability of every dual mode: eigenvalues of one step against closed forms.

With V1 held fixed and no bound active, one :meth:`DualDynamics.update` is an
affine map of the state (lambda, and mu for the modes that have one). Its matrix
is measured column by column, applying ``update`` to unit perturbations of an
interior point (lambda = lambda_max / 2, V1_i = c/N so that the point is fixed),
and its eigenvalues are compared with the closed forms of ``agents/consensus/duals.py``:

    paper        1 +- i sqrt(alpha beta l),  l over the eigenvalues of L_rw = I - D^-1 A
    pi           roots of z^2 - (2 - gamma l) z + (1 - gamma l + alpha beta l),
                 l over the eigenvalues of the Metropolis Laplacian L = I - W
    atc          (1 - l)^K
    averaging    (1 - l)^K
    independent  1 (N times)
    centralized  1 (the common value, the mean direction)

For paper and pi the l = 0 block ``[[1, -alpha], [0, 1]]`` is a Jordan block
(the mean of mu pushes the mean of lambda), whose double eigenvalue 1 numpy
resolves only to about sqrt(machine epsilon). Both modes keep a weighted sum of
mu constant (pi: ``sum_i mu_i``, L being symmetric; paper: ``sum_i deg_i mu_i``,
the left null vector of L_rw), which is 0 from the start; on that invariant
subspace the l = 0 block is the single eigenvalue 1 of the agreement mode, and
the comparison there is exact to EIG_ATOL.

W and L_rw are built here from networkx, independently of the sparse operators of
``agents/consensus/duals.py``.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from scipy.linalg import null_space
from scipy.optimize import linear_sum_assignment

from agents.consensus.duals import DUAL_MODES, DualConfig, DualDynamics, pi_gain_problem

EIG_ATOL = 1e-9  # measured vs closed-form eigenvalues (matrices of size <= 2 * 30)
MATRIX_ATOL = 1e-12  # measured W, L vs those built from networkx
ELL_ZERO_ATOL = 1e-12  # a graph eigenvalue this close to 0 is the agreement mode's exact 0
UNIT_CIRCLE_MARGIN = 1e-6  # "|z| < 1" means |z| <= 1 - this (the slowest modes here: ~1e-3)
AGREEMENT_ATOL = 1e-6  # spread of lambda once pi has agreed
FIXED_POINT_ATOL = 1e-9  # atc / averaging at their fixed point vs the closed form
MEAN_ATOL = 1e-12  # per-step move of the mean of lambda

LAMBDA_MAX = 15.0
MID = LAMBDA_MAX / 2
LIMIT_PER_AGENT = 1.0  # c/N, kWh


def _graphs() -> dict[str, nx.Graph]:
    """Seeded connected graphs, regular and irregular, nodes 0..N-1."""
    gs = {
        "star_7": nx.star_graph(6),
        "path_9": nx.path_graph(9),
        "ring_8": nx.cycle_graph(8),
        "complete_6": nx.complete_graph(6),
        "barabasi_albert_25": nx.barabasi_albert_graph(25, 2, seed=3),
        "watts_strogatz_20": nx.connected_watts_strogatz_graph(20, 4, 0.3, seed=4),
        "gnp_30": nx.gnp_random_graph(30, 0.15, seed=5),
        "lollipop_12": nx.lollipop_graph(5, 7),
    }
    for name, g in gs.items():
        assert nx.is_connected(g) and set(g.nodes) == set(range(g.number_of_nodes())), name
    return gs


GRAPHS = _graphs()
# (alpha, beta, gamma, K): pi needs alpha*beta < gamma <= 1
PARAMS = {
    "default": (0.1, 0.1, 0.5, 3),
    "underdamped": (0.3, 0.5, 0.5, 1),
    "gamma_one": (0.05, 0.2, 1.0, 2),
}


def _metropolis(g: nx.Graph) -> np.ndarray:
    n = g.number_of_nodes()
    w = np.zeros((n, n))
    for i, j in g.edges:
        w[i, j] = w[j, i] = 1.0 / (1.0 + max(g.degree[i], g.degree[j]))
    w[np.diag_indices(n)] = 1.0 - w.sum(axis=1)
    return w


def _random_walk_laplacian(g: nx.Graph) -> np.ndarray:
    a = nx.to_numpy_array(g, nodelist=range(g.number_of_nodes()))
    return np.eye(len(a)) - a / a.sum(axis=1, keepdims=True)


def _dyn(mode: str, g: nx.Graph, params: tuple) -> DualDynamics:
    alpha, beta, gamma, k = params
    cfg = DualConfig(mode=mode, alpha=alpha, beta=beta, gamma=gamma, rounds=k,
                     lambda_max=LAMBDA_MAX)
    n = g.number_of_nodes()
    return DualDynamics(cfg, g, LIMIT_PER_AGENT * n)


def _step_matrix(dyn: DualDynamics) -> np.ndarray:
    """The matrix of one update around lambda = MID, mu = 0, V1_i = c/N (a fixed point).

    State: lambda (N) then mu (N) for paper and pi; lambda for the others; the common
    lambda (1) for centralized. The update is affine, so unit perturbations give the
    matrix exactly up to rounding; every perturbed lambda stays inside (0, lambda_max).
    """
    n, mode = dyn.n, dyn.config.mode
    v1 = np.full(n, LIMIT_PER_AGENT)
    has_mu = mode in ("paper", "pi")
    dim = 1 if mode == "centralized" else (2 * n if has_mu else n)

    def apply(x: np.ndarray) -> np.ndarray:
        if mode == "centralized":
            dyn.reset(lam=MID + x[0])
            return dyn.update(v1, np.zeros(n)).lam[:1] - MID
        dyn.reset(lam=MID + x[:n], mu=x[n:] if has_mu else 0.0)
        s = dyn.update(v1, np.zeros(n))
        assert (s.lam > 0).all() and (s.lam < LAMBDA_MAX).all()  # no bound active
        return np.concatenate([s.lam - MID, s.mu]) if has_mu else s.lam - MID

    base = apply(np.zeros(dim))
    np.testing.assert_allclose(base, 0.0, rtol=0, atol=MATRIX_ATOL)  # a fixed point
    return np.column_stack([apply(e) - base for e in np.eye(dim)])


def _exact_zero(ells: np.ndarray) -> np.ndarray:
    """The agreement mode's l = 0 exactly: the closed forms take sqrt(l) near it, which
    would turn a rounding error of 1e-16 into 1e-8."""
    ells = np.where(np.abs(ells) <= ELL_ZERO_ATOL, 0.0, ells)
    assert (ells == 0).sum() == 1 and (ells >= 0).all()  # connected
    return ells


def _closed_form(mode: str, g: nx.Graph, params: tuple) -> np.ndarray:
    alpha, beta, gamma, k = params
    n = g.number_of_nodes()
    if mode == "paper":
        # real: L_rw is similar to the symmetric normalised Laplacian
        ells = _exact_zero(np.linalg.eigvals(_random_walk_laplacian(g)).real)
        root = np.sqrt(alpha * beta * ells).astype(complex)
        return np.concatenate([1 + 1j * root, 1 - 1j * root])
    ells = _exact_zero(np.linalg.eigvalsh(np.eye(n) - _metropolis(g)))
    if mode == "pi":
        return np.concatenate([np.roots([1.0, -(2 - gamma * ell), 1 - gamma * ell
                                         + alpha * beta * ell]) for ell in ells])
    if mode in ("atc", "averaging"):
        return ((1.0 - ells) ** k).astype(complex)
    if mode == "independent":
        return np.ones(n, dtype=complex)
    return np.ones(1, dtype=complex)  # centralized


def _invariant_restriction(mode: str, g: nx.Graph, m: np.ndarray) -> np.ndarray:
    """``m`` restricted to the subspace where the weighted sum of mu is 0 (paper, pi)."""
    n = g.number_of_nodes()
    weights = np.ones(n) if mode == "pi" else np.array([g.degree[i] for i in range(n)], float)
    functional = np.concatenate([np.zeros(n), weights])
    np.testing.assert_allclose(functional @ m, functional, rtol=0, atol=MATRIX_ATOL)  # invariant
    basis = null_space(functional[None, :])  # orthonormal, 2N x (2N - 1)
    return basis.T @ m @ basis


def _drop_one(values: np.ndarray, z: complex) -> np.ndarray:
    k = int(np.argmin(np.abs(values - z)))
    return np.delete(values, k)


def _assert_same_multiset(measured: np.ndarray, expected: np.ndarray) -> None:
    assert measured.shape == expected.shape
    cost = np.abs(measured[:, None] - expected[None, :])
    rows, cols = linear_sum_assignment(cost)
    assert cost[rows, cols].max() <= EIG_ATOL, (np.sort_complex(measured),
                                                 np.sort_complex(expected))


def _measured_and_expected(mode: str, gname: str, pname: str) -> tuple[np.ndarray, np.ndarray]:
    g, params = GRAPHS[gname], PARAMS[pname]
    dyn = _dyn(mode, g, params)
    m = _step_matrix(dyn)
    expected = _closed_form(mode, g, params)
    if mode in ("paper", "pi"):
        m = _invariant_restriction(mode, g, m)
        expected = _drop_one(expected, 1.0)  # one of the l = 0 pair is the mu-sum direction
    return np.linalg.eigvals(m), expected


# --- the measured operators are the Metropolis ones ---------------------------------------------


@pytest.mark.parametrize("gname", list(GRAPHS))
def test_operators_are_metropolis(gname):
    g = GRAPHS[gname]
    dyn = _dyn("pi", g, PARAMS["default"])
    w = _metropolis(g)
    np.testing.assert_allclose(dyn.metropolis_matrix().toarray(), w, rtol=0, atol=MATRIX_ATOL)
    lap = dyn.metropolis_laplacian().toarray()
    np.testing.assert_allclose(lap, np.eye(len(w)) - w, rtol=0, atol=MATRIX_ATOL)
    ells = np.linalg.eigvalsh(lap)
    # l in [0, 2): 0 once (connected), below 2 * max_i (1 - W_ii) < 2
    assert abs(ells[0]) <= EIG_ATOL < ells[1]
    assert ells[-1] <= 2 * (1 - w.diagonal()).max() + EIG_ATOL < 2


# --- eigenvalues vs closed forms ------------------------------------------------------------------


@pytest.mark.parametrize("pname", list(PARAMS))
@pytest.mark.parametrize("gname", list(GRAPHS))
@pytest.mark.parametrize("mode", DUAL_MODES)
def test_step_eigenvalues_match_closed_form(mode, gname, pname):
    measured, expected = _measured_and_expected(mode, gname, pname)
    _assert_same_multiset(measured, expected)


@pytest.mark.parametrize("pname", list(PARAMS))
@pytest.mark.parametrize("gname", list(GRAPHS))
def test_paper_is_unstable(gname, pname):
    """Every disagreement mode has |z| = sqrt(1 + alpha beta l) > 1."""
    alpha, beta, _, _ = PARAMS[pname]
    measured, _ = _measured_and_expected("paper", gname, pname)
    ells = np.linalg.eigvals(_random_walk_laplacian(GRAPHS[gname])).real
    assert np.abs(measured).max() == pytest.approx(np.sqrt(1 + alpha * beta * ells.max()),
                                                   abs=EIG_ATOL)
    assert np.abs(measured).max() > 1 + UNIT_CIRCLE_MARGIN
    # exactly one eigenvalue on the unit circle (the agreement mode); all the others outside
    assert (np.abs(np.abs(measured) - 1) <= EIG_ATOL).sum() == 1
    assert (np.abs(measured) > 1 + UNIT_CIRCLE_MARGIN).sum() == len(measured) - 1


@pytest.mark.parametrize("mode", ["pi", "atc", "averaging"])
@pytest.mark.parametrize("pname", list(PARAMS))
@pytest.mark.parametrize("gname", list(GRAPHS))
def test_stable_modes_contract_every_disagreement_mode(mode, gname, pname):
    measured, _ = _measured_and_expected(mode, gname, pname)
    on_circle = np.abs(measured - 1.0) <= EIG_ATOL
    assert on_circle.sum() == 1  # the agreement mode, eigenvalue 1
    assert np.abs(measured[~on_circle]).max() <= 1 - UNIT_CIRCLE_MARGIN


@pytest.mark.parametrize("mode", ["independent", "centralized"])
def test_modes_without_messages_have_eigenvalue_one(mode):
    measured, _ = _measured_and_expected(mode, "barabasi_albert_25", "default")
    np.testing.assert_allclose(measured, 1.0, rtol=0, atol=EIG_ATOL)
    assert len(measured) == (25 if mode == "independent" else 1)


def test_jury_region_of_pi():
    """Both roots of z^2 - (2 - g l) z + (1 - g l + ab l) inside the unit circle for every
    l in (0, 2) iff 0 < ab < g <= 1 + ab/2; DualConfig asks for the sub-range ab < g <= 1."""
    ells = np.linspace(1e-4, 2 - 1e-9, 2001)

    def worst(ab: float, g: float) -> float:
        return max(np.abs(np.roots([1.0, -(2 - g * ell), 1 - g * ell + ab * ell])).max()
                   for ell in ells)

    for ab, g in [(0.01, 0.5), (0.01, 1.0), (0.2, 1.09), (0.01, 0.02)]:
        assert worst(ab, g) < 1.0, (ab, g)  # inside: 1 + ab/2 = 1.005, 1.1
    for ab, g in [(0.01, 0.009), (0.01, 1.02), (0.2, 1.2)]:
        assert worst(ab, g) > 1.0, (ab, g)  # below ab, above 1 + ab/2
    assert worst(0.0, 0.5) == pytest.approx(1.0, abs=EIG_ATOL)  # no integral action: a root at 1
    assert pi_gain_problem(0.1, 0.1, 0.5) == ""
    assert pi_gain_problem(0.1, 0.1, 1.0) == ""
    assert "alpha*beta < gamma <= 1" in pi_gain_problem(0.1, 0.1, 0.01)
    assert "alpha*beta < gamma <= 1" in pi_gain_problem(0.1, 0.1, 1.001)


# --- fixed V1, no closed loop ---------------------------------------------------------------------


def _balanced_v1(n: int, seed: int) -> np.ndarray:
    """V1 around c/N with sum V1 = c exactly (an interior solution)."""
    rng = np.random.default_rng(seed)
    dev = rng.uniform(-0.3, 0.3, n)
    dev -= dev.mean()
    dev[-1] = -dev[:-1].sum()
    return LIMIT_PER_AGENT + dev


def _run(mode: str, g: nx.Graph, v1: np.ndarray, steps: int, params=PARAMS["default"]):
    dyn = _dyn(mode, g, params)
    dyn.reset(lam=MID)
    n = g.number_of_nodes()
    spread = [np.ptp(dyn.update(v1, np.zeros(n)).lam) for _ in range(steps)]
    return dyn.state, np.array(spread)


@pytest.mark.parametrize("gname", ["star_7", "path_9", "barabasi_albert_25", "gnp_30"])
def test_pi_agrees_on_the_initial_mean(gname):
    g = GRAPHS[gname]
    n = g.number_of_nodes()
    v1 = _balanced_v1(n, seed=n)
    state, spread = _run("pi", g, v1, steps=4000)
    assert spread[-1] < AGREEMENT_ATOL
    assert spread.max() > 0.01  # it did disagree on the way
    # sum V1 = c and sum mu = 0: the mean never moves, so the common value is the initial one
    np.testing.assert_allclose(state.lam, MID, rtol=0, atol=AGREEMENT_ATOL)
    np.testing.assert_allclose(state.mu, -(LIMIT_PER_AGENT - v1), rtol=0, atol=1e-5)
    assert abs(state.mu.sum()) <= 1e-9


@pytest.mark.parametrize("gname", ["star_7", "path_9", "barabasi_albert_25", "gnp_30"])
def test_atc_and_averaging_settle_at_their_closed_form_spread(gname):
    """No integral action: the fixed points keep a spread, averaging's
    -alpha (I - W^K)^+ delta, atc's -alpha (I - W^K)^+ W^K delta (delta = c/N - V1)."""
    g = GRAPHS[gname]
    n = g.number_of_nodes()
    alpha, _, _, k = PARAMS["default"]
    v1 = _balanced_v1(n, seed=n)
    delta = LIMIT_PER_AGENT - v1
    wk = np.linalg.matrix_power(_metropolis(g), k)
    pinv = np.linalg.pinv(np.eye(n) - wk)
    expected = {"averaging": MID - alpha * pinv @ delta, "atc": MID - alpha * pinv @ wk @ delta}
    final = {}
    for mode in ("atc", "averaging"):
        state, spread = _run(mode, g, v1, steps=4000)
        np.testing.assert_allclose(state.lam, expected[mode], rtol=0, atol=FIXED_POINT_ATOL)
        assert abs(spread[-1] - spread[-2]) <= FIXED_POINT_ATOL  # settled
        final[mode] = spread[-1]
    assert 0 < final["atc"] < final["averaging"]


@pytest.mark.parametrize("gname", ["star_7", "path_9", "barabasi_albert_25", "gnp_30"])
def test_paper_diverges(gname):
    g = GRAPHS[gname]
    n = g.number_of_nodes()
    v1 = _balanced_v1(n, seed=n)
    _, spread = _run("paper", g, v1, steps=3000)
    # the oscillation grows until the bounds stop it
    assert spread[-500:].max() > 10 * spread[:50].max()
    assert spread[-500:].max() > 0.5 * LAMBDA_MAX


@pytest.mark.parametrize("mode", ["pi", "atc", "averaging", "independent", "centralized"])
def test_mean_of_lambda_moves_like_the_centralized_step(mode):
    """alpha (sum V1 - c) / N per step for every mode without a drifting mu."""
    g = GRAPHS["barabasi_albert_25"]
    n = g.number_of_nodes()
    alpha = PARAMS["default"][0]
    dyn = _dyn(mode, g, PARAMS["default"])
    dyn.reset(lam=MID)
    rng = np.random.default_rng(0)
    for _ in range(30):
        v1 = rng.uniform(0.0, 2.0 * LIMIT_PER_AGENT, n)
        before = dyn.state.lam.mean()
        after = dyn.update(v1, np.zeros(n)).lam
        assert (after > 0).all() and (after < LAMBDA_MAX).all()
        assert after.mean() - before == pytest.approx(alpha * (v1.sum() - LIMIT_PER_AGENT * n)
                                                      / n, abs=MEAN_ATOL)
