"""Gymnasium environment for training state-augmented building policies (docs/equations.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from agents.fleet.actions import ACTION_ORDERS, battery_first_to_model
from agents.fleet.building import FleetParams, FleetState
from agents.fleet.data import CityLearnData, load_citylearn
from agents.fleet.observation import OBS_NAMES, PRICE_AHEAD_H, ObservationScales, observation_matrix
from agents.fleet.runner import NO_BUS, FleetLoop, FleetSetup
from agents.learning.tariffs import MultiplierDraw, TariffDraw

ENV_ID = "fleetcosim/StateAugmentedBuilding-v0"


class BuildingEnv(gym.Env):
    """One building of a demand class, with Lagrange multipliers in its observation.

    Each episode picks one of the class's CityLearn buildings and a random start
    hour (outside the held-out window), draws lambda and nu once (``lambda_draw``,
    ``nu_draw``; uniform over their ranges by default) and the episode's tariff
    (``tariff``; the data's by default, see ``agents.learning.tariffs``), and runs
    ``episode_steps`` hourly steps of the building model of ``agents.fleet.building``.

    ## Observation Space
    ``Box(-inf, inf, (15,), float32)``: the columns of ``agents.fleet.observation.OBS_NAMES``
    (demand, backlog, state of charge, price, PV, hour sin/cos, lambda, nu, and six
    features of the episode's tariff over the next 24 hours), each divided by the fixed
    ``ObservationScales`` that are exported with the policy; ``(9,)`` with
    ``obs_names=OBS_NAMES_V1``.

    ## Action Space
    ``Box(0, 1, (2,), float32)``: ``(u_grid, u_batt)``; the share of the demand to
    serve now taken from the grid, and the share of the rest taken from the battery.

    ## Rewards
    The per-agent Lagrangian ``r = r0 + lambda * (c/N - r1) + nu * r2`` with
    ``r0 = -price * g`` (cost), ``r1 = g`` (grid energy, kWh), ``r2 = served - d``
    (demand fulfilment, kWh). ``c/N`` is ``limit_per_agent_kwh``; it is constant
    in an episode and does not change the optimal policy.

    With ``shaping_gamma`` (the learner's discount) the reward is the Lagrangian minus
    the potential-based term ``gamma * Phi(s') - Phi(s)``, ``Phi = -nu * backlog``:
    ``r0 + lambda (c/N - g) - (1 - gamma) nu b' - nu * dropped``. Potential-based
    shaping leaves the optimal policy unchanged (Ng, Harada & Russell, 1999); it removes
    the large, zero-sum ``nu (b - b')`` swings from the learning signal, so price and
    lambda are no longer small next to them (docs/equations.md). ``info["lagrangian"]``
    is the unshaped reward.

    With ``scale_by_multipliers`` every reward of an episode is divided by
    ``1 + lambda + |nu|``. The factor is constant in the episode and the multipliers
    are in the observation, so each episode's optimal policy is unchanged; episodes
    with large multipliers no longer dominate the gradient, and the price, worth at
    most a few tenths of a dollar per kWh, is no longer noise next to ``nu * r2``.

    ## Episode End
    Truncation after ``episode_steps`` steps; there is no terminal state.

    ## Arguments
    - ``buildings``: CityLearn building names of the class (default: all 17).
    - ``demand_scale``: the class's demand scale (1 "normal", 2 "double").
    - ``lambda_range``, ``nu_range``: ranges of the multipliers drawn per episode.
    - ``episode_steps``: steps per episode (80 ~ 3 days).
    - ``backlog_cap_kwh``: backlog above this is dropped.
    - ``limit_per_agent_kwh``: c/N in the reward.
    - ``heldout``: ``(start, steps)`` of hours no episode may touch (evaluation data).
    - ``scales``: the observation scaling.
    - ``data``: a ``CityLearnData`` (default: the shipped extract).
    - ``lambda_draw``, ``nu_draw``: how the multipliers are drawn (``agents.learning.tariffs``).
    - ``tariff``: how the episode's tariff is drawn (``agents.learning.tariffs.TariffDraw``).
    - ``shaping_gamma``: None (the Lagrangian) or the discount of the shaped reward above.
    - ``scale_by_multipliers``: divide the rewards by ``1 + lambda + |nu|`` (above).
    - ``action_order``: ``grid_first`` (the actions are the model's ``u_grid, u_batt``)
      or ``battery_first`` (``agents.fleet.actions``: battery share first, then the grid's).
    - ``obs_names``: the observation layout (``agents.fleet.observation.OBS_LAYOUTS``).

    The vectorised training environment, with multipliers that evolve within an episode,
    is :class:`agents.learning.vec_env.FleetVecEnv`; this env is one building with the
    multipliers held fixed per episode, the paper's recipe.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        buildings: Sequence[str] | None = None,
        demand_scale: float = 1.0,
        lambda_range: tuple[float, float] = (0.0, 15.0),
        nu_range: tuple[float, float] = (-20.0, 20.0),
        episode_steps: int = 80,
        backlog_cap_kwh: float = 24.0,
        limit_per_agent_kwh: float = 1.0,
        heldout: tuple[int, int] | None = None,
        scales: ObservationScales | None = None,
        data: CityLearnData | None = None,
        lambda_draw: MultiplierDraw | None = None,
        nu_draw: MultiplierDraw | None = None,
        tariff: TariffDraw | None = None,
        shaping_gamma: float | None = None,
        scale_by_multipliers: bool = False,
        action_order: str = "grid_first",
        obs_names: tuple[str, ...] = OBS_NAMES,
    ) -> None:
        super().__init__()
        self.data = data if data is not None else load_citylearn()
        self.building_names = list(buildings) if buildings else self.data.names
        for name in self.building_names:
            self.data.building(name)  # raises a clear error for an unknown name
        if lambda_range[0] < 0 or lambda_range[1] < lambda_range[0]:
            raise ValueError(f"lambda_range must satisfy 0 <= low <= high, got {lambda_range}")
        if nu_range[1] < nu_range[0]:
            raise ValueError(f"nu_range must satisfy low <= high, got {nu_range}")
        if not 1 <= episode_steps < self.data.n_steps - PRICE_AHEAD_H:
            raise ValueError("episode_steps must lie in "
                             f"1..{self.data.n_steps - PRICE_AHEAD_H - 1}")
        self.obs_names = tuple(obs_names)
        self.demand_scale = float(demand_scale)
        self.lambda_range = (float(lambda_range[0]), float(lambda_range[1]))
        self.nu_range = (float(nu_range[0]), float(nu_range[1]))
        self.episode_steps = int(episode_steps)
        self.lambda_draw = lambda_draw or MultiplierDraw(*self.lambda_range)
        self.nu_draw = nu_draw or MultiplierDraw(*self.nu_range)
        for name, draw, rng_ in (("lambda_draw", self.lambda_draw, self.lambda_range),
                                 ("nu_draw", self.nu_draw, self.nu_range)):
            if (draw.low, draw.high) != rng_:
                raise ValueError(f"{name} covers [{draw.low}, {draw.high}], not the range "
                                 f"{rng_} the observation is scaled by")
        self.tariff = tariff or TariffDraw()
        if shaping_gamma is not None and not 0.0 < shaping_gamma <= 1.0:
            raise ValueError(f"shaping_gamma must lie in (0, 1], got {shaping_gamma}")
        self.shaping_gamma = shaping_gamma
        self.scale_by_multipliers = bool(scale_by_multipliers)
        if action_order not in ACTION_ORDERS:
            raise ValueError(f"action_order must be one of {ACTION_ORDERS}, got {action_order!r}")
        self.action_order = action_order
        self.limit_per_agent_kwh = float(limit_per_agent_kwh)
        self.scales = scales or ObservationScales(
            lambda_max=max(self.lambda_range[1], 1e-9),
            nu_abs_max=max(abs(self.nu_range[0]), abs(self.nu_range[1]), 1e-9),
        )
        self.dt_h = self.data.hours_per_step
        self._params = [
            FleetParams.from_buildings([self.data.building(n)], demand_scale=self.demand_scale,
                                       backlog_cap_kwh=backlog_cap_kwh)
            for n in self.building_names
        ]
        span = self.episode_steps + 1 + PRICE_AHEAD_H  # the tariff ahead of the last step
        starts = np.arange(0, self.data.n_steps - span)
        if heldout is not None:
            h0, h_len = heldout
            overlaps = (starts < h0 + h_len) & (starts + span > h0)
            starts = starts[~overlaps]
        self._starts = starts
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (len(self.obs_names),),
                                                np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self._t = 0

    def _observe(self) -> np.ndarray:
        self._last_obs = self._loop.observe((self.lam, 0.0, self.nu))  # battery_first reuses it
        result: np.ndarray = observation_matrix(self._last_obs, self.scales, self.obs_names)[0]
        return result

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: draw building, start hour, multipliers, tariff, backlog and charge.

        ``options`` may fix the multipliers with the keys ``"lambda"`` and ``"nu"``.
        """
        super().reset(seed=seed)
        rng = self.np_random
        self._building = int(rng.integers(len(self.building_names)))
        self._start = int(rng.choice(self._starts))
        params = self._params[self._building]
        self.lam = self.lambda_draw.draw(rng)
        self.nu = self.nu_draw.draw(rng)
        if options:
            self.lam = float(options.get("lambda", self.lam))
            self.nu = float(options.get("nu", self.nu))
        cap = float(params.backlog_cap_kwh[0])
        backlog0 = rng.uniform(0.0, 0.5 * cap) if np.isfinite(cap) else rng.uniform(0.0, 10.0)
        name = self.building_names[self._building]
        # one row more than the episode (the observation after its last step), and the
        # tariff of the 24 hours after that
        rows = self.episode_steps + 1
        demand, solar, price = self.data.window([name], self._start, rows + PRICE_AHEAD_H)
        hours = (self._start + np.arange(price.shape[0]) * self.dt_h) % 24
        price = self.tariff.draw(rng, hours, price)
        setup = FleetSetup([name], params, np.asarray(NO_BUS), demand[:rows], solar[:rows],
                           price[:rows], start_hour=self._start, dt_h=self.dt_h,
                           price_outlook_per_kwh=price)
        self._loop = FleetLoop(setup, None, None)  # the learner acts; multipliers held fixed
        self._loop.state = FleetState(np.array([backlog0]),
                                      params.capacity_kwh * rng.uniform(0.0, 1.0))
        self._t = 0
        return self._observe(), {"building": self.building_names[self._building],
                                 "start": self._start, "lambda": self.lam, "nu": self.nu}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Serve one hour with ``action``; returns ``(obs, reward, terminated, truncated, info)``.

        The episode never terminates; it is truncated after ``episode_steps`` steps.
        """
        action = np.asarray(action, dtype=np.float64).reshape(1, 2)
        backlog_before = float(self._loop.state.backlog_kwh[0])
        if self.action_order == "battery_first":
            obs = self._last_obs  # the state this action was chosen in
            action = battery_first_to_model(np.clip(action, 0.0, 1.0),
                                            obs.demand_kwh + obs.backlog_kwh,
                                            obs.battery_available_kwh)
        v = self._loop.step((self.lam, 0.0, self.nu), actions=action)
        g = float(v["grid_kwh"][0])
        r0 = -float(v["cost"][0])
        served = float(v["grid_kwh"][0] + v["battery_kwh"][0])
        r2 = float(v["r2_kwh"][0])
        lagrangian = r0 + self.lam * (self.limit_per_agent_kwh - g) + self.nu * r2
        reward = lagrangian
        if self.shaping_gamma is not None:
            # minus the potential-based term gamma * Phi(s') - Phi(s), Phi = -nu * backlog
            reward -= self.nu * (backlog_before - self.shaping_gamma * float(v["backlog_kwh"][0]))
        if self.scale_by_multipliers:
            reward /= 1.0 + self.lam + abs(self.nu)
        self._t += 1
        truncated = self._t >= self.episode_steps
        info = {"grid_kwh": g, "served_kwh": served, "cost": -r0, "lagrangian": lagrangian,
                "dropped_kwh": float(v["dropped_kwh"][0])}
        return self._observe(), float(reward), False, truncated, info


def register_env() -> None:
    """Register ``ENV_ID`` with gymnasium (idempotent)."""
    if ENV_ID not in gym.envs.registry:
        gym.register(id=ENV_ID, entry_point="agents.learning.env:BuildingEnv")
