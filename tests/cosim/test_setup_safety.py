"""A run's set-up is never left half-made (issue 25): whatever stops it, the folder is a
recognisable failed set-up that ``--resume`` (from step 0) or ``--force`` finishes into
the same tables as an uninterrupted run; and ``--resume`` refuses a run whose inputs
changed since it started.

The set-up is the run's first writes, each through ``cosim.results.rundir.write_atomic``: the
marker ``status.json``, ``scenario.yaml``, ``feeder.json``, ``comm_graph.json`` and the
``status.json`` that starts the steps. Every one of them is interrupted in turn, half-way
through writing its temporary file: by a full disk (``OSError(ENOSPC)`` raised by the
write, in this process), by a real SIGINT (Ctrl-C, in this process) and by a real SIGKILL
(of a ``cosim`` subprocess). A 16 kB tmpfs (root only) fills the disk for real.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import cosim.results.rundir
from cosim.cli import main
from cosim.results.parts import PARTS_DIR
from cosim.results.readers import read_status
from cosim.results.rundir import LOCK_FILE
from tests.run_edit import assert_same_tables, stopped_at

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 24
SUBPROCESS_TIMEOUT_S = 300
#: the files the set-up writes, in order (the last starts the steps)
SETUP_WRITES = ["status.json", "scenario.yaml", "feeder.json", "comm_graph.json",
                "status.json"]
MODES = ("enospc", "sigint", "sigkill")


#: (mode, engine) of the set-up stops: all modes with the plain engine, two with mosaik
#: (the set-up is the same; mosaik's tables equal plain's bit for bit)
STOPS = [*((mode, "plain") for mode in MODES), ("enospc", "mosaik"), ("sigkill", "mosaik")]


def _argv(out: Path, *extra: str, engine: str = "plain") -> list[str]:
    return ["run", str(SCENARIO), "--steps", str(STEPS), "--out", str(out), "--quiet",
            "--engine", engine, "--set", "output.plots=false",
            "--set", "output.flush_every=10", *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run the recovered ones must equal."""
    ref = tmp_path_factory.mktemp("setup") / "ref"
    assert main(_argv(ref)) == 0
    return ref


