"""The run directory never destroys what the user has, and holds one run at a time.

Covers: the marker (a ``status.json`` that cosim did not write is no licence to
delete), ``--force`` only over cosim's own runs, dangerous ``--out`` values,
scenario paths that leave the working directory, symbolic links, the lock
(concurrent runs as real processes, a killed holder's lock), SIGTERM, and a full disk.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cosim.cli import main
from cosim.results.parts import PARTS_DIR, TABLES, complete_parts
from cosim.results.readers import read_status, read_table, run_state
from cosim.results.rundir import LOCK_FILE, RunDirError, check_output_path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 24
SUBPROCESS_TIMEOUT_S = 180
WAIT_S = 90.0
POLL_S = 0.01



def _run(out: Path | str, *extra: str, steps: int = STEPS) -> int:
    return main(["run", str(SCENARIO), "--steps", str(steps), "--out", str(out), "--quiet",
                  "--engine", "plain", "--set", "output.plots=false", *extra])


def _one_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _user_dir(path: Path) -> dict[str, bytes]:
    """A folder of the user's with a file that happens to be called status.json."""
    path.mkdir(parents=True)
    (path / "status.json").write_text('{"state": "complete"}')
    (path / "thesis.tex").write_text("years of work")
    (path / "data").mkdir()
    (path / "data" / "measurements.csv").write_text("1,2,3\n")
    return _snapshot(path)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


# --- the marker and --force ---------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_status_json_is_no_licence_to_delete(tmp_path: Path, capsys, force: bool):
    out = tmp_path / "mine"
    before = _user_dir(out)
    rc = _run(out, *(["--force"] if force else []))
    line = _one_error(capsys.readouterr().err)
    assert rc == 2
    assert "not a run directory made by cosim" in line or "is not a run directory" in line
    assert _snapshot(out) == before
    assert not (out / LOCK_FILE).exists()


