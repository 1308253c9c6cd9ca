"""`cosim study` on dask workers: the same table as one process, resuming after a kill,
failed runs recorded while the others finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cosim.scenario.errors import ScenarioError
from cosim.tools.study.execution import run_study, study_workers
from cosim.tools.study.metrics import TIMING_COLUMNS
from cosim.tools.study.schema import study_from_args

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = str(ROOT / "scenarios" / "paper_fig1d.yaml")
STEPS = 48
SWEEP = ["constraint.fraction_of_peak=0.3,0.5"]
VARIANTS = ["pi:duals.mode=pi,output.plots=false",
            "ind:duals.mode=independent,output.plots=false",
            "none:controller.kind=none,output.plots=false",
            "rule:controller.kind=rule,output.plots=false"]  # x 2 values of c: 8 runs
KILL_AFTER_ROWS = 2
WAIT_S = 300.0


def _study():
    return study_from_args(SCENARIO, SWEEP, VARIANTS, name="dask")


def _run_ids(out: Path) -> dict[str, str]:
    """run folder -> the run_id in its status.json, for the complete runs."""
    ids = {}
    for run in sorted((out / "runs").iterdir()):
        if not (run / "status.json").is_file():  # killed before it wrote its marker
            continue
        status = json.loads((run / "status.json").read_text())
        if status.get("state") == "complete":
            ids[run.name] = status["run_id"]
    return ids


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> pd.DataFrame:
    """The 8-run study in this process, one run after the other."""
    out = tmp_path_factory.mktemp("sequential") / "study"
    table = run_study(_study(), out, steps=STEPS, progress=False, workers=1)
    assert len(table) == 8 and (table["status"] == "ok").all()
    return pd.read_csv(out / "study.csv")


@pytest.mark.slow
@pytest.mark.cosim
def test_a_local_cluster_gives_the_table_of_one_process(reference, tmp_path: Path):
    out = tmp_path / "study"
    run_study(_study(), out, steps=STEPS, progress=False, workers=2)
    pd.testing.assert_frame_equal(pd.read_csv(out / "study.csv").drop(columns=list(TIMING_COLUMNS)),
                                  reference.drop(columns=list(TIMING_COLUMNS)))
    marker = json.loads((out / "study.json").read_text())
    assert marker["state"] == "complete" and marker["runs"] == 8 and marker["failed"] == 0


@pytest.mark.slow
@pytest.mark.cosim
def test_a_killed_study_resumes_without_redoing_finished_runs(reference, tmp_path: Path):
    out = tmp_path / "study"
    code = ("import sys; from pathlib import Path; "
            "from cosim.tools.study import run_study, study_from_args; "
            f"run_study(study_from_args({SCENARIO!r}, {SWEEP!r}, {VARIANTS!r}, name='dask'), "
            f"Path({str(out)!r}), steps={STEPS}, progress=False, workers=2)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            csv = out / "study.csv"
            if csv.is_file() and len(pd.read_csv(csv)) >= KILL_AFTER_ROWS:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the study's process; its workers follow it
        proc.wait()
        proc.stderr.close()
    time.sleep(2.0)  # the workers see their parent gone and exit
    before = _run_ids(out)
    assert KILL_AFTER_ROWS <= len(before) < 8, before
    # the kill took the study's lock (a kernel lock) with it: no stale lock to clear (it
    # was one with the O_EXCL lock file); force replaces the runs the kill left unfinished
    table = run_study(_study(), out, steps=STEPS, progress=False, workers=2, force=True)
    after = _run_ids(out)
    assert len(after) == 8
    assert {run: after[run] for run in before} == before  # not run again
    assert set(table.loc[table["reused"], "run"]) == set(before)
    written = pd.read_csv(out / "study.csv")
    pd.testing.assert_frame_equal(written.drop(columns=["reused", *TIMING_COLUMNS]),
                                  reference.drop(columns=["reused", *TIMING_COLUMNS]))


@pytest.mark.slow
@pytest.mark.cosim
def test_failed_runs_are_recorded_while_the_others_finish(tmp_path: Path):
    out = tmp_path / "study"
    study = study_from_args(SCENARIO, [], [
        "none:controller.kind=none",
        "bad_value:duals.alpha=-1",  # refused when the scenario is read (the study's process)
        "rule:controller.kind=rule",
        "no_policies:controller.policy_dir=/nonexistent",  # refused by the build, on a worker
    ], name="failing")
    table = run_study(study, out, steps=24, progress=False, workers=2).set_index("run")
    assert table.loc[["none", "rule"], "status"].tolist() == ["ok", "ok"]
    assert table.loc[["bad_value", "no_policies"], "status"].tolist() == ["failed", "failed"]
    assert table.at["bad_value", "note"].startswith("ScenarioError: ")
    assert "duals.alpha" in table.at["bad_value", "note"]
    assert "directory not found" in table.at["no_policies", "note"]
    assert list(pd.read_csv(out / "study.csv")["run"]) == ["none", "bad_value", "rule",
                                                           "no_policies"]
    marker = json.loads((out / "study.json").read_text())
    assert marker["state"] == "complete" and marker["failed"] == 2
    assert (out / "study.md").is_file()


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.delenv("COSIM_DASK_SCHEDULER", raising=False)
    monkeypatch.setenv("COSIM_STUDY_WORKERS", "3")
    assert study_workers() == (3, None)
    assert study_workers(1) == (1, None)  # the argument first
    monkeypatch.setenv("COSIM_DASK_SCHEDULER", "tcp://127.0.0.1:8786")
    assert study_workers() == (3, "tcp://127.0.0.1:8786")
    monkeypatch.delenv("COSIM_STUDY_WORKERS")
    monkeypatch.delenv("COSIM_DASK_SCHEDULER")
    assert study_workers()[0] >= 1  # the machine's cores
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("COSIM_STUDY_WORKERS", bad)
        with pytest.raises(ScenarioError, match="COSIM_STUDY_WORKERS"):
            study_workers()


@pytest.mark.slow
@pytest.mark.cosim
def test_the_cli_runs_a_study_on_a_running_scheduler(tmp_path: Path, capsys):
    """``--scheduler ADDRESS``: the runs go to a cluster the user started (here a local
    one in this process, as ``dask scheduler`` + ``dask worker`` would be)."""
    from distributed import LocalCluster

    from cosim.cli import main

    out = tmp_path / "study"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, cluster.get_client() as client:
        code = main(["study", SCENARIO, "--variant", "none:controller.kind=none",
                     "--variant", "rule:controller.kind=rule", "--steps", "12", "--quiet",
                     "--out", str(out), "--scheduler", cluster.scheduler_address])
        imported = client.run(lambda: "cosim.engine.run" in sys.modules)
    assert code == 0, capsys.readouterr().err
    assert list(pd.read_csv(out / "study.csv")["run"]) == ["none", "rule"]
    assert list(imported.values()) == [True]  # the runs ran on the cluster's worker


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_the_cli_refuses_a_bad_worker_count(bad: str, capsys):
    from cosim.cli import main

    assert main(["study", SCENARIO, "--variant", "none:controller.kind=none",
                 "--workers", bad]) == 2
    assert "whole number >= 1" in capsys.readouterr().err
