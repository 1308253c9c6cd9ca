"""Grid-constraint multipliers: excess signs, validation, closed loop, resume, weights."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from agents.consensus.grid_constraint import GridConstraint, normalised_excess
from agents.consensus.grid_multipliers import GRID_MULTIPLIER_MODES, make_grid_multipliers
from agents.consensus.operator_multipliers import OperatorMultipliers
from agents.consensus.peer_multipliers import PeerMultipliers
from grid_models.constraint_probe import ConstraintSpec, constraint_weights

LAMBDA_MAX = 15.0
MU_MAX = 20.0
#: Closed loop: after this many steps the loading is within this many %-points of the limit.
LOOP_STEPS = 300
LOADING_TOL_PP = 1e-3
VOLTAGE_TOL_PU = 1e-6

# The linear plant: loading = BASE + sum_i S_i p_i, p_i = max(P0_i - K lambda_eff_i, 0).
S_PP_PER_KW = np.array([0.8, 0.6, 0.4, 0.0])  # building 3 is not downstream
P0_KW = np.array([10.0, 8.0, 6.0, 5.0])
K_KW_PER_LAMBDA = 0.5
BASE_PP = 40.0
LAM = np.full(4, 2.0)  # the district duals' lambda, held fixed
# at mu = 0 the loading is 53.4 %; at lambda_eff = lambda_max for everyone downstream 42.3 %


def constraint(kind="loading_max", limit=50.0, scale=50.0, weights=(1.0, 0.5), name="c"):
    return GridConstraint(name=name, kind=kind, limit=limit, scale=scale,
                          weights=np.asarray(weights))


# -- normalised excess and validation --------------------------------------------------


@pytest.mark.parametrize("kind, limit, scale, measured, expected", [
    ("loading_max", 80.0, 80.0, 100.0, 0.25),
    ("loading_max", 80.0, 80.0, 60.0, -0.25),
    ("peak_kw_max", 200.0, 200.0, 250.0, 0.25),
    ("voltage_max", 1.05, 0.05, 1.06, 0.2),
    ("voltage_max", 1.05, 0.05, 1.00, -1.0),
    ("voltage_min", 0.95, 0.05, 0.94, 0.2),   # below the minimum: violated
    ("voltage_min", 0.95, 0.05, 1.00, -1.0),
])
def test_normalised_excess_signs(kind, limit, scale, measured, expected):
    c = constraint(kind=kind, limit=limit, scale=scale)
    assert normalised_excess(c, measured) == pytest.approx(expected)
    assert np.isnan(normalised_excess(c, np.nan))
    ops = OperatorMultipliers([c], alpha=1.0, mu_max=MU_MAX)
    np.testing.assert_allclose(ops.excess([measured]), [expected])


@pytest.mark.parametrize("changes, field", [
    ({"name": ""}, "name"),
    ({"kind": "loading_min"}, "kind"),
    ({"limit": np.nan}, "limit"),
    ({"limit": "high"}, "limit"),
    ({"kind": "voltage_max", "limit": 0.0}, "limit"),
    ({"scale": 0.0}, "scale"),
    ({"scale": np.inf}, "scale"),
    ({"weights": np.zeros(3)}, "weights"),
    ({"weights": np.ones((2, 2))}, "weights"),
    ({"weights": np.array([1.0, np.nan])}, "weights"),
    ({"weights": np.array([])}, "weights"),
])
def test_constraint_validation_names_the_field(changes, field):
    args = {"name": "trafo 0 loading", "kind": "loading_max", "limit": 80.0, "scale": 80.0,
            "weights": np.ones(3)} | changes
    with pytest.raises(ValueError, match=field):
        GridConstraint(**args)


def test_operator_validation_names_the_field():
    c = constraint()
    with pytest.raises(ValueError, match="alpha"):
        OperatorMultipliers([c], alpha=-1.0, mu_max=MU_MAX)
    with pytest.raises(ValueError, match="alpha"):
        OperatorMultipliers([c, constraint(name="d")], alpha=[1.0, 2.0, 3.0], mu_max=MU_MAX)
    with pytest.raises(ValueError, match="mu_max"):
        OperatorMultipliers([c], alpha=1.0, mu_max=0.0)
    with pytest.raises(ValueError, match="constraints"):
        OperatorMultipliers([], alpha=1.0, mu_max=MU_MAX)
    with pytest.raises(ValueError, match="duplicate"):
        OperatorMultipliers([c, c], alpha=1.0, mu_max=MU_MAX)
    with pytest.raises(ValueError, match="numbers of buildings"):
        OperatorMultipliers([c, constraint(name="d", weights=np.ones(3))], alpha=1.0,
                            mu_max=MU_MAX)
    ops = OperatorMultipliers([c], alpha=1.0, mu_max=MU_MAX)
    with pytest.raises(ValueError, match="measured"):
        ops.update([1.0, 2.0])
    with pytest.raises(ValueError, match="lam"):
        ops.effective_lambda(np.ones(3), LAMBDA_MAX)
    with pytest.raises(ValueError, match="lambda_max"):
        ops.effective_lambda(np.ones(2), 0.0)
    with pytest.raises(ValueError, match="mu"):
        ops.reset(mu=MU_MAX + 1)


def test_weights_are_read_only_and_frozen():
    w = np.array([1.0, -0.5])
    c = constraint(weights=w)
    w[0] = 7.0  # the constraint kept its own copy
    assert c.weights[0] == 1.0
    with pytest.raises(ValueError):
        c.weights[0] = 2.0


# -- closed loop with a linear plant ---------------------------------------------------


def run_loading_loop(limit, steps=LOOP_STEPS, alpha=20.0):
    weights = S_PP_PER_KW / np.abs(S_PP_PER_KW).max()
    c = GridConstraint("trafo 0 loading", "loading_max", limit, scale=limit, weights=weights)
    ops = OperatorMultipliers([c], alpha=alpha, mu_max=MU_MAX)
    loading = np.nan
    for _ in range(steps):
        # mu of this step comes from the measurement of the previous one
        lam_eff = ops.effective_lambda(LAM, LAMBDA_MAX)
        p = np.maximum(P0_KW - K_KW_PER_LAMBDA * lam_eff, 0.0)
        loading = BASE_PP + S_PP_PER_KW @ p
        ops.update([loading])
    return ops, loading, lam_eff


def test_closed_loop_reaches_a_reachable_limit():
    ops, loading, lam_eff = run_loading_loop(limit=50.0)
    assert abs(loading - 50.0) <= LOADING_TOL_PP
    assert 0.0 < ops.mu[0] < MU_MAX
    # linear plant, no bound active: 53.4 - 0.725 mu = 50
    assert ops.mu[0] == pytest.approx(3.4 / 0.725, abs=1e-3)
    assert (lam_eff[:3] > LAM[:3]).all()
    assert lam_eff[3] == LAM[3]  # zero weight: exactly its own lambda


def test_closed_loop_slack_limit_keeps_mu_at_zero():
    ops, loading, lam_eff = run_loading_loop(limit=60.0)
    assert loading < 60.0
    assert ops.mu[0] == 0.0
    np.testing.assert_array_equal(lam_eff, LAM)


def test_closed_loop_unreachable_limit_saturates_mu():
    ops, loading, lam_eff = run_loading_loop(limit=40.0)
    assert ops.mu[0] == MU_MAX
    assert loading > 40.0
    # lambda + w mu clipped: the two most concerned at lambda_max, w = 0.5 at 2 + 10
    np.testing.assert_array_equal(lam_eff, [LAMBDA_MAX, LAMBDA_MAX, 12.0, LAM[3]])
    assert loading == pytest.approx(42.3)  # the least the plant can do


def test_voltage_max_lowers_the_concerned_buildings_lambda():
    # PV export raises the voltage; consumption lowers it (dV/dP < 0), so the weights are
    # negative and mu makes the concerned buildings consume more.
    dv = np.array([-2e-3, -1e-3, 0.0])  # pu per kW; building 2 elsewhere
    weights = dv / np.abs(dv).max()
    assert (weights <= 0).all()
    c = GridConstraint("bus 17 voltage max", "voltage_max", 1.06, 0.05, weights)
    ops = OperatorMultipliers([c], alpha=20.0, mu_max=MU_MAX)
    lam = np.array([1.0, 4.0, 3.0])
    p0 = np.array([-20.0, -15.0, 2.0])  # kW: buildings 0 and 1 export
    k = 2.0  # kW less consumption per unit of lambda_eff
    v = np.nan
    for _ in range(LOOP_STEPS):
        lam_eff = ops.effective_lambda(lam, LAMBDA_MAX)
        p = p0 - k * lam_eff
        v = 1.0 + dv @ p
        ops.update([v])
    # v = 1.055 + 0.004 lam_eff_0 + 0.002 lam_eff_1: 1.067 at mu = 0, 1.055 at best;
    # 1.06 at mu = 3 (lam_eff = [0, 2.5, 3])
    assert abs(v - 1.06) <= VOLTAGE_TOL_PU
    assert ops.mu[0] == pytest.approx(3.0, abs=1e-3)
    assert (lam_eff <= lam).all()           # nobody's lambda is raised
    assert lam_eff[0] == 0.0                # clipped at 0
    assert 0.0 < lam_eff[1] < lam[1]
    assert lam_eff[2] == lam[2]


def test_mixed_constraints_sum_their_shifts():
    up = constraint(name="up", weights=[1.0, 0.0])
    down = constraint(name="down", kind="voltage_max", limit=1.05, scale=0.05,
                      weights=[-0.5, -1.0])
    ops = OperatorMultipliers([up, down], alpha=[1.0, 2.0], mu_max=MU_MAX)
    ops.reset(mu=[2.0, 1.0])
    np.testing.assert_allclose(ops.price_shift(), [1.5, -1.0])
    np.testing.assert_allclose(ops.effective_lambda(np.array([3.0, 0.5]), LAMBDA_MAX),
                               [4.5, 0.0])


# -- failed measurements and resume ----------------------------------------------------


def test_nan_measurement_leaves_mu_unchanged():
    a = constraint(name="a", limit=50.0, scale=50.0)
    b = constraint(name="b", kind="voltage_min", limit=0.95, scale=0.05)
    ops = OperatorMultipliers([a, b], alpha=1.0, mu_max=MU_MAX)
    ops.update([75.0, 0.90])
    before = ops.mu
    np.testing.assert_allclose(before, [0.5, 1.0])
    after = ops.update([np.nan, 0.90])
    assert after[0] == before[0]
    assert after[1] == pytest.approx(2.0)
    before = after
    after = ops.update([np.nan, np.inf])
    np.testing.assert_array_equal(after, before)
    assert np.isfinite(ops.mu).all()
    assert ops.step == 3


def test_snapshot_restore_continues_bit_for_bit():
    rng = np.random.default_rng(7)
    cons = [constraint(name="a", limit=50.0, scale=50.0, weights=[1.0, 0.3]),
            constraint(name="b", kind="voltage_max", limit=1.05, scale=0.05,
                       weights=[-1.0, -0.2])]
    measured = np.column_stack([rng.uniform(30.0, 70.0, 40), rng.uniform(1.0, 1.1, 40)])
    measured[10, 0] = np.nan
    lam = rng.uniform(0.0, LAMBDA_MAX, (40, 2))

    ops = OperatorMultipliers(cons, alpha=[0.7, 0.3], mu_max=MU_MAX)
    full = []
    snap = None
    for t in range(40):
        if t == 20:
            snap = ops.snapshot()
        ops.update(measured[t])
        full.append(ops.effective_lambda(lam[t], LAMBDA_MAX))

    resumed = OperatorMultipliers(cons, alpha=[0.7, 0.3], mu_max=MU_MAX)
    resumed.restore({k: v.copy() for k, v in snap.items()})
    assert resumed.step == 20
    for t in range(20, 40):
        resumed.update(measured[t])
        np.testing.assert_array_equal(resumed.effective_lambda(lam[t], LAMBDA_MAX), full[t])
    np.testing.assert_array_equal(resumed.mu, ops.mu)
    assert resumed.step == ops.step == 40

    with pytest.raises(ValueError, match="shape"):
        resumed.restore({"mu": np.zeros(3), "step": np.array(0)})
    resumed.reset()
    np.testing.assert_array_equal(resumed.mu, [0.0, 0.0])
    assert resumed.step == 0


# -- weights from a feeder -------------------------------------------------------------


@pytest.fixture(scope="module")
def sens():
    from grid_models.sensitivity import linearised_sensitivities
    from tests.grid_models.test_sensitivity import BUILDING_BUS, radial_net

    return linearised_sensitivities(radial_net(), BUILDING_BUS)


def test_loading_weights_from_sensitivities(sens):
    # buildings on buses 1, 3, 4, 4, 5; line 1 feeds buses 3 and 4
    w = constraint_weights(ConstraintSpec("trafo", "loading_max", 80.0, ("trafo", 0)), 5,
                           sens=sens)
    assert np.abs(w).max() == 1.0
    assert (w > 0).all()
    w = constraint_weights(ConstraintSpec("line 1", "loading_max", 80.0, ("line", 1)), 5,
                           sens=sens)
    assert np.abs(w).max() == 1.0
    assert (w[1:4] > 0.5).all()
    assert (np.abs(w[[0, 4]]) < 0.05).all()  # upstream / beside: second order only
    GridConstraint("line 1 loading", "loading_max", 80.0, 80.0, w)


def test_voltage_weights_from_sensitivities(sens):
    w_max = constraint_weights(ConstraintSpec("v", "voltage_max", 1.05, buses=(4,)), 5,
                               sens=sens)
    w_min = constraint_weights(ConstraintSpec("v", "voltage_min", 0.95, buses=(4,)), 5,
                               sens=sens)
    assert np.abs(w_max).max() == np.abs(w_min).max() == 1.0
    assert (w_max < 0).all()      # consumption relieves an over-voltage
    assert (w_min > 0).all()      # consumption worsens an under-voltage
    np.testing.assert_array_equal(w_min, -w_max)
    assert w_min[2] == w_min[3] == 1.0  # the buildings at bus 4 itself move it most
    peak = ConstraintSpec("peak", "peak_kw_max", 100.0)
    np.testing.assert_array_equal(constraint_weights(peak, 5, sens=sens), np.ones(5))


def test_membership_weights():
    from grid_models.sensitivity import membership
    from tests.grid_models.test_sensitivity import BUILDING_BUS, radial_net

    mask = membership(radial_net(), BUILDING_BUS)[("line", 1)]
    spec = ConstraintSpec("line 1", "loading_max", 80.0, ("line", 1))
    np.testing.assert_array_equal(
        constraint_weights(spec, 5, downstream_mask=mask, mode="membership"),
        [0.0, 1.0, 1.0, 1.0, 0.0])


# -- signs of loading constraints (flow direction) -------------------------------------

#: Peer and operator multipliers agree to rounding (sums over a cluster, no bound active).
MU_ATOL = 1e-12
#: The same after a few hundred steps of rounding accumulated in the consensus sums.
MEAN_ATOL = 1e-10
#: mode pi: members' spread of mu after the excess has stayed 0 for AGREE_STEPS steps.
AGREE_STEPS = 1000
AGREEMENT_TOL = 1e-9
PEER_ALPHA = 0.05  # mode pi needs alpha * beta < gamma (defaults beta 10, gamma 0.9)


def both_modes(cons, alpha=1.0, graph=None, **peer):
    """An operator and a peer over the same constraints (peer: complete graph by default)."""
    n = cons[0].n_buildings
    graph = nx.complete_graph(n) if graph is None else graph
    return (make_grid_multipliers("operator", cons, alpha, MU_MAX),
            make_grid_multipliers("peer", cons, alpha, MU_MAX, graph=graph, **peer))


@pytest.mark.parametrize("mode", GRID_MULTIPLIER_MODES)
def test_sign_flips_the_price_shift(mode):
    cons = [constraint(name="line 1 loading", weights=[1.0, 0.5, 0.0]),
            constraint(name="trafo 0 loading", weights=[0.2, 1.0, 1.0])]
    ops = make_grid_multipliers(mode, cons, PEER_ALPHA, MU_MAX, graph=nx.complete_graph(3),
                                consensus_mode="centralized")
    np.testing.assert_array_equal(ops.signs, [1.0, 1.0])
    ops.update([75.0, 100.0])
    forward = ops.price_shift()
    per_constraint = np.array(cons[0].weights) * ops.mu[0], np.array(cons[1].weights) * ops.mu[1]
    np.testing.assert_allclose(forward, per_constraint[0] + per_constraint[1], atol=MU_ATOL)

    mu = ops.mu
    ops.update([50.0, 50.0], sign=[-1.0, 1.0])  # at the limits: mu stays, line 1 reverses
    np.testing.assert_array_equal(ops.mu, mu)
    np.testing.assert_array_equal(ops.signs, [-1.0, 1.0])
    np.testing.assert_allclose(ops.price_shift(), -per_constraint[0] + per_constraint[1],
                               atol=MU_ATOL)
    lam = np.full(3, 2.0)
    np.testing.assert_allclose(ops.effective_lambda(lam, LAMBDA_MAX),
                               np.clip(lam + ops.price_shift(), 0.0, LAMBDA_MAX))

    ops.update([50.0, 50.0])                      # None keeps every sign
    ops.update([50.0, 50.0], sign=[0.0, np.nan])  # 0 and NaN keep that sign
    np.testing.assert_array_equal(ops.signs, [-1.0, 1.0])
    ops.update([50.0, 50.0], sign=np.sign([3.2, -0.1]))
    np.testing.assert_array_equal(ops.signs, [1.0, -1.0])
    np.testing.assert_allclose(ops.price_shift(), per_constraint[0] - per_constraint[1],
                               atol=MU_ATOL)

    signs = ops.signs
    signs[0] = 7.0  # a copy
    np.testing.assert_array_equal(ops.signs, [1.0, -1.0])
    step = ops.step
    with pytest.raises(ValueError, match="sign.*shape"):
        ops.update([50.0, 50.0], sign=[1.0])
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        ops.update([50.0, 50.0], sign=[0.5, 1.0])
    assert ops.step == step  # a refused update changes nothing
    np.testing.assert_array_equal(ops.signs, [1.0, -1.0])
    ops.reset()
    np.testing.assert_array_equal(ops.signs, [1.0, 1.0])


def test_sign_does_not_change_mu():
    c = constraint(weights=[1.0, 0.5])
    ops = OperatorMultipliers([c], alpha=1.0, mu_max=MU_MAX)
    ref = OperatorMultipliers([c], alpha=1.0, mu_max=MU_MAX)
    for t, loading in enumerate([75.0, 80.0, 40.0, 60.0]):
        ops.update([loading], sign=[(-1.0) ** t])
        ref.update([loading])
        np.testing.assert_array_equal(ops.mu, ref.mu)


# -- resume of both modes --------------------------------------------------------------


def resume_run(make, measured, signs, lam, cut):
    """Run ``make()`` over the whole series and a second one restored at ``cut``."""
    ops = make()
    full, snap = [], None
    for t in range(measured.shape[0]):
        if t == cut:
            snap = ops.snapshot()
        ops.update(measured[t], sign=signs[t])
        full.append(ops.effective_lambda(lam[t], LAMBDA_MAX))
    resumed = make()
    resumed.restore({k: np.array(v, copy=True) for k, v in snap.items()})
    assert resumed.step == cut
    for t in range(cut, measured.shape[0]):
        resumed.update(measured[t], sign=signs[t])
        np.testing.assert_array_equal(resumed.effective_lambda(lam[t], LAMBDA_MAX), full[t])
    return ops, resumed


@pytest.mark.parametrize("mode, consensus", [("operator", "pi"), ("peer", "pi"),
                                             ("peer", "paper"), ("peer", "atc"),
                                             ("peer", "centralized")])
def test_snapshot_restore_both_modes_bit_for_bit(mode, consensus):
    rng = np.random.default_rng(11)
    n, steps = 5, 40
    cons = [constraint(name="a", limit=50.0, scale=50.0, weights=[1.0, 0.3, 0.0, 0.6, 0.8]),
            constraint(name="b", kind="voltage_max", limit=1.05, scale=0.05,
                       weights=[-1.0, -0.2, -0.5, 0.0, -0.1])]
    measured = np.column_stack([rng.uniform(30.0, 70.0, steps), rng.uniform(1.0, 1.1, steps)])
    measured[10, 0] = np.nan
    signs = [rng.choice([-1.0, 1.0, np.nan], size=2) if t % 3 else None for t in range(steps)]
    lam = rng.uniform(0.0, LAMBDA_MAX, (steps, n))
    graph = nx.cycle_graph(n)

    def make():
        return make_grid_multipliers(mode, cons, [0.07, 0.03], MU_MAX, graph=graph,
                                     consensus_mode=consensus, beta=5.0)

    ops, resumed = resume_run(make, measured, signs, lam, cut=20)
    np.testing.assert_array_equal(resumed.mu, ops.mu)
    np.testing.assert_array_equal(resumed.signs, ops.signs)
    assert resumed.step == ops.step == steps
    if mode == "peer":
        np.testing.assert_array_equal(resumed.mu_per_building, ops.mu_per_building)


@pytest.mark.parametrize("mode", GRID_MULTIPLIER_MODES)
def test_restore_of_a_snapshot_without_signs(mode):
    ops = make_grid_multipliers(mode, [constraint(weights=[1.0, 0.5])], PEER_ALPHA, MU_MAX,
                                graph=nx.complete_graph(2))
    ops.update([75.0], sign=[-1.0])
    snap = ops.snapshot()
    np.testing.assert_array_equal(snap["signs"], [-1.0])
    del snap["signs"]  # saved before signs existed
    ops.restore(snap)
    np.testing.assert_array_equal(ops.signs, [1.0])
    with pytest.raises(ValueError, match="signs"):
        ops.restore(ops.snapshot() | {"signs": np.array([0.0])})


def test_peer_restore_refuses_a_foreign_snapshot():
    cons = [constraint(weights=[1.0, 0.5, 0.2])]
    op, peer = both_modes(cons, alpha=PEER_ALPHA)
    with pytest.raises(ValueError, match="operator snapshot"):
        peer.restore(op.snapshot())
    peer.update([75.0])
    before = peer.mu_per_building
    snap = peer.snapshot()
    with pytest.raises(ValueError, match="lam"):
        peer.restore(snap | {"cluster0_lam": np.zeros(2)})
    with pytest.raises(ValueError, match="mu"):
        peer.restore(snap | {"cluster0_lam": np.full(3, MU_MAX + 1.0)})
    with pytest.raises(ValueError, match="v1_hist"):
        peer.restore(snap | {"cluster0_lam": np.zeros(3), "cluster0_v1_hist": np.zeros(7)})
    np.testing.assert_array_equal(peer.mu_per_building, before)  # nothing changed


# -- peer mode -------------------------------------------------------------------------


@pytest.mark.parametrize("consensus, graph", [("centralized", None),
                                              ("pi", nx.complete_graph(4)),
                                              ("pi", nx.path_graph(4)),
                                              ("averaging", nx.star_graph(3))])
def test_peer_with_equal_weights_tracks_the_operator(consensus, graph):
    rng = np.random.default_rng(3)
    cons = [constraint(name="trafo", weights=np.full(4, 0.5))]
    op, peer = both_modes(cons, alpha=PEER_ALPHA, graph=graph, consensus_mode=consensus)
    op.reset(mu=5.0)
    peer.reset(mu=5.0)
    for loading in rng.uniform(20.0, 80.0, 200):  # e in [-0.6, 0.6]
        op.update([loading])
        peer.update([loading])
        assert 0.0 < op.mu[0] < MU_MAX  # no bound active
        np.testing.assert_allclose(peer.mu, op.mu, rtol=0.0, atol=MU_ATOL)
        np.testing.assert_allclose(peer.mu_per_building[0], op.mu[0], rtol=0.0, atol=MU_ATOL)
        np.testing.assert_allclose(peer.price_shift(), op.price_shift(), rtol=0.0, atol=MU_ATOL)


def test_peer_pi_keeps_the_mean_and_reaches_agreement():
    rng = np.random.default_rng(5)
    weights = np.array([1.0, 0.5, 0.25, 0.8, 0.1])
    cons = [constraint(name="line 3 loading", weights=weights)]
    op, peer = both_modes(cons, alpha=PEER_ALPHA, graph=nx.path_graph(5))
    op.reset(mu=5.0)
    peer.reset(mu=5.0)
    for loading in rng.uniform(35.0, 65.0, 300):
        op.update([loading])
        peer.update([loading])
        members = peer.mu_per_building[0]
        assert (members > 0.0).all() and (members < MU_MAX).all()  # no bound active
        np.testing.assert_allclose(peer.mu, op.mu, rtol=0.0, atol=MEAN_ATOL)
    assert peer.mu_spread[0] > AGREEMENT_TOL  # unequal residuals: the members differ
    np.testing.assert_allclose(peer.mu_spread, np.ptp(peer.mu_per_building, axis=1))
    mean = peer.mu
    for _ in range(AGREE_STEPS):
        peer.update([50.0])  # at the limit: no excess
    assert peer.mu_spread[0] <= AGREEMENT_TOL
    np.testing.assert_allclose(peer.mu, mean, rtol=0.0, atol=MEAN_ATOL)


def test_peer_residuals_follow_the_weights():
    weights = np.array([1.0, 0.5, 0.0, -0.25])
    peer = PeerMultipliers([constraint(weights=weights)], PEER_ALPHA, MU_MAX, None,
                           mode="independent")
    peer.update([75.0])  # e = 0.5; mean |W| over the cluster {0, 1, 3}: 1.75 / 3
    expected = PEER_ALPHA * 0.5 * np.abs(weights) / (1.75 / 3.0)
    np.testing.assert_allclose(peer.mu_per_building[0], expected, rtol=0.0, atol=MU_ATOL)
    np.testing.assert_allclose(peer.mu, [PEER_ALPHA * 0.5], rtol=0.0, atol=MU_ATOL)
    np.testing.assert_allclose(peer.price_shift(), weights * expected, rtol=0.0, atol=MU_ATOL)


def test_peer_disconnected_cluster_names_the_constraint():
    cons = [constraint(name="trafo 0 loading", weights=np.ones(4)),
            constraint(name="line 3 loading", weights=[1.0, 0.0, 1.0, 0.0])]
    graph = nx.path_graph(4)  # buildings 0 and 2 only talk through building 1
    with pytest.raises(ValueError, match=r"'line 3 loading' are not connected .*2 components"):
        PeerMultipliers(cons, PEER_ALPHA, MU_MAX, graph)
    with pytest.raises(ValueError, match="operator mode"):
        make_grid_multipliers("peer", cons, PEER_ALPHA, MU_MAX, graph=graph,
                              consensus_mode="averaging")
    # building 1 relays: a cluster may hold buildings of weight 0
    relayed = PeerMultipliers(cons, PEER_ALPHA, MU_MAX, graph,
                              clusters=[np.ones(4, bool), np.array([True, True, True, False])])
    relayed.update([75.0, 75.0])
    assert relayed.mu_per_building[1, 1] == 0.0  # weight 0: no residual of its own
    relayed.update([75.0, 75.0])  # then its neighbours' values reach it
    assert relayed.mu_per_building[1, 1] > 0.0
    assert relayed.price_shift()[1] == pytest.approx(relayed.mu_per_building[0, 1])
    # no messages, no connection needed
    for mode in ("independent", "centralized"):
        PeerMultipliers(cons, PEER_ALPHA, MU_MAX, graph, mode=mode)


def test_peer_one_building_cluster_is_projected_ascent():
    c = constraint(weights=[0.0, -0.4, 0.0])
    op = OperatorMultipliers([c], alpha=PEER_ALPHA, mu_max=1.0)
    peer = PeerMultipliers([c], PEER_ALPHA, 1.0, nx.path_graph(3))
    for loading in [75.0] * 40 + [25.0] * 60 + [np.nan, 60.0]:  # up to mu_max, down to 0
        op.update([loading])
        peer.update([loading])
        np.testing.assert_allclose(peer.mu_per_building, [[0.0, op.mu[0], 0.0]],
                                   rtol=0.0, atol=MU_ATOL)
    assert peer.mu_spread[0] == 0.0


def test_peer_nan_measurement_leaves_the_cluster():
    cons = [constraint(name="a", weights=[1.0, 0.5, 0.2]),
            constraint(name="b", kind="voltage_min", limit=0.95, scale=0.05,
                       weights=[0.1, 1.0, 0.7])]
    peer = PeerMultipliers(cons, PEER_ALPHA, MU_MAX, nx.complete_graph(3))
    peer.update([75.0, 0.90])
    before = peer.mu_per_building
    snap = peer.snapshot()
    peer.update([np.nan, 0.90])
    after = peer.mu_per_building
    np.testing.assert_array_equal(after[0], before[0])
    assert (after[1] > before[1]).all()
    np.testing.assert_array_equal(peer.snapshot()["cluster0_step"], snap["cluster0_step"])
    peer.update([np.inf, np.nan])
    np.testing.assert_array_equal(peer.mu_per_building, after)
    assert np.isfinite(peer.mu_per_building).all()
    assert peer.step == 3


def test_peer_non_members_get_no_price_shift():
    weights = np.array([1.0, 0.5, 0.0, 0.8, 0.3])
    cons = [constraint(name="line", weights=weights)]
    clusters = [np.array([True, True, False, True, False])]  # building 4 not in the cluster
    peer = PeerMultipliers(cons, PEER_ALPHA, MU_MAX, nx.complete_graph(5), clusters=clusters)
    for _ in range(10):
        peer.update([90.0])
    mu = peer.mu_per_building
    np.testing.assert_array_equal(mu[0, [2, 4]], [0.0, 0.0])
    assert (mu[0, clusters[0]] > 0.0).all()
    np.testing.assert_allclose(peer.mu, [mu[0, clusters[0]].mean()])
    shift = peer.price_shift()
    np.testing.assert_array_equal(shift[[2, 4]], [0.0, 0.0])
    lam = np.full(5, 3.0)
    np.testing.assert_array_equal(peer.effective_lambda(lam, LAMBDA_MAX)[[2, 4]], [3.0, 3.0])


@pytest.mark.parametrize("mode", GRID_MULTIPLIER_MODES)
def test_effective_lambda_is_clipped(mode):
    up = constraint(name="up", weights=[1.0, 1.0, 0.0])
    down = constraint(name="down", kind="voltage_max", limit=1.05, scale=0.05,
                      weights=[0.0, -1.0, -1.0])
    ops = make_grid_multipliers(mode, [up, down], PEER_ALPHA, MU_MAX,
                                graph=nx.complete_graph(3))
    ops.reset(mu=[MU_MAX, MU_MAX])
    lam = np.array([5.0, 5.0, 5.0])
    np.testing.assert_allclose(ops.effective_lambda(lam, LAMBDA_MAX), [LAMBDA_MAX, 5.0, 0.0])
    ops.update([50.0, 1.05], sign=[-1.0, 1.0])  # reverse flow on "up"
    np.testing.assert_allclose(ops.effective_lambda(lam, LAMBDA_MAX), [0.0, 0.0, 0.0])
    # a signed floor: the grid may ask for consumption (lambda_eff below 0)
    np.testing.assert_allclose(ops.effective_lambda(lam, LAMBDA_MAX, -2.0), [-2.0, -2.0, -2.0])
    with pytest.raises(ValueError, match="lambda_min must be <= 0"):
        ops.effective_lambda(lam, LAMBDA_MAX, 1.0)


def test_peer_and_factory_validation():
    c = constraint(name="trafo", weights=[1.0, 0.0, 0.5])
    g = nx.complete_graph(3)
    with pytest.raises(ValueError, match="one mask per constraint"):
        PeerMultipliers([c], PEER_ALPHA, MU_MAX, g, clusters=[])
    with pytest.raises(ValueError, match=r"clusters\['trafo'\].*shape"):
        PeerMultipliers([c], PEER_ALPHA, MU_MAX, g, clusters=[np.ones(2, bool)])
    with pytest.raises(ValueError, match="True/False"):
        PeerMultipliers([c], PEER_ALPHA, MU_MAX, g, clusters=[np.array([2, 0, 1])])
    with pytest.raises(ValueError, match="empty"):
        PeerMultipliers([c], PEER_ALPHA, MU_MAX, g, clusters=[np.zeros(3, bool)])
    with pytest.raises(ValueError, match="weight 0"):
        PeerMultipliers([c], PEER_ALPHA, MU_MAX, g, clusters=[np.array([False, True, False])])
    with pytest.raises(ValueError, match="graph has 4 agents"):
        PeerMultipliers([c], PEER_ALPHA, MU_MAX, nx.complete_graph(4))
    with pytest.raises(ValueError, match="needs the communication graph"):
        PeerMultipliers([c], PEER_ALPHA, MU_MAX, None)
    with pytest.raises(ValueError, match="mode"):
        PeerMultipliers([c], PEER_ALPHA, MU_MAX, g, mode="consensus")
    with pytest.raises(ValueError, match="'trafo'.*alpha\\*beta"):
        PeerMultipliers([c], 1.0, MU_MAX, g)  # pi: alpha * beta >= gamma
    with pytest.raises(ValueError, match="mu_max"):
        PeerMultipliers([c], PEER_ALPHA, 0.0, g)
    with pytest.raises(ValueError, match="operator, peer"):
        make_grid_multipliers("district", [c], PEER_ALPHA, MU_MAX)
    assert isinstance(make_grid_multipliers("operator", [c], 1.0, MU_MAX), OperatorMultipliers)
    peer = make_grid_multipliers("peer", [c], PEER_ALPHA, MU_MAX, graph=g)
    assert isinstance(peer, PeerMultipliers)
    np.testing.assert_array_equal(peer.clusters, [[True, False, True]])
    assert peer.names == ("trafo",) and peer.n_constraints == 1 and peer.n_buildings == 3
    with pytest.raises(ValueError, match="measured"):
        peer.update([1.0, 2.0])
    with pytest.raises(ValueError, match="mu"):
        peer.reset(mu=-1.0)
