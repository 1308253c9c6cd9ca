"""Score controllers on the policies' own training objective, at execution's operating points.

Before any closed-loop run, a trained policy should at least beat simple rules on the
objective it was trained on. This module runs controllers on identical training
episodes (the same lanes, seeds, buildings, starts and tariffs) of the training fleet
with the multipliers as execution visits them (docs/equations.md):

* nu follows its dual update with eta = 1 from nu_0 = b_0, so nu equals the backlog;
* lambda reverts to a level that is 0 in half the episodes and otherwise ``1.8 u^2``
  (u uniform): at execution on ``paper_fig1d`` lambda has a median of 0 and a 95th
  percentile of about 1.8;
* the data's tariff, unscaled.

The score of an episode is its discounted return (``gamma``) of the template fleet's
reward (the Lagrangian, or ``exogenous_nu``: the policy's own training objective),
without ``scale_by_multipliers``.
The rules scored beside a policy:

* ``greedy``: buy everything the battery leaves whenever nu >= price + lambda (what
  serving a kWh now earns under the Lagrangian), nothing otherwise; battery first;
* ``heuristic``: ``agents.control.rules.PriceAwareHeuristic`` (battery first, no
  purchases at a price >= 0.3 $/kWh while the backlog has room).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agents.control.rules import PriceAwareHeuristic
from agents.fleet.actions import model_actions
from agents.fleet.observation import FleetObservation
from agents.learning.tariffs import MultiplierDraw, TariffDraw
from agents.learning.training_fleet import MultiplierProcess, TrainingFleet

#: lambda levels as execution visits them, and nu = backlog (eta = 1)
EXECUTION_PROCESS = MultiplierProcess(
    lambda_level=MultiplierDraw(0.0, 1.8, zero_share=0.5, power=2.0),
    nu_offset=MultiplierDraw(0.0, 0.0), lambda_low=0.0, negative_share=0.0,
    reversion=0.1, noise=0.15, eta=(1.0, 1.0), fixed_share=0.0)

#: a controller under score: model actions (M, 2) of the fleet's lanes for their observation
Act = Callable[[TrainingFleet, FleetObservation], np.ndarray]


def greedy_actions(fleet: TrainingFleet, obs: FleetObservation) -> np.ndarray:
    """The greedy rule's model actions (module docstring)."""
    to_serve = obs.demand_kwh + obs.backlog_kwh
    battery = np.minimum(to_serve, obs.battery_available_kwh)
    buys = obs.nu >= obs.price_per_kwh + obs.lam
    grid = np.where(buys, to_serve - battery, 0.0)
    return model_actions(grid, battery, to_serve)


@dataclass(frozen=True)
class Scores:
    """Per-episode discounted returns (episodes,) of each scored controller."""

    returns: dict[str, np.ndarray]

    def mean(self, name: str) -> float:
        """Mean discounted return of ``name``."""
        return float(self.returns[name].mean())

    def beats(self, a: str, b: str) -> float:
        """Share of episodes in which ``a``'s return exceeds ``b``'s."""
        return float((self.returns[a] > self.returns[b]).mean())


def score(fleet_factory: Callable[[], TrainingFleet], controllers: dict[str, Act],
          episodes: int = 1, gamma: float = 0.99) -> Scores:
    """Discounted returns of each controller on the same ``episodes`` x M episodes.

    ``fleet_factory`` makes a fresh, identically seeded fleet (its action order must be
    ``grid_first``: every controller answers with model actions).
    """
    out: dict[str, np.ndarray] = {}
    for name, act in controllers.items():
        fleet = fleet_factory()
        if fleet.action_order != "grid_first":
            raise ValueError("score needs a grid_first fleet (controllers give model actions)")
        returns = []
        for _ in range(episodes):
            total = np.zeros(fleet.m)
            for k in range(fleet.episode_steps):
                obs = fleet.observation()
                rewards, _, _ = fleet.step(act(fleet, obs))
                total += gamma ** k * rewards * fleet.lanes.reward_scale
            returns.append(total)
            for i in range(fleet.m):
                fleet.reset_lane(i)
        out[name] = np.concatenate(returns)
    return Scores(out)


def execution_fleet(template: TrainingFleet, lanes: int, seed: int,
                    heldout: tuple[int, int] | None = None) -> TrainingFleet:
    """A fleet like ``template`` (its class and data) with execution's operating points,
    the data's tariff and model actions; episodes avoid ``heldout``."""
    return TrainingFleet(
        template.data, template.names, template.demand_scale, lanes,
        template.episode_steps, EXECUTION_PROCESS, TariffDraw(),
        template.lambda_range, template.nu_range,
        template.backlog_cap_kwh, template.limit_per_agent_kwh,
        heldout, seed, False, "grid_first", template.obs_names, template.reward)


def heuristic_actions(fleet: TrainingFleet, obs: FleetObservation) -> np.ndarray:
    """The price-aware heuristic's model actions for the fleet's lanes."""
    return PriceAwareHeuristic(fleet.params).act(obs)


def score_policy(template: TrainingFleet, act: Act, lanes: int = 64, episodes: int = 2,
                 seed: int = 0, heldout: tuple[int, int] | None = None,
                 gamma: float = 0.99) -> Scores:
    """A policy (``act``) against the greedy rule and the heuristic (module docstring)."""
    return score(lambda: execution_fleet(template, lanes, seed, heldout),
                 {"policy": act, "greedy": greedy_actions, "heuristic": heuristic_actions},
                 episodes, gamma)
