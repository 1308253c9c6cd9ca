"""Membership (downstream buses) and linearised sensitivities of loadings and voltages."""

from __future__ import annotations

import json

import numpy as np
import pandapower as pp
import pytest

from grid_models.errors import FeederError, PlacementError
from grid_models.feeders import load_feeder
from grid_models.sensitivity import (
    Sensitivities,
    downstream_buses,
    element_keys,
    linearised_sensitivities,
    membership,
)

#: A building upstream of (or beside) an element moves its loading only through the
#: voltage (second order): at most this many %-points per kW, against ~0.7 downstream.
UPSTREAM_ATOL_PP_PER_KW = 0.01
#: The linearisation against a re-solved power flow, 3 kW at two buildings at once.
LOADING_ATOL_PP = 0.02
VM_ATOL_PU = 2e-5
#: pandapower and power-grid-model give the same sensitivities to this much.
BACKEND_ATOL_PP_PER_KW = 1e-5
BACKEND_ATOL_PU_PER_KW = 1e-7
EXTRA_KW = 3.0

#: The hand-built feeder: 20 kV bus 0 (ext_grid) - trafo 0 - LV bus 1 - line 0 - bus 2
#: - line 1 - bus 3 - line 2 - bus 4 (main line); branch: bus 2 - line 3 - bus 5.
DOWNSTREAM = {
    ("trafo", 0): [1, 2, 3, 4, 5],
    ("line", 0): [2, 3, 4, 5],
    ("line", 1): [3, 4],
    ("line", 2): [4],
    ("line", 3): [5],
}
#: Buildings: one at the trafo's LV bus, one mid main line, two at its end, one on the branch.
BUILDING_BUS = np.array([1, 3, 4, 4, 5])
#: paper_fig1d's buildings on the CIGRE LV residential branch.
CIGRE_BUILDING_BUS = np.array([12, 12, 16, 17, 18, 19, 19])


def radial_net():
    net = pp.create_empty_network()
    mv = pp.create_bus(net, vn_kv=20.0, name="mv")
    lv = [pp.create_bus(net, vn_kv=0.4, name=f"lv{i}") for i in range(1, 6)]
    pp.create_ext_grid(net, mv, vm_pu=1.0)
    pp.create_transformer(net, mv, lv[0], std_type="0.25 MVA 20/0.4 kV")
    line = "NAYY 4x150 SE"
    for f, t in ((1, 2), (2, 3), (3, 4), (2, 5)):
        pp.create_line(net, f, t, length_km=0.1, std_type=line)
    for b in lv:
        pp.create_load(net, b, p_mw=0.01, q_mvar=0.002)
    return net


@pytest.fixture
def net():
    return radial_net()


def test_downstream_sets_of_a_radial_feeder(net):
    down = downstream_buses(net)
    assert list(down) == list(DOWNSTREAM) == element_keys(net)
    for key, buses in DOWNSTREAM.items():
        np.testing.assert_array_equal(down[key], buses, err_msg=str(key))
    mask = membership(net, BUILDING_BUS)
    np.testing.assert_array_equal(mask[("line", 1)], [False, True, True, True, False])
    np.testing.assert_array_equal(mask[("line", 3)], [False, False, False, False, True])
    assert mask[("trafo", 0)].all()


def test_open_switch_and_out_of_service_elements(net):
    pp.create_switch(net, 5, 3, et="l", closed=False)  # line 3 cut at bus 5
    net.line.loc[2, "in_service"] = False
    down = downstream_buses(net)
    assert ("line", 2) not in down  # out of service: not an element any more
    assert len(down[("line", 3)]) == 0  # in service, carries no supply
    np.testing.assert_array_equal(down[("line", 0)], [2, 3])
    np.testing.assert_array_equal(down[("trafo", 0)], [1, 2, 3])
    # a de-energised element: NaN loading (null in JSON), moved by no building
    pp.create_switch(net, 2, 1, et="l", closed=False)  # now buses 3 and 4 are cut off too
    s = linearised_sensitivities(net, [1, 2])
    k = s.element_index(("line", 1))
    assert np.isnan(s.base_loading_percent[k]) and (s.loading_pp_per_kw[k] == 0).all()
    np.testing.assert_array_equal(s.bus_ids, [0, 1, 2])  # energised buses only
    assert json.loads(s.to_json())["base_loading_percent"][k] is None
    assert np.isnan(Sensitivities.from_json(s.to_json()).base_loading_percent[k])


