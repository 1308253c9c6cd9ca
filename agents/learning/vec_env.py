"""The training fleet as a stable-baselines3 ``VecEnv`` (one lane per sub-environment).

SB3's ``DummyVecEnv`` steps its environments one by one in Python; ``FleetVecEnv``
steps all lanes of an :class:`agents.learning.training_fleet.TrainingFleet` in one numpy call.
Finished lanes are reset automatically, with the last observation in
``info["terminal_observation"]`` and ``info["episode"] = {"r", "l"}`` (the unscaled
Lagrangian return and the length), as SB3's ``Monitor`` writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from agents.learning.training_fleet import TrainingFleet


class FleetVecEnv(VecEnv):
    """SB3 vectorised env over a :class:`TrainingFleet` (module docstring)."""

    def __init__(self, fleet: TrainingFleet) -> None:
        self.fleet = fleet
        n_obs = len(fleet.obs_names)
        super().__init__(fleet.m, gym.spaces.Box(-np.inf, np.inf, (n_obs,), np.float32),
                         gym.spaces.Box(0.0, 1.0, (2,), np.float32))
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        """Fresh episodes in every lane; their observations (M, OBS_DIM)."""
        seed = self._seeds[0]  # VecEnv.seed(s) sets one per lane; the fleet seeds lane i: s + i
        if seed is not None:
            self.fleet.seed(int(seed))
        else:
            for i in range(self.fleet.m):
                self.fleet.reset_lane(i)
        self._reset_seeds()
        return self.fleet.observe()

    def step_async(self, actions: np.ndarray) -> None:
        """Keep the actions for :meth:`step_wait`."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every lane; reset the finished ones (SB3's auto-reset)."""
        assert self._actions is not None  # step_async came first
        fleet = self.fleet
        rewards, done, lane_infos = fleet.step(self._actions)
        infos: list[dict[str, Any]] = [dict(info) for info in lane_infos]
        obs = fleet.observe()
        if done.any():
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = True
                infos[i]["episode"] = {"r": float(fleet.lanes.ret[i]),
                                       "l": int(fleet.episode_steps)}
                fleet.reset_lane(int(i))
            obs = fleet.observe()
        return obs, rewards.astype(np.float32), done, infos

    def close(self) -> None:
        """Nothing to release."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The fleet's attribute, once per selected lane (``render_mode``: None)."""
        if attr_name == "render_mode":
            return [None for _ in self._indices(indices)]
        return [getattr(self.fleet, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the fleet (shared by all lanes)."""
        setattr(self.fleet, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call a method of the fleet once per selected lane."""
        return [getattr(self.fleet, method_name)(*method_args, **method_kwargs)
                for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]],
                       indices: VecEnvIndices = None) -> list[bool]:
        """No lane is a wrapped gymnasium env."""
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: VecEnvIndices) -> Sequence[int] | Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
