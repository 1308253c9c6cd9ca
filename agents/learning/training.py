"""Train one state-augmented PPO policy per demand class (``cosim train``).

Per class this writes into the output directory::

    <class>.safetensors, <class>.json     the exported policy (agents.learning.policy)
    <class>_learning_curve.csv            one row per finished training episode
    <class>_checkpoints/                  SB3 checkpoints (for resuming; not the shipped format)
    <class>_report.png                    learning curve, lambda- and nu-response
    <class>_response.csv                  the response figures behind the plots
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.fleet.data import load_citylearn
from agents.fleet.observation import OBS_LAYOUTS, ObservationScales
from agents.learning.env import BuildingEnv
from agents.learning.evaluation import PRICE_ATOL_KWH
from agents.learning.recipe import Recipe

if TYPE_CHECKING:
    from typing import NoReturn

    import gymnasium as gym
    from numpy.typing import NDArray
    from stable_baselines3.common.callbacks import CallbackList
    from tqdm import tqdm

    from agents.learning.policy import Policy


def training_data_hash(recipe: Recipe, buildings: list[str]) -> str:
    """SHA-256 over the data files that training reads, in a fixed order."""
    base = recipe.data_dir()
    digest = hashlib.sha256()
    for name in ["schema.json", "pricing.csv", *(f"{b}.csv" for b in sorted(buildings))]:
        digest.update(name.encode())
        digest.update((base / name).read_bytes())
    return digest.hexdigest()


def _make_env_fn(
    recipe: Recipe, class_name: str, rank: int
) -> Callable[[], gym.Env[NDArray[np.float32], NDArray[np.float32]]]:
    """A factory of the class's training env (float32 observations and actions)."""
    cfg = recipe.classes[class_name]
    lambda_draw, nu_draw = recipe.multiplier_draws()

    def _init() -> gym.Env[NDArray[np.float32], NDArray[np.float32]]:
        from stable_baselines3.common.monitor import Monitor

        env = BuildingEnv(
            buildings=cfg.buildings,
            demand_scale=cfg.demand_scale,
            lambda_range=recipe.lambda_range,
            nu_range=recipe.nu_range,
            episode_steps=recipe.episode_steps,
            backlog_cap_kwh=recipe.backlog_cap_kwh,
            limit_per_agent_kwh=recipe.limit_per_agent_kwh,
            heldout=(recipe.heldout.start, recipe.heldout.steps),
            data=load_citylearn(recipe.data_dir()),
            lambda_draw=lambda_draw,
            nu_draw=nu_draw,
            tariff=recipe.tariff_draw(),
            shaping_gamma=recipe.ppo.gamma if recipe.reward == "shaped" else None,
            scale_by_multipliers=recipe.scale_by_multipliers,
            action_order=recipe.action_order,
            obs_names=OBS_LAYOUTS[recipe.observation],
        )
        env.reset(seed=recipe.seed + rank)
        env.action_space.seed(recipe.seed + rank)
        return Monitor(env, info_keywords=("grid_kwh",))

    return _init


def _scales(recipe: Recipe) -> ObservationScales:
    """The observation scales of the recipe's multiplier ranges."""
    return ObservationScales(
        lambda_max=max(recipe.lambda_range[1], 1e-9),
        nu_abs_max=max(abs(recipe.nu_range[0]), abs(recipe.nu_range[1]), 1e-9),
    )


def _multipliers_meta(recipe: Recipe) -> dict[str, Any]:
    """What a policy records of the multipliers it was trained on."""
    return {"lambda_range": list(recipe.lambda_range), "nu_range": list(recipe.nu_range),
            "lambda_low": (recipe.multipliers.lambda_low if recipe.multipliers is not None
                           else 0.0),
            "evolving": recipe.multipliers is not None}


def total_timesteps(recipe: Recipe) -> int:
    """The RL environment steps of the recipe's algorithm."""
    return recipe.sac.total_timesteps if recipe.algorithm == "sac" else recipe.ppo.total_timesteps


