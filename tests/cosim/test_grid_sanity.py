"""The grid result is never silently wrong: islanded buildings and feeders without a
source are validation errors, failed or NaN power-flow steps are unknown in the KPIs,
and ``kpis.json`` is strict JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from cosim.cli import main
from cosim.engine.run import execute, prepare_scenario
from cosim.results.report import json_safe, strict_json, summary_table
from grid_models.feeders import load_feeder, save_feeder_json
from grid_models.powerflow.interface import PowerFlowNotConvergedWarning

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 12
SUBPROCESS_TIMEOUT_S = 120
#: CIGRE LV: line 13 (bus 15 -> 16) alone feeds bus 16 (R15), where B3 sits.
CIGRE_R15_LINE, CIGRE_R15_BUS = 13, 16
POISONED_STEP, ABSURD_STEP = 3, 5
ABSURD_FACTOR = 1e5  # times the fleet's injection: no power flow converges


def _strict_loads(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def _feeder(tmp: Path, name: str, change) -> Path:
    net = load_feeder("pandapower:cigre_lv")
    change(net)
    return save_feeder_json(net, tmp / f"{name}.json")


def _scenario(tmp: Path, **sections: Any) -> Path:
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["time"]["steps"] = STEPS
    raw["duals"]["v1_window"] = min(raw["duals"].get("v1_window", 1), STEPS)  # a valid window
    raw.update(sections)
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _cut_r15(net) -> None:
    net.line.loc[CIGRE_R15_LINE, "in_service"] = False


def test_islanded_explicit_building_is_named(tmp_path, capsys):
    feeder = _feeder(tmp_path, "cut", _cut_r15)
    raw = yaml.safe_load(SCENARIO.read_text())
    path = _scenario(tmp_path, feeder={**raw["feeder"], "source": str(feeder)})
    rc, _, err = _cli(["validate", str(path)], capsys)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert f"{path}: buildings.explicit.2.bus:" in lines[0]
    assert "building B3 is on bus 16" in lines[0] and "not energised" in lines[0]
    assert "Traceback" not in err


def test_islanded_generated_building_names_the_buses_field(tmp_path, capsys):
    feeder = _feeder(tmp_path, "cut", _cut_r15)
    raw = yaml.safe_load(SCENARIO.read_text())
    path = _scenario(
        tmp_path, feeder={**raw["feeder"], "source": str(feeder)},
        buildings={"generate": {"count": 3, "buses": [12, CIGRE_R15_BUS, 17]}},
        communication={"topology": "complete"},
    )
    rc, _, err = _cli(["validate", str(path)], capsys)
    assert rc == 2
    assert f"{path}: buildings.generate.buses: building B2 is on bus 16" in err, err


@pytest.mark.parametrize("how", ["out_of_service", "absent"])
def test_feeder_without_source_is_refused_before_the_run(tmp_path, capsys, how):
    def no_source(net) -> None:
        if how == "absent":
            net.ext_grid.drop(net.ext_grid.index, inplace=True)
        else:
            net.ext_grid["in_service"] = False

    feeder = _feeder(tmp_path, how, no_source)
    raw = yaml.safe_load(SCENARIO.read_text())
    path = _scenario(tmp_path, feeder={**raw["feeder"], "source": str(feeder)})
    rc, _, err = _cli(["validate", str(path)], capsys)
    assert rc == 2 and f"{path}: feeder.source:" in err and "no bus would be energised" in err
    out = tmp_path / "run"
    rc, _, err = _cli(["run", str(path), "--out", str(out)], capsys)
    assert rc == 2 and "feeder.source" in err and not out.exists()


def test_feeder_without_source_subprocess(tmp_path):
    feeder = _feeder(tmp_path, "absent",
                     lambda net: net.ext_grid.drop(net.ext_grid.index, inplace=True))
    raw = yaml.safe_load(SCENARIO.read_text())
    path = _scenario(tmp_path, feeder={**raw["feeder"], "source": str(feeder)})
    proc = subprocess.run([sys.executable, "-m", "cosim.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("error:") == 1 and "feeder.source" in proc.stderr
    assert "Traceback" not in proc.stderr


def _poisoned_run(tmp: Path, bad_steps: set[int] | None, absurd_steps: set[int],
                  steps: int = STEPS):
    """A plain-engine run whose power flow gets NaN / absurd injections on some steps
    (solved per step, where the poison is put; batched solves treat bad steps alike,
    tests/grid_models/test_grid_model.py)."""
    sc, built = prepare_scenario(SCENARIO, [("output.plots", False)], steps=steps)
    pf = built.grid.powerflow
    real = pf.solve

    def solve(p_mw, q_mvar=None, *, step=None):
        p = np.array(p_mw, dtype=float)
        if bad_steps is None or step in bad_steps:
            p[0] = np.nan
        if step in absurd_steps:
            p = p * ABSURD_FACTOR + 1.0
        return real(p, q_mvar, step=step)

    pf.solve = solve
    with pytest.warns(PowerFlowNotConvergedWarning):
        return execute(sc, built, tmp / "run", progress=False, engine="plain",
                       grid_solve="per_step")


def test_failed_and_nan_steps_are_unknown_in_kpis(tmp_path):
    outcome = _poisoned_run(tmp_path, {POISONED_STEP}, {ABSURD_STEP})
    text = (outcome.run_dir / "kpis.json").read_text()
    grid = _strict_loads(text)["grid"]
    assert grid["steps"] == STEPS
    assert grid["nonconverged_steps"] == 2 and grid["unknown_steps"] == 2
    for key in ("trafo_overload_hours", "line_overload_hours", "hours_outside_095_105_pu",
                "hours_outside_090_110_pu"):
        assert grid[f"{key}_unknown_steps"] == 2, key
        assert grid[key] is not None
    assert grid["max_trafo_loading_percent"] > 0  # from the known steps
    table = pd.read_parquet(outcome.run_dir / "grid.parquet")
    assert sorted(table.loc[~table.converged, "time"]) == [POISONED_STEP, ABSURD_STEP]
    summary = summary_table(outcome.kpis)
    assert "at least 0 (unknown for 2 steps)" in summary
    assert outcome.kpis["units"]["grid"]["unknown_steps"] == "steps"


def test_all_steps_unknown_gives_nulls_not_nan(tmp_path):
    outcome = _poisoned_run(tmp_path, None, set(), steps=3)
    text = (outcome.run_dir / "kpis.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    grid = _strict_loads(text)["grid"]
    assert grid["unknown_steps"] == 3
    for key in ("max_trafo_loading_percent", "max_line_loading_percent", "min_vm_pu",
                "max_vm_pu"):
        assert grid[key] is None, key
    summary = summary_table(outcome.kpis)
    assert "unknown for 3 steps" in summary
    assert [line for line in summary.splitlines() if "min_vm_pu" in line][0].split()[2] == \
        "unknown"


def test_json_safe_turns_every_non_finite_into_null():
    obj = {"a": float("nan"), "b": [np.float32(np.inf), -np.inf, 1.5], "c": np.int64(3),
           "d": np.array([np.nan, 2.0]), "e": np.bool_(True), "f": None, "g": "NaN"}
    safe = json_safe(obj)
    assert safe == {"a": None, "b": [None, None, 1.5], "c": 3, "d": [None, 2.0], "e": True,
                    "f": None, "g": "NaN"}
    assert _strict_loads(strict_json(obj)) == safe
