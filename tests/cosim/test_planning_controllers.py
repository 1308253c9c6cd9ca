"""The model-based controllers (dmpc, epos) through the co-simulation: both engines agree,
their decisions reach the run directory, a resumed run equals an uninterrupted one, the
study reads their messages, and the grid constraints become coupling rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim.cli import main
from cosim.results.decisions import DECISIONS_DIR
from cosim.results.readers import read_status, read_table
from cosim.tools.study.metrics import run_metrics
from tests.run_edit import assert_same_tables, stopped_at

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
GRID_SCENARIO = REPO_ROOT / "scenarios" / "lv_semiurb_40_grid.yaml"
STEPS = 48
#: a step is "within c" up to the negotiation's stopping tolerance (dmpc_tolerance 0.01)
DMPC_LIMIT_RTOL = 0.02


def _argv(out: Path, kind: str, *extra: str, engine: str = "plain",
          scenario: Path = SCENARIO, steps: int = STEPS) -> list[str]:
    return ["run", str(scenario), "--steps", str(steps), "--out", str(out), "--quiet",
            "--engine", engine, "--set", f"controller.kind={kind}",
            "--set", "output.plots=false", "--set", "output.flush_every=12", *extra]


def _run(out: Path, kind: str, *extra: str, engine: str = "plain",
         scenario: Path = SCENARIO, steps: int = STEPS) -> int:
    return main(_argv(out, kind, *extra, engine=engine, scenario=scenario, steps=steps))


def _decisions(run: Path) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_csv(p) for p in sorted((run / DECISIONS_DIR).glob("*.csv"))}


def _assert_same_decisions(run: Path, ref: Path) -> None:
    a, b = _decisions(run), _decisions(ref)
    assert sorted(a) == sorted(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


@pytest.mark.parametrize("kind", ["dmpc", "epos"])
def test_mosaik_equals_plain_and_decisions_are_written(kind: str, tmp_path: Path):
    plain, mosaik = tmp_path / "plain", tmp_path / "mosaik"
    assert _run(plain, kind) == 0
    assert _run(mosaik, kind, engine="mosaik") == 0
    assert_same_tables(mosaik, plain)
    _assert_same_decisions(mosaik, plain)
    tables = _decisions(plain)
    timing = json.loads((plain / DECISIONS_DIR / "timing.json").read_text())
    assert timing["calls"] > 0
    b = read_table(plain, "buildings")
    if kind == "dmpc":
        assert b.dropped_kwh.sum() == 0.0
        steps = tables["dmpc_steps"]
        assert list(steps.time) == list(range(STEPS))
        assert (steps.iterations >= 1).all() and (steps.messages == 2 * 7 *
                                                   steps.iterations).all()
        mu = tables["dmpc_multipliers"]
        assert set(mu.constraint) == {"district grid <= c"} and (mu.mu_now >= 0).all()
    else:
        days = tables["epos_days"]
        assert list(days.day) == [0, 1] and list(days.time) == [0, 24]
        selection = tables["epos_selection"]
        assert len(selection) == 2 * 7 and selection.plan.between(0, 15).all()


def test_dmpc_holds_c_in_every_step_it_can(tmp_path: Path):
    """c = 0.5 x peak: feasible in every step; the applied plans stay within c."""
    run = tmp_path / "run"
    assert _run(run, "dmpc", "--set", "constraint.fraction_of_peak=0.5") == 0
    limit = json.loads((run / "kpis.json").read_text())["limit_kwh"]
    district = read_table(run, "buildings").groupby("time").grid_kwh.sum().to_numpy()
    assert district.max() <= limit * (1 + DMPC_LIMIT_RTOL)


def test_epos_holds_its_hard_bound_in_every_hour(tmp_path: Path):
    run = tmp_path / "run"
    assert _run(run, "epos", "--set", "constraint.fraction_of_peak=0.5") == 0
    limit = json.loads((run / "kpis.json").read_text())["limit_kwh"]
    district = read_table(run, "buildings").groupby("time").grid_kwh.sum().to_numpy()
    assert district.max() <= limit * (1 + 1e-9)


@pytest.mark.parametrize("kind", ["dmpc", "epos"])
def test_a_resumed_run_writes_the_same_decisions(kind: str, tmp_path: Path, monkeypatch):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _run(ref, kind) == 0
    assert stopped_at(30, _argv(run, kind), monkeypatch) == 130
    assert not (run / DECISIONS_DIR).exists()
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    assert read_status(run)["resumes"][0]["from_step"] == 24
    assert_same_tables(run, ref)
    _assert_same_decisions(run, ref)


def test_study_metrics_count_messages_and_time(tmp_path: Path):
    run = tmp_path / "run"
    assert _run(run, "dmpc", steps=24) == 0
    metrics = run_metrics(run, uses_duals=False)
    steps = pd.read_csv(run / DECISIONS_DIR / "dmpc_steps.csv")
    assert metrics["messages_per_step"] == pytest.approx(steps.messages.mean())
    assert metrics["wall_ms_per_step"] > 0 and metrics["controller_ms_per_step"] > 0
    assert metrics["hours_over_limit"] >= 0
    assert np.isnan(metrics["lambda_mean_final"])


def test_grid_constraints_become_coupling_rows(tmp_path: Path):
    run = tmp_path / "run"
    assert _run(run, "dmpc", scenario=GRID_SCENARIO, steps=6) == 0
    mu = pd.read_csv(run / DECISIONS_DIR / "dmpc_multipliers.csv")
    names = list(dict.fromkeys(mu.constraint))
    assert names[0] == "district grid <= c" and len(names) > 1
    assert any("loading" in x for x in names[1:])
