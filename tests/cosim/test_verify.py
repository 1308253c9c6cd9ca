"""``cosim verify``: passes on short runs of every shipped scenario and catches each
injected corruption (a changed bus voltage, a dropped kWh, an altered lambda, a KPI off
by 1 %), naming the check that failed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cosim.cli import main
from cosim.engine.run import execute, prepare_scenario
from tests.run_edit import copy_run, edit_table

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO_ROOT / "scenarios").glob("*.yaml"))
STEPS = 48
SHIPPED_STEPS = 6
VM_CHANGE_PU = 1e-3
DROPPED_CHANGE_KWH = 1.0
LAMBDA_CHANGE = 0.01
KPI_CHANGE_REL = 0.01

pytestmark = pytest.mark.cosim


def _run(out: Path, scenario: Path, steps: int) -> Path:
    sc, built = prepare_scenario(scenario, [("output.plots", False)], steps=steps)
    return execute(sc, built, out, progress=False, engine="plain").run_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("verify") / "ref",
                REPO_ROOT / "scenarios" / "lv_semiurb_40_grid.yaml", STEPS)


@pytest.fixture()
def copy(reference: Path, tmp_path: Path) -> Path:
    return copy_run(reference, tmp_path / "copy")


def _verify(run: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["verify", str(run), *extra])
    return code, capsys.readouterr().out


def test_a_clean_run_passes(reference: Path, capsys):
    code, out = _verify(reference, capsys, "--steps", "all")
    assert code == 0, out
    for name in ("energy balance", "power flow: vm_pu", "power flow: loading", "multipliers",
                 "grid multipliers", "lambda_eff", "KPIs"):
        assert f"ok    {name}" in out


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_verifies(scenario: Path, tmp_path: Path, capsys):
    run = _run(tmp_path / scenario.stem, scenario, SHIPPED_STEPS)
    code, out = _verify(run, capsys)
    assert code == 0, out


def test_a_changed_bus_voltage_is_caught(copy: Path, capsys):
    def nudge(frame: pd.DataFrame) -> None:
        frame.loc[(frame.time == 20) & (frame.bus == frame.bus.iloc[5]), "vm_pu"] += VM_CHANGE_PU

    edit_table(copy, "buses", nudge)
    code, out = _verify(copy, capsys, "--steps", "all")
    assert code == 1 and "FAIL  power flow: vm_pu" in out and "step 20" in out


def test_a_dropped_kwh_is_caught(copy: Path, capsys):
    def drop(frame: pd.DataFrame) -> None:
        frame.loc[(frame.time == 7) & (frame.building == "B03"), "dropped_kwh"] += \
            DROPPED_CHANGE_KWH

    edit_table(copy, "buildings", drop)
    code, out = _verify(copy, capsys)
    assert code == 1 and "FAIL  energy balance" in out and "building B03, step 7" in out


def test_an_altered_lambda_is_caught(copy: Path, capsys):
    def alter(frame: pd.DataFrame) -> None:
        frame.loc[(frame.time == 30) & (frame.building == "B10"), "lambda"] += LAMBDA_CHANGE

    edit_table(copy, "buildings", alter)
    code, out = _verify(copy, capsys)
    assert code == 1 and "FAIL  multipliers" in out and "building B10, step 30" in out


def test_a_kpi_off_by_one_percent_is_caught(copy: Path, capsys):
    kpis = json.loads((copy / "kpis.json").read_text())
    kpis["grid"]["losses_mwh"] *= 1 + KPI_CHANGE_REL
    (copy / "kpis.json").write_text(json.dumps(kpis))
    code, out = _verify(copy, capsys)
    assert code == 1 and "FAIL  KPIs" in out and "grid.losses_mwh" in out


@pytest.mark.parametrize("table", ["buildings", "grid"])
def test_a_shifted_datetime_is_caught(copy: Path, table: str, capsys):
    def shift(frame: pd.DataFrame) -> None:
        frame.loc[frame.time == 7, "datetime"] -= pd.Timedelta(hours=2)

    edit_table(copy, table, shift)
    code, out = _verify(copy, capsys)
    assert code == 1 and "FAIL  calendar" in out and f"{table} table, step 7" in out
    assert "worst 2 " in out


def test_a_run_without_datetimes_skips_the_calendar_check(copy: Path, capsys):
    for table in ("buildings", "grid"):
        edit_table(copy, table, lambda frame: frame.drop(columns="datetime", inplace=True))
    code, out = _verify(copy, capsys)
    assert code == 0 and "skip  calendar" in out


@pytest.mark.parametrize("steps", ["0", "many"])
def test_bad_steps_and_non_runs_are_exit_2(steps: str, reference: Path, tmp_path: Path,
                                           capsys):
    assert main(["verify", str(reference), "--steps", steps]) == 2
    assert main(["verify", str(tmp_path)]) == 2
    assert "error:" in capsys.readouterr().err
