"""The fleet as a PettingZoo ``ParallelEnv``: one agent per building, the dual dynamics and
the feeder's AC power flow in the loop (docs/controllers.md).

Built from a scenario file (:meth:`FleetParallelEnv.from_scenario`). One step:

1. every building's action ``(u_grid, u_batt)`` (model order, in [0, 1]; values outside
   are clipped by the building model) goes to ``agents.fleet.runner.FleetLoop``, the same
   fleet engine both co-simulation engines run, which steps the buildings and updates
   the duals (consensus on lambda and nu over the communication graph);
2. the step's net loads go to the feeder's power flow (``cosim.engine.plain.grid_step``, the
   plain engine's), whose measurement updates the grid constraints' multipliers.

- **Observation** of each building: its row of the state-augmented observation
  (``agents.fleet.observation.observation_matrix``) with the multipliers it will act under,
  scaled with the scenario's ``duals.lambda_max`` and ``nu`` bounds; its width comes
  from the observation builder (``observation_width``).
- **Reward** of building i: its Lagrangian term
  ``-cost_i + lambda_eff_i (c/N - g_i) + nu_i (served_i - d_i)``, with the multipliers
  it acted under (the reward of ``agents.learning.env.BuildingEnv``, unshaped).
- **Infos** of building i: ``lambda``, ``lambda_eff``, ``mu``, ``nu``, its ``grid_kwh``,
  ``cost`` and ``dropped_kwh``; ``grid`` (the step's power flow: converged, min/max bus
  voltage in p.u., max line and transformer loading in %, losses in MW);
  ``district_excess_kwh`` (district grid energy minus c, kWh) and, with grid
  constraints, ``constraint_excess`` (name to excess, in each constraint's unit).
- **Episodes** start at the scenario's step 0 from the same state (buildings, duals,
  grid multipliers, power-flow warm start) and are truncated after ``episode_steps``
  (default: the scenario's steps). The scenario's ``seed`` fixes everything random in
  the dynamics (message faults); ``reset(seed=...)`` seeds the spaces' samplers.

:class:`SharedPolicyVecEnv` presents the env to stable-baselines3 as one vectorised env
with an entry per building (parameter sharing). No mosaik here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from stable_baselines3.common.vec_env import VecEnv

from agents.fleet.observation import ObservationScales, observation_matrix
from agents.fleet.runner import FleetLoop
from cosim.engine.plain import grid_step
from cosim.scenario.build import Built
from cosim.scenario.model import Scenario

#: The action columns of each agent (model order, docs/equations.md).
ACTION_NAMES = ("u_grid", "u_batt")


def observation_scales(sc: Scenario) -> ObservationScales:
    """The observation's scales for a scenario: its multiplier bounds, the default rest."""
    return ObservationScales(lambda_max=sc.duals.lambda_max,
                             nu_abs_max=max(abs(sc.duals.nu_min), abs(sc.duals.nu_max)))


