"""Controllers as a user would write them, outside the package, named in scenarios by
``controller: {kind: python, path: tests/cosim/user_code, entry: "bench_controllers:..."}``.

They import nothing from the testbed: the contract is duck-typed (agents.control.contract).
"""

from __future__ import annotations

import numpy as np


class ShareOfGrid:
    """Buy ``share`` of the energy to serve from the grid; the battery serves the rest.

    Stateful (counts its calls) and reads the forecast: while the next hours' price is
    above today's mean it buys less. Its state is saved with every checkpoint.
    """

    name = "share_of_grid"

    def __init__(self, context, share=0.5, cheap_share=0.9):
        self.n = context.n
        self.share, self.cheap_share = float(share), float(cheap_share)
        self.forecast = context.forecast
        self.calls = 0

    def act(self, obs):
        _, _, price = self.forecast.window(self.calls, 4)
        share = self.cheap_share if price[0] <= price.mean() else self.share
        self.calls += 1
        actions = np.empty((obs.n, 2))
        actions[:, 0] = share
        actions[:, 1] = 1.0
        return actions

    def snapshot(self):
        return {"calls": np.array(self.calls)}

    def restore(self, snap):
        self.calls = int(snap["calls"])


class WrongShape:
    """Returns one action per building instead of two."""

    def __init__(self, context):
        pass

    def act(self, obs):
        return np.ones((obs.n, 1))


class NanAt:
    """A NaN u_batt for building ``building`` (index) from step ``step`` on."""

    def __init__(self, context, step=3, building=2, value=float("nan")):
        self.step, self.building, self.value, self.t = step, building, value, 0

    def act(self, obs):
        actions = np.ones((obs.n, 2))
        if self.t >= self.step:
            actions[self.building, 1] = self.value
        self.t += 1
        return actions


class NoAct:
    """Forgot to write act()."""

    def __init__(self, context):
        pass

    def decide(self, obs):
        return np.ones((obs.n, 2))


class OnlySnapshot:
    """snapshot() without restore()."""

    def __init__(self, context):
        pass

    def act(self, obs):
        return np.ones((obs.n, 2))

    def snapshot(self):
        return {}


class NeedsGain:
    """A required keyword argument ``gain``."""

    def __init__(self, context, *, gain):
        self.gain = gain

    def act(self, obs):
        return np.ones((obs.n, 2))