def test_an_earlier_run_is_replaced_only_with_force(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    first = read_status(out)
    capsys.readouterr()
    assert _run(out) == 2
    line = _one_error(capsys.readouterr().err)
    assert "--force" in line and first["run_id"][:8] in line
    assert read_status(out)["run_id"] == first["run_id"]  # untouched
    assert _run(out, "--force") == 0
    second = read_status(out)
    assert second["run_id"] != first["run_id"]
    assert second["state"] == "complete"
    assert not (out / LOCK_FILE).exists()


def test_a_second_run_without_out_goes_to_the_next_free_folder(tmp_path: Path, monkeypatch,
                                                                capsys):
    monkeypatch.chdir(tmp_path)
    args = ["run", str(SCENARIO), "--steps", "4", "--quiet", "--engine", "plain",
            "--set", "output.plots=false"]
    assert main(args) == 0
    base = Path("runs/paper_fig1d")
    first = read_status(tmp_path / base)["run_id"]
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"note: {base} is not empty (an earlier run?); this run goes to {base}_2" in err
    assert read_status(tmp_path / base)["run_id"] == first  # untouched
    assert read_status(tmp_path / f"{base}_2")["state"] == "complete"
    assert main([*args, "--force"]) == 0  # --force still replaces the scenario's folder
    assert read_status(tmp_path / base)["run_id"] != first
    assert not (tmp_path / f"{base}_3").exists()


def test_an_explicit_out_is_refused_naming_a_free_folder(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert _run(out, steps=4) == 0
    (tmp_path / "run_2").mkdir()  # taken as well (even empty: it exists)
    capsys.readouterr()
    assert _run(out, steps=4) == 2
    line = _one_error(capsys.readouterr().err)
    assert "pass --force to replace it" in line and f"(free: {tmp_path / 'run_3'})" in line


def test_a_forged_marker_without_a_run_id_is_refused(tmp_path: Path, capsys):
    out = tmp_path / "forged"
    out.mkdir()
    (out / "status.json").write_text(json.dumps({"format": "fleetcosim-run/1",
                                                 "state": "complete"}))
    (out / "keep.txt").write_text("keep")
    assert _run(out, "--force") == 2
    _one_error(capsys.readouterr().err)
    assert (out / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize("bad", ["", ".", "CWD", "HOME", "/", "PARENT"])
def test_dangerous_out_paths_are_refused(bad: str, tmp_path: Path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("x")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    value = {"CWD": str(work), "HOME": str(tmp_path / "home"), "PARENT": ".."}.get(bad, bad)
    before = _snapshot(tmp_path)
    rc = _run(value, "--force")
    line = _one_error(capsys.readouterr().err)
    assert rc == 2
    assert "--out" in line
    assert _snapshot(tmp_path) == before


def test_scenario_output_directory_may_not_leave_the_working_directory(tmp_path: Path,
                                                                        monkeypatch, capsys):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["time"]["steps"] = STEPS
    raw["output"] = {"directory": "../../escaped", "plots": False}
    scenario = work / "s.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(work)
    rc = main(["run", str(scenario), "--quiet", "--engine", "plain"])
    line = _one_error(capsys.readouterr().err)
    assert rc == 2
    assert f"{scenario}: output.directory" in line and "leaves the working directory" in line
    assert not (tmp_path / "escaped").exists()
    # the same place given explicitly on the command line is the user's choice
    assert main(["run", str(scenario), "--quiet", "--engine", "plain",
                  "--out", "../../escaped"]) == 0
    assert read_status(tmp_path / "escaped")["state"] == "complete"


def test_check_output_path_directly(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_output_path("runs/x", explicit=False, what="w") == Path("runs/x")
    assert check_output_path("../elsewhere", explicit=True, what="w") == Path("../elsewhere")
    for bad in ("", "  ", ".", "/", str(tmp_path), str(tmp_path.parent)):
        with pytest.raises(RunDirError):
            check_output_path(bad, explicit=True, what="w")
    with pytest.raises(RunDirError, match="leaves the working directory"):
        check_output_path("../x", explicit=False, what="w")


def test_replacing_a_run_does_not_follow_links(tmp_path: Path):
    out = tmp_path / "run"
    assert _run(out) == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("x")
    (out / "link_to_outside").symlink_to(outside, target_is_directory=True)
    (out / "plots_link").symlink_to(outside / "precious.txt")
    assert _run(out, "--force") == 0
    assert (outside / "precious.txt").read_text() == "x"
    assert not (out / "link_to_outside").exists()


def test_a_run_directory_that_is_a_link_is_never_emptied(tmp_path: Path, capsys):
    real = tmp_path / "real"
    assert _run(real) == 0
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    before = _snapshot(real)
    assert _run(link, "--force") == 2
    assert "symbolic link" in _one_error(capsys.readouterr().err)
    assert _snapshot(real) == before


# --- the lock -------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_dead_runs_lock_file_is_simply_taken(tmp_path: Path, capsys):
    """The lock is a kernel lock (filelock): it dies with its holder, so the lock file a
    dead run left is no stale lock to report or clear (it was, with the O_EXCL file)."""
    out = tmp_path / "run"
    out.mkdir()
    pid = _dead_pid()
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                             "started_unix": time.time()}))
    assert _run(out) == 0
    assert "stale" not in capsys.readouterr().err
    assert read_status(out)["state"] == "complete"
    assert not (out / LOCK_FILE).exists()


def _holder(out: Path) -> subprocess.Popen[str]:
    """A process that holds the lock of ``out`` until killed."""
    code = ("import sys, time; from pathlib import Path; from cosim.results.rundir import "
            "DirLock; held = DirLock.acquire(Path(sys.argv[1])); print('locked', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_a_live_lock_is_never_taken_even_with_force(tmp_path: Path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = _holder(out)
    try:
        assert _run(out, "--force") == 2
        line = _one_error(capsys.readouterr().err)
        assert f"another cosim run is using this directory (pid {holder.pid} on host " \
               f"{socket.gethostname()}" in line
        assert not (out / "status.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # killed (SIGKILL: no clean-up), its lock went with it
    assert _run(out) == 0
    assert read_status(out)["state"] == "complete"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cosim.cli", *args]


@pytest.mark.slow
def test_concurrent_runs_into_one_directory(tmp_path: Path):
    """Two real processes: one wins, the other exits 2 naming the holder; the winner's
    tables are intact."""
    out = tmp_path / "run"
    cmd = _cli("run", str(SCENARIO), "--steps", "300", "--out", str(out), "--quiet",
               "--set", "output.plots=false", "--set", "output.flush_every=50")
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=SUBPROCESS_TIMEOUT_S) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser_err = next(err for p, (_, err) in zip(procs, results, strict=True)
                     if p.returncode == 2)
    line = _one_error(loser_err)
    assert "another cosim run is using this directory (pid" in line or "holds an earlier run" \
        in line, line
    assert read_status(out)["state"] == "complete"
    b = read_table(out, "buildings")
    np.testing.assert_array_equal(np.unique(b.time), np.arange(300))
    assert len(b) == 300 * 7
    assert not (out / LOCK_FILE).exists()


# --- signals and heartbeat ----------------------------------------------------------------


def _wait_for_parts(run_dir: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    folder = run_dir / PARTS_DIR / "buildings"
    while time.monotonic() < deadline:
        if folder.is_dir() and len(list(folder.glob("part-*.parquet"))) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(POLL_S)
    pytest.fail("no flushed parts in time")


LONG_RUN_STEPS = 8000  # seconds of running: a signal arrives long before the end


def _long_run(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _cli("run", str(SCENARIO), "--steps", str(LONG_RUN_STEPS), "--out", str(out),
             "--quiet", "--set", "output.flush_every=50", "--set", "output.plots=false"),
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_flushes_and_marks_the_run_failed(tmp_path: Path):
    out = tmp_path / "run"
    proc = _long_run(out)
    _wait_for_parts(out, 2, proc)
    status = json.loads((out / "status.json").read_text())
    assert status["pid"] == proc.pid and status["state"] == "running"
    assert status["heartbeat_unix"] >= status["started_unix"]
    assert run_state(out) == "running"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "terminated by signal SIGTERM" in err and "--resume" in err
    status = read_status(out)
    assert status["state"] == "failed" and "SIGTERM" in status["error"]
    assert run_state(out) == "failed"
    tables = status["tables"]
    done = {t: np.unique(read_table(out, t).time) for t in tables}
    first = done[tables[0]]
    assert len(first) >= 100
    for t in tables:  # no table ahead of another, whole steps from 0
        np.testing.assert_array_equal(done[t], np.arange(len(first)))
    assert not (out / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_killed_run_is_detectable_as_dead(tmp_path: Path):
    out = tmp_path / "run"
    proc = _long_run(out)
    _wait_for_parts(out, 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert read_status(out)["state"] == "running"
    assert run_state(out) == "dead"


# --- write errors ---------------------------------------------------------------------------


def test_disk_full_gives_one_line_and_consistent_tables(tmp_path: Path, monkeypatch, capsys):
    """The writer fails with ENOSPC on its 9th Parquet file (the 2nd flush, 3rd table)."""
    import pyarrow.parquet as pq

    real = pq.write_table
    calls = {"n": 0}

    def failing(table, where, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 9:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing)
    out = tmp_path / "run"
    rc = _run(out, "--set", "output.flush_every=10", steps=40)
    line = _one_error(capsys.readouterr().err)
    assert rc == 1
    assert "No space left on device" in line and "--resume" in line
    status = read_status(out)
    assert status["state"] == "failed"
    assert complete_parts(out, status["tables"]) == 1
    for t in TABLES:
        np.testing.assert_array_equal(np.unique(read_table(out, t).time), np.arange(10))
    assert not list((out / PARTS_DIR).rglob("*.tmp"))
    assert not (out / LOCK_FILE).exists()


def test_a_disk_full_run_resumes_to_the_same_tables(tmp_path: Path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    ref = tmp_path / "ref"
    assert _run(ref, "--set", "output.flush_every=10", steps=40) == 0
    real = pq.write_table
    calls = {"n": 0}

    def failing(table, where, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing)
    out = tmp_path / "run"
    assert _run(out, "--set", "output.flush_every=10", steps=40) == 1
    (out / PARTS_DIR / "lines" / "part-00009.parquet.tmp").write_text("left over")
    monkeypatch.setattr(pq, "write_table", real)
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert "resuming" in capsys.readouterr().err
    for t in TABLES:
        pd.testing.assert_frame_equal(read_table(out, t), read_table(ref, t), check_exact=True)
    assert read_status(out)["state"] == "complete"
    assert not (out / PARTS_DIR).exists()
