"""BuildingEnv: the Gymnasium contract, the Lagrangian reward, determinism."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agents.learning.env import ENV_ID, BuildingEnv, register_env

REWARD_ATOL = 1e-12


def test_check_env_passes():
    check_env(BuildingEnv(), skip_render_check=True)


def test_registered_id_makes_the_env():
    """gym.make passes its arguments through: the registered env starts like a
    BuildingEnv built directly, and its demand input is the building's demand x 2."""
    register_env()
    env = gym.make(ENV_ID, demand_scale=2.0)
    obs, info = env.reset(seed=3)
    direct_obs, direct_info = BuildingEnv(demand_scale=2.0).reset(seed=3)
    np.testing.assert_array_equal(obs, direct_obs)
    assert info == direct_info
    demand = env.unwrapped.data.building(info["building"]).demand_kwh[info["start"]]
    scales = env.unwrapped.scales
    assert obs[0] == pytest.approx(2.0 * demand / scales.demand_kwh, rel=1e-6)
    assert obs[7] == pytest.approx(info["lambda"] / scales.lambda_max, rel=1e-6)
    env.close()


def test_reward_is_the_lagrangian():
    env = BuildingEnv(limit_per_agent_kwh=0.7)
    _, info = env.reset(seed=1, options={"lambda": 4.0, "nu": -3.0})
    action = np.array([0.6, 0.5], dtype=np.float32)
    _, reward, terminated, truncated, step_info = env.step(action)
    g = step_info["grid_kwh"]
    served = step_info["served_kwh"]
    row = info["start"]
    b = env.data.building(info["building"])
    demand = env.demand_scale * b.demand_kwh[row]
    expected = -step_info["cost"] + 4.0 * (0.7 - g) + (-3.0) * (served - demand)
    assert reward == pytest.approx(expected, abs=REWARD_ATOL)
    assert not terminated and not truncated


def test_episode_truncates_and_avoids_heldout():
    env = BuildingEnv(episode_steps=5, heldout=(100, 8000))
    for seed in range(20):
        _, info = env.reset(seed=seed)
        assert info["start"] + 5 <= 100 or info["start"] >= 8100
    steps = 0
    truncated = False
    while not truncated:
        _, _, _, truncated, _ = env.step(env.action_space.sample())
        steps += 1
    assert steps == 5


def test_same_seed_same_trajectory():
    def roll(seed):
        env = BuildingEnv()
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs]
        for _ in range(10):
            out.append(env.step(env.action_space.sample())[0])
        return np.array(out)

    np.testing.assert_array_equal(roll(5), roll(5))
    assert not np.array_equal(roll(5), roll(6))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="lambda_range"):
        BuildingEnv(lambda_range=(-1.0, 2.0))
    with pytest.raises(ValueError, match="unknown building 'Nope'"):
        BuildingEnv(buildings=["Nope"])


def test_shaped_reward_is_the_lagrangian_less_a_potential_difference():
    """reward = Lagrangian - (nu b - gamma nu b') = r0 + lambda (c/N - g)
    - (1 - gamma) nu b' - nu dropped (agents/learning/env.py, docs/equations.md)."""
    gamma = 0.995
    plain = BuildingEnv(limit_per_agent_kwh=0.7)
    shaped = BuildingEnv(limit_per_agent_kwh=0.7, shaping_gamma=gamma)
    options = {"lambda": 2.0, "nu": 6.0}
    plain.reset(seed=4, options=options)
    shaped.reset(seed=4, options=options)
    for action in ([0.0, 0.0], [0.2, 1.0], [1.0, 0.0], [0.0, 0.3]):
        b = float(shaped._loop.state.backlog_kwh[0])
        a = np.array(action, dtype=np.float32)
        _, r_plain, _, _, info_plain = plain.step(a)
        _, r_shaped, _, _, info = shaped.step(a)
        b_next = float(shaped._loop.state.backlog_kwh[0])
        assert info["lagrangian"] == pytest.approx(r_plain, abs=REWARD_ATOL)
        assert r_shaped == pytest.approx(r_plain - 6.0 * (b - gamma * b_next), abs=REWARD_ATOL)
        expected = (-info["cost"] + 2.0 * (0.7 - info["grid_kwh"])
                    - (1.0 - gamma) * 6.0 * b_next - 6.0 * info["dropped_kwh"])
        assert r_shaped == pytest.approx(expected, abs=1e-9)


def test_reward_scaled_by_the_multipliers_of_the_episode():
    plain = BuildingEnv()
    scaled = BuildingEnv(scale_by_multipliers=True)
    options = {"lambda": 3.0, "nu": -4.0}
    plain.reset(seed=2, options=options)
    scaled.reset(seed=2, options=options)
    a = np.array([0.5, 0.5], dtype=np.float32)
    _, r_plain, _, _, _ = plain.step(a)
    _, r_scaled, _, _, info = scaled.step(a)
    assert r_scaled == pytest.approx(r_plain / (1.0 + 3.0 + 4.0), abs=REWARD_ATOL)
    assert info["lagrangian"] == pytest.approx(r_plain, abs=REWARD_ATOL)


def test_shaping_gamma_out_of_range_is_refused():
    with pytest.raises(ValueError, match="shaping_gamma"):
        BuildingEnv(shaping_gamma=1.5)


def test_battery_first_env_serves_from_the_battery_before_the_grid():
    env = BuildingEnv(action_order="battery_first")
    env.reset(seed=5, options={"lambda": 0.0, "nu": 5.0})
    obs = env._loop.observe((0.0, 0.0, 5.0))
    to_serve = float(obs.demand_kwh[0] + obs.backlog_kwh[0])
    available = float(obs.battery_available_kwh[0])
    _, _, _, _, info = env.step(np.array([0.5, 1.0], dtype=np.float32))
    battery = info["served_kwh"] - info["grid_kwh"]
    assert battery == pytest.approx(min(to_serve, available), abs=1e-9)
    assert info["grid_kwh"] == pytest.approx(0.5 * (to_serve - battery), abs=1e-9)
    with pytest.raises(ValueError, match="action_order"):
        BuildingEnv(action_order="sideways")
