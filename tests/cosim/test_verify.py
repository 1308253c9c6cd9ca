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
#: the 100,000-home scale scenario is left out: a run of it takes four shard processes and
#: about 5 GB, which is benchmarks/scale.py's job; tests/cosim/test_scale_scenario.py
#: validates it
SCALE_ONLY = {"hv_mv_100000"}
SCENARIOS = sorted(p for p in (REPO_ROOT / "scenarios").glob("*.yaml") if p.stem not in SCALE_ONLY)
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


# --- against a copy of a golden reference (240 steps, no simulation) ---------------------

GOLDEN = REPO_ROOT / "data" / "golden" / "paper_fig1d"
CORRUPTED_STEPS = 4  # steps corrupted, drawn with a fixed seed
SEED = 20261207


@pytest.fixture()
def golden_copy(tmp_path: Path) -> Path:
    return copy_run(GOLDEN, tmp_path / "golden_copy")


def _without_setup_hashes(run: Path) -> None:
    """An older run's status.json (no set-up hashes): the checks that read a file see it."""
    status = json.loads((run / "status.json").read_text())
    del status["setup_files"]
    (run / "status.json").write_text(json.dumps(status))


def test_a_voltage_changed_at_any_step_is_caught(golden_copy: Path, capsys):
    """Every step is re-solved: each corrupted step is caught, sampled by pandapower or not
    (a run of 240 steps, the default sample of 24)."""
    import numpy as np

    from cosim.tools.verify import check_power_flow

    rng = np.random.default_rng(SEED)
    steps = sorted(int(t) for t in rng.choice(np.arange(1, 239), CORRUPTED_STEPS,
                                              replace=False))
    buses = pd.read_parquet(golden_copy / "buses.parquet").bus.unique()
    where = {t: int(rng.choice(buses)) for t in steps}

    def nudge(frame: pd.DataFrame) -> None:
        for t, bus in where.items():
            frame.loc[(frame.time == t) & (frame.bus == bus), "vm_pu"] += VM_CHANGE_PU

    edit_table(golden_copy, "buses", nudge)
    vm, _ = check_power_flow(golden_copy, steps=2)  # pandapower on steps 0 and 239 only
    assert vm.failed == CORRUPTED_STEPS, vm.line()
    code, out = _verify(golden_copy, capsys)
    assert code == 1 and "FAIL  power flow: vm_pu" in out
    for t, bus in where.items():  # each alone, with the default sample
        one = copy_run(GOLDEN, golden_copy.parent / f"one_{t}")
        edit_table(one, "buses", lambda f, t=t, bus=bus: f.__setitem__(
            "vm_pu", f.vm_pu.where(~((f.time == t) & (f.bus == bus)), f.vm_pu + VM_CHANGE_PU)))
        vm, _ = check_power_flow(one)
        assert vm.failed == 1 and f"bus {bus}, step {t}" in vm.where, vm.line()


@pytest.mark.parametrize("name, check", [("feeder.json", "power flow: vm_pu"),
                                         ("comm_graph.json", "multipliers")])
def test_a_missing_input_fails(golden_copy: Path, name: str, check: str, capsys):
    _without_setup_hashes(golden_copy)
    (golden_copy / name).unlink()
    code, out = _verify(golden_copy, capsys)
    assert code == 1 and f"FAIL  {check}" in out and f"{name} is missing" in out, out
    assert f"skip  {check}" not in out


@pytest.mark.parametrize("column, value", [("pv_kwh", float("inf")),
                                           ("export_kwh", float("-inf")),
                                           ("price", float("nan"))])
def test_non_finite_values_fail(golden_copy: Path, column: str, value: float, capsys):
    def spoil(frame: pd.DataFrame) -> None:
        frame.loc[(frame.time == 11) & (frame.building == "B2"), column] = value

    edit_table(golden_copy, "buildings", spoil)
    code, out = _verify(golden_copy, capsys, "--sampled-only", "--steps", "2")
    assert code == 1 and "FAIL  finite values" in out and f"buildings.{column}" in out, out
    assert "step 11" in out


def test_a_missing_column_is_exit_2_naming_it(golden_copy: Path, capsys):
    edit_table(golden_copy, "buildings", lambda f: f.drop(columns="building", inplace=True))
    assert main(["verify", str(golden_copy)]) == 2
    err = capsys.readouterr().err
    assert "the buildings table lacks the column 'building'" in err
    assert "Traceback" not in err
