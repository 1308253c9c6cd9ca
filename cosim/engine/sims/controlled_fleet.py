"""ControlledFleetSim: the fleet whose controller runs in another process (``kind: remote``).

A hybrid mosaik simulator in a group with the controller's ControllerSim
(:mod:`cosim.engine.sims.controller_sim`)::

    Fleet --observation--> Controller --actions (weak: same step)--> Fleet

At each time t it is stepped twice: first with the multipliers of the step (time-shifted
from the duals), when it sends the buildings' observation and waits; then, in the same
step, with the controller's actions, which ``agents.fleet.runner.FleetLoop`` checks and applies
(through :class:`cosim.engine.remote_controller.RemoteAnswers`) as it would an in-process
controller's. The rest is a FleetSim: outputs, checkpoints, records.

:class:`AnswerWatch` tells a watchdog in the run's process how long the fleet has been
waiting, so that a controller that does not answer fails the run instead of hanging it.
"""

from __future__ import annotations

import threading
import time as _time
from typing import TYPE_CHECKING, Any

import mosaik_api_v3
import numpy as np
from numpy.typing import NDArray

from cosim.engine.remote_controller import RemoteAnswers, encode_observation
from cosim.engine.sims.building_sim import FleetSim, fleet_eid
from cosim.engine.sims.meta import meta

if TYPE_CHECKING:
    from mosaik_api_v3.types import InputData, Meta, OutputData, OutputRequest

    from cosim.scenario.build import Built


class AnswerWatch:
    """Since when (monotonic s) the fleet waits for the controller's answer, and for which
    run step; shared by the fleet simulator and the run's watchdog thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self.step: int | None = None

    def waiting(self, step: int) -> None:
        """The observation of run step ``step`` went out."""
        with self._lock:
            self._since, self.step = _time.monotonic(), step

    def answered(self) -> None:
        """The answer came."""
        with self._lock:
            self._since = None

    def waited_s(self) -> float:
        """Seconds the current wait has lasted (0 when not waiting)."""
        with self._lock:
            return 0.0 if self._since is None else _time.monotonic() - self._since


class ControlledFleetSim(FleetSim):
    """The whole fleet, stepped once the remote controller has answered (module docstring)."""

    def __init__(self) -> None:
        FleetSim.__init__(self)
        # mosaik_api_v3 leaves Simulator.__init__ unannotated
        mosaik_api_v3.Simulator.__init__(self, meta("ControlledFleetSim"))  # type: ignore[no-untyped-call]
        self.phase = "idle"
        self.observation: dict[str, Any] = {}
        self.multipliers: tuple[NDArray[np.float64], ...] = ()
        self.extra: NDArray[np.float64] | None = None
        self.watch = AnswerWatch()

    def init(self, sid: str, time_resolution: float = 1.0,  # type: ignore[override]
             built: Built | None = None, scenario_path: str | None = None,
             run_dir: str | None = None, start_step: int = 0,
             checkpoint_every: int = 0, watch: AnswerWatch | None = None) -> Meta:
        """As FleetSim's (in-process only), plus the ``watch`` the run's watchdog reads."""
        if built is None:
            raise ValueError("ControlledFleetSim runs in the run's process: give built=")
        if watch is not None:
            self.watch = watch
        return super().init(sid, time_resolution, built=built, run_dir=run_dir,
                            start_step=start_step, checkpoint_every=checkpoint_every)

    def setup_done(self) -> None:
        """FleetSim's, with the remote's answers as the fleet engine's controller."""
        super().setup_done()
        self.answers = RemoteAnswers()
        self.loop.controller = self.answers

    def step(self, time: int, inputs: InputData, max_advance: int) -> int | None:
        """First call of a time: send the observation and wait (no next step of its own);
        second, with the actions: step the fleet."""
        run_step = self.checkpoints.start_step + time
        if self.phase != "observe":  # a new step (an answer still in the inputs is stale)
            self.multipliers, self.extra = self._inputs(inputs)
            self.observation = {"step": run_step, **encode_observation(
                self.loop.observe(self.multipliers, self.extra))}
            self.phase = "observe"
            self.watch.waiting(run_step)
            return None
        answer = next(iter(inputs.get(fleet_eid(self.start), {}).get("actions", {}).values()),
                      None)
        if not isinstance(answer, dict) or answer.get("step") != run_step:
            return None  # not the answer to this step's observation: keep waiting
        self.watch.answered()
        self.answers.answer(answer.get("actions"))
        self._step_fleet(time, self.multipliers, self.extra)
        self.phase = "stepped"
        return time + 1

    def get_data(self, outputs: OutputRequest) -> OutputData:
        """While waiting: the observation; after the step: FleetSim's outputs."""
        eid = fleet_eid(self.start)
        if self.phase == "observe":
            wanted = outputs.get(eid, [])
            return {eid: {"observation": self.observation}} if "observation" in wanted else {}
        rest: dict[str, Any] = {k: [a for a in v if a != "observation"]
                                for k, v in outputs.items()}
        return super().get_data(rest)
