"""Training throughput: the per-building gym env against the training fleet, side by side.

    python benchmarks/training_env.py [--steps 100000] [--lanes 64] [--ppo-steps 100000]

Measured in one process, one after the other:

- ``env``: environment steps per second with random actions, SB3's ``DummyVecEnv``
  over 8 ``BuildingEnv`` (one building, one Python ``step`` each, as the paper's recipe
  trains) against ``FleetVecEnv`` with ``--lanes`` lanes (all lanes in one numpy call);
- ``ppo``: PPO ``learn`` steps per second on each (the same network, 5 epochs, one
  torch thread), which adds the forward passes and the gradient updates.

The last line holds the headline figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

from agents.fleet.data import load_citylearn  # noqa: E402
from agents.learning.env import BuildingEnv  # noqa: E402
from agents.learning.tariffs import MultiplierDraw, TariffDraw  # noqa: E402
from agents.learning.training_fleet import MultiplierProcess, TrainingFleet  # noqa: E402
from agents.learning.vec_env import FleetVecEnv  # noqa: E402


def _dummy(n_envs: int):
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make(rank: int):
        def init():
            env = BuildingEnv(episode_steps=168, heldout=(0, 3000))
            env.reset(seed=rank)
            return env
        return init
    return DummyVecEnv([make(i) for i in range(n_envs)])


def _fleet(lanes: int) -> FleetVecEnv:
    data = load_citylearn()
    proc = MultiplierProcess(MultiplierDraw(0.0, 15.0, zero_share=0.4, power=3.0),
                             MultiplierDraw(-5.0, 5.0, zero_share=0.5, power=2.0))
    return FleetVecEnv(TrainingFleet(data, data.names, 1.0, lanes, 168, proc,
                                     TariffDraw(synthetic_share=0.5), (0.0, 15.0),
                                     (-20.0, 20.0), heldout=(0, 3000), seed=0))


def env_steps_per_s(venv, steps: int) -> float:
    rng = np.random.default_rng(0)
    venv.reset()
    n = venv.num_envs
    t0 = time.perf_counter()
    for _ in range(max(1, steps // n)):
        venv.step(rng.random((n, 2)).astype(np.float32))
    return (steps // n) * n / (time.perf_counter() - t0)


def ppo_steps_per_s(venv, steps: int) -> float:
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    n_steps = max(8, 10752 // venv.num_envs)
    model = PPO("MlpPolicy", venv, n_steps=n_steps, batch_size=2688, n_epochs=5, seed=0,
                device="cpu", verbose=0, policy_kwargs={"net_arch": [64, 64]})
    t0 = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--lanes", type=int, default=64)
    ap.add_argument("--ppo-steps", type=int, default=100_000)
    args = ap.parse_args()
    env_dummy = env_steps_per_s(_dummy(8), args.steps // 4)
    env_fleet = env_steps_per_s(_fleet(args.lanes), args.steps)
    ppo_dummy = ppo_steps_per_s(_dummy(8), args.ppo_steps // 4)
    ppo_fleet = ppo_steps_per_s(_fleet(args.lanes), args.ppo_steps)
    print(f"{'':24}{'DummyVecEnv x 8':>18}{f'FleetVecEnv x {args.lanes}':>20}{'ratio':>8}")
    print(f"{'env steps/s (random)':24}{env_dummy:18,.0f}{env_fleet:20,.0f}"
          f"{env_fleet / env_dummy:8.1f}")
    print(f"{'PPO learn steps/s':24}{ppo_dummy:18,.0f}{ppo_fleet:20,.0f}"
          f"{ppo_fleet / ppo_dummy:8.1f}")
    print(f"env_dummy={env_dummy:.0f} env_fleet={env_fleet:.0f} "
          f"env_ratio={env_fleet / env_dummy:.1f} ppo_dummy={ppo_dummy:.0f} "
          f"ppo_fleet={ppo_fleet:.0f} ppo_ratio={ppo_fleet / ppo_dummy:.1f}")


if __name__ == "__main__":
    main()
