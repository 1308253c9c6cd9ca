"""Training on the training fleet through ``cosim train``: warm start from the local-LP
teacher (with DAgger), a squashed PPO and SAC, export in the v2 layout, determinism,
the demonstration cache, and the trained policy in a co-simulation run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.learning.policy import load_policy
from agents.learning.recipe import RecipeError, load_recipe

ACTION_ATOL = 1e-6
FLEET_RECIPE = """
seed: 3
episode_steps: 48
response_steps: 48
lambda_draw: {zero_share: 0.4, power: 3.0}
tariff: {synthetic_share: 0.5, data_scale: [0.7, 1.3]}
checkpoint_every: 100000
lanes: 8
algorithm: ALGO
observation: v2
action_order: battery_first
reward: exogenous_nu
multipliers: {lambda_low: -2.0, negative_share: 0.1, fixed_share: 0.1}
warm_start: {steps: 40, epochs: 3, critic_warmup_steps: 800, dagger_rounds: 1,
             dagger_steps: 20, cache_dir: CACHE}
ppo: {n_steps: 48, batch_size: 128, n_epochs: 2, total_timesteps: 1536, squash: true,
      log_std_init: -2.0, net_arch: [16, 16]}
sac: {learning_starts: 200, batch_size: 64, gradient_steps: 1, total_timesteps: 1200,
      net_arch: [16, 16]}
classes:
  normal: {demand_scale: 1.0, buildings: [Building_1, Building_2]}
  double: {demand_scale: 2.0, buildings: [Building_3]}
"""


def _train(tmp: Path, algo: str, cls: str = "normal", cache: Path | None = None) -> Path:
    from agents.learning.training import train_class

    text = FLEET_RECIPE.replace("ALGO", algo).replace("CACHE", str(cache or tmp / "cache"))
    path = tmp / f"{algo}.yaml"
    path.write_text(text)
    train_class(load_recipe(path), cls, tmp / algo, progress=False, recipe_text=text)
    return tmp / algo


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fleet")
    for algo in ("ppo", "sac"):
        for cls in ("normal", "double"):
            _train(tmp, algo, cls)
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_fleet_training_exports_a_squashed_v2_policy_and_its_warm_start(trained: Path, algo):
    policy = load_policy(trained / algo / "normal.json")
    assert policy.output == "tanh_squashed" and len(policy.obs_names) == 15
    meta = policy.metadata
    assert meta["multipliers"]["lambda_low"] == -2.0 and meta["multipliers"]["evolving"]
    assert meta["training"]["algorithm"] == algo
    assert meta["training"]["demonstrations_total"] == 8 * (40 + 20)
    assert load_policy(trained / algo / "warm_start" / "normal.json").metadata["stage"] \
        == "warm_start"
    losses = np.loadtxt(trained / algo / "normal_bc_loss.csv", skiprows=1)
    assert losses.shape == (6,) and losses[2] < losses[0]  # cloning fits the teacher
    assert (trained / algo / "normal_learning_curve.csv").read_text().count("\n") > 8


@pytest.mark.slow
def test_same_seed_same_weights_and_the_demonstrations_are_cached(trained: Path,
                                                                 tmp_path: Path):
    cache = trained / "cache"
    assert len(list(cache.glob("normal_demonstrations_*.npz"))) == 1
    again = _train(tmp_path, "ppo", cache=cache)
    assert (again / "normal.safetensors").read_bytes() == \
        (trained / "ppo" / "normal.safetensors").read_bytes()


@pytest.mark.slow
def test_fleet_trained_policies_run_in_the_cosimulation(trained: Path, tmp_path: Path):
    from cosim.engine.run import execute, prepare_scenario

    sc, built = prepare_scenario("scenarios/paper_fig1d.yaml", [
        ("controller.policy_dir", str(trained / "ppo")), ("output.plots", False)], steps=24)
    outcome = execute(sc, built, tmp_path / "run", engine="plain", progress=False)
    assert outcome is not None
    kpis = json.loads((tmp_path / "run" / "kpis.json").read_text())
    assert np.isfinite(kpis["fleet"]["total_cost"])


def test_fleet_only_settings_need_lanes(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text("classes: {a: {demand_scale: 1}}\nobservation: v2\n")
    with pytest.raises(RecipeError, match="lanes >= 1"):
        load_recipe(path)
    path.write_text("classes: {a: {demand_scale: 1}}\nlanes: 4\nreward: shaped\n")
    with pytest.raises(RecipeError, match="per-building env"):
        load_recipe(path)
