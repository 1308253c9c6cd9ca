"""The 100,000-home scenario (docs/scaling.md) validates without running: its size, grid,
shards and graph are within the scenario limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.cli import main

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "hv_mv_100000.yaml"

pytestmark = pytest.mark.cosim


def test_the_100000_home_scenario_validates(capsys):
    assert main(["validate", str(SCENARIO)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert (f"{SCENARIO}: valid. 100000 buildings, 168 steps, "
            "feeder simbench:1-HVMV-urban-all-0-sw") in captured.out