def test_closed_bus_bus_switch_passes_supply_on(net):
    b6 = pp.create_bus(net, vn_kv=0.4)
    pp.create_switch(net, 4, b6, et="b", closed=True)
    down = downstream_buses(net)
    np.testing.assert_array_equal(down[("line", 2)], [4, b6])
    np.testing.assert_array_equal(down[("trafo", 0)], [1, 2, 3, 4, 5, b6])


def test_sensitivity_signs_follow_the_topology(net):
    s = linearised_sensitivities(net, BUILDING_BUS)
    assert s.loading_pp_per_kw.shape == (len(DOWNSTREAM), len(BUILDING_BUS))
    assert s.vm_pu_per_kw.shape == (len(net.bus), len(BUILDING_BUS))
    mask = membership(net, BUILDING_BUS)
    for key in DOWNSTREAM:
        row = s.loading_pp_per_kw[s.element_index(key)]
        assert (row[mask[key]] > 10 * UPSTREAM_ATOL_PP_PER_KW).all(), key
        np.testing.assert_allclose(row[~mask[key]], 0.0, atol=UPSTREAM_ATOL_PP_PER_KW,
                                   err_msg=str(key))
    # buildings on the same bus share a column
    np.testing.assert_array_equal(s.loading_pp_per_kw[:, 2], s.loading_pp_per_kw[:, 3])
    # more load -> lower voltage everywhere below the slack, more so farther out
    assert (s.vm_pu_per_kw[s.bus_index(0)] == pytest.approx(0.0, abs=1e-9))
    lv = s.vm_pu_per_kw[[s.bus_index(b) for b in (1, 2, 3, 4, 5)]]
    assert (lv < 0).all()
    own = np.array([s.vm_pu_per_kw[s.bus_index(b), i] for i, b in enumerate(BUILDING_BUS)])
    assert own[0] > own[1] > own[2]  # bus 1, 3, 4 along the main line: larger |dV|
    main = s.vm_pu_per_kw[[s.bus_index(b) for b in (1, 2, 3, 4)], 2]  # building at the end
    assert (np.diff(main) < 0).all()


def test_linearisation_predicts_a_resolved_power_flow(net):
    s = linearised_sensitivities(net, BUILDING_BUS)
    dp = np.zeros(len(BUILDING_BUS))
    dp[[1, 4]] = EXTRA_KW  # bus 3 and the branch's bus 5
    loading, vm = s.predict(dp)
    check = radial_net()
    for b in BUILDING_BUS[[1, 4]]:
        pp.create_load(check, int(b), p_mw=EXTRA_KW / 1000.0)
    pp.runpp(check)
    actual = np.array([check.res_trafo.at[0, "loading_percent"]]
                      + [check.res_line.at[i, "loading_percent"] for i in range(4)])
    np.testing.assert_allclose(loading, actual, atol=LOADING_ATOL_PP)
    np.testing.assert_allclose(vm, check.res_bus.loc[s.bus_ids, "vm_pu"], atol=VM_ATOL_PU)
    # and it is a real change, well above the tolerances
    assert np.abs(actual - s.base_loading_percent).max() > 50 * LOADING_ATOL_PP


def test_reactive_power_and_fleet_scale(net):
    p_only = linearised_sensitivities(net, BUILDING_BUS)
    with_q = linearised_sensitivities(net, BUILDING_BUS, power_factor=0.9)
    assert (with_q.vm_pu_per_kw[1:] < p_only.vm_pu_per_kw[1:]).all()
    doubled = linearised_sensitivities(net, BUILDING_BUS, fleet_scale=2.0)
    np.testing.assert_allclose(doubled.loading_pp_per_kw, 2 * p_only.loading_pp_per_kw,
                               rtol=0.01)


def test_operating_point_from_bus_injections(net):
    base = np.zeros(len(net.bus))
    base[4] = 0.05  # 50 kW more at the end of the main line
    s = linearised_sensitivities(net, BUILDING_BUS, base_p_mw=base)
    s0 = linearised_sensitivities(net, BUILDING_BUS)
    k = s.element_index(("line", 2))
    assert s.base_loading_percent[k] > s0.base_loading_percent[k] + 10
    assert s.base_vm_pu[s.bus_index(4)] < s0.base_vm_pu[s.bus_index(4)]


