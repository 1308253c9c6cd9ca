"""BuildingEnv: the Gymnasium contract, the Lagrangian reward, determinism."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agents.env import ENV_ID, BuildingEnv, register_env

REWARD_ATOL = 1e-12


def test_check_env_passes():
    check_env(BuildingEnv(), skip_render_check=True)


def test_registered_id_makes_the_env():
    register_env()
    env = gym.make(ENV_ID, demand_scale=2.0)
    obs, info = env.reset(seed=3)
    assert obs.shape == (9,) and "lambda" in info
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
