"""A controller in its own process: it joins a run through mosaik's remote mechanism.

A scenario names it with (docs/controllers.md)::

    controller:
      kind: remote
      remote_cmd: "%(python)s examples/remote_controller.py %(addr)s"  # the run starts it
      remote_timeout_s: 30

or, started by hand with ``python examples/remote_controller.py 127.0.0.1:5678 --remote``
(it then listens), ``remote_connect: "127.0.0.1:5678"``. Each step it receives the
per-building observation and answers with the actions, as it would beside a real fleet.

The controller itself is an ordinary contract class (agents.control.contract): here the
price-aware heuristic of agents.control.rules with its default thresholds, the controller
of the scenario kind ``heuristic``, so that the run can be compared with that one.
"""

from __future__ import annotations

import sys

from agents.control.contract import ControllerContext
from agents.control.rules import PriceAwareHeuristic
from cosim.engine.sims.controller_sim import serve


def make(context: ControllerContext) -> PriceAwareHeuristic:
    """The controller for the buildings the run names in ``context``."""
    return PriceAwareHeuristic(context.params)


if __name__ == "__main__":
    sys.exit(serve(make))