class FleetParallelEnv(ParallelEnv[str, np.ndarray, np.ndarray]):  # type: ignore[misc]
    """The fleet of a built scenario as a PettingZoo ``ParallelEnv`` (module docstring)."""

    metadata = {"name": "fleetcosim_fleet_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, built: Built, episode_steps: int | None = None) -> None:
        setup = built.setup
        steps = setup.n_steps if episode_steps is None else int(episode_steps)
        if not 1 <= steps <= setup.n_steps:
            raise ValueError(f"episode_steps must lie in 1..{setup.n_steps} (the scenario's "
                             f"steps), got {episode_steps}")
        if built.duals is None:
            raise ValueError("the env needs the duals: build the scenario with its feeder")
        self.built, self.episode_steps = built, steps
        self.scales = observation_scales(built.scenario)
        self.possible_agents: list[str] = list(built.names)
        self.agents: list[str] = []
        self.render_mode = None
        self.loop = FleetLoop(setup, None, built.duals, built.grid_constraints)
        self._initial = self.loop.snapshot()
        grid = built.grid
        self._feed = None
        self._grid_initial = None
        if grid is not None:
            from grid_models.grid_model import GridFeed

            self._feed = GridFeed(grid, "per_step", 1, setup.n_steps)
            self._grid_initial = grid.powerflow.warm_start_state()
        self.limit_per_agent_kwh = built.limit_kwh / setup.n
        width = observation_width(self.loop, self.scales)
        self._observation_space = spaces.Box(-np.inf, np.inf, (width,), np.float32)
        self._action_space = spaces.Box(0.0, 1.0, (len(ACTION_NAMES),), np.float32)

    @classmethod
    def from_scenario(cls, path: str | Path, overrides: list[tuple[str, Any]] | None = None,
                      steps: int | None = None,
                      episode_steps: int | None = None) -> FleetParallelEnv:
        """The env of a scenario file (``overrides`` and ``steps`` as ``cosim run`` takes
        them: ``--set`` pairs and ``--steps``).

        Raises:
            cosim.scenario.errors.ScenarioError: naming every problem of the scenario.
        """
        from cosim.engine.run import prepare_scenario

        _, built = prepare_scenario(path, overrides, steps)
        return cls(built, episode_steps)

    def observation_space(self, agent: str) -> spaces.Box:
        """The observation space of ``agent`` (the same for every building)."""
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Box:
        """The action space of ``agent``: ``(u_grid, u_batt)`` in [0, 1]."""
        return self._action_space

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Back to the scenario's step 0; the observations and empty infos of every building."""
        if seed is not None:
            for k, space in enumerate((self._observation_space, self._action_space)):
                space.seed(seed + k)
        self.loop.restore(self._initial)
        if self._grid_initial is not None:
            assert self.built.grid is not None  # set with the grid
            self.built.grid.powerflow.set_warm_start_state(self._grid_initial)
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def _matrix(self) -> np.ndarray:
        """The observation matrix now; after the scenario's last step (an episode's final
        observation) with the state reached and the last step's data and hour."""
        loop, last = self.loop, self.built.setup.n_steps - 1
        if loop.t <= last:
            return observation_matrix(loop.observe(), self.scales)
        t = loop.t
        loop.t = last
        try:
            return observation_matrix(loop.observe(), self.scales)
        finally:
            loop.t = t

    def _observations(self) -> dict[str, np.ndarray]:
        matrix = self._matrix()
        return {a: matrix[i] for i, a in enumerate(self.possible_agents)}

    def _actions(self, actions: dict[str, Any]) -> np.ndarray:
        missing = [a for a in self.agents if a not in actions]
        unknown = sorted(set(actions) - set(self.agents))
        if missing or unknown:
            raise ValueError(f"actions must name every building once: missing {missing}, "
                             f"unknown {unknown}")
        rows = []
        for agent in self.possible_agents:
            row = np.asarray(actions[agent], dtype=np.float64).reshape(-1)
            if row.shape != (len(ACTION_NAMES),):
                raise ValueError(f"building {agent!r}: an action is (u_grid, u_batt), got "
                                 f"shape {np.shape(actions[agent])}")
            rows.append(row)
        return np.stack(rows)

    def step(self, actions: dict[str, Any]) -> tuple[
            dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool],
            dict[str, dict[str, Any]]]:
        """One step of the fleet, the duals and the feeder (module docstring).

        Raises:
            ValueError: actions that miss a building, name an unknown one, have the wrong
                shape or are not finite (the message names the building); a step after
                the episode's end.
        """
        if not self.agents:
            raise ValueError("the episode is over; call reset()")
        t = self.loop.t
        values = self.loop.step(actions=self._actions(actions))
        grid_info: dict[str, Any] = {}
        constraint_excess: dict[str, float] = {}
        if self._feed is not None:
            (_, result, row), = grid_step(self._feed, self.built.grid_constraints, t,
                                          values["p_kw"])
            grid_info = grid_summary(result)
            if row is not None:
                gc = self.built.grid_constraints
                assert gc is not None  # a row comes only with grid constraints
                constraint_excess = {s.name: float(e) for s, e in zip(gc.specs, row["excess"],
                                                                     strict=True)}
        lam_eff, nu = values["lambda_eff"], values["nu"]
        rewards_arr = (-values["cost"] + lam_eff * (self.limit_per_agent_kwh - values["grid_kwh"])
                       + nu * values["r2_kwh"])
        excess = float(values["grid_kwh"].sum() - self.built.limit_kwh)
        infos = {}
        for i, agent in enumerate(self.possible_agents):
            infos[agent] = {
                "lambda": float(values["lambda"][i]), "lambda_eff": float(lam_eff[i]),
                "mu": float(values["mu"][i]), "nu": float(nu[i]),
                "grid_kwh": float(values["grid_kwh"][i]), "cost": float(values["cost"][i]),
                "dropped_kwh": float(values["dropped_kwh"][i]), "grid": grid_info,
                "district_excess_kwh": excess, "constraint_excess": constraint_excess,
            }
        done = self.loop.t >= self.episode_steps
        observations = self._observations()
        rewards = {a: float(rewards_arr[i]) for i, a in enumerate(self.possible_agents)}
        terminations = {a: False for a in self.possible_agents}
        truncations = {a: done for a in self.possible_agents}
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def observe(self, agent: str) -> np.ndarray:
        """The current observation of one building."""
        return self._observations()[agent]

    def state(self) -> np.ndarray:
        """The observations of every building, stacked (N, width)."""
        return self._matrix()

    def close(self) -> None:
        """Nothing to release."""


