"""`cosim study`: a small grid of variants, its table, gaps to the oracle and figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cosim.cli import main

ROOT = Path(__file__).resolve().parents[2]
COST_RTOL = 1e-9


@pytest.mark.slow
def test_study_runs_grid_and_writes_table(tmp_path: Path, capsys):
    out = tmp_path / "study"
    code = main([
        "study", str(ROOT / "scenarios" / "paper_fig1d.yaml"), "--steps", "72",
        "--engine", "plain", "--quiet", "--out", str(out),
        "--sweep", "constraint.fraction_of_peak=0.4,0.6",
        "--variant", "pi:duals.mode=pi,output.plots=false",
        "--variant", "independent:duals.mode=independent,output.plots=false",
        "--variant", "none:controller.kind=none,output.plots=false",
        "--variant", "oracle:controller.kind=oracle,output.plots=false",
    ])
    assert code == 0
    table = pd.read_csv(out / "study.csv")
    assert len(table) == 8 and set(table["variant"]) == {"pi", "independent", "none",
                                                          "oracle"}
    ok = table[table.status == "ok"]
    oracle = ok[ok.variant == "oracle"]
    for _, row in oracle.iterrows():  # the replayed schedule costs what the LP planned
        planned = json.loads((out / row["run_dir"] / "kpis.json").read_text())["oracle"]
        assert row["cost"] == pytest.approx(planned["planned_cost"], rel=COST_RTOL)
    # the gap is each run's cost against the oracle's at the same c
    by_c = oracle.set_index("constraint.fraction_of_peak")["cost"]
    for _, row in ok.iterrows():
        expected = row["cost"] / by_c[row["constraint.fraction_of_peak"]] - 1.0
        assert row["cost_gap_to_oracle"] == pytest.approx(expected, abs=COST_RTOL)
    # the oracle serves everything by the end at minimum cost: a lower bound for 'none'
    none = ok[ok.variant == "none"].set_index("constraint.fraction_of_peak")
    orc = oracle.set_index("constraint.fraction_of_peak")
    common = none.index.intersection(orc.index)
    assert len(common) and (none.loc[common, "cost"] >= orc.loc[common, "cost"]).all()
    for col in ("lambda_spread_last10pct", "lambda_spread_last10pct_rel"):
        assert table.loc[table.variant == "none", col].isna().all(), col
    for _, row in ok[ok.variant == "pi"].iterrows():  # as kpis.json, from the table
        run = out / row["run_dir"]
        fleet = json.loads((run / "kpis.json").read_text())["fleet"]
        lambda_max = yaml.safe_load((run / "scenario.yaml").read_text())["duals"]["lambda_max"]
        for col in ("lambda_spread_last10pct", "lambda_spread_last10pct_mean"):
            assert row[col] == pytest.approx(fleet[col], rel=COST_RTOL), col
        assert row["lambda_spread_last10pct_rel"] == pytest.approx(
            row["lambda_spread_last10pct"] / lambda_max, rel=COST_RTOL)
    assert "lambda_spread_final" not in table and "lambda_spread_rel" not in table
    for name in ("study.md", "unmet_by_c.png", "lambda_trajectories.png", "grid_vs_c.png"):
        assert (out / name).is_file(), name
    assert "gap to oracle" in capsys.readouterr().out


# --- safety and resuming --------------------------------------------------------------------

SCENARIO = ROOT / "scenarios" / "paper_fig1d.yaml"
METRIC_RTOL = 0.0  # a skipped run's row is read from the same files: identical



def _study(out: Path, *extra: str, sweep: str = "constraint.fraction_of_peak=0.4,0.6") -> int:
    return main(["study", str(SCENARIO), "--steps", "48", "--engine", "plain", "--quiet",
                  "--out", str(out), "--sweep", sweep,
                  "--variant", "cons:duals.mode=pi,output.plots=false",
                  "--variant", "none:controller.kind=none,output.plots=false", *extra])


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs"])
def test_variant_names_that_are_paths_are_refused(name: str, tmp_path: Path, capsys):
    out = tmp_path / "study"
    rc = main(["study", str(SCENARIO), "--steps", "24", "--engine", "plain", "--quiet",
                "--out", str(out), "--variant", f"{name}:duals.mode=pi"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "variant name" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_swept_values_become_safe_folder_names(tmp_path: Path):
    out = tmp_path / "study"
    assert main(["study", str(SCENARIO), "--steps", "24", "--engine", "plain", "--quiet",
                  "--out", str(out), "--sweep", "output.directory=../../x/y,/abs/z",
                  "--variant", "none:controller.kind=none,output.plots=false"]) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["none__directory=____x_y", "none__directory=_abs_z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]


def test_a_study_never_takes_a_folder_it_did_not_make(tmp_path: Path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "study.json").write_text('{"state": "complete"}')
    (out / "notes.txt").write_text("mine")
    assert _study(out, "--force") == 2
    assert "is not a study directory made by cosim" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "study.json"]


@pytest.mark.slow
def test_an_interrupted_study_keeps_its_rows_and_resumes(tmp_path: Path, monkeypatch, capsys):
    import cosim.engine.run as run_module

    # in-process runs: the patched execute below must be the one that runs (workers
    # are other processes; their kill-and-resume is tested in test_study_dask.py)
    monkeypatch.setenv("COSIM_STUDY_WORKERS", "1")

    ref = tmp_path / "ref"
    assert _study(ref) == 0
    expected = pd.read_csv(ref / "study.csv")

    out = tmp_path / "study"
    real_execute = run_module.execute
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("stopped for the test")
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(run_module, "execute", interrupted)
    assert _study(out) == 130
    assert "run the same command again" in capsys.readouterr().err
    partial = pd.read_csv(out / "study.csv")
    assert list(partial["run"]) == list(expected["run"][:2])
    monkeypatch.setattr(run_module, "execute", real_execute)
    capsys.readouterr()
    assert _study(out) == 0
    table = pd.read_csv(out / "study.csv")
    assert list(table["reused"]) == [True, True, False, False]
    for col in ("cost", "mean_district_grid_kwh", "final_avg_unmet_kwh", "dropped_kwh"):
        pd.testing.assert_series_equal(table[col], expected[col], rtol=METRIC_RTOL)
    # the same study once more: every run skipped
    assert _study(out) == 0
    assert pd.read_csv(out / "study.csv")["reused"].all()


@pytest.mark.slow
def test_a_changed_study_replaces_runs_only_with_force(tmp_path: Path, capsys):
    out = tmp_path / "study"
    assert _study(out, sweep="constraint.fraction_of_peak=0.4") == 0
    capsys.readouterr()
    rc = main(["study", str(SCENARIO), "--steps", "36", "--engine", "plain", "--quiet",
                "--out", str(out), "--sweep", "constraint.fraction_of_peak=0.4",
                "--variant", "cons:duals.mode=pi,output.plots=false",
                "--variant", "none:controller.kind=none,output.plots=false"])
    assert rc == 2
    assert "--force" in capsys.readouterr().err
    assert main(["study", str(SCENARIO), "--steps", "36", "--engine", "plain", "--quiet",
                  "--out", str(out), "--sweep", "constraint.fraction_of_peak=0.4",
                  "--variant", "cons:duals.mode=pi,output.plots=false",
                  "--variant", "none:controller.kind=none,output.plots=false",
                  "--force"]) == 0
    table = pd.read_csv(out / "study.csv")
    assert not table["reused"].any()


def test_runs_made_by_other_code_are_replaced_only_with_force(tmp_path: Path, capsys):
    out = tmp_path / "study"
    assert _study(out, "--workers", "1", sweep="constraint.fraction_of_peak=0.4") == 0
    old = out / "runs" / "cons__fraction_of_peak=0.4" / "status.json"
    status = json.loads(old.read_text())
    status["code"] = "0" * 16  # as if an earlier version had made it
    old.write_text(json.dumps(status))
    capsys.readouterr()
    assert _study(out, "--workers", "1", sweep="constraint.fraction_of_peak=0.4") == 2
    assert "made by other code" in capsys.readouterr().err
    assert json.loads(old.read_text())["code"] == "0" * 16  # untouched
    assert _study(out, "--workers", "1", "--force",
                  sweep="constraint.fraction_of_peak=0.4") == 0
    table = pd.read_csv(out / "study.csv").set_index("run")
    assert not table.at["cons__fraction_of_peak=0.4", "reused"]
    assert table.at["none__fraction_of_peak=0.4", "reused"]  # same code: kept


def test_a_grid_constraint_study_gets_its_figure_and_columns(tmp_path: Path):
    """Variants with and without grid constraints: the table holds the constraint hours
    (empty for the run without) and the study draws grid_hours.png."""
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "lv_semiurb_40_grid.yaml"
    out = tmp_path / "study"
    assert main(["study", str(scenario), "--steps", "24", "--engine", "plain", "--quiet",
                 "--variant", "energy:grid_constraints=null", "--variant",
                 "operator:grid_constraints.alpha=1.0", "--out", str(out)]) == 0
    table = pd.read_csv(out / "study.csv").set_index("variant")
    assert pd.isna(table.at["energy", "grid_constraint_violation_hours"])
    assert table.at["operator", "grid_constraint_violation_hours"] >= 0
    assert (table["max_trafo_loading_percent"] > 0).all()
    assert (out / "grid_hours.png").stat().st_size > 0


def test_a_run_folder_killed_while_claimed_is_taken_and_a_users_is_not(tmp_path: Path):
    """A study killed between taking a run folder's lock and writing its marker leaves only
    the lock file (and perhaps a half-written marker): that folder is taken like a new one.
    A folder with anything else and no marker stays foreign, untouched."""
    from cosim.tools.study.folder import existing_run

    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / ".lock").write_text('{"pid": 1, "host": "h", "started_unix": 0}')
    (killed / "status.json.tmp").write_text('{\n  "format": ')
    assert existing_run(killed, "") == "new"
    users = tmp_path / "users"
    users.mkdir()
    (users / ".lock").write_text("")
    (users / "notes.txt").write_text("mine")
    assert existing_run(users, "") == "foreign"
    assert (users / "notes.txt").read_text() == "mine"
