"""A controller in its own process (``controller.kind: remote``): what travels and what waits.

The controller process is a mosaik simulator (:mod:`cosim.engine.sims.controller_sim`) that joins
the World through mosaik's own remote mechanism: started by the run with
``controller.remote_cmd`` (mosaik "cmd", the command gets ``%(addr)s``) or already
listening at ``controller.remote_connect`` (mosaik "connect"). Each step the fleet
(:mod:`cosim.engine.sims.controlled_fleet`) sends it the per-building observation and waits for
its actions in the same step (a mosaik same-time loop); the fleet engine then checks and
applies them exactly as an in-process controller's (``agents.fleet.runner.FleetLoop``).

Over the socket everything is JSON: the observation as ``{field: [N values]}`` (every
field of ``agents.fleet.observation.FleetObservation``, by name), the actions as N rows
``[u_grid, u_batt]``, and the controller's :class:`agents.control.contract.ControllerContext` as
plain lists (without the forecast, which stays in the run's process).

No mosaik here: the codec, and :class:`RemoteAnswers`, the in-process stand-in through
which the fleet engine receives the remote's answers.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from agents.control.contract import ControllerContext, ControllerError
from agents.fleet.building import FleetParams
from agents.fleet.observation import FleetObservation

#: The address placeholder ``controller.remote_cmd`` must contain (mosaik's CmdStarter).
ADDR_PLACEHOLDER = "%(addr)s"


def encode_observation(obs: FleetObservation) -> dict[str, Any]:
    """``obs`` as JSON-ready lists, one per field (by name): (N,) per building, and the
    tariff ahead as N rows (an optional field left out when None)."""
    out: dict[str, Any] = {}
    for f in fields(obs):
        value = getattr(obs, f.name)
        if value is None:
            continue
        arr = np.asarray(value, dtype=np.float64)
        shape = (obs.n,) if arr.ndim <= 1 else (obs.n, arr.shape[-1])
        out[f.name] = np.broadcast_to(arr, shape).tolist()
    return out


def decode_observation(data: dict[str, Any]) -> FleetObservation:
    """The observation :func:`encode_observation` wrote (fields by name; unknown ones are
    dropped, so an older controller process reads a newer run's observation).

    Raises:
        ValueError: if a field of this version's observation is missing.
    """
    names = [f.name for f in fields(FleetObservation)]
    missing = [n for n in names if n not in data and _required(n)]
    if missing:
        raise ValueError(f"observation without the fields {missing}")
    return FleetObservation(**{n: np.asarray(data[n], dtype=np.float64)
                               for n in names if n in data})


def _required(name: str) -> bool:
    field = next(f for f in fields(FleetObservation) if f.name == name)
    from dataclasses import MISSING

    return field.default is MISSING and field.default_factory is MISSING


def encode_actions(actions: np.ndarray) -> list[list[float]]:
    """Actions (N, 2) as N JSON rows."""
    result: list[list[float]] = np.asarray(actions, dtype=np.float64).tolist()
    return result


def encode_context(context: ControllerContext) -> dict[str, Any]:
    """The controller's context as plain values (no forecast)."""
    p = context.params
    return {"names": list(context.names), "dt_h": context.dt_h, "n_steps": context.n_steps,
            "limit_kwh": context.limit_kwh, "seed": context.seed,
            "params": {f.name: np.asarray(getattr(p, f.name), dtype=np.float64).tolist()
                       for f in fields(p)}}


def decode_context(data: dict[str, Any]) -> ControllerContext:
    """The context :func:`encode_context` wrote."""
    params = FleetParams(**{k: np.asarray(v, dtype=np.float64 if k != "export_pv" else bool)
                            for k, v in data["params"].items()})
    return ControllerContext(names=tuple(data["names"]), params=params,
                             dt_h=float(data["dt_h"]), n_steps=int(data["n_steps"]),
                             limit_kwh=float(data["limit_kwh"]), seed=int(data["seed"]))


class RemoteAnswers:
    """The fleet engine's controller while the actions come from another process.

    The controlled fleet simulator puts each answer in with :meth:`answer`; ``act`` hands
    it to ``FleetLoop.step``, which checks it like any controller's actions.
    """

    name = "remote"

    def __init__(self) -> None:
        self.pending: object = None

    def answer(self, actions: object) -> None:
        """The remote controller's actions for the coming step."""
        self.pending = actions

    def act(self, obs: FleetObservation) -> np.ndarray:
        """The answer received for this step.

        Raises:
            ControllerError: if no answer came (the fleet was stepped without one).
        """
        if self.pending is None:
            raise ControllerError("no answer from the remote controller for this step")
        actions, self.pending = self.pending, None
        return actions  # type: ignore[return-value]  # FleetLoop checks it (checked_actions)