def _callbacks(out_dir: Path, class_name: str, recipe: Recipe,
               progress: bool) -> CallbackList:
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback

    class CurveAndProgress(BaseCallback):
        """Writes finished episodes to CSV and drives a tqdm progress bar."""

        def __init__(self) -> None:
            super().__init__()
            self.path = out_dir / f"{class_name}_learning_curve.csv"
            self.rows = 0
            self.bar: tqdm[NoReturn] | None = None  # a tqdm bar when progress is shown

        def _on_training_start(self) -> None:
            self.fh = open(self.path, "w", newline="")
            self.writer = csv.writer(self.fh)
            self.writer.writerow(["timesteps", "episode", "return", "length", "wall_s"])
            self.t0 = time.perf_counter()
            if progress:
                from tqdm import tqdm

                self.bar = tqdm(total=total_timesteps(recipe), desc=f"train {class_name}",
                                unit="step", smoothing=0.05)

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                ep = info.get("episode")
                if ep is not None:
                    self.rows += 1
                    self.writer.writerow([self.num_timesteps, self.rows, f"{ep['r']:.6g}",
                                          ep["l"], f"{time.perf_counter() - self.t0:.2f}"])
            if self.bar is not None:
                self.bar.update(self.training_env.num_envs)
            return True

        def _on_rollout_end(self) -> None:
            self.fh.flush()

        def _on_training_end(self) -> None:
            self.fh.close()
            if self.bar is not None:
                self.bar.close()

    every = max(1, recipe.checkpoint_every // (recipe.lanes or recipe.ppo.n_envs))
    ckpt = CheckpointCallback(every, str(out_dir / f"{class_name}_checkpoints"),
                              name_prefix=class_name)
    return CallbackList([CurveAndProgress(), ckpt])


def train_class(recipe: Recipe, class_name: str, out_dir: str | Path,
                progress: bool = True, recipe_text: str | None = None) -> dict[str, Any]:
    """Train, export and report one demand class. Returns a summary dict."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

    from agents.learning.evaluation import price_response, response_curves, write_report
    from agents.learning.policy import export_sb3_policy, load_policy

    if class_name not in recipe.classes:
        raise ValueError(f"unknown class {class_name!r}; the recipe has {sorted(recipe.classes)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = recipe.ppo
    fleet_summary: dict[str, Any] = {}
    t0 = time.perf_counter()
    if recipe.lanes:
        from agents.learning.fleet_training import train_fleet_class

        def export_clone(clone: Any) -> object:
            # the behaviour-cloned actor before RL, beside the policy (for comparison)
            return export_sb3_policy(clone, out_dir / "warm_start", class_name,
                                     {"class": class_name, "stage": "warm_start",
                                      "multipliers": _multipliers_meta(recipe)},
                                     _scales(recipe), action_order=recipe.action_order,
                                     obs_names=OBS_LAYOUTS[recipe.observation])

        model, fleet_summary = train_fleet_class(recipe, class_name, out_dir, progress,
                                                 export_clone)
    else:
        torch.set_num_threads(recipe.ppo.torch_threads)
        venv: VecEnv = DummyVecEnv([_make_env_fn(recipe, class_name, i)
                                    for i in range(cfg.n_envs)])
        venv.seed(recipe.seed)
        if cfg.normalize_reward:
            venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=cfg.gamma)
        act_fn = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[cfg.activation]
        model = PPO(
            "MlpPolicy", venv, seed=recipe.seed, device="cpu", verbose=0,
            n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
            learning_rate=cfg.learning_rate, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
            clip_range=cfg.clip_range, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef,
            max_grad_norm=cfg.max_grad_norm,
            policy_kwargs={"net_arch": dict(pi=list(cfg.net_arch), vf=list(cfg.net_arch)),
                           "activation_fn": act_fn},
        )
        model.learn(cfg.total_timesteps,
                    callback=_callbacks(out_dir, class_name, recipe, progress))
    train_s = time.perf_counter() - t0

    class_cfg = recipe.classes[class_name]
    data = load_citylearn(recipe.data_dir())
    buildings = class_cfg.buildings or data.names
    scales = _scales(recipe)
    meta = {
        "class": class_name,
        "demand_scale": class_cfg.demand_scale,
        "multipliers": _multipliers_meta(recipe),
        "recipe": recipe.model_dump(mode="json"),
        "recipe_text": recipe_text,
        "training_data_sha256": training_data_hash(recipe, buildings),
        "training": {"timesteps": total_timesteps(recipe), "wall_s": round(train_s, 1),
                     "episodes": total_timesteps(recipe) // recipe.episode_steps,
                     **fleet_summary},
    }
    json_path = export_sb3_policy(model, out_dir, class_name, meta, scales,
                                  action_order=recipe.action_order,
                                  obs_names=OBS_LAYOUTS[recipe.observation])
    policy = load_policy(json_path)
    steps = min(recipe.response_steps, recipe.heldout.steps)
    curves = response_curves(policy, data, buildings, class_cfg.demand_scale,
                             recipe.heldout.start, steps, recipe.backlog_cap_kwh,
                             recipe.lambda_range, recipe.nu_range)
    prices = price_response(policy, data, buildings, class_cfg.demand_scale,
                            recipe.heldout.start, steps, recipe.backlog_cap_kwh)
    write_report(out_dir, class_name, curves, prices)
    objective: dict[str, float] = {}
    if recipe.lanes:
        objective = _objective_scores(recipe, class_name, policy, out_dir)
    by_price = prices.mean_grid_kwh()
    return {"class": class_name, "policy": str(json_path), "train_s": train_s, **curves.summary(),
            "price_levels": prices.prices.tolist(), "grid_kwh_by_price": by_price.tolist(),
            "share_not_rising_with_price": prices.share_not_rising(PRICE_ATOL_KWH),
            **objective}


def _objective_scores(recipe: Recipe, class_name: str, policy: Policy,
                      out_dir: Path) -> dict[str, float]:
    """The policy, the greedy rule and the heuristic on the training objective at
    execution's operating points (``agents.learning.objective_score``), on training hours;
    per-episode returns in ``<class>_objective.csv``."""
    from agents.learning.fleet_training import make_fleet
    from agents.learning.objective_score import score_policy

    template = make_fleet(recipe, class_name, recipe.seed, lanes=1)
    scores = score_policy(template, lambda fleet, obs: policy.act(obs), seed=recipe.seed
                          + OBJECTIVE_SEED_OFFSET,
                          heldout=(recipe.heldout.start, recipe.heldout.steps))
    names = list(scores.returns)
    with open(out_dir / f"{class_name}_objective.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["episode", *names])
        for k, row in enumerate(zip(*(scores.returns[n] for n in names), strict=True)):
            writer.writerow([k, *(f"{v:.6g}" for v in row)])
    return {"objective_policy": scores.mean("policy"),
            "objective_greedy": scores.mean("greedy"),
            "objective_heuristic": scores.mean("heuristic"),
            "policy_beats_greedy": scores.beats("policy", "greedy"),
            "policy_beats_heuristic": scores.beats("policy", "heuristic")}


#: the objective score's episodes are seeded apart from training's and the demonstrations'
OBJECTIVE_SEED_OFFSET = 300_000


def final_return(curve_csv: str | Path, last: int = 500) -> float:
    """Mean training-episode return over the last ``last`` episodes of a learning curve."""
    returns = np.loadtxt(curve_csv, delimiter=",", skiprows=1, usecols=2, ndmin=1)
    return float(returns[-last:].mean())
