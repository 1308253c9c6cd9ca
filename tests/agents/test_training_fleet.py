"""The training fleet: price look-ahead observation, evolving multipliers, lanes, the
vectorised env, the local-LP teacher and the objective score."""

from __future__ import annotations

import numpy as np
import pytest

from agents.fleet.building import FleetParams, FleetState
from agents.fleet.data import load_citylearn
from agents.fleet.observation import (
    OBS_NAMES,
    OBS_NAMES_V1,
    PRICE_AHEAD_H,
    ObservationScales,
    fleet_observation,
    observation_matrix,
)
from agents.fleet.runner import FleetLoop, FleetSetup
from agents.learning.tariffs import MultiplierDraw, TariffDraw
from agents.learning.training_fleet import MultiplierProcess, TrainingFleet

OBS_ATOL = 1e-6  # float32 observation columns
KWH_ATOL = 1e-9


@pytest.fixture(scope="module")
def data():
    return load_citylearn()


def _fleet(data, lanes=4, seed=10, episode_steps=48, **process) -> TrainingFleet:
    proc = MultiplierProcess(MultiplierDraw(0.0, 15.0, zero_share=0.3, power=2.0),
                             MultiplierDraw(-5.0, 5.0, zero_share=0.5, power=2.0),
                             **process)
    return TrainingFleet(data, ["Building_1", "Building_2", "Building_3"], 1.0, lanes,
                         episode_steps, proc, TariffDraw(synthetic_share=0.5), (0.0, 15.0),
                         (-20.0, 20.0), heldout=(0, 3000), seed=seed)


def test_price_features_by_hand():
    params = FleetParams.uniform(2)
    state = FleetState.initial(params)
    ahead = np.full(PRICE_AHEAD_H, 0.2)
    ahead[2] = 0.5  # dearer in 3 hours
    ahead[8] = 0.1  # cheapest in 9 hours
    obs = fleet_observation(params, state, np.ones(2), np.zeros(2), 0.3, 12.0, 0.0, 0.0,
                            price_ahead_per_kwh=ahead)
    scales = ObservationScales()
    m = observation_matrix(obs, scales)
    assert m.shape == (2, len(OBS_NAMES))
    p = scales.price_per_kwh
    expected = [0.5 / p, 0.5 / p, 0.2 / p, 0.1 / p, ahead.mean() / p, 1 / 12]
    np.testing.assert_allclose(m[0, len(OBS_NAMES_V1):], expected, atol=OBS_ATOL)
    np.testing.assert_array_equal(observation_matrix(obs, scales, OBS_NAMES_V1), m[:, :9])
    bare = fleet_observation(params, state, np.ones(2), np.zeros(2), 0.3, 12.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="tariff ahead"):
        observation_matrix(bare, scales)
    with pytest.raises(ValueError, match="unknown observation layout"):
        observation_matrix(obs, scales, ("demand",))


def test_setup_outlook_from_data_wraps_and_loop_reads_it(data):
    start, steps = 8730, 20  # the outlook wraps past the year's end
    setup = FleetSetup.from_citylearn(["Building_1"], start, steps, data=data)
    rows = (start + np.arange(steps + PRICE_AHEAD_H)) % data.n_steps
    np.testing.assert_array_equal(setup.price_outlook_per_kwh, data.price_per_kwh[rows])
    loop = FleetLoop(setup, None, None)
    loop.t = 5
    obs = loop.observe()
    np.testing.assert_array_equal(obs.price_ahead_per_kwh[0], data.price_per_kwh[rows[6:30]])


def test_setup_outlook_default_repeats_the_last_day(data):
    demand, solar, price = data.window(["Building_1"], 0, 50)
    setup = FleetSetup(["a"], FleetParams.uniform(1), np.asarray(-1), demand, solar, price)
    out = setup.price_outlook_per_kwh
    np.testing.assert_array_equal(out[:50], price)
    np.testing.assert_array_equal(out[50:74], price[26:50])
    with pytest.raises(ValueError, match="price_outlook_per_kwh"):
        FleetSetup(["a"], FleetParams.uniform(1), np.asarray(-1), demand, solar, price,
                   price_outlook_per_kwh=np.zeros(3))


def test_lane_equals_a_fleet_of_its_own(data):
    """Lane i of a fleet seeded s runs exactly as the only lane of a fleet seeded s + i."""
    many, one = _fleet(data, lanes=4, seed=10), _fleet(data, lanes=1, seed=13)
    rng = np.random.default_rng(0)
    for _ in range(60):  # past an episode's end (48): resets too
        a = rng.random((4, 2))
        np.testing.assert_array_equal(many.observe()[3], one.observe()[0])
        r_many, done_many, _ = many.step(a)
        r_one, done_one, _ = one.step(a[3:4])
        assert r_many[3] == r_one[0] and done_many[3] == done_one[0]
        for fleet, done in ((many, done_many), (one, done_one)):
            for i in np.flatnonzero(done):
                fleet.reset_lane(int(i))


