"""Controllers: the contract every controller honours, rule-based controllers, DMPC,
EPOS and the perfect-foresight oracle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from agents.control.contract import (
        Controller,
        ControllerContext,
        ControllerError,
        ControllerForecast,
        StatefulController,
        check_controller,
    )
    from agents.control.coupling import CouplingRows, Forecast
    from agents.control.dmpc import DmpcConfig, DmpcController
    from agents.control.epos.controller import EposConfig, EposController
    from agents.control.epos.selection import select_plans
    from agents.control.oracle import (
        OracleController,
        OracleInfeasible,
        OracleSchedule,
        solve_oracle,
    )
    from agents.control.rules import NoControl, PriceAwareHeuristic, RuleBasedPeakShaving

_API = {
    "Controller": "contract",
    "ControllerContext": "contract",
    "ControllerError": "contract",
    "ControllerForecast": "contract",
    "StatefulController": "contract",
    "check_controller": "contract",
    "CouplingRows": "coupling",
    "Forecast": "coupling",
    "DmpcConfig": "dmpc",
    "DmpcController": "dmpc",
    "EposConfig": "epos.controller",
    "EposController": "epos.controller",
    "select_plans": "epos.selection",
    "OracleController": "oracle",
    "OracleInfeasible": "oracle",
    "OracleSchedule": "oracle",
    "solve_oracle": "oracle",
    "NoControl": "rules",
    "PriceAwareHeuristic": "rules",
    "RuleBasedPeakShaving": "rules",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
