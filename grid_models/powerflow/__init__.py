"""AC power flow: one contract over two backends, pandapower (the reference) and
power-grid-model (the fast path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from grid_models.powerflow.interface import (
        BatchGridResult,
        GridResult,
        PowerFlow,
        PowerFlowNotConvergedWarning,
        make_powerflow,
    )
    from grid_models.powerflow.pandapower_backend import PandapowerPowerFlow
    from grid_models.powerflow.pgm_backend import PgmPowerFlow

_API = {
    "BatchGridResult": "interface",
    "GridResult": "interface",
    "PowerFlow": "interface",
    "PowerFlowNotConvergedWarning": "interface",
    "make_powerflow": "interface",
    "PandapowerPowerFlow": "pandapower_backend",
    "PgmPowerFlow": "pgm_backend",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
