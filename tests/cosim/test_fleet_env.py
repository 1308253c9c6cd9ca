"""The fleet as a PettingZoo ParallelEnv (cosim.engine.fleet_env): the PettingZoo API test, seeded
and deterministic, the same dynamics as the plain engine, and the worked example that
trains a shared policy on it and runs it through the co-simulation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from agents.control.rules import PriceAwareHeuristic
from agents.fleet.observation import observation_matrix
from cosim.engine.fleet_env import FleetParallelEnv, SharedPolicyVecEnv
from cosim.engine.run import execute, prepare_scenario
from cosim.results.readers import read_table

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 36
#: rewards are sums of a few products: the same operations in the same order
REWARD_ATOL = 1e-12
#: the plain run solves the feeder in batches, the env per step (same numbers, GridFeed)
VOLTAGE_ATOL = 1e-9


@pytest.fixture(scope="module")
def env():
    return FleetParallelEnv.from_scenario(SCENARIO, steps=STEPS)


def test_it_passes_the_pettingzoo_parallel_api_test(env):
    parallel_api_test(env, num_cycles=2 * STEPS)


def test_spaces_come_from_the_observation_builder(env):
    env.reset(seed=0)
    width = observation_matrix(env.loop.observe(), env.scales).shape[1]
    assert env.observation_space("B1").shape == (width,)
    assert env.action_space("B7").shape == (2,)
    assert env.possible_agents == [f"B{i}" for i in range(1, 8)]


def _episode(env, seed):
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    trace = [np.stack(list(obs.values()))]
    while env.agents:
        actions = {a: rng.uniform(0, 1, 2) for a in env.agents}
        obs, rewards, _, _, infos = env.step(actions)
        trace += [np.stack(list(obs.values())), np.array(list(rewards.values())),
                  np.array([[i["lambda"], i["lambda_eff"], i["nu"], i["grid"]["vm_min_pu"]]
                            for i in infos.values()])]
    return trace


def test_episodes_are_deterministic_and_reset_starts_over(env):
    first, again = _episode(env, 3), _episode(env, 3)
    other = FleetParallelEnv.from_scenario(SCENARIO, steps=STEPS)
    fresh = _episode(other, 3)
    for a, b, c in zip(first, again, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert len(first) == 1 + 3 * STEPS
    # the multipliers moved: the duals are in the loop
    assert np.abs(first[-1][:, 0]).max() > 0


def test_it_steps_as_the_plain_engine_and_rewards_the_lagrangian(env, tmp_path):
    """Driven by the heuristic's actions, the env's buildings, multipliers and grid are
    those of the plain engine's run with the heuristic; each reward is the building's
    Lagrangian term."""
    sc, built = prepare_scenario(SCENARIO, [("output.plots", False)], STEPS)
    heuristic = PriceAwareHeuristic(built.setup.params)
    run = execute(sc, built, tmp_path / "plain", progress=False, engine="plain",
                  controller=PriceAwareHeuristic(built.setup.params)).run_dir
    table = read_table(run, "buildings")
    buses = read_table(run, "buses")
    env.reset(seed=0)
    c_per_agent = env.built.limit_kwh / len(env.possible_agents)
    for t in range(STEPS):
        actions = heuristic.act(env.loop.observe())
        _, rewards, _, truncations, infos = env.step(
            {a: actions[i] for i, a in enumerate(env.possible_agents)})
        rows = table[table.time == t]
        for i, a in enumerate(env.possible_agents):
            row = rows.iloc[i]
            info = infos[a]
            assert info["grid_kwh"] == row.grid_kwh and info["cost"] == row.cost
            assert info["lambda"] == row["lambda"] and info["nu"] == row.nu
            r2 = row.grid_kwh + row.battery_kwh - row.demand_kwh
            lagrangian = (-row.cost + row.lambda_eff * (c_per_agent - row.grid_kwh)
                          + row.nu * r2)
            assert rewards[a] == pytest.approx(lagrangian, abs=REWARD_ATOL)
        assert infos["B1"]["district_excess_kwh"] == pytest.approx(
            rows.grid_kwh.sum() - env.built.limit_kwh, abs=REWARD_ATOL)
        assert infos["B1"]["grid"]["vm_min_pu"] == pytest.approx(
            buses[buses.time == t].vm_pu.min(), abs=VOLTAGE_ATOL)
        assert truncations["B1"] == (t == STEPS - 1)
    assert not env.agents


def test_bad_actions_name_the_building(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"missing \['B7'\]"):
        env.step({a: np.ones(2) for a in env.possible_agents[:-1]})
    actions = {a: np.ones(2) for a in env.possible_agents}
    actions["B3"] = np.array([np.nan, 1.0])
    with pytest.raises(ValueError, match="building 'B3': u_grid = nan; every action must be "
                       "finite"):
        env.step(actions)


def test_the_shared_policy_vec_env_resets_at_the_episode_end(env):
    venv = SharedPolicyVecEnv(env, seed=0)
    obs = venv.reset()
    assert obs.shape == (7, env.observation_space("B1").shape[0])
    for t in range(STEPS):
        venv.step_async(np.full((7, 2), 0.5))
        obs, rewards, dones, infos = venv.step_wait()
        assert dones.all() == (t == STEPS - 1)
    assert "terminal_observation" in infos[0]
    assert env.agents  # reset again


@pytest.mark.slow
def test_the_worked_example_trains_exports_and_runs_the_policy(tmp_path):
    out = tmp_path / "example"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "train_shared_policy.py"),
         "--timesteps", "224", "--train-steps", "16", "--eval-steps", "48", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "paper_fig1d, 48 steps: cost trained" in proc.stdout
    for name in ("normal", "double"):
        meta = json.loads((out / "policies" / f"{name}.json").read_text())
        assert meta["training"]["env"] == "cosim.engine.fleet_env"
    summary = json.loads((out / "summary.json").read_text())
    assert np.isfinite(summary["trained"])
    scenario = (out / "run_trained" / "scenario.yaml").read_text()
    assert str(out / "policies") in scenario
    assert read_table(out / "run_trained", "buildings").time.max() == 47


def test_grid_constraints_are_in_the_loop(tmp_path):
    """On a scenario with grid constraints the buildings act under lambda_eff, which moves
    with the power flow's measurements, as in the plain engine's run."""
    scenario = REPO_ROOT / "scenarios" / "lv_semiurb_40_grid.yaml"
    steps = 12
    env = FleetParallelEnv.from_scenario(scenario, steps=steps)
    sc, built = prepare_scenario(scenario, [("output.plots", False)], steps)
    from agents.control.rules import NoControl

    run = execute(sc, built, tmp_path / "plain", progress=False, engine="plain",
                  controller=NoControl()).run_dir
    table = read_table(run, "buildings")
    env.reset(seed=0)
    names = [s.name for s in env.built.grid_constraints.specs]
    for t in range(steps):
        _, _, _, _, infos = env.step({a: np.array([1.0, 0.0]) for a in env.possible_agents})
        rows = table[table.time == t]
        np.testing.assert_array_equal([infos[a]["lambda_eff"] for a in env.possible_agents],
                                      rows.lambda_eff.to_numpy())
        assert list(infos[env.possible_agents[0]]["constraint_excess"]) == names
    assert (rows.lambda_eff != rows["lambda"]).any()
