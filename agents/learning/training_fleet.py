"""Many training episodes stepped as one fleet: the vectorised training environment.

Each of the M *lanes* is one episode of one building of a demand class: its own
building, start hour, tariff and multipliers. All lanes step together through the
building model (``agents.fleet.building.step_fleet``, one numpy call for M buildings), so
a policy is trained on thousands of environment steps per second instead of the
hundreds a per-building gymnasium env gives.

**Multipliers evolve within an episode as they do at execution** (docs/equations.md,
"Training as it runs"), unless ``MultiplierProcess.fixed_share`` of the episodes
holds them fixed as the paper's recipe did:

* nu follows its dual update ``nu <- clip(nu - eta r2, nu_min, nu_max)`` with
  ``nu_0 = eta b_0 + offset`` (offset drawn with mass at 0; at execution with eta = 1
  and nothing dropped, nu equals the backlog exactly);
* lambda is a time series that reverts to a level drawn per episode,
  ``lambda <- clip(lambda + kappa (level - lambda) + sigma (|level| + 0.5) eps,
  lambda_low, lambda_high)``; the level is drawn with mass at 0 (``MultiplierDraw``),
  and a share of episodes draws a negative level from ``[lambda_low, 0]``: a grid
  constraint's ``lambda_eff`` below 0 asks the building to consume more.

The reward of a lane is the per-agent Lagrangian of the step,
``-p g + lambda (c/N - g) + nu r2``, divided by ``1 + |level| + |nu_0|`` (constant in
the episode) when ``scale_by_multipliers`` is set.

**The agent's own multiplier** (``reward="exogenous_nu"``). While nu follows its dual
update, the agent moves its own multiplier, and the Lagrangian's nu-term splits as

    nu_t r2_t = (nu_t^2 - nu_t+1^2) / (2 eta) + eta r2_t^2 / 2

(exact while nu stays inside its bounds): a telescoping part, which charges the
backlog left at the end at ``nu_T^2 / (2 eta)``, and ``eta r2^2 / 2``, a bonus for
serving in bursts, whatever the price. That bonus rewards exactly the failure seen in
closed loop (postponed demand released all at once), and comes from the agent
exploiting its own dual dynamics, not from the constrained problem. ``exogenous_nu``
removes it from the evolving lanes: the reward is ``lagrangian - eta r2^2 / 2``, as if
the agent took its multiplier as given. Lanes with fixed multipliers keep the
Lagrangian. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.fleet.actions import battery_first_to_model
from agents.fleet.building import FleetParams, FleetState, step_fleet
from agents.fleet.data import CityLearnData
from agents.fleet.observation import (
    OBS_NAMES,
    PRICE_AHEAD_H,
    FleetObservation,
    ObservationScales,
    fleet_observation,
    observation_matrix,
)
from agents.learning.tariffs import MultiplierDraw, TariffDraw

REWARDS = ("lagrangian", "exogenous_nu")


@dataclass(frozen=True)
class MultiplierProcess:
    """How lambda and nu evolve within a training episode (module docstring)."""

    lambda_level: MultiplierDraw
    nu_offset: MultiplierDraw
    lambda_low: float = -2.0
    negative_share: float = 0.1
    reversion: float = 0.1
    noise: float = 0.15
    eta: tuple[float, float] = (1.0, 1.0)
    fixed_share: float = 0.0

    def __post_init__(self) -> None:
        if self.lambda_low > 0:
            raise ValueError(f"MultiplierProcess.lambda_low must be <= 0, got {self.lambda_low}")
        for name in ("negative_share", "reversion", "fixed_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MultiplierProcess.{name} must lie in [0, 1], got {value}")
        if self.noise < 0:
            raise ValueError(f"MultiplierProcess.noise must be >= 0, got {self.noise}")
        if not 0 < self.eta[0] <= self.eta[1]:
            raise ValueError(f"MultiplierProcess.eta must satisfy 0 < low <= high, got {self.eta}")


@dataclass
class Lanes:
    """The per-lane episode state (arrays of shape (M,) unless noted)."""

    building: np.ndarray  # index into the class's buildings
    t: np.ndarray  # step within the episode
    demand: np.ndarray  # (M, E + 1 + H) base demand rows
    solar: np.ndarray  # (M, E + 1 + H)
    price: np.ndarray  # (M, E + 1 + H) the episode's tariff
    hour0: np.ndarray  # hour of day at step 0
    lam: np.ndarray
    level: np.ndarray  # the lambda level of the episode
    nu: np.ndarray
    eta: np.ndarray
    evolving: np.ndarray  # bool: multipliers evolve (else held fixed)
    reward_scale: np.ndarray
    ret: np.ndarray  # episode return so far (unscaled Lagrangian)


class TrainingFleet:
    """M training episodes of a demand class, stepped together (module docstring).

    Args:
        data: the CityLearn data.
        buildings: the class's building names.
        demand_scale: the class's demand scale.
        lanes: M, the number of episodes stepped together.
        episode_steps: steps per episode.
        process: how the multipliers evolve.
        tariff: how an episode's tariff is drawn.
        lambda_range: ``(0, lambda_max)``; lambda is clipped to ``[lambda_low, lambda_max]``.
        nu_range: ``(nu_min, nu_max)``.
        backlog_cap_kwh: backlog above this is dropped.
        limit_per_agent_kwh: c/N in the reward.
        heldout: ``(start, steps)`` of data rows no episode may touch.
        seed: seeds lane i's generator with ``seed + i``.
        scale_by_multipliers: divide rewards by ``1 + |level| + |nu_0|``.
        action_order: ``grid_first`` or ``battery_first`` (``agents.fleet.actions``).
        obs_names: the observation layout.
        reward: ``lagrangian`` or ``exogenous_nu`` (module docstring).
    """

    def __init__(self, data: CityLearnData, buildings: Sequence[str], demand_scale: float,
                 lanes: int, episode_steps: int, process: MultiplierProcess,
                 tariff: TariffDraw, lambda_range: tuple[float, float],
                 nu_range: tuple[float, float], backlog_cap_kwh: float = 24.0,
                 limit_per_agent_kwh: float = 1.0, heldout: tuple[int, int] | None = None,
                 seed: int = 0, scale_by_multipliers: bool = True,
                 action_order: str = "grid_first",
                 obs_names: tuple[str, ...] = OBS_NAMES, reward: str = "lagrangian") -> None:
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        self.reward = reward
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        if not 1 <= episode_steps < data.n_steps - PRICE_AHEAD_H:
            raise ValueError(f"episode_steps must lie in 1..{data.n_steps - PRICE_AHEAD_H - 1}")
        self.data = data
        self.names = list(buildings)
        self.demand_scale, self.backlog_cap_kwh = float(demand_scale), float(backlog_cap_kwh)
        self.m = int(lanes)
        self.episode_steps = int(episode_steps)
        self.process, self.tariff = process, tariff
        self.lambda_range = (float(lambda_range[0]), float(lambda_range[1]))
        self.nu_range = (float(nu_range[0]), float(nu_range[1]))
        self.limit_per_agent_kwh = float(limit_per_agent_kwh)
        self.scale_by_multipliers = bool(scale_by_multipliers)
        self.action_order = action_order
        self.obs_names = obs_names
        self.dt_h = data.hours_per_step
        self.scales = ObservationScales(
            lambda_max=max(self.lambda_range[1], 1e-9),
            nu_abs_max=max(abs(self.nu_range[0]), abs(self.nu_range[1]), 1e-9))
        self._all_params = FleetParams.from_buildings(
            [data.building(n) for n in self.names], demand_scale=demand_scale,
            backlog_cap_kwh=backlog_cap_kwh)
        self._demand = np.stack([data.building(n).demand_kwh for n in self.names])
        self._solar = np.stack([data.building(n).solar_w_per_kw for n in self.names])
        span = self.episode_steps + 1 + PRICE_AHEAD_H
        starts = np.arange(0, data.n_steps - span)
        if heldout is not None:
            h0, h_len = heldout
            starts = starts[~((starts < h0 + h_len) & (starts + span > h0))]
        if starts.size == 0:
            raise ValueError("no episode start is left outside the held-out hours")
        self._starts = starts
        self.rngs = [np.random.default_rng(seed + i) for i in range(self.m)]
        rows = np.zeros((self.m, span))
        self.lanes = Lanes(np.zeros(self.m, np.int64), np.zeros(self.m, np.int64), rows.copy(),
                           rows.copy(), rows.copy(), np.zeros(self.m), np.zeros(self.m),
                           np.zeros(self.m), np.zeros(self.m), np.ones(self.m),
                           np.ones(self.m, bool), np.ones(self.m), np.zeros(self.m))
        self._params = self._all_params.select(np.zeros(self.m, np.int64))
        self._params_of = self.lanes.building.copy()  # the lanes' buildings _params is for
        self.state = FleetState(np.zeros(self.m), np.zeros(self.m))
        for i in range(self.m):
            self.reset_lane(i)

    def seed(self, seed: int) -> None:
        """Re-seed every lane (lane i: ``seed + i``) and start new episodes."""
        self.rngs = [np.random.default_rng(seed + i) for i in range(self.m)]
        for i in range(self.m):
            self.reset_lane(i)

    def reset_lane(self, i: int, options: dict[str, float] | None = None) -> None:
        """Start a new episode in lane ``i``: building, start, tariff, state, multipliers.

        ``options`` may hold ``"lambda"`` and ``"nu"``: hold them fixed for the episode.
        """
        rng, ln, proc = self.rngs[i], self.lanes, self.process
        b = int(rng.integers(len(self.names)))
        start = int(rng.choice(self._starts))
        span = ln.demand.shape[1]
        ln.building[i], ln.t[i] = b, 0
        ln.demand[i] = self._demand[b, start:start + span]
        ln.solar[i] = self._solar[b, start:start + span]
        hours = (start + np.arange(span) * self.dt_h) % 24
        ln.price[i] = self.tariff.draw(rng, hours, self.data.price_per_kwh[start:start + span])
        ln.hour0[i] = start % 24
        cap = float(self._all_params.backlog_cap_kwh[b])
        backlog0 = rng.uniform(0.0, 0.5 * cap) if np.isfinite(cap) else rng.uniform(0.0, 10.0)
        soc0 = float(self._all_params.capacity_kwh[b]) * rng.uniform(0.0, 1.0)
        lo, hi = self.lambda_range
        if rng.random() < proc.negative_share:
            level = float(rng.uniform(proc.lambda_low, 0.0))
        else:
            level = proc.lambda_level.draw(rng)
        ln.eta[i] = float(rng.uniform(*proc.eta))
        offset = proc.nu_offset.draw(rng)
        ln.evolving[i] = not (rng.random() < proc.fixed_share)
        nu0 = offset if not ln.evolving[i] else ln.eta[i] * backlog0 + offset
        ln.level[i] = level
        ln.lam[i] = level
        ln.nu[i] = float(np.clip(nu0, *self.nu_range))
        if options:
            ln.evolving[i] = False
            ln.lam[i] = float(options.get("lambda", ln.lam[i]))
            ln.nu[i] = float(options.get("nu", ln.nu[i]))
        ln.lam[i] = float(np.clip(ln.lam[i], min(proc.lambda_low, lo), hi))
        ln.reward_scale[i] = (1.0 + abs(ln.level[i]) + abs(ln.nu[i])
                              if self.scale_by_multipliers else 1.0)
        ln.ret[i] = 0.0
        self.state.backlog_kwh[i] = backlog0
        self.state.soc_kwh[i] = soc0

    @property
    def params(self) -> FleetParams:
        """The lanes' building parameters (rebuilt once after lanes change building)."""
        if not np.array_equal(self._params_of, self.lanes.building):
            self._params = self._all_params.select(self.lanes.building)
            self._params_of = self.lanes.building.copy()
        return self._params

    def _rows(self, table: np.ndarray, offset: int = 0) -> np.ndarray:
        result: np.ndarray = table[np.arange(self.m), self.lanes.t + offset]
        return result

    def observation(self) -> FleetObservation:
        """What each lane's building sees at its current step."""
        ln = self.lanes
        idx = ln.t[:, None] + 1 + np.arange(PRICE_AHEAD_H)
        ahead = np.take_along_axis(ln.price, idx, axis=1)
        hour = (ln.hour0 + ln.t * self.dt_h) % 24
        obs = fleet_observation(self.params, self.state, self._rows(ln.demand),
                                self._rows(ln.solar), self._rows(ln.price), 0.0, ln.lam, ln.nu,
                                self.dt_h, ahead)
        return FleetObservation(**{**obs.__dict__, "hour_of_day": hour})

    def observe(self) -> np.ndarray:
        """(M, OBS_DIM) observation matrix of the lanes."""
        return observation_matrix(self.observation(), self.scales, self.obs_names)

    def window(self, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each lane's ``(base demand, solar, price)`` over its next ``horizon`` steps,
        (M, horizon) each (a teacher's perfect forecast; not a policy input)."""
        idx = self.lanes.t[:, None] + np.arange(horizon)
        return (np.take_along_axis(self.lanes.demand, idx, axis=1),
                np.take_along_axis(self.lanes.solar, idx, axis=1),
                np.take_along_axis(self.lanes.price, idx, axis=1))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:
        """Step every lane; ``(rewards (M,), done (M,), infos)``. Finished lanes are NOT
        reset here (the caller reads their last state first, then calls ``reset_lane``)."""
        ln = self.lanes
        act = np.asarray(actions, dtype=np.float64).reshape(self.m, 2)
        if self.action_order == "battery_first":
            obs = self.observation()
            act = battery_first_to_model(np.clip(act, 0.0, 1.0),
                                         obs.demand_kwh + obs.backlog_kwh,
                                         obs.battery_available_kwh)
        lam, nu = ln.lam.copy(), ln.nu.copy()
        self.state, r = step_fleet(self.params, self.state, self._rows(ln.demand),
                                   self._rows(ln.solar), self._rows(ln.price), act[:, 0],
                                   act[:, 1], self.dt_h)
        r2 = r.served_kwh - r.demand_kwh
        lagrangian = -r.cost + lam * (self.limit_per_agent_kwh - r.grid_kwh) + nu * r2
        ln.ret += lagrangian
        ev = ln.evolving
        reward = lagrangian
        if self.reward == "exogenous_nu":
            reward = lagrangian - np.where(ev, 0.5 * ln.eta * r2 ** 2, 0.0)
        proc, (lo, hi) = self.process, self.lambda_range
        eps = np.array([rng.standard_normal() for rng in self.rngs])
        new_lam = ln.lam + proc.reversion * (ln.level - ln.lam) \
            + proc.noise * (np.abs(ln.level) + 0.5) * eps
        ln.lam = np.where(ev, np.clip(new_lam, min(proc.lambda_low, lo), hi), ln.lam)
        ln.nu = np.where(ev, np.clip(ln.nu - ln.eta * r2, *self.nu_range), ln.nu)
        ln.t += 1
        done = ln.t >= self.episode_steps
        infos = [{"grid_kwh": float(r.grid_kwh[i]), "cost": float(r.cost[i]),
                  "dropped_kwh": float(r.dropped_kwh[i]), "lagrangian": float(lagrangian[i]),
                  "lambda": float(lam[i]), "nu": float(nu[i])} for i in range(self.m)]
        rewards: np.ndarray = reward / ln.reward_scale
        return rewards, done, infos
