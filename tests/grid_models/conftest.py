"""Shared fixtures: feeders come from grid_models.feeders (in-process and on-disk cache)."""

from __future__ import annotations

import pytest

from grid_models.feeders import TESTED_SIMBENCH_CODES, load_feeder

SIMBENCH_SOURCES = tuple(f"simbench:{code}" for code in TESTED_SIMBENCH_CODES)
PANDAPOWER_SOURCES = (
    "pandapower:cigre_lv",
    "pandapower:kerber_dorfnetz",
    "pandapower:kerber_landnetz",
)


@pytest.fixture
def rural1():
    """A fresh copy of the smallest SimBench LV grid (15 buses)."""
    return load_feeder("simbench:1-LV-rural1--0-sw")
