"""The quickstart's demo command runs and its summary is consistent."""

from __future__ import annotations

import pytest

from cosim.cli import main
from cosim.demo import run_demo

KWH_RTOL = 1e-12


def test_demo_no_control_serves_everything_from_grid():
    summary = run_demo(steps=200)
    assert summary["total_grid_kwh"] == pytest.approx(summary["total_demand_kwh"], rel=KWH_RTOL)
    assert summary["peak_district_import_kwh"] >= summary["mean_district_import_kwh"] > 0


def test_cli_demo_prints_summary(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "total_cost" in out and "peak_to_average" in out
