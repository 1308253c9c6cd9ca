"""Grid-constraint multipliers: excess signs, validation, closed loop, resume, weights."""

from __future__ import annotations

import numpy as np
import pytest

from agents.grid_multipliers import (
    GridConstraint,
    OperatorMultipliers,
    membership_weights,
    normalised_excess,
    peak_weights,
    weights_from_sensitivities,
)

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
    w = weights_from_sensitivities(sens, "loading_max", element=("trafo", 0))
    assert np.abs(w).max() == 1.0
    assert (w > 0).all()
    w = weights_from_sensitivities(sens, "loading_max", element=("line", 1))
    assert np.abs(w).max() == 1.0
    assert (w[1:4] > 0.5).all()
    assert (np.abs(w[[0, 4]]) < 0.05).all()  # upstream / beside: second order only
    GridConstraint("line 1 loading", "loading_max", 80.0, 80.0, w)
    with pytest.raises(ValueError, match="element"):
        weights_from_sensitivities(sens, "loading_max")


def test_voltage_weights_from_sensitivities(sens):
    w_max = weights_from_sensitivities(sens, "voltage_max", bus=4)
    w_min = weights_from_sensitivities(sens, "voltage_min", bus=4)
    assert np.abs(w_max).max() == np.abs(w_min).max() == 1.0
    assert (w_max < 0).all()      # consumption relieves an over-voltage
    assert (w_min > 0).all()      # consumption worsens an under-voltage
    np.testing.assert_array_equal(w_min, -w_max)
    assert w_min[2] == w_min[3] == 1.0  # the buildings at bus 4 itself move it most
    with pytest.raises(ValueError, match="bus"):
        weights_from_sensitivities(sens, "voltage_max")
    np.testing.assert_array_equal(weights_from_sensitivities(sens, "peak_kw_max"), np.ones(5))
    np.testing.assert_array_equal(peak_weights(5), np.ones(5))
    with pytest.raises(ValueError, match="kind"):
        weights_from_sensitivities(sens, "loading_min")


def test_membership_weights():
    from grid_models.sensitivity import membership
    from tests.grid_models.test_sensitivity import BUILDING_BUS, radial_net

    mask = membership(radial_net(), BUILDING_BUS)[("line", 1)]
    np.testing.assert_array_equal(membership_weights(mask), [0.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(membership_weights(mask, sign=-1.0),
                                  [0.0, -1.0, -1.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="mask"):
        membership_weights(np.array([0.5, 1.0]))