def test_backends_agree(net):
    a = linearised_sensitivities(net, BUILDING_BUS, backend="pandapower")
    b = linearised_sensitivities(net, BUILDING_BUS, backend="power-grid-model")
    np.testing.assert_allclose(a.loading_pp_per_kw, b.loading_pp_per_kw,
                               atol=BACKEND_ATOL_PP_PER_KW)
    np.testing.assert_allclose(a.vm_pu_per_kw, b.vm_pu_per_kw, atol=BACKEND_ATOL_PU_PER_KW)


def test_json_round_trip(net):
    s = linearised_sensitivities(net, BUILDING_BUS, elements=("line",))
    assert [t for t, _ in s.element_keys] == ["line"] * 4
    text = s.to_json()
    data = json.loads(text)
    assert data["element_keys"][0] == ["line", 0] and len(data["vm_pu_per_kw"]) == len(net.bus)
    back = Sensitivities.from_json(text)
    assert back.element_keys == s.element_keys and back.backend == "pandapower"
    np.testing.assert_array_equal(back.loading_pp_per_kw, s.loading_pp_per_kw)
    np.testing.assert_array_equal(back.vm_pu_per_kw, s.vm_pu_per_kw)
    np.testing.assert_array_equal(back.building_bus, BUILDING_BUS)


def test_meshed_loop_is_refused_unless_asked(net):
    pp.create_line(net, 4, 5, length_km=0.1, std_type="NAYY 4x150 SE")  # line 4 closes a ring
    with pytest.raises(FeederError, match="meshed") as err:
        downstream_buses(net)
    message = str(err.value)
    for name in ("line 1", "line 2", "line 3", "line 4", "meshed='empty'"):
        assert name in message
    assert "line 0" not in message and "trafo 0" not in message
    down = downstream_buses(net, meshed="empty")
    for i in (1, 2, 3, 4):
        assert len(down[("line", i)]) == 0
    np.testing.assert_array_equal(down[("line", 0)], [2, 3, 4, 5])
    np.testing.assert_array_equal(down[("trafo", 0)], [1, 2, 3, 4, 5])
    with pytest.raises(FeederError, match="meshed"):
        membership(net, BUILDING_BUS)
    # the linearisation needs no topology
    s = linearised_sensitivities(net, BUILDING_BUS)
    assert (s.loading_pp_per_kw[s.element_index(("trafo", 0))] > 0).all()


def test_parallel_lines_are_a_loop(net):
    pp.create_line(net, 2, 5, length_km=0.1, std_type="NAYY 4x150 SE")
    with pytest.raises(FeederError, match="line 3, line 4"):
        downstream_buses(net)


def test_bad_building_buses_and_arguments(net):
    net.line.loc[3, "in_service"] = False
    with pytest.raises(PlacementError, match=r"\[5\]"):
        linearised_sensitivities(net, BUILDING_BUS)
    with pytest.raises(ValueError, match="delta_kw"):
        linearised_sensitivities(net, [1], delta_kw=0.0)
    with pytest.raises(ValueError, match="meshed"):
        downstream_buses(net, meshed="ignore")


def test_cigre_lv_residential_buildings():
    cigre = load_feeder("pandapower:cigre_lv")
    s = linearised_sensitivities(cigre, CIGRE_BUILDING_BUS, backend="power-grid-model")
    n_elements = int(cigre.trafo["in_service"].sum() + cigre.line["in_service"].sum())
    assert s.loading_pp_per_kw.shape == (n_elements, len(CIGRE_BUILDING_BUS))
    assert s.vm_pu_per_kw.shape == (len(cigre.bus), len(CIGRE_BUILDING_BUS))
    residential = s.loading_pp_per_kw[s.element_index(("trafo", 0))]
    assert (residential > 0).all()
    mask = membership(cigre, CIGRE_BUILDING_BUS)
    assert mask[("trafo", 0)].all() and not mask[("trafo", 1)].any()
    for key, m in mask.items():
        row = s.loading_pp_per_kw[s.element_index(key)]
        assert (row[m] > 10 * UPSTREAM_ATOL_PP_PER_KW).all(), key
        np.testing.assert_allclose(row[~m], 0.0, atol=UPSTREAM_ATOL_PP_PER_KW, err_msg=str(key))
    assert (s.vm_pu_per_kw[s.bus_index(19)] < 0).all()
