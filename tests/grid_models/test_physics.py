"""Feeder physics bounds (grid_models.physics): every shipped and tested feeder passes, and
each bound refuses a value outside it, naming the table, element, column and range."""

from __future__ import annotations

import math

import pytest

from grid_models.feeders import PANDAPOWER_NETWORKS, load_feeder
from grid_models.physics import PHYSICS_BOUNDS, FeederPhysicsError, check_physics
from tests.grid_models.conftest import SIMBENCH_SOURCES

MV_SOURCES = ("simbench:1-MV-rural--0-sw", "simbench:1-MV-urban--0-sw",
              "simbench:1-LV-semiurb4--0-sw")


@pytest.mark.parametrize("source", [*(f"pandapower:{n}" for n in PANDAPOWER_NETWORKS),
                                    *SIMBENCH_SOURCES, *MV_SOURCES])
def test_real_feeders_are_physical(source: str):
    check_physics(load_feeder(source), source)


def _outside(bound_low: float, high: float, low_open: bool) -> list[float]:
    below = bound_low if low_open else bound_low - 1.0
    return [below, high * 10, math.nan, math.inf]


@pytest.mark.parametrize("bound", PHYSICS_BOUNDS, ids=[f"{b.table}.{b.column}"
                                                       for b in PHYSICS_BOUNDS])
def test_each_bound_refuses_values_outside_it(bound):
    for value in _outside(bound.low, bound.high, bound.low_open):
        net = load_feeder("pandapower:cigre_lv")
        table = net[bound.table]
        row = table.index[0]
        table[bound.column] = table[bound.column].astype(float)
        table.loc[row, bound.column] = value
        with pytest.raises(FeederPhysicsError) as info:
            check_physics(net, "my feeder")
        message = str(info.value)
        assert message.startswith("my feeder: not physical: ")
        assert f"{bound.table} {row}: {bound.column} is " in message
        assert bound.text() in message


def test_vkr_above_vk_and_zero_impedance_are_refused():
    net = load_feeder("pandapower:cigre_lv")
    net.trafo.loc[net.trafo.index[0], "vkr_percent"] = 50.0
    net.line.loc[net.line.index[1], ["r_ohm_per_km", "x_ohm_per_km"]] = 0.0
    with pytest.raises(FeederPhysicsError, match="vkr_percent 50 exceeds vk_percent") as info:
        check_physics(net)
    assert "r_ohm_per_km and x_ohm_per_km are both 0" in str(info.value)


def test_many_problems_are_counted_after_the_first_few():
    net = load_feeder("pandapower:cigre_lv")
    net.line["length_km"] = -1.0
    with pytest.raises(FeederPhysicsError, match=r"; and \d+ more$"):
        check_physics(net)
