"""What a stateful simulator needs for ``--resume``: load its state, save it at checkpoints.

mosaik's time 0 is the run's step ``start_step``; after mosaik step ``time`` the
run has done ``start_step + time + 1`` steps, and when that is a multiple of
``checkpoint_every`` (and not the end) the simulator saves its state there
(``cosim.checkpoint``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cosim.checkpoint import load_arrays, save_arrays


class Checkpoints:
    def __init__(self, run_dir: str | None, start_step: int, every: int, total_steps: int
                 ) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self.start_step = int(start_step)
        self.every = int(every)
        self.total_steps = int(total_steps)
        if self.start_step and self.run_dir is None:
            raise ValueError("resuming at a step needs the run directory (run_dir=)")

    def load(self, component: str) -> dict[str, np.ndarray]:
        assert self.run_dir is not None
        return load_arrays(self.run_dir, self.start_step, component)

    def after_step(self, mosaik_time: int, component: str,
                   snapshot: Callable[[], dict[str, np.ndarray]]) -> None:
        done = self.start_step + int(mosaik_time) + 1
        if (self.run_dir is not None and self.every > 0 and done % self.every == 0
                and done < self.total_steps):
            save_arrays(self.run_dir, done, component, snapshot())
