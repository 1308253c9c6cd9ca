"""Tiny end-to-end training; determinism; safe export and load; tampering rejected."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agents.fleet.building import FleetParams, FleetState
from agents.fleet.data import load_citylearn
from agents.fleet.observation import fleet_observation, observation_matrix
from agents.learning.policy import PolicyFileError, PolicyLibrary, load_policy
from agents.learning.recipe import RecipeError, load_recipe

ACTION_ATOL = 1e-6
TINY_RECIPE = """
seed: 7
episode_steps: 40
response_steps: 48
lambda_draw: {zero_share: 0.3, power: 2.0}
nu_draw: {zero_share: 0.05, power: 2.0, negative_share: 0.1}
tariff: {synthetic_share: 0.5, data_scale: [0.7, 1.3]}
checkpoint_every: 1024
ppo: {n_envs: 2, n_steps: 128, batch_size: 64, n_epochs: 2, total_timesteps: 1024,
      net_arch: [16, 16]}
classes:
  normal: {demand_scale: 1.0, buildings: [Building_1, Building_2]}
  double: {demand_scale: 2.0, buildings: [Building_3]}
"""


def _train(tmp: Path, name: str = "normal"):
    from agents.learning.training import train_class

    recipe_path = tmp / "recipe.yaml"
    recipe_path.write_text(TINY_RECIPE)
    recipe = load_recipe(recipe_path)
    return train_class(recipe, name, tmp / "out", progress=False, recipe_text=TINY_RECIPE)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    _train(tmp, "normal")
    _train(tmp, "double")
    return tmp / "out"


@pytest.mark.slow
def test_tiny_training_writes_policy_curve_and_report(trained: Path):
    for name in ("normal", "double"):
        for suffix in (".json", ".safetensors", "_learning_curve.csv", "_report.png",
                       "_response.csv", "_price_response.csv"):
            assert (trained / f"{name}{suffix}").is_file(), suffix
    meta = json.loads((trained / "normal.json").read_text())
    assert meta["recipe"]["seed"] == 7 and meta["recipe_text"].strip().startswith("seed: 7")
    assert len(meta["training_data_sha256"]) == 64
    assert (trained / "normal_learning_curve.csv").read_text().count("\n") > 10


@pytest.mark.slow
def test_same_seed_same_weights(trained: Path, tmp_path: Path):
    _train(tmp_path, "normal")
    a = (trained / "normal.safetensors").read_bytes()
    b = (tmp_path / "out" / "normal.safetensors").read_bytes()
    assert a == b


@pytest.mark.slow
def test_exported_policy_acts_like_sb3(tmp_path: Path):
    from stable_baselines3 import PPO

    from agents.fleet.observation import ObservationScales
    from agents.learning.env import BuildingEnv
    from agents.learning.policy import export_sb3_policy

    env = BuildingEnv()
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=1, device="cpu",
                policy_kwargs={"net_arch": [8, 8]})
    model.learn(128)
    path = export_sb3_policy(model, tmp_path, "p", {}, env.scales)
    policy = load_policy(path)
    assert policy.scales == ObservationScales(lambda_max=15.0, nu_abs_max=20.0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(500, env.observation_space.shape[0])).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(policy.act_matrix(obs), expected, rtol=0, atol=ACTION_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo_squashed", "sac"])
def test_exported_squashed_policy_acts_like_sb3(tmp_path: Path, algorithm: str):
    """The tanh-squashed actors (PPO with gSDE's squash_output, SAC) export as
    ``tanh_squashed`` and act like SB3's deterministic predict."""
    from stable_baselines3 import PPO, SAC

    from agents.learning.env import BuildingEnv
    from agents.learning.policy import export_sb3_policy

    env = BuildingEnv()
    if algorithm == "sac":
        model = SAC("MlpPolicy", env, learning_starts=32, batch_size=32, seed=1, device="cpu",
                    policy_kwargs={"net_arch": [8, 8]})
        model.learn(64)
    else:
        model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=1,
                    device="cpu", use_sde=True,
                    policy_kwargs={"net_arch": [8, 8], "squash_output": True})
        model.learn(64)
    policy = load_policy(export_sb3_policy(model, tmp_path, "p", {}, env.scales))
    assert policy.output == "tanh_squashed"
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(300, env.observation_space.shape[0])).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(policy.act_matrix(obs), expected, rtol=0, atol=ACTION_ATOL)


def _copy_policy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in ("normal.json", "normal.safetensors"):
        shutil.copy(src / f, dst / f)
    return dst / "normal.json"