def test_nu_follows_its_dual_update_and_equals_the_backlog(data):
    """With eta = 1 and no offset, nu equals the backlog every step (nothing dropped)."""
    fleet = _fleet(data, fixed_share=0.0)
    fleet.process = MultiplierProcess(MultiplierDraw(0.0, 15.0), MultiplierDraw(0.0, 0.0),
                                      fixed_share=0.0)
    for i in range(fleet.m):
        fleet.reset_lane(i)
    rng = np.random.default_rng(1)
    for _ in range(40):
        np.testing.assert_allclose(fleet.lanes.nu, fleet.state.backlog_kwh, atol=KWH_ATOL)
        _, _, infos = fleet.step(rng.random((fleet.m, 2)) * [0.5, 1.0])
        assert all(info["dropped_kwh"] == 0 for info in infos)


def test_lambda_evolves_within_bounds_and_fixed_episodes_hold(data):
    fleet = _fleet(data, lanes=16, negative_share=0.5, fixed_share=0.25)
    lam0 = fleet.lanes.lam.copy()
    fixed = ~fleet.lanes.evolving
    for _ in range(30):
        fleet.step(np.ones((16, 2)))
    assert (fleet.lanes.lam >= -2.0).all() and (fleet.lanes.lam <= 15.0).all()
    np.testing.assert_array_equal(fleet.lanes.lam[fixed], lam0[fixed])
    assert (fleet.lanes.lam[~fixed] != lam0[~fixed]).all()
    assert (lam0 < 0).any()  # negative levels are drawn (lambda_eff of grid constraints)


def test_vec_env_resets_finished_lanes(data):
    from agents.learning.vec_env import FleetVecEnv

    venv = FleetVecEnv(_fleet(data, lanes=3, episode_steps=5))
    obs = venv.reset()
    assert obs.shape == (3, len(OBS_NAMES))
    for _ in range(5):
        obs, rewards, dones, infos = venv.step(np.full((3, 2), 0.5, np.float32))
    assert dones.all() and rewards.dtype == np.float32
    for info in infos:
        assert info["episode"]["l"] == 5 and "terminal_observation" in info
    assert (venv.fleet.lanes.t == 0).all()


def test_teacher_responds_to_its_multipliers(data):
    """More lambda: less grid energy; more nu: no less served; a negative lambda buys."""
    from agents.learning.teacher import teacher_plan

    fleet = _fleet(data, lanes=8, seed=3)
    fleet.state.backlog_kwh[:] = 6.0
    grids = {}
    for lam, nu in ((0.0, 0.0), (5.0, 0.0), (0.0, 10.0), (-1.5, 0.0)):
        fleet.lanes.lam[:] = lam
        fleet.lanes.nu[:] = nu
        grids[lam, nu] = teacher_plan(fleet)[0].sum()
    assert grids[5.0, 0.0] < grids[0.0, 0.0]
    assert grids[0.0, 10.0] >= grids[0.0, 0.0]
    assert grids[-1.5, 0.0] >= grids[0.0, 0.0]


def test_objective_score_runs_identical_episodes(data):
    from agents.learning.objective_score import (
        execution_fleet,
        greedy_actions,
        heuristic_actions,
        score,
    )

    template = _fleet(data, lanes=2, episode_steps=24)
    scores = score(lambda: execution_fleet(template, 4, seed=5),
                   {"greedy": greedy_actions, "heuristic": heuristic_actions,
                    "greedy_again": greedy_actions})
    np.testing.assert_array_equal(scores.returns["greedy"], scores.returns["greedy_again"])
    assert np.isfinite(scores.returns["heuristic"]).all()
    assert 0.0 <= scores.beats("heuristic", "greedy") <= 1.0


def test_exogenous_nu_reward_telescopes(data):
    """lagrangian - eta r2^2/2 sums to the price and lambda terms plus
    (nu_0^2 - nu_T^2) / (2 eta) while nu stays inside its bounds."""
    fleet = _fleet(data, lanes=6, fixed_share=0.0)
    fleet.reward, fleet.scale_by_multipliers = "exogenous_nu", False
    for i in range(fleet.m):
        fleet.reset_lane(i)
    nu0 = fleet.lanes.nu.copy()
    rng = np.random.default_rng(2)
    total, other = np.zeros(fleet.m), np.zeros(fleet.m)
    for _ in range(30):
        lam = fleet.lanes.lam.copy()
        rewards, _, infos = fleet.step(rng.random((fleet.m, 2)))
        total += rewards
        other += [-info["cost"] + lam_i * (fleet.limit_per_agent_kwh - info["grid_kwh"])
                  for info, lam_i in zip(infos, lam, strict=True)]
    inside = (np.abs(fleet.lanes.nu) < 20.0) & (np.abs(nu0) < 20.0)
    expected = other + (nu0 ** 2 - fleet.lanes.nu ** 2) / (2 * fleet.lanes.eta)
    np.testing.assert_allclose(total[inside], expected[inside], rtol=1e-9, atol=1e-9)
    assert inside.any()
