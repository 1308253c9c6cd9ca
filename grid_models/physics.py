"""Physical plausibility of a feeder: what a power flow on it can mean.

A power flow converges on a net with negative line lengths (negative losses) or a
transformer with a negative short-circuit voltage, and its numbers are then garbage
that looks fine. :func:`check_physics` refuses such a net before anything runs; each
problem names the table, the element, the column, its value and the valid range.

Bounds (``PHYSICS_BOUNDS``, documented in the README's limits table) are generous:
they hold for every LV and MV feeder of pandapower and SimBench, and only rule out
values no real equipment has. Every element is checked, in service or not (a value
no equipment has is a mistake either way).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from grid_models.errors import FeederError

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet


class Bound(NamedTuple):
    """A column's valid range; ``low_open``: the lower bound itself is not valid."""

    table: str
    column: str
    low: float
    high: float
    low_open: bool
    unit: str

    def text(self) -> str:
        """The range in words, e.g. ``> 0 and <= 1,000 km``."""
        low = f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{low} and <= {self.high:,g} {self.unit}".rstrip()


MAX_LINE_LENGTH_KM = 1_000.0
MAX_LINE_OHM_PER_KM = 100.0  # r and x; overhead and cable lines are below 5
MAX_LINE_CURRENT_KA = 100.0
MAX_LINE_NF_PER_KM = 10_000.0
MAX_TRAFO_MVA = 10_000.0
MAX_TRAFO_VK_PERCENT = 100.0
MAX_BUS_KV = 1_000.0
#: the external grid's set point (per unit)
EXT_GRID_VM_PU = (0.5, 1.5)

PHYSICS_BOUNDS: tuple[Bound, ...] = (
    Bound("bus", "vn_kv", 0.0, MAX_BUS_KV, True, "kV"),
    Bound("line", "length_km", 0.0, MAX_LINE_LENGTH_KM, True, "km"),
    Bound("line", "r_ohm_per_km", 0.0, MAX_LINE_OHM_PER_KM, False, "ohm/km"),
    Bound("line", "x_ohm_per_km", 0.0, MAX_LINE_OHM_PER_KM, False, "ohm/km"),
    Bound("line", "c_nf_per_km", 0.0, MAX_LINE_NF_PER_KM, False, "nF/km"),
    Bound("line", "max_i_ka", 0.0, MAX_LINE_CURRENT_KA, True, "kA"),
    Bound("trafo", "sn_mva", 0.0, MAX_TRAFO_MVA, True, "MVA"),
    Bound("trafo", "vn_hv_kv", 0.0, MAX_BUS_KV, True, "kV"),
    Bound("trafo", "vn_lv_kv", 0.0, MAX_BUS_KV, True, "kV"),
    Bound("trafo", "vk_percent", 0.0, MAX_TRAFO_VK_PERCENT, True, "%"),
    Bound("trafo", "vkr_percent", 0.0, MAX_TRAFO_VK_PERCENT, False, "%"),
    Bound("ext_grid", "vm_pu", EXT_GRID_VM_PU[0], EXT_GRID_VM_PU[1], False, "pu"),
)
#: problems listed in one error before the rest are counted
MAX_LISTED_PROBLEMS = 5


class FeederPhysicsError(FeederError):
    """A feeder with values no real equipment has (negative lengths, impedances, ...)."""


def _as_floats(values: pd.Series[Any]) -> np.ndarray:
    """A column as floats; what is not a number becomes NaN."""
    return np.asarray(pd.to_numeric(values, errors="coerce"), dtype=float)


def physics_problems(net: pandapowerNet) -> list[str]:
    """Every value of ``net`` outside :data:`PHYSICS_BOUNDS`, in words (empty: none)."""
    problems: list[str] = []
    for bound in PHYSICS_BOUNDS:
        table = net.get(bound.table) if hasattr(net, "get") else None
        if table is None or bound.column not in getattr(table, "columns", ()) or table.empty:
            continue
        values = _as_floats(table[bound.column])
        with np.errstate(invalid="ignore"):
            low_ok = values > bound.low if bound.low_open else values >= bound.low
            bad = ~(np.isfinite(values) & low_ok & (values <= bound.high))
        for pos in np.flatnonzero(bad):
            value = values[pos]
            shown = "not a number" if math.isnan(value) else f"{value:g}"
            problems.append(f"{bound.table} {table.index[pos]}: {bound.column} is {shown}; "
                            f"valid: {bound.text()}")
    trafo = net.get("trafo") if hasattr(net, "get") else None
    if trafo is not None and not trafo.empty and {"vk_percent", "vkr_percent"} <= set(
            trafo.columns):
        vk, vkr = _as_floats(trafo["vk_percent"]), _as_floats(trafo["vkr_percent"])
        with np.errstate(invalid="ignore"):
            for pos in np.flatnonzero(vkr > vk):
                problems.append(f"trafo {trafo.index[pos]}: vkr_percent {vkr[pos]:g} exceeds "
                                f"vk_percent {vk[pos]:g}; the resistive part of the "
                                "short-circuit voltage is at most all of it")
    line = net.get("line") if hasattr(net, "get") else None
    if line is not None and not line.empty and {"r_ohm_per_km", "x_ohm_per_km"} <= set(
            line.columns):
        r, x = _as_floats(line["r_ohm_per_km"]), _as_floats(line["x_ohm_per_km"])
        for pos in np.flatnonzero((r == 0) & (x == 0)):
            problems.append(f"line {line.index[pos]}: r_ohm_per_km and x_ohm_per_km are both "
                            "0 (no impedance); join the two buses into one, or use a switch")
    return problems


def check_physics(net: pandapowerNet, source: str = "the feeder") -> None:
    """Refuse a net with values no real equipment has (module docstring).

    Raises:
        FeederPhysicsError: naming ``source`` and the first problems, counting the rest.
    """
    problems = physics_problems(net)
    if not problems:
        return
    listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    raise FeederPhysicsError(f"{source}: not physical: {listed}"
                             + (f"; and {more} more" if more > 0 else ""))
