"""Train one policy shared by every building on the fleet env, save it in the format
``controller.kind: policy`` loads, and run it through the mosaik co-simulation.

    python examples/train_shared_policy.py --timesteps 200000 --out runs/shared_policy

1. ``cosim.engine.fleet_env.FleetParallelEnv``: paper_fig1d's fleet, feeder, duals and
   consensus, on a training window of the data outside the held-out hours 0-2999
   (``time.start`` moved to ``--train-start``);
2. stable-baselines3 PPO on it through ``SharedPolicyVecEnv`` (one entry per building,
   one network: parameter sharing);
3. the actor exported with ``agents.learning.policy.export_sb3_policy`` as ``normal.json`` and
   ``double.json`` (the same network for both demand classes of the scenario);
4. the co-simulation of paper_fig1d (hours 0..``--eval-steps``-1) with
   ``controller.policy_dir`` pointing there, and, for scale, the oracle's run.

It prints the cost of both runs and their ratio, and writes them to ``summary.json``.
A tiny budget (``--timesteps 256``) runs in seconds; it is what the tests run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"


def train(out: Path, timesteps: int, train_start: int, train_steps: int, seed: int) -> Path:
    """Train the shared policy; the directory holding ``normal.json`` and ``double.json``."""
    import torch
    from stable_baselines3 import PPO

    from agents.learning.policy import export_sb3_policy
    from cosim.engine.fleet_env import FleetParallelEnv, SharedPolicyVecEnv

    torch.set_num_threads(1)
    env = FleetParallelEnv.from_scenario(
        SCENARIO, [("time.start", train_start), ("seed", seed)], steps=train_steps)
    venv = SharedPolicyVecEnv(env, seed=seed)
    n_steps = max(8, min(train_steps, 64) // 4 * 4)  # fleet steps per update
    model = PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, n_steps=n_steps,
                batch_size=n_steps * venv.num_envs // 4, n_epochs=5, gamma=0.99,
                learning_rate=3e-4,
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]},
                               "activation_fn": torch.nn.Tanh})
    model.learn(timesteps)
    duals = env.built.scenario.duals
    policy_dir = out / "policies"
    for name, scale in (("normal", 1.0), ("double", 2.0)):
        export_sb3_policy(model, policy_dir, name, {
            "class": name, "demand_scale": scale,
            "multipliers": {"lambda_range": [0.0, duals.lambda_max],
                            "nu_range": [duals.nu_min, duals.nu_max]},
            "training": {"timesteps": int(timesteps), "env": "cosim.engine.fleet_env",
                         "scenario": "paper_fig1d", "data_start": train_start,
                         "episode_steps": train_steps, "shared_by": "every building"},
        }, env.scales)
    return policy_dir


def evaluate(out: Path, policy_dir: Path, eval_steps: int) -> dict[str, float | str]:
    """Run paper_fig1d with the trained policy (mosaik) and with the oracle; their costs.

    Over a short run the oracle may find no schedule within the limit (its limit holds
    on the run's average); then its cost is NaN and ``oracle_infeasible`` says why.
    """
    from cosim.engine.run import execute, prepare_scenario
    from cosim.scenario.errors import ScenarioInfeasible

    costs: dict[str, float | str] = {}
    for label, overrides, engine in (
            ("trained", [("controller.policy_dir", str(policy_dir))], "mosaik"),
            ("oracle", [("controller", {"kind": "oracle"})], "plain")):
        try:
            sc, built = prepare_scenario(SCENARIO, [*overrides, ("output.plots", False)],
                                         eval_steps)
        except ScenarioInfeasible as exc:
            costs[label] = float("nan")
            costs[f"{label}_infeasible"] = "; ".join(m for _, m in exc.errors)
            continue
        outcome = execute(sc, built, out / f"run_{label}", progress=False, force=True,
                          engine=engine)
        costs[label] = float(outcome.kpis["fleet"]["total_cost"])
        costs[f"{label}_steps_over_limit"] = float(outcome.kpis["fleet"]["steps_over_limit"])
        costs[f"{label}_dropped_kwh"] = float(outcome.kpis["fleet"]["dropped_kwh"])
    trained, oracle = float(costs["trained"]), float(costs["oracle"])
    costs["cost_ratio_trained_to_oracle"] = trained / oracle
    return costs


def main(argv: list[str] | None = None) -> int:
    """Train, export, run; print and save the costs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/shared_policy"))
    parser.add_argument("--timesteps", type=int, default=100_000,
                        help="PPO timesteps (building-steps: one fleet step is N of them)")
    parser.add_argument("--train-start", type=int, default=4000,
                        help="data row of the training window (outside hours 0-2999)")
    parser.add_argument("--train-steps", type=int, default=168, help="episode length, steps")
    parser.add_argument("--eval-steps", type=int, default=3000,
                        help="steps of paper_fig1d to run the policy and the oracle on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    policy_dir = train(args.out, args.timesteps, args.train_start, args.train_steps, args.seed)
    costs = evaluate(args.out, policy_dir, args.eval_steps)
    (args.out / "summary.json").write_text(json.dumps(
        {"timesteps": args.timesteps, "eval_steps": args.eval_steps, **costs}, indent=2) + "\n")
    print(f"policies: {policy_dir}")
    print(f"paper_fig1d, {args.eval_steps} steps: cost trained {costs['trained']:.2f} $, "
          f"oracle {costs['oracle']:.2f} $, ratio {costs['cost_ratio_trained_to_oracle']:.3f}"
          + (f" (oracle: {costs['oracle_infeasible']})" if "oracle_infeasible" in costs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