@pytest.mark.slow
def test_tampered_weights_are_rejected(trained: Path, tmp_path: Path):
    path = _copy_policy(trained, tmp_path / "t")
    weights = path.with_suffix(".safetensors")
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(PolicyFileError, match="does not match weights_sha256"):
        load_policy(path)


@pytest.mark.slow
def test_mismatched_description_is_rejected(trained: Path, tmp_path: Path):
    path = _copy_policy(trained, tmp_path / "m")
    meta = json.loads(path.read_text())
    meta["architecture"]["layer_sizes"][1] = 32
    path.write_text(json.dumps(meta))
    with pytest.raises(PolicyFileError, match="layer0 has shape"):
        load_policy(path)
    meta["observation"]["names"] = ["demand"]
    path.write_text(json.dumps(meta))
    with pytest.raises(PolicyFileError, match="observation"):
        load_policy(path)
    path.write_text("{not json")
    with pytest.raises(PolicyFileError, match="not a valid policy description"):
        load_policy(path)
    with pytest.raises(PolicyFileError, match="policy file not found"):
        load_policy(tmp_path / "none.json")


@pytest.mark.slow
def test_library_acts_per_class_in_one_call(trained: Path):
    data = load_citylearn()
    names = ["Building_1", "Building_2", "Building_3", "Building_4"]
    classes = ["normal", "double", "normal", "double"]
    lib = PolicyLibrary.from_directory(trained, classes)
    params = FleetParams.from_buildings([data.building(n) for n in names],
                                        demand_scale=[1, 2, 1, 2])
    demand, solar, price = data.window(names, 100, 1)
    obs = fleet_observation(params, FleetState.initial(params, 0.3), demand[0], solar[0],
                            price[0], 4, np.array([0.0, 1.0, 2.0, 3.0]), 5.0)
    actions = lib.act(obs)
    assert actions.shape == (4, 2) and ((actions >= 0) & (actions <= 1)).all()
    matrix = observation_matrix(obs, lib.policies["double"].scales,
                                lib.policies["double"].obs_names)
    np.testing.assert_allclose(actions[[1, 3]],
                               lib.policies["double"].act_matrix(matrix[[1, 3]]), atol=ACTION_ATOL)
    with pytest.raises(PolicyFileError, match="not loaded"):
        PolicyLibrary(lib.policies, ["normal", "triple"])


def test_recipe_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text("classes: {a: {demand_scale: 1}}\nppo: {n_env: 3}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: ppo\.n_env: Extra inputs"):
        load_recipe(path)
    path.write_text("classes: {a: {demand_scale: -1}}\n")
    with pytest.raises(RecipeError, match=r"classes\.a\.demand_scale"):
        load_recipe(path)
    path.write_text("classes: [a\n")
    with pytest.raises(RecipeError, match="malformed YAML"):
        load_recipe(path)


@pytest.mark.slow
def test_battery_first_policy_maps_its_outputs(tmp_path: Path):
    """A policy exported with action_order battery_first records it, and acts through
    agents.fleet.actions.battery_first_to_model; an unknown order is refused on load."""
    from stable_baselines3 import PPO

    from agents.fleet.actions import battery_first_to_model
    from agents.learning.env import BuildingEnv
    from agents.learning.policy import export_sb3_policy

    env = BuildingEnv(action_order="battery_first")
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=1, device="cpu",
                policy_kwargs={"net_arch": [8, 8]})
    model.learn(64)
    path = export_sb3_policy(model, tmp_path, "b", {}, env.scales, action_order="battery_first")
    policy = load_policy(path)
    assert policy.action_order == "battery_first"
    assert policy.metadata["action"]["names"] == ["grid_share_after_battery", "battery_share"]
    data = load_citylearn()
    names = ["Building_1", "Building_2", "Building_3"]
    params = FleetParams.from_buildings([data.building(n) for n in names])
    demand, solar, price = data.window(names, 200, 1)
    state = FleetState(np.array([0.0, 3.0, 9.0]), np.array([0.5, 4.0, 6.0]))
    obs = fleet_observation(params, state, demand[0], solar[0], price[0], 18, 1.0, 4.0,
                            price_ahead_per_kwh=data.price_outlook(201, 0))
    outputs = policy.act_matrix(observation_matrix(obs, policy.scales, policy.obs_names)
                                ).astype(np.float64)
    expected = battery_first_to_model(outputs, obs.demand_kwh + obs.backlog_kwh,
                                      obs.battery_available_kwh)
    np.testing.assert_allclose(policy.act(obs), expected, rtol=0, atol=ACTION_ATOL)
    meta = json.loads(path.read_text())
    meta["action"]["order"] = "sideways"
    path.write_text(json.dumps(meta))
    with pytest.raises(PolicyFileError, match="action.order 'sideways'"):
        load_policy(path)
