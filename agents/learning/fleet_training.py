"""Train a demand class's policy on the training fleet (``cosim train`` with ``lanes >= 1``).

The steps, each optional but the last:

1. **Warm start** (``warm_start``): demonstrations of the local-LP teacher
   (:mod:`agents.learning.teacher`) on the training fleet, and behaviour cloning of the actor's
   deterministic action onto them (mean squared error in action space).
2. **Critic warm-up**: the first ``critic_warmup_steps`` RL steps train the value
   function (PPO) or the critics (SAC) with the cloned actor frozen, so that the first
   policy updates do not follow the advantages of an untrained critic.
3. **RL fine-tuning** with PPO (optionally tanh-squashed, SB3's gSDE) or SAC
   (tanh-squashed) on :class:`agents.learning.vec_env.FleetVecEnv`, the multipliers evolving
   within episodes as at execution (:mod:`agents.learning.training_fleet`).

The exported policy is the actor's deterministic action, in the format
``controller.kind: policy`` loads (:mod:`agents.learning.policy`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.fleet.data import load_citylearn
from agents.fleet.observation import OBS_LAYOUTS
from agents.learning.recipe import Recipe
from agents.learning.tariffs import MultiplierDraw
from agents.learning.training_fleet import MultiplierProcess, TrainingFleet

if TYPE_CHECKING:
    import torch

    from agents.learning.teacher import Demonstrations


def multiplier_process(recipe: Recipe) -> MultiplierProcess:
    """The recipe's multiplier process (fixed per episode when ``multipliers`` is None)."""
    lambda_draw, nu_draw = recipe.multiplier_draws()
    cfg = recipe.multipliers
    if cfg is None:  # the paper's: lambda and nu drawn once and held (no lambda_low)
        return MultiplierProcess(lambda_draw, nu_draw, lambda_low=0.0, negative_share=0.0,
                                 fixed_share=1.0)
    off = cfg.nu_offset
    return MultiplierProcess(
        lambda_level=lambda_draw,
        nu_offset=MultiplierDraw(off.low, off.high, zero_share=off.zero_share, power=off.power),
        lambda_low=cfg.lambda_low, negative_share=cfg.negative_share,
        reversion=cfg.reversion, noise=cfg.noise, eta=cfg.eta, fixed_share=cfg.fixed_share)


def make_fleet(recipe: Recipe, class_name: str, seed: int, lanes: int | None = None,
               heldout: tuple[int, int] | None = None) -> TrainingFleet:
    """The class's training fleet (``heldout`` defaults to the recipe's)."""
    cfg = recipe.classes[class_name]
    data = load_citylearn(recipe.data_dir())
    return TrainingFleet(
        data, cfg.buildings or data.names, cfg.demand_scale, lanes or recipe.lanes,
        recipe.episode_steps, multiplier_process(recipe), recipe.tariff_draw(),
        recipe.lambda_range, recipe.nu_range, recipe.backlog_cap_kwh,
        recipe.limit_per_agent_kwh,
        heldout if heldout is not None else (recipe.heldout.start, recipe.heldout.steps),
        seed, recipe.scale_by_multipliers, recipe.action_order, OBS_LAYOUTS[recipe.observation],
        "exogenous_nu" if recipe.reward == "exogenous_nu" else "lagrangian")


def build_model(recipe: Recipe, venv: Any) -> Any:
    """An SB3 PPO or SAC model on ``venv`` (a VecEnv) with the recipe's settings."""
    import torch

    if recipe.algorithm == "sac":
        from stable_baselines3 import SAC

        s = recipe.sac
        act_fn = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[s.activation]
        return SAC("MlpPolicy", venv, seed=recipe.seed, device="cpu", verbose=0,
                   learning_rate=s.learning_rate, buffer_size=s.buffer_size,
                   batch_size=s.batch_size, tau=s.tau, gamma=s.gamma, train_freq=1,
                   gradient_steps=s.gradient_steps, learning_starts=s.learning_starts,
                   ent_coef=s.ent_coef,
                   policy_kwargs={"net_arch": list(s.net_arch), "activation_fn": act_fn})
    from stable_baselines3 import PPO

    c = recipe.ppo
    act_fn = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[c.activation]
    kwargs: dict[str, Any] = {"net_arch": dict(pi=list(c.net_arch), vf=list(c.net_arch)),
                              "activation_fn": act_fn, "log_std_init": c.log_std_init}
    if c.squash:
        kwargs["squash_output"] = True
    return PPO("MlpPolicy", venv, seed=recipe.seed, device="cpu", verbose=0,
               n_steps=c.n_steps, batch_size=c.batch_size, n_epochs=c.n_epochs,
               learning_rate=c.learning_rate, gamma=c.gamma, gae_lambda=c.gae_lambda,
               clip_range=c.clip_range, ent_coef=c.ent_coef, vf_coef=c.vf_coef,
               max_grad_norm=c.max_grad_norm, use_sde=c.squash, policy_kwargs=kwargs)


