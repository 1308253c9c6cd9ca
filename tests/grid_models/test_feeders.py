"""Feeder sources load, errors list the valid choices, the cache returns equal nets."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pytest

from grid_models import feeders
from grid_models.errors import FeederError
from grid_models.feeders import PANDAPOWER_NETWORKS, load_feeder, save_feeder_json

from .conftest import PANDAPOWER_SOURCES, SIMBENCH_SOURCES

VM_ATOL_PU = 1e-12  # a reloaded net must give the same power flow, not merely a close one


@pytest.mark.parametrize("source", SIMBENCH_SOURCES + PANDAPOWER_SOURCES)
def test_every_source_loads_and_solves(source):
    net = load_feeder(source)
    assert len(net.bus) > 0 and len(net.ext_grid) == 1 and len(net.trafo) >= 1
    pp.runpp(net)
    assert net.converged
    if source.startswith("simbench:"):
        assert {"load", "renewables"} <= set(net.profiles)


@pytest.mark.slow
def test_every_pandapower_name_loads():
    for name in PANDAPOWER_NETWORKS:
        assert len(load_feeder(f"pandapower:{name}").bus) > 0


def test_json_file_round_trip(tmp_path, rural1):
    path = save_feeder_json(rural1, tmp_path / "feeder.json")
    assert "profiles" in rural1  # saving does not strip the caller's net
    again = load_feeder(path)
    also = load_feeder(str(path))
    assert "profiles" not in again
    for net in (rural1, again, also):
        pp.runpp(net)
    np.testing.assert_allclose(again.res_bus.vm_pu, rural1.res_bus.vm_pu, atol=VM_ATOL_PU)
    np.testing.assert_allclose(also.res_bus.vm_pu, rural1.res_bus.vm_pu, atol=VM_ATOL_PU)


def test_loaded_nets_are_independent_copies():
    a = load_feeder("simbench:1-LV-rural1--0-sw")
    a.load["p_mw"] = 99.0
    b = load_feeder("simbench:1-LV-rural1--0-sw")
    assert (b.load["p_mw"] < 1.0).all()


def test_unknown_simbench_code_lists_valid_codes():
    with pytest.raises(FeederError) as err:
        load_feeder("simbench:1-LV-rural9--0-sw")
    message = str(err.value)
    assert "1-LV-rural1--0-sw" in message and "Valid codes" in message
    assert isinstance(err.value, ValueError)


def test_unknown_pandapower_name_lists_valid_names():
    with pytest.raises(FeederError, match="cigre_lv, kerber_dorfnetz"):
        load_feeder("pandapower:ieee13")


@pytest.mark.parametrize("source", ["1-LV-rural1--0-sw", "cigre_lv", ""])
def test_source_without_prefix_is_rejected(source):
    with pytest.raises(FeederError, match="simbench:<code>"):
        load_feeder(source)


def test_missing_or_broken_json_file(tmp_path):
    with pytest.raises(FeederError, match="not found"):
        load_feeder(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(FeederError, match="cannot read"):
        load_feeder(broken)


@pytest.mark.slow
def test_disk_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv(feeders.CACHE_ENV_VAR, str(tmp_path))
    feeders._simbench_cached.cache_clear()
    try:
        fresh = load_feeder("simbench:1-LV-rural1--0-sw")  # builds and writes the cache
        assert any(tmp_path.rglob("1-LV-rural1--0-sw.json"))
        feeders._simbench_cached.cache_clear()
        cached = load_feeder("simbench:1-LV-rural1--0-sw")  # read back from disk
    finally:
        feeders._simbench_cached.cache_clear()
    for key, frame in fresh.profiles.items():
        np.testing.assert_array_equal(cached.profiles[key].to_numpy(), frame.to_numpy())
    for net in (fresh, cached):
        pp.runpp(net)
    np.testing.assert_allclose(cached.res_bus.vm_pu, fresh.res_bus.vm_pu, atol=VM_ATOL_PU)
    np.testing.assert_allclose(cached.res_line.loading_percent, fresh.res_line.loading_percent)
