"""Saved state for ``cosim run --resume`` (``<run>/.state/step-NNNNNNNN/``).

Every flush of the results (every ``output.flush_every`` steps) is a checkpoint
``k`` (the number of steps done). Each stateful part of the run saves what the
next step depends on into ``step-k/<component>.npz``: the writer (which part
files hold steps ``0..k-1``), the fleet (backlog, battery, a stateful
controller's position), the duals (multipliers, V1 window, messages in flight,
the message-fault RNG state). A checkpoint counts only when every component the
engine needs is there; the two newest complete ones are kept.

Files are numpy ``.npz`` read with ``allow_pickle=False`` (plain arrays; the RNG
state is JSON text), written to a temporary name and renamed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

STATE_DIR = ".state"
#: the state files of a checkpoint (``<component>.npz``)
FLEET_COMPONENT = "fleet"  # the plain engine's whole FleetLoop (fleet, duals, controller)
DUALS_COMPONENT = "duals"  # mosaik's ConsensusSim
GRID_COMPONENT = "grid"  # the power flow's warm start (pandapower)
_STEP_DIR = re.compile(r"^step-(\d{8})$")
KEEP_CHECKPOINTS = 2


def shard_component(start: int) -> str:
    """The state file of the mosaik fleet shard whose first building has index ``start``."""
    return f"agents-{start:06d}"


def step_dir(run_dir: Path, steps_done: int) -> Path:
    """The folder of the checkpoint taken after ``steps_done`` steps."""
    return Path(run_dir) / STATE_DIR / f"step-{steps_done:08d}"


def save_arrays(run_dir: Path, steps_done: int, component: str,
                arrays: dict[str, np.ndarray]) -> Path:
    """Write ``component``'s state of checkpoint ``steps_done`` atomically."""
    directory = step_dir(run_dir, steps_done)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{component}.npz"
    tmp = directory / f".{component}.npz.tmp"
    with open(tmp, "wb") as f:
        # Any: np.savez takes the arrays as **kwds beside its allow_pickle: bool, so mypy
        # wants each value to fit both (the keys are state names, never "allow_pickle")
        named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez(f, **named)
    os.replace(tmp, target)
    return target


def load_arrays(run_dir: Path, steps_done: int, component: str) -> dict[str, np.ndarray]:
    """A component's arrays saved at the checkpoint of ``steps_done`` steps."""
    path = step_dir(run_dir, steps_done) / f"{component}.npz"
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def checkpoints(run_dir: Path) -> list[int]:
    """Step counts of the checkpoint folders present, ascending."""
    root = Path(run_dir) / STATE_DIR
    if not root.is_dir():
        return []
    found = (_STEP_DIR.match(p.name) for p in root.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def complete_checkpoints(run_dir: Path, components: list[str]) -> list[int]:
    """Checkpoints holding every one of ``components``, ascending."""
    return [k for k in checkpoints(run_dir)
            if all((step_dir(run_dir, k) / f"{c}.npz").is_file() for c in components)]


def prune(run_dir: Path, keep_from: int, keep_until: int | None = None) -> None:
    """Remove checkpoint folders older than ``keep_from`` (and newer than ``keep_until``)."""
    for k in checkpoints(run_dir):
        if k < keep_from or (keep_until is not None and k > keep_until):
            shutil.rmtree(step_dir(run_dir, k), ignore_errors=True)


class Checkpoints:
    """What a stateful part of an engine needs for ``--resume``: its state loaded at the
    start (``start_step`` > 0), saved at every checkpoint.

    After the run's step ``step`` the run has done ``step + 1`` steps; when that is a
    multiple of ``every`` (and not the end) the state is saved there. (In mosaik the
    run's step is ``start_step`` plus mosaik's time.)
    """

    def __init__(self, run_dir: str | None, start_step: int, every: int, total_steps: int
                 ) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self.start_step = int(start_step)
        self.every = int(every)
        self.total_steps = int(total_steps)
        if self.start_step and self.run_dir is None:
            raise ValueError("resuming at a step needs the run directory (run_dir=)")

    def load(self, component: str) -> dict[str, np.ndarray]:
        """A component's arrays saved at the checkpoint this run resumes from."""
        assert self.run_dir is not None
        return load_arrays(self.run_dir, self.start_step, component)

    def after_step(self, step: int, component: str,
                   snapshot: Callable[[], dict[str, np.ndarray]]) -> None:
        """Save ``snapshot()`` of ``component`` when the step ends at a checkpoint.

        Nothing without a run directory, with ``every`` 0, or after the run's last step.
        """
        done = int(step) + 1
        if (self.run_dir is not None and self.every > 0 and done % self.every == 0
                and done < self.total_steps):
            save_arrays(self.run_dir, done, component, snapshot())
