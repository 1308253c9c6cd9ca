"""ControllerSim: a user's controller as a mosaik simulator in a process of its own.

A controller script needs three lines (``examples/remote_controller.py``)::

    from cosim.engine.sims.controller_sim import serve

    def make(context):                      # agents.control.contract.ControllerContext
        return MyController(context)        # any object with act(obs) -> (N, 2)

    serve(make)                             # parses HOST:PORT [--remote] like any mosaik sim

Started by a run (``controller.remote_cmd: "%(python)s my_controller.py %(addr)s"``) it
connects back to the run; with ``--remote`` it listens (``controller.remote_connect``).
Each step it receives the fleet's observation (``observation``, JSON lists by field) and
answers with its actions (``actions``, N rows ``[u_grid, u_batt]``), in the same mosaik
step. The run checks the actions (shape, finite, in [0, 1]) and fails with a clear error
when they are bad or do not come in time (``controller.remote_timeout_s``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import mosaik_api_v3

from agents.control.contract import Controller, ControllerContext
from cosim.engine.remote_controller import decode_context, decode_observation, encode_actions
from cosim.engine.sims.meta import meta

if TYPE_CHECKING:
    from mosaik_api_v3.types import CreateResult, InputData, Meta, OutputData, OutputRequest

#: The entity id of the one controller entity.
CONTROLLER_EID = "controller"


class ControllerSim(mosaik_api_v3.Simulator):
    """An event-based simulator that answers each observation with the controller's actions."""

    def __init__(self, make: Callable[[ControllerContext], Controller]) -> None:
        # mosaik_api_v3 leaves Simulator.__init__ unannotated
        super().__init__(meta("ControllerSim"))  # type: ignore[no-untyped-call]
        self.make = make
        self.controller: Controller | None = None
        self.answer: dict[str, Any] | None = None

    def init(self, sid: str, time_resolution: float = 1.0,  # type: ignore[override]
             context: dict[str, Any] | None = None) -> Meta:
        """Build the controller from the run's ``context``
        (agents.control.contract.ControllerContext).

        Raises ``ValueError`` without a context.
        """
        if context is None:
            raise ValueError("ControllerSim needs the run's context=")
        self.controller = self.make(decode_context(context))
        return self.meta

    def create(self, num: int, model: str) -> list[CreateResult]:  # type: ignore[override]
        """The one ``Controller`` entity."""
        if num != 1:
            raise ValueError("a ControllerSim holds one Controller entity")
        return [{"eid": CONTROLLER_EID, "type": model}]

    def step(self, time: int, inputs: InputData, max_advance: int) -> int | None:
        """Answer the step's observation; no step of its own (the next observation triggers)."""
        assert self.controller is not None  # init built it
        observation = next(iter(inputs[CONTROLLER_EID]["observation"].values()))
        actions = self.controller.act(decode_observation(observation))
        self.answer = {"step": observation.get("step"), "actions": encode_actions(actions)}
        return None

    def get_data(self, outputs: OutputRequest) -> OutputData:
        """The answer to the last observation: its run ``step`` and the ``actions`` (N rows
        ``[u_grid, u_batt]``)."""
        return {CONTROLLER_EID: {"actions": self.answer}} if self.answer is not None else {}


def serve(make: Callable[[ControllerContext], Controller], argv: list[str] | None = None) -> int:
    """Serve a controller over mosaik's socket; the exit code of the simulation.

    ``make(context)`` builds the controller once the run has said which buildings it acts
    for. ``argv`` (default ``sys.argv``): ``HOST:PORT`` and mosaik_api_v3's options
    (``--remote`` to listen instead of connecting).
    """
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    return int(mosaik_api_v3.start_simulation(ControllerSim(make), "fleetcosim controller",
                                              configure_logging=False) or 0)
