"""A controller process that misbehaves on purpose (tests of controller.kind remote).

    python remote_misbehaving.py MODE STEP HOST:PORT

MODE: ``sleep`` (answers step STEP 600 s late), ``raise`` (raises at step STEP), ``nan``
(a NaN u_grid for the third building from step STEP on), ``hang_init`` (never finishes
setting up).
"""

import sys
import time

import numpy as np

from cosim.engine.sims.controller_sim import serve


class Misbehaving:
    name = "misbehaving"

    def __init__(self, context, mode, step):
        self.mode, self.step, self.t = mode, step, 0
        if mode == "hang_init":
            time.sleep(600)

    def act(self, obs):
        actions = np.column_stack([np.full(obs.n, 0.8), np.ones(obs.n)])
        if self.t >= self.step:
            if self.mode == "sleep":
                time.sleep(600)
            if self.mode == "raise":
                raise RuntimeError(f"broken at step {self.t}")
            if self.mode == "nan":
                actions[2, 0] = np.nan
        self.t += 1
        return actions


if __name__ == "__main__":
    mode, step = sys.argv[1], int(sys.argv[2])
    sys.exit(serve(lambda context: Misbehaving(context, mode, step), sys.argv[3:]))