def actor_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The parameters of the actor's deterministic path and its exploration noise."""
    policy = model.policy
    if hasattr(policy, "actor"):  # SAC
        return list(policy.actor.parameters())
    params = [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]
    params.append(policy.log_std)
    return params


def deterministic_action(model: Any, obs: torch.Tensor) -> torch.Tensor:
    """The actor's deterministic action in [low, high] = [0, 1], differentiable."""
    import torch

    policy = model.policy
    if hasattr(policy, "actor"):  # SAC: tanh-squashed
        actor = policy.actor
        latent = actor.latent_pi(actor.extract_features(obs, actor.features_extractor))
        return 0.5 * (torch.tanh(actor.mu(latent)) + 1.0)
    features = policy.extract_features(obs, policy.pi_features_extractor)
    mean: torch.Tensor = policy.action_net(policy.mlp_extractor.forward_actor(features))
    if getattr(policy, "squash_output", False):
        return 0.5 * (torch.tanh(mean) + 1.0)
    return mean


def policy_actions(model: Any, matrix: np.ndarray) -> np.ndarray:
    """The actor's deterministic actions (M, 2) for an observation matrix (numpy)."""
    import torch

    with torch.no_grad():
        raw = deterministic_action(model, torch.as_tensor(matrix)).numpy()
    result: np.ndarray = np.clip(raw, 0.0, 1.0)
    return result


