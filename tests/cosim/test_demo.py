"""The quickstart's demo command runs the Fig. 1d scenario and writes its run directory."""

from __future__ import annotations

from pathlib import Path

from cosim.cli import main
from cosim.results.readers import read_status


def test_cli_demo_runs_paper_fig1d(tmp_path: Path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "24", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "mean_district_grid_kwh" in printed and "trafo_overload_hours" in printed
    assert "paper_fig1d" in printed
    assert read_status(out)["state"] == "complete"
    for plot in ("district_grid", "lambda", "unmet", "trafo_duration", "voltage_envelope",
                 "comm_graph"):
        assert (out / "plots" / f"{plot}.png").is_file(), plot


def test_demo_again_never_overwrites_the_earlier_one(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["demo", "--steps", "24", "--quiet", "--set", "output.plots=false"]
    assert main(args) == 0
    first = read_status(tmp_path / "runs" / "paper_fig1d")["run_id"]
    assert main(args) == 0
    assert read_status(tmp_path / "runs" / "paper_fig1d")["run_id"] == first
    assert read_status(tmp_path / "runs" / "paper_fig1d_2")["state"] == "complete"
    capsys.readouterr()
