"""A controller in its own process (controller.kind remote): it joins the World through
mosaik's "cmd" and "connect" mechanisms, gives the same tables as the same controller
in-process, and a controller that hangs, crashes or answers badly fails the run with a
clear error instead of hanging it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.control.contract import ControllerError
from cosim.engine.run import execute, prepare_scenario
from cosim.results.readers import read_status
from cosim.scenario.errors import ScenarioError
from cosim.scenario.loader import load_scenario
from tests.run_edit import assert_same_tables

pytestmark = pytest.mark.cosim

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 30
EXAMPLE_CMD = "%(python)s examples/remote_controller.py %(addr)s"
MISBEHAVING = "%(python)s tests/cosim/user_code/remote_misbehaving.py {mode} {step} %(addr)s"
#: a run that hangs fails the test instead of the suite
RUN_TIMEOUT_S = 300


def _run(tmp_path: Path, name: str, controller: dict[str, object]) -> Path:
    sc, built = prepare_scenario(SCENARIO, [("controller", controller),
                                            ("output.plots", False)], STEPS)
    return execute(sc, built, tmp_path / name, progress=False).run_dir


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The same controller (the heuristic) in the run's process."""
    return _run(tmp_path_factory.mktemp("inproc"), "heuristic", {"kind": "heuristic"})


def test_a_started_controller_process_equals_the_same_controller_in_process(
        tmp_path, in_process):
    run = _run(tmp_path, "remote", {"kind": "remote", "remote_cmd": EXAMPLE_CMD})
    assert_same_tables(run, in_process)
    assert read_status(run)["state"] == "complete"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[str], port: int, wait_s: float = 60.0) -> None:
    """Until ``proc`` listens on ``port`` (a probe connection would use up its one accept)."""
    import psutil

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in psutil.Process(proc.pid).net_connections(kind="tcp")):
            return
        time.sleep(0.1)
    raise AssertionError(f"the controller process does not listen on {port}")


def test_a_listening_controller_process_is_connected_to(tmp_path, in_process):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "examples/remote_controller.py",
                             f"127.0.0.1:{port}", "--remote"], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(proc, port)
        run = _run(tmp_path, "remote", {"kind": "remote",
                                        "remote_connect": f"127.0.0.1:{port}"})
        assert_same_tables(run, in_process)
        assert proc.wait(timeout=30) == 0  # the run told it to stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cli(tmp_path: Path, controller: dict[str, object]) -> tuple[subprocess.CompletedProcess[str],
                                                                 Path]:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cosim.cli", "run", str(SCENARIO), "--steps", str(STEPS),
         "--quiet", "--out", str(out), "--set", "output.plots=false",
         "--set", f"controller={json.dumps(controller)}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    return proc, out


def test_a_controller_that_does_not_answer_fails_the_run_after_the_timeout(tmp_path):
    proc, out = _cli(tmp_path, {"kind": "remote", "remote_timeout_s": 2.0,
                                "remote_cmd": MISBEHAVING.format(mode="sleep", step=5)})
    assert proc.returncode == 1, proc.stderr[-2000:]
    message = ("controller.remote_timeout_s: the remote controller (remote_cmd "
               "'%(python)s tests/cosim/user_code/remote_misbehaving.py sleep 5 %(addr)s') did "
               "not answer step 5 within 2 s")
    assert message in proc.stderr
    status = read_status(out)
    assert status["state"] == "failed" and message in status["error"]
    assert status["steps_done"] == 5


def test_a_controller_that_never_finishes_setting_up_fails_the_run(tmp_path, monkeypatch):
    import cosim.engine.world

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "tests/cosim/user_code/remote_misbehaving.py",
                             "hang_init", "0", f"127.0.0.1:{port}", "--remote"], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(proc, port)
        monkeypatch.setattr(cosim.engine.world, "REMOTE_START_S", 1.0)
        sc, built = prepare_scenario(SCENARIO, [
            ("controller", {"kind": "remote", "remote_connect": f"127.0.0.1:{port}",
                            "remote_timeout_s": 1.0}), ("output.plots", False)], STEPS)
        with pytest.raises(ControllerError, match=r"controller.remote_timeout_s: the remote "
                           r"controller \(remote_connect '127.0.0.1:\d+'\) was not connected "
                           r"and set up within 1 s"):
            execute(sc, built, tmp_path / "run", progress=False)
        assert read_status(tmp_path / "run")["state"] == "failed"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("mode", "message"), [
    ("raise", "the remote controller (remote_cmd '%(python)s tests/cosim/user_code/"
              "remote_misbehaving.py raise 4 %(addr)s') failed at step 4"),
    ("nan", "controller 'remote' at step 4: building 'B3': u_grid = nan; every action must "
            "be finite and in [0, 1]"),
])
def test_a_controller_process_that_fails_or_answers_badly_fails_the_run(tmp_path, mode,
                                                                        message):
    sc, built = prepare_scenario(SCENARIO, [
        ("controller", {"kind": "remote", "remote_cmd": MISBEHAVING.format(mode=mode, step=4)}),
        ("output.plots", False)], STEPS)
    with pytest.raises(ControllerError) as info:
        execute(sc, built, tmp_path / "run", progress=False)
    assert message in str(info.value)
    assert read_status(tmp_path / "run")["state"] == "failed"


@pytest.mark.parametrize(("controller", "extra", "message"), [
    ({"kind": "remote"}, [], "needs exactly one of remote_cmd"),
    ({"kind": "remote", "remote_cmd": EXAMPLE_CMD, "remote_connect": "127.0.0.1:1"}, [],
     "needs exactly one of remote_cmd"),
    ({"kind": "remote", "remote_cmd": "python x.py"}, [], r"must contain %\(addr\)s"),
    ({"kind": "remote", "remote_connect": "nowhere"}, [], "should match pattern"),
    ({"kind": "remote", "remote_cmd": EXAMPLE_CMD}, [("sharding.shards", 2)],
     "answers for the whole fleet in one in-process FleetSim"),
    ({"kind": "heuristic", "remote_timeout_s": 3.0}, [], "only used with kind 'remote'"),
])
def test_remote_settings_are_checked(controller, extra, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(SCENARIO, [("controller", controller), *extra], STEPS)


def test_the_plain_engine_refuses_a_remote_controller(tmp_path):
    sc, built = prepare_scenario(SCENARIO, [("controller", {"kind": "remote",
                                                            "remote_cmd": EXAMPLE_CMD})], STEPS)
    with pytest.raises(ValueError, match="joins the co-simulation through mosaik"):
        execute(sc, built, tmp_path / "run", progress=False, engine="plain")