def behaviour_clone(model: Any, demos: Demonstrations, epochs: int, batch_size: int,
                    learning_rate: float, seed: int) -> list[float]:
    """Fit the actor's deterministic action to the demonstrations; the loss per epoch."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    obs = torch.as_tensor(demos.obs)
    target = torch.as_tensor(demos.actions)
    optimiser = torch.optim.Adam(actor_parameters(model), lr=learning_rate)
    losses = []
    for _ in range(epochs):
        order = torch.randperm(obs.shape[0], generator=gen)
        total = 0.0
        for lo in range(0, obs.shape[0], batch_size):
            idx = order[lo:lo + batch_size]
            loss = torch.mean((deterministic_action(model, obs[idx]) - target[idx]) ** 2)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # torch's stub is untyped
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / obs.shape[0])
    return losses


def _first_demonstrations(recipe: Recipe, class_name: str, progress: bool) -> Demonstrations:
    """The first round of demonstrations, from ``warm_start.cache_dir`` when it holds them
    for the same settings (a JSON key beside the arrays), else collected (and kept there)."""
    import hashlib
    import json

    from agents.learning.teacher import Demonstrations, collect

    ws = recipe.warm_start
    assert ws is not None  # called for a warm start
    key = json.dumps({"class": class_name, "recipe": recipe.model_dump(
        mode="json", exclude={"seed", "ppo", "sac", "algorithm", "warm_start", "checkpoint_every",
                              "response_steps"}),
        "warm_start": ws.model_dump(mode="json", include={"steps", "horizon", "mix", "noise",
                                                          "seed"})}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = None
    if ws.cache_dir is not None:
        path = Path(ws.cache_dir) / f"{class_name}_demonstrations_{digest}.npz"
        if path.is_file():
            with np.load(path) as npz:
                return Demonstrations(npz["obs"], npz["actions"])
    fleet = make_fleet(recipe, class_name, ws.seed + 100_000)
    demos = collect(fleet, ws.steps, ws.horizon, ws.mix, ws.noise, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, obs=demos.obs, actions=demos.actions)
        tmp.replace(path)
    return demos


def _freeze_callback(model: Any, steps: int) -> Any:
    """A callback that keeps the actor frozen for the first ``steps`` RL steps."""
    from stable_baselines3.common.callbacks import BaseCallback

    params = actor_parameters(model)

    class FreezeActor(BaseCallback):
        """Actor parameters without gradients until ``steps`` steps are done."""

        def _on_training_start(self) -> None:
            for p in params:
                p.requires_grad_(steps <= 0)

        def _on_step(self) -> bool:
            if self.num_timesteps >= steps and not params[0].requires_grad:
                for p in params:
                    p.requires_grad_(True)
            return True

    return FreezeActor()


def train_fleet_class(recipe: Recipe, class_name: str, out_dir: str | Path,
                      progress: bool = True,
                      export_warm_start: Callable[[Any], object] | None = None,
                      ) -> tuple[Any, dict[str, Any]]:
    """Warm start, critic warm-up and RL fine-tuning of one class (module docstring).

    ``export_warm_start(model)`` is called with the cloned model before RL fine-tuning.
    Returns the trained SB3 model and a summary of the training (wall times, losses).
    """
    import torch
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.learning.training import _callbacks
    from agents.learning.vec_env import FleetVecEnv

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = recipe.sac.torch_threads if recipe.algorithm == "sac" else recipe.ppo.torch_threads
    torch.set_num_threads(threads)
    torch.manual_seed(recipe.seed)
    summary: dict[str, Any] = {"algorithm": recipe.algorithm, "lanes": recipe.lanes,
                               "observation": recipe.observation}
    venv: Any = FleetVecEnv(make_fleet(recipe, class_name, recipe.seed))
    venv.seed(recipe.seed)
    if recipe.algorithm == "ppo" and recipe.ppo.normalize_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=recipe.ppo.gamma)
    model = build_model(recipe, venv)
    callbacks: list[BaseCallback] = [_callbacks(out_dir, class_name, recipe, progress)]
    ws = recipe.warm_start
    if ws is not None:
        from agents.learning.teacher import Demonstrations, collect

        t0 = time.perf_counter()
        demos = _first_demonstrations(recipe, class_name, progress)
        summary["demonstrations"] = int(demos.obs.shape[0])
        summary["demonstrations_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        losses = behaviour_clone(model, demos, ws.epochs, ws.batch_size, ws.learning_rate,
                                 recipe.seed)
        for k in range(ws.dagger_rounds):
            fleet_k = make_fleet(recipe, class_name, recipe.seed + 200_000 + 1000 * k)
            more = collect(fleet_k, ws.dagger_steps, ws.horizon, ws.mix, ws.noise, progress,
                           behaviour=lambda m: policy_actions(model, m))
            demos = Demonstrations(np.concatenate([demos.obs, more.obs]),
                                   np.concatenate([demos.actions, more.actions]))
            losses += behaviour_clone(model, demos, ws.epochs, ws.batch_size,
                                      ws.learning_rate, recipe.seed + k + 1)
        summary["demonstrations_total"] = int(demos.obs.shape[0])
        summary["bc_s"] = round(time.perf_counter() - t0, 1)
        summary["bc_loss_first_last"] = [round(losses[0], 5), round(losses[-1], 5)]
        np.savetxt(out_dir / f"{class_name}_bc_loss.csv", np.asarray(losses), delimiter=",",
                   header="mse_per_epoch", comments="")
        if export_warm_start is not None:
            export_warm_start(model)
        callbacks.append(_freeze_callback(model, ws.critic_warmup_steps))
    total = recipe.sac.total_timesteps if recipe.algorithm == "sac" \
        else recipe.ppo.total_timesteps
    t0 = time.perf_counter()
    model.learn(total, callback=CallbackList(callbacks))
    summary["rl_s"] = round(time.perf_counter() - t0, 1)
    summary["rl_timesteps"] = total
    summary["env_steps_per_s"] = round(total / max(summary["rl_s"], 1e-9), 1)
    return model, summary