class _Interrupting:
    """``open`` for cosim.results.rundir that stops the ``nth`` write (0-based) half-way through."""

    def __init__(self, nth: int, mode: str) -> None:
        self.nth, self.mode, self.seen = nth, mode, 0

    def __call__(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115 (handed to the caller)
        if "w" not in mode or not str(path).endswith(".tmp"):
            return f
        k, self.seen = self.seen, self.seen + 1
        return _HalfWriter(f, self.mode) if k == self.nth else f


class _HalfWriter:
    def __init__(self, f: Any, mode: str) -> None:
        self.f, self.mode = f, mode

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def write(self, data: bytes) -> int:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        if self.mode == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.kill(os.getpid(), signal.SIGINT if self.mode == "sigint" else signal.SIGKILL)
        time.sleep(30)  # the signal arrives here
        raise AssertionError("the signal did not stop the write")


def _interrupted_run(out: Path, nth: int, mode: str, engine: str,
                     monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """A run stopped at the ``nth`` set-up write by ``mode``."""
    if mode == "sigkill":
        script = textwrap.dedent(f"""
            import cosim.results.rundir, sys
            from tests.cosim.test_setup_safety import _Interrupting
            cosim.results.rundir.open = _Interrupting({nth}, "sigkill")
            from cosim.cli import main
            sys.exit(main({_argv(out, engine=engine)!r}))
        """)
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
        assert done.returncode == -signal.SIGKILL, done.stderr
        return
    monkeypatch.setattr(cosim.results.rundir, "open", _Interrupting(nth, mode), raising=False)
    try:
        rc = main(_argv(out, engine=engine))
    finally:
        monkeypatch.delattr(cosim.results.rundir, "open")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if mode == "enospc":
        assert rc == 1
        lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1 and "No space left on device" in lines[0], err
        if nth == 0:
            assert "no run was recorded" in lines[0]
        else:
            assert "status.json says failed" in lines[0], err
    else:
        assert rc == 130
        if nth > 0:
            assert "status.json says failed" in err
    if nth > 0:  # the way on: --force while there is no scenario.yaml, else --resume
        assert ("--force" if SETUP_WRITES[nth] == "scenario.yaml" else "--resume") in err


def _no_temporary_files(run: Path) -> None:
    assert not [p for p in run.rglob("*.tmp")], sorted(run.rglob("*"))


@pytest.mark.parametrize("nth", range(len(SETUP_WRITES)),
                         ids=[f"{k}-{name}" for k, name in enumerate(SETUP_WRITES)])
@pytest.mark.parametrize("mode,engine", STOPS, ids=[f"{m}-{e}" for m, e in STOPS])
def test_a_stopped_set_up_is_finished_by_resume_or_force(
        mode: str, engine: str, nth: int, reference: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _interrupted_run(run, nth, mode, engine, monkeypatch, capsys)
    status = cosim.results.rundir.read_marker(run)
    if nth == 0:  # stopped writing the marker: nothing of the run is recorded
        assert status is None
        if mode == "sigkill":  # the lock and the half-written marker are left
            assert (run / LOCK_FILE).exists()
            assert main(["run", "--resume", str(run), "--quiet"]) == 2
            err = capsys.readouterr().err
            assert "before its marker status.json was written" in err and "--force" in err
            # the dead run's lock went with it (a kernel lock): its lock file is taken
            assert main(_argv(run, engine=engine)) == 0
        else:
            assert sorted(p.name for p in run.iterdir()) == []
    else:
        assert status is not None
        # the last write says the set-up files are all there (failing, the run says so)
        last = nth == len(SETUP_WRITES) - 1
        setup = "complete" if last and mode != "sigkill" else "started"
        assert status["setup"] == setup
        assert status["state"] == ("running" if mode == "sigkill" else "failed")
        assert last or not (run / PARTS_DIR).exists()
        # a copy is finished by --force, the run itself by --resume
        forced = tmp_path / "forced"
        shutil.copytree(run, forced, symlinks=True)
        assert main(_argv(forced, "--force", engine=engine)) == 0
        assert_same_tables(forced, reference)
        capsys.readouterr()
        if SETUP_WRITES[nth] == "scenario.yaml":  # nothing to build the run from: --force
            assert main(["run", "--resume", str(run), "--quiet"]) == 2
            err = capsys.readouterr().err
            assert "before scenario.yaml was written" in err and "--force" in err
        else:
            (run / "notes.txt").write_text("the user's\n")  # --resume deletes only its own
            assert main(["run", "--resume", str(run), "--quiet"]) == 0
            err = capsys.readouterr().err
            assert ("its set-up had not finished" in err) == (setup == "started"), err
            assert read_status(run)["resumes"][-1]["from_step"] == 0
            assert (run / "notes.txt").read_text() == "the user's\n"
    if status is None or read_status(run)["state"] != "complete":
        assert main(_argv(run, "--force", engine=engine)) == 0
    final = read_status(run)
    assert final["state"] == "complete" and final["setup"] == "complete"
    assert final["engine"] == engine
    assert_same_tables(run, reference)
    _no_temporary_files(run)
    assert not (run / LOCK_FILE).exists()
    assert main(["verify", str(run), "--steps", "2"]) == 0


def test_an_empty_or_unreadable_lock_file_is_taken(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """(It was a stale lock that needed --force; a kernel lock held by nobody is free.)"""
    for content in ("", "{not json"):
        run = tmp_path / f"run{len(content)}"
        run.mkdir()
        (run / LOCK_FILE).write_text(content)
        assert main(_argv(run)) == 0
        assert "stale" not in capsys.readouterr().err
        assert read_status(run)["state"] == "complete"
        assert not (run / LOCK_FILE).exists()


# --- resume checks what it resumes ---------------------------------------------------------


@pytest.fixture()
def own_inputs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A scenario reading a copy of the data and a feeder file of its own."""
    from grid_models.feeders import load_feeder, save_feeder_json

    data = tmp_path / "data"
    shutil.copytree(REPO_ROOT / "data" / "citylearn_2022", data)
    raw = yaml.safe_load(SCENARIO.read_text())
    feeder = save_feeder_json(load_feeder(raw["feeder"]["source"]), tmp_path / "feeder.json")
    raw["data"] = {**raw.get("data", {}), "path": str(data)}
    raw["feeder"]["source"] = str(feeder)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    yield scenario, data


def _stopped(run: Path, scenario: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stopped_at(15, ["run", str(scenario), "--steps", str(STEPS), "--out", str(run),
                           "--quiet", "--engine", "plain", "--set", "output.plots=false",
                           "--set", "output.flush_every=10"], monkeypatch) == 130


def _refused(run: Path, capsys: pytest.CaptureFixture[str]) -> str:
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "cannot resume: changed since the run started" in lines[0]
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # nothing written or deleted
    return lines[0]


def test_resume_refuses_an_edited_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _stopped(run, SCENARIO, monkeypatch)
    stored = run / "scenario.yaml"
    original = stored.read_text()
    resolved = yaml.safe_load(original)
    resolved["duals"]["alpha"] = resolved["duals"]["alpha"] * 2
    stored.write_text(yaml.safe_dump(resolved, sort_keys=False))
    line = _refused(run, capsys)
    assert "the resolved scenario (the run's scenario.yaml)" in line
    stored.write_text(original)
    assert main(["run", "--resume", str(run), "--quiet"]) == 0


def test_resume_refuses_changed_data_and_feeder(own_inputs: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    scenario, data = own_inputs
    run = tmp_path / "run"
    _stopped(run, scenario, monkeypatch)
    pricing = data / "pricing.csv"
    original = pricing.read_bytes()
    pricing.write_bytes(original.replace(b"0.22", b"0.23", 1))
    assert "pricing.csv" in _refused(run, capsys)
    pricing.write_bytes(original)
    feeder = Path(yaml.safe_load(scenario.read_text())["feeder"]["source"])
    net = json.loads(feeder.read_text())
    feeder_original = feeder.read_text()
    line = json.loads(net["_object"]["line"]["_object"])
    line["data"][0][line["columns"].index("length_km")] *= 1.5
    net["_object"]["line"]["_object"] = json.dumps(line)
    feeder.write_text(json.dumps(net))
    assert "the feeder (as built from feeder.source)" in _refused(run, capsys)
    feeder.write_text(feeder_original)
    stored = run / "feeder.json"
    stored_bytes = stored.read_bytes()
    stored.write_bytes(stored_bytes[: len(stored_bytes) // 2])  # truncated in the run
    assert "'feeder.json' in the run directory" in _refused(run, capsys)
    stored.write_bytes(stored_bytes)
    assert main(["run", "--resume", str(run), "--quiet"]) == 0


# --- a real full disk ----------------------------------------------------------------------


def _tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, timeout=30)
    return done.returncode == 0


def test_a_full_tmpfs_during_set_up_then_resume(reference: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction: a 16 kB tmpfs as --out, then more room and --resume."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "16k"):
        pytest.skip("needs root and a tmpfs mount")
    try:
        run = disk / "run"
        assert main(_argv(run)) == 1
        err = capsys.readouterr().err
        assert "No space left on device" in err and "Traceback" not in err
        status = read_status(run)
        assert status["state"] == "failed" and status["setup"] == "started"
        _no_temporary_files(run)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True,
                       timeout=30)
        assert main(["run", "--resume", str(run), "--quiet"]) == 0
        assert_same_tables(run, reference)
        assert main(["verify", str(run), "--steps", "2"]) == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


# --- a disk that stays full; unknown is never zero; a closed pipe -------------------------


def test_a_disk_that_stays_full_is_reported_as_it_is(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Every write after the marker fails: status.json still says running (it could not be
    updated), the error line says so, and no temporary file is left."""
    real_open = open
    seen = {"n": 0}

    def full(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and str(path).endswith(".tmp"):
            seen["n"] += 1
            if seen["n"] > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(cosim.results.rundir, "open", full, raising=False)
    run = tmp_path / "run"
    assert main(_argv(run)) == 1
    monkeypatch.delattr(cosim.results.rundir, "open")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "could not be updated and still says running" in lines[0]
    assert "says failed" not in lines[0]
    assert read_status(run)["state"] == "running"
    assert "before scenario.yaml" in lines[0] and "--force" in lines[0]
    _no_temporary_files(run)
    assert main(_argv(run, "--force")) == 0


def test_an_all_unknown_grid_reports_unknown_losses_not_zero(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fleet 100,000 times its size on the LV feeder, every building buying its whole
    demand (no control: no hour with a near-zero net load): no power flow converges, every
    step is unknown; the losses are null in kpis.json and "unknown" in the printed table."""
    from grid_models.powerflow.interface import PowerFlowNotConvergedWarning

    run = tmp_path / "run"
    with pytest.warns(PowerFlowNotConvergedWarning):
        assert main(_argv(run, "--set", "feeder.fleet_scale=100000",
                          "--set", "controller.kind=none")) == 0
    out = capsys.readouterr().out
    kpis = json.loads((run / "kpis.json").read_text())["grid"]
    assert kpis["unknown_steps"] == STEPS
    assert kpis["losses_mwh"] is None
    row = next(ln for ln in out.splitlines() if " losses_mwh " in ln)
    assert row.split()[2] == "unknown", row


def test_a_closed_output_pipe_gives_no_traceback(reference: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``cosim verify RUN | head -1``: the reader goes away; exit 141, nothing on stderr."""
    from cosim.cli import EXIT_BROKEN_PIPE

    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

        def flush(self) -> None:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["verify", str(reference), "--steps", "2"]) == EXIT_BROKEN_PIPE
    monkeypatch.undo()
    assert capsys.readouterr().err == ""


def test_verify_into_a_closed_pipe_end_to_end(reference: Path) -> None:
    """The real thing: a pipe whose reader has closed it before cosim writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "cosim.cli", "verify", str(reference),
                               "--steps", "2"], cwd=REPO_ROOT, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141


# --- a stopped mosaik run says one thing, not asyncio's leftovers --------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_mosaik_run_prints_no_asyncio_leftovers(sig: signal.Signals, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    run = tmp_path / "run"
    argv = ["run", str(SCENARIO), "--steps", "8000", "--out", str(run), "--quiet",
            "--set", "output.plots=false", "--set", "output.flush_every=50"]
    proc = subprocess.Popen([sys.executable, "-m", "cosim.cli", *argv], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    part = run / PARTS_DIR / "buildings" / "part-00002.parquet"
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while not part.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert "Task was destroyed" not in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "status.json says failed" in err
    assert read_status(run)["state"] == "failed"
    assert main(["run", "--resume", str(run), "--quiet"]) == 0


def test_a_leaked_status_lock_does_not_keep_a_run_from_saying_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt between a lock's acquire and release leaves it held for good; the
    failure path still writes status.json (after ``STATUS_LOCK_S``) instead of hanging."""
    import cosim.results.writer
    from tests.cosim.test_streamed_results import make_writer_run

    writer = make_writer_run(tmp_path / "run", steps=12)
    monkeypatch.setattr(cosim.results.writer, "STATUS_LOCK_S", 0.05)
    assert writer._status_lock.acquire()  # what a landed interrupt leaves behind
    writer.fail("KeyboardInterrupt: interrupted (Ctrl-C)")
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and status["steps_done"] == 12
    assert writer._status_lock.locked()  # not released by a writer that never held it


def test_a_stop_signal_waits_for_the_step_and_says_its_exit_code() -> None:
    """Ctrl-C and SIGTERM only ask while an engine steps; the pending stop raises at the
    step's end with 128 + the signal's number; a second signal raises at once."""
    from cosim.results.stop import (
        RunStopped,
        clear_stop,
        request_stop,
        steps_finished,
        steps_starting,
        stops_at_once,
    )

    clear_stop()
    try:
        stops_at_once()
        with pytest.raises(RunStopped) as during_setup:
            request_stop("interrupted (Ctrl-C)", exit_code=130)
        assert during_setup.value.exit_code == 130
        steps_starting()
        request_stop("interrupted (Ctrl-C)", exit_code=130)  # only asks
        with pytest.raises(RunStopped) as second:
            request_stop("terminated by signal SIGTERM", exit_code=143)
        assert second.value.exit_code == 143
        with pytest.raises(RunStopped) as pending:
            steps_finished()
        assert pending.value.exit_code == 130 and str(pending.value) == "interrupted (Ctrl-C)"
    finally:
        clear_stop()


def test_verify_fails_a_changed_set_up_file(reference: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated feeder.json in a complete run (the issue's full-disk result) is named by
    verify, which then checks nothing that would read it."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    capsys.readouterr()
    assert main(["verify", str(run), "--steps", "2"]) == 0
    assert "ok    set-up files" in capsys.readouterr().out
    feeder = run / "feeder.json"
    feeder.write_bytes(feeder.read_bytes()[:1000])
    assert main(["verify", str(run), "--steps", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  set-up files" in out and "'feeder.json' in the run directory" in out
    assert "energy balance" not in out