def observation_width(loop: FleetLoop, scales: ObservationScales) -> int:
    """Columns of the observation matrix, from the builder itself (never hard-coded)."""
    return int(observation_matrix(loop.observe(), scales).shape[1])


def grid_summary(result: Any) -> dict[str, Any]:
    """A power-flow result (``GridResult``) in a few numbers, for ``infos``."""
    def most(values: np.ndarray, fn: Any) -> float:
        return float(fn(values)) if np.size(values) and result.converged else float("nan")

    return {"converged": bool(result.converged),
            "vm_min_pu": most(result.bus_vm_pu, np.min),
            "vm_max_pu": most(result.bus_vm_pu, np.max),
            "line_loading_max_percent": most(result.line_loading_percent, np.max),
            "trafo_loading_max_percent": most(result.trafo_loading_percent, np.max),
            "losses_mw": float(result.losses_mw)}


class SharedPolicyVecEnv(VecEnv):
    """A :class:`FleetParallelEnv` as a stable-baselines3 ``VecEnv``: one entry per building,
    one policy for all (parameter sharing). Episodes reset themselves at their end (the
    last observation in ``infos[i]["terminal_observation"]``), as SB3 expects; ``seed``
    goes to the first reset.
    """

    def __init__(self, env: FleetParallelEnv, seed: int | None = None) -> None:
        self.env = env
        self.names = list(env.possible_agents)
        agent = self.names[0]
        super().__init__(len(self.names), env.observation_space(agent),
                         env.action_space(agent))
        self._seed = seed
        self._actions: np.ndarray | None = None

    def _stack(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([obs[a] for a in self.names])

    def reset(self) -> np.ndarray:
        """Reset the fleet; the observations stacked (N, width)."""
        obs, _ = self.env.reset(seed=self._seed)
        self._seed = None
        return self._stack(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Take the actions of every building, (N, 2)."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step the fleet with the actions given; reset at the episode's end."""
        assert self._actions is not None  # step_async came first
        obs, rewards, _, truncations, infos = self.env.step(
            {a: self._actions[i] for i, a in enumerate(self.names)})
        done = any(truncations.values())
        stacked = self._stack(obs)
        info_list = [dict(infos[a]) for a in self.names]
        if done:
            for i, info in enumerate(info_list):
                info["terminal_observation"] = stacked[i]
                info["TimeLimit.truncated"] = True
            stacked = self.reset()
        return (stacked, np.array([rewards[a] for a in self.names], dtype=np.float32),
                np.full(len(self.names), done), info_list)

    def close(self) -> None:
        """Close the env."""
        self.env.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """The env's attribute, once per entry asked for."""
        return [getattr(self.env, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set the env's attribute (shared by every entry)."""
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call the env's method once per entry asked for."""
        fn = getattr(self.env, method_name)
        return [fn(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
        """No entry is wrapped."""
        return [False] * len(self._indices(indices))

    def _indices(self, indices: Any) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)
