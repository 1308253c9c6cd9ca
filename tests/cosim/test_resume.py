"""``cosim run --resume``: a run killed with SIGKILL (real process) and resumed has the
same tables, bit for bit, as the same run never interrupted.

The cases cover both engines, both power-flow backends (pandapower's warm start is
part of the saved state), cmd-mode shards in their own processes, message faults
(the RNG state is saved), a V1 window and the oracle's replay position.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cosim.cli import main
from cosim.engine.checkpoint import STATE_DIR
from cosim.results.parts import PARTS_DIR
from cosim.results.readers import read_status
from tests.run_edit import assert_same_tables, stopped_at

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 600
FLUSH_EVERY = 50
PARTS_BEFORE_KILL = 5
WAIT_S = 120.0
POLL_S = 0.005
TIMEOUT_S = 300

CASES = {
    "mosaik": [],
    "plain_pandapower_faults": ["--engine", "plain", "--set", "feeder.backend=pandapower",
                                "--set", "communication.faults.drop_probability=0.3",
                                "--set", "duals.v1_window=5"],
    "mosaik_cmd_shards_pandapower_faults": [
        "--set", "sharding.shards=2", "--set", "sharding.mode=cmd",
        "--set", "feeder.backend=pandapower", "--set", "communication.faults.drop_probability=0.3",
        "--set", "communication.faults.delay_steps=2", "--set", "duals.mode=averaging"],
    "mosaik_oracle": ["--set", "controller.kind=oracle"],
}


def _cmd(out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "cosim.cli", "run", str(SCENARIO), "--steps", str(STEPS),
            "--set", f"output.flush_every={FLUSH_EVERY}", "--set", "output.plots=false",
            "--out", str(out), "--quiet", *extra]


def _kill_after_parts(out: Path, extra: list[str], parts: int) -> None:
    proc = subprocess.Popen(_cmd(out, extra), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    folder = out / PARTS_DIR / "buildings"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if folder.is_dir() and len(list(folder.glob("part-*.parquet"))) >= parts:
            break
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it was killed: {proc.stderr.read()}")
        time.sleep(POLL_S)
    else:
        proc.kill()
        pytest.fail("no parts in time")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()



@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_kill_9_then_resume_gives_identical_tables(case: str, tmp_path: Path, capsys):
    extra = CASES[case]
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = subprocess.run(_cmd(ref, extra), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    _kill_after_parts(run, extra, PARTS_BEFORE_KILL)
    killed = read_status(run)
    assert killed["state"] == "running"  # SIGKILL: no chance to say anything
    assert (run / STATE_DIR).is_dir()
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and "stale" not in err  # the kernel lock died with the run
    status = read_status(run)
    assert status["state"] == "complete" and status["run_id"] == killed["run_id"]
    (resumed,) = status["resumes"]
    assert resumed["from_step"] >= (PARTS_BEFORE_KILL - 1) * FLUSH_EVERY
    assert_same_tables(run, ref)
    timing = ("wall_s", "steps_per_s")
    kpis_run, kpis_ref = (json.loads((d / "kpis.json").read_text()) for d in (run, ref))
    assert {k: v for k, v in kpis_run.items() if k not in timing} == {
        k: v for k, v in kpis_ref.items() if k not in timing}


def test_a_resumed_run_equals_an_uninterrupted_one_in_process(tmp_path: Path, monkeypatch):
    """Stopped by Ctrl-C inside the engine (no subprocess), resumed, identical."""
    base = ["run", str(SCENARIO), "--steps", "120", "--set", "output.flush_every=20",
            "--set", "output.plots=false", "--quiet", "--engine", "plain",
            "--set", "communication.faults.drop_probability=0.5"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main([*base, "--out", str(ref)]) == 0
    assert stopped_at(77, [*base, "--out", str(run)], monkeypatch) == 130
    assert read_status(run)["state"] == "failed"
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    assert read_status(run)["resumes"][0]["from_step"] == 60
    assert_same_tables(run, ref)


def test_resume_refuses_what_it_cannot_continue(tmp_path: Path, capsys):
    done = tmp_path / "done"
    assert main(["run", str(SCENARIO), "--steps", "10", "--out", str(done), "--quiet",
                  "--engine", "plain", "--set", "output.plots=false"]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(done)]) == 2
    assert "complete; nothing to resume" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "status.json").write_text('{"state": "running"}')
    assert main(["run", "--resume", str(foreign)]) == 2
    assert "not a run directory made by cosim" in capsys.readouterr().err
    assert (foreign / "status.json").read_text() == '{"state": "running"}'
    assert main(["run", str(SCENARIO), "--resume", str(done)]) == 2
    assert "give no scenario" in capsys.readouterr().err


def _interrupted(out: Path, monkeypatch) -> None:
    """A run stopped by Ctrl-C at step 25 of 40 (checkpoints every 10 steps)."""
    assert stopped_at(25, ["run", str(SCENARIO), "--steps", "40", "--set",
                            "output.flush_every=10", "--set", "output.plots=false", "--quiet",
                            "--engine", "plain", "--out", str(out)], monkeypatch) == 130


def test_resume_refuses_a_run_started_by_other_code(tmp_path: Path, monkeypatch, capsys):
    from cosim.results.provenance import code_fingerprint

    run = tmp_path / "run"
    _interrupted(run, monkeypatch)
    status = json.loads((run / "status.json").read_text())
    assert status["code"] == code_fingerprint()
    status["code"] = "0" * 16  # as if an earlier version had started it
    (run / "status.json").write_text(json.dumps(status))
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    capsys.readouterr()
    assert main(["run", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "started by other code" in err and "0" * 16 in err and code_fingerprint() in err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing touched
    # a run from before fingerprints were recorded: resumed, with a note saying so
    del status["code"]
    (run / "status.json").write_text(json.dumps(status))
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    assert "records no code fingerprint" in capsys.readouterr().err
    assert read_status(run)["state"] == "complete"
    assert read_status(run)["code"] == code_fingerprint()


def test_the_code_fingerprint_follows_every_source_file(tmp_path: Path):
    from cosim.results.provenance import PACKAGES, fingerprint_of

    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "cosim" / "sims").mkdir()
    leaf = tmp_path / "cosim" / "sims" / "x.py"
    leaf.write_text("A = 1\n")
    first = fingerprint_of(tmp_path, "0.1.0")
    assert fingerprint_of(tmp_path, "0.1.0") == first  # deterministic
    leaf.write_text("A = 2\n")
    assert fingerprint_of(tmp_path, "0.1.0") != first
    leaf.write_text("A = 1\n")
    assert fingerprint_of(tmp_path, "0.1.0") == first
    assert fingerprint_of(tmp_path, "0.2.0") != first  # the version too
    (tmp_path / "agents" / "notes.txt").write_text("not code")
    assert fingerprint_of(tmp_path, "0.1.0") == first
