"""Energised buses: islanded buildings and feeders without a source are refused."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pytest

from grid_models.errors import IslandedBusError, PlacementError, SupplyError
from grid_models.feeders import load_feeder
from grid_models.placement import load_buses, place_buildings
from grid_models.powerflow.interface import make_powerflow
from grid_models.topology import (
    REASON_CUT_OFF,
    REASON_NOT_CONNECTED,
    check_supply,
    supplied_buses,
    unsupplied_reasons,
)

#: CIGRE LV: line 13 (bus 15 -> 16) is the only feed of bus 16 (R15); switch S1
#: (bus 0 - bus 1) feeds the whole residential branch (buses 1..19).
CIGRE_R15_LINE, CIGRE_R15_BUS = 13, 16
CIGRE_RESIDENTIAL_SWITCH = 0
CIGRE_RESIDENTIAL_BUSES = tuple(range(1, 20))


@pytest.fixture
def cigre():
    return load_feeder("pandapower:cigre_lv")


def test_every_bus_of_an_intact_feeder_is_energised(cigre, rural1):
    for net in (cigre, rural1):
        check_supply(net)
        np.testing.assert_array_equal(supplied_buses(net), np.sort(net.bus.index))


def test_out_of_service_line_islands_its_bus(cigre):
    cigre.line.loc[CIGRE_R15_LINE, "in_service"] = False
    energised = supplied_buses(cigre)
    assert CIGRE_R15_BUS not in energised and 15 in energised
    assert unsupplied_reasons(cigre, [CIGRE_R15_BUS]) == [REASON_CUT_OFF]
    with pytest.raises(IslandedBusError) as err:
        place_buildings(cigre, 3, buses=[12, CIGRE_R15_BUS, 17])
    assert err.value.positions == [1] and err.value.buses == [CIGRE_R15_BUS]
    message = str(err.value)
    assert "building 1 on bus 16" in message and "not energised" in message
    assert isinstance(err.value, PlacementError)


def test_open_switch_islands_a_whole_branch(cigre):
    cigre.switch.loc[CIGRE_RESIDENTIAL_SWITCH, "closed"] = False
    energised = set(supplied_buses(cigre).tolist())
    assert not energised & set(CIGRE_RESIDENTIAL_BUSES)
    assert 22 in energised  # the other branches still are
    with pytest.raises(IslandedBusError) as err:
        place_buildings(cigre, 2, buses=[22, 12])
    assert err.value.positions == [1] and err.value.reasons == [REASON_CUT_OFF]


def test_out_of_service_trafo_and_unconnected_bus(rural1):
    rural1.trafo["in_service"] = False
    lv = int(rural1.trafo.lv_bus.iloc[0])
    assert lv not in supplied_buses(rural1)
    alone = pp.create_bus(rural1, vn_kv=0.4)  # no line, no trafo: never energised
    reasons = unsupplied_reasons(rural1, [lv, alone])
    assert reasons == [REASON_CUT_OFF, REASON_NOT_CONNECTED]


def test_automatic_placement_uses_energised_load_buses_only(cigre):
    cigre.line.loc[CIGRE_R15_LINE, "in_service"] = False
    candidates = load_buses(cigre)
    assert CIGRE_R15_BUS not in candidates and len(candidates) > 0
    placed = place_buildings(cigre, 5 * len(candidates), seed=3)
    assert CIGRE_R15_BUS not in placed
    assert set(placed.tolist()) == set(candidates.tolist())


@pytest.mark.parametrize("how", ["out_of_service", "absent", "bus_out_of_service"])
def test_feeder_without_in_service_ext_grid_is_refused(rural1, how):
    if how == "out_of_service":
        rural1.ext_grid["in_service"] = False
        expected = "out of service"
    elif how == "absent":
        rural1.ext_grid.drop(rural1.ext_grid.index, inplace=True)
        expected = "no external grid"
    else:
        rural1.bus.loc[int(rural1.ext_grid.bus.iloc[0]), "in_service"] = False
        expected = "out-of-service or unknown bus"
    with pytest.raises(SupplyError, match=expected):
        check_supply(rural1)
    assert len(supplied_buses(rural1)) == 0
    with pytest.raises(SupplyError):
        place_buildings(rural1, 2, seed=0)
    for backend in ("pandapower", "power-grid-model"):
        with pytest.raises(SupplyError):  # at construction, never mid-run
            make_powerflow(rural1, backend)
