"""One run whose fleet shards are processes it connects to over TCP (``sharding.mode:
connect``), as they would be across hosts: ``cosim shard HOST:PORT`` processes on free
loopback ports give tables identical to the same scenario in-process and exit by
themselves when the run ends; a shard that cannot be reached or set up fails the run with
exit 1 and a message naming ``sharding.connect`` and the address; wrong addresses fail
validation (exit 2) naming the field; ``cosim shard`` refuses what it must not serve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cosim.cli import main
from cosim.engine.run import execute, prepare_scenario
from cosim.engine.sims.building_sim import LISTENING
from cosim.engine.world import ShardConnectError, shard_starters, start_connected_shard
from cosim.results.readers import read_status
from cosim.scenario.fleet import ShardingConfig
from tests.run_edit import assert_same_tables

pytestmark = pytest.mark.cosim

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"  # 7 buildings on CIGRE LV
STEPS = 48
QUICK = [("output.plots", False)]
#: a shard that does not come up, or a run that hangs, fails the test instead of the suite
START_WAIT_S = 60.0
EXIT_WAIT_S = 30.0
SHARD_TIMEOUT_S = 300  # cosim shard --timeout: how long a started shard waits for its run
LONG_STEPS = 3000  # the scenario's whole horizon: a run long enough to kill a shard in


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shard_env() -> dict[str, str]:
    """This checkout first on the shard's path (the tests' own code, not another install)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


class Shards:
    """``cosim shard`` processes on free loopback ports, each waited for until it listens
    (its :data:`LISTENING` line: a probe connection would use up its one accept)."""

    def __init__(self, count: int, log_dir: Path) -> None:
        self.addresses = [f"127.0.0.1:{_free_port()}" for _ in range(count)]
        self.logs = [log_dir / f"shard{i}.log" for i in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for address, log in zip(self.addresses, self.logs, strict=True):
            with log.open("wb") as err:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "cosim.cli", "shard", address,
                     "--timeout", str(SHARD_TIMEOUT_S)],
                    cwd=log_dir, env=_shard_env(), stdout=subprocess.DEVNULL, stderr=err))
        deadline = time.monotonic() + START_WAIT_S
        for proc, log in zip(self.procs, self.logs, strict=True):
            while LISTENING not in log.read_text():
                assert proc.poll() is None, f"the shard exited early: {log.read_text()}"
                assert time.monotonic() < deadline, f"the shard did not listen: {log.read_text()}"
                time.sleep(0.05)

    def exit_codes(self) -> list[int]:
        """Each shard's exit code once it has ended by itself (within :data:`EXIT_WAIT_S`)."""
        return [proc.wait(timeout=EXIT_WAIT_S) for proc in self.procs]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def shards(tmp_path: Path) -> Iterator[Shards]:
    started = Shards(2, tmp_path)
    try:
        yield started
    finally:
        started.kill()


def _run(tmp: Path, name: str, overrides=()) -> Path:
    sc, built = prepare_scenario(SCENARIO, [*QUICK, *overrides], steps=STEPS)
    return execute(sc, built, tmp / name, progress=False).run_dir


def _connect(addresses: list[str]) -> list[tuple[str, object]]:
    return [("sharding.shards", len(addresses)), ("sharding.mode", "connect"),
            ("sharding.connect", addresses)]


def test_connected_shards_equal_the_same_scenario_in_process(tmp_path: Path, shards: Shards,
                                                             monkeypatch):
    # the run directory relative to the run's working directory, which is not the shards':
    # they must be told absolute paths
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    connected = _run(Path("."), "connected", _connect(shards.addresses))
    assert shards.exit_codes() == [0, 0], "each shard ends by itself when the run ends"
    in_process = _run(tmp_path, "in_process")
    assert_same_tables(connected, in_process)
    status = read_status(connected)
    assert status["state"] == "complete"
    # the run's own shards: each read the resolved scenario the run wrote and stepped its
    # slice (4 + 3 of the 7 buildings), then served nothing more
    for log in shards.logs:
        assert log.read_text().count(LISTENING) == 1 and "error" not in log.read_text()


def _scenario_file(tmp: Path, sharding: dict[str, object], steps: int = STEPS) -> Path:
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["time"]["steps"] = steps
    raw["output"] = {**raw.get("output", {}), "plots": False}
    raw["sharding"] = sharding
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_shard_nobody_listens_at_fails_the_run_naming_sharding_connect(tmp_path, capsys):
    address = f"127.0.0.1:{_free_port()}"  # free: nothing listens there
    scenario = _scenario_file(tmp_path, {"shards": 1, "mode": "connect", "connect": [address]})
    out = tmp_path / "run"
    rc = main(["run", str(scenario), "--out", str(out), "--quiet"])
    errors = _error_lines(capsys.readouterr().err)
    assert rc == 1, errors
    assert len(errors) == 1
    assert errors[0].startswith(f"error: sharding.connect: shard 0's process at '{address}' "
                                "could not be reached"), errors[0]
    assert f"cosim shard {address}" in errors[0]  # how to start it
    status = read_status(out)
    assert status["state"] == "failed" and "sharding.connect" in status["error"]


def test_a_run_that_fails_on_its_second_shard_stops_the_first(tmp_path: Path):
    """Shard 0 is connected and set up when shard 1 cannot be reached: the failed run's
    shutdown ends shard 0, which exits by itself."""
    first = Shards(1, tmp_path)
    try:
        missing = f"127.0.0.1:{_free_port()}"
        sc, built = prepare_scenario(SCENARIO, [*QUICK, *_connect([*first.addresses, missing])],
                                     steps=STEPS)
        with pytest.raises(ShardConnectError, match=rf"sharding.connect: shard 1's process at "
                                                    rf"'{missing}' could not be reached"):
            execute(sc, built, tmp_path / "run", progress=False)
        assert first.exit_codes() == [0]
    finally:
        first.kill()


def test_a_shard_that_dies_mid_run_fails_the_run_instead_of_hanging_it(tmp_path: Path):
    """mosaik never answers a call sent over a connection the other end closed; the run's
    shard watch turns a shard killed between steps into a run error (exit 1) naming
    sharding.connect and the address, and the other shard is stopped and exits."""
    shards = Shards(2, tmp_path)
    try:
        scenario = _scenario_file(tmp_path, {"shards": 2, "mode": "connect",
                                             "connect": shards.addresses}, steps=LONG_STEPS)
        out = tmp_path / "run"
        run = subprocess.Popen([sys.executable, "-m", "cosim.cli", "run", str(scenario),
                                "--out", str(out), "--quiet"], cwd=tmp_path, env=_shard_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + START_WAIT_S
            while not (out / "status.json").is_file() or read_status(out)["steps_done"] == 0:
                assert run.poll() is None and time.monotonic() < deadline, "the run never stepped"
                time.sleep(0.05)
            shards.procs[1].kill()
            _, err = run.communicate(timeout=EXIT_WAIT_S)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 1, err[-3000:]
        errors = _error_lines(err)
        assert len(errors) == 1 and errors[0].startswith(
            f"error: sharding.connect: shard 1's process at '{shards.addresses[1]}' closed its "
            "connection during the run"), err[-3000:]
        assert read_status(out)["state"] == "failed"
        assert shards.procs[0].wait(timeout=EXIT_WAIT_S) == 0
    finally:
        shards.kill()


def test_a_shard_that_closes_its_connection_during_set_up_fails_the_run(tmp_path: Path):
    """Something listens but hangs up (as a shard does that cannot read the scenario at the
    same path on its host): mosaik's exit during ``init`` becomes a run error."""
    server = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"

    def hang_up() -> None:
        conn, _ = server.accept()
        conn.recv(65536)  # the init request
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        sc, built = prepare_scenario(SCENARIO, [*QUICK, *_connect([address])], steps=STEPS)
        with pytest.raises(ShardConnectError, match=rf"sharding.connect: shard 0's process at "
                           rf"'{address}' failed while it was set up .*closed its connection"
                           r".*reads the resolved scenario at '.*scenario.yaml' on its host"):
            execute(sc, built, tmp_path / "run", progress=False)
    finally:
        server.close()
        thread.join(timeout=EXIT_WAIT_S)
    assert read_status(tmp_path / "run")["state"] == "failed"


def test_a_shard_that_cannot_read_the_scenario_says_so_and_the_run_names_the_path(
        tmp_path: Path):
    """The scenario is not at the path the run names on the shard's host: the shard prints
    one error line and exits 2; the run's error names the address and that path."""
    import mosaik

    shard = Shards(1, tmp_path)
    try:
        address = shard.addresses[0]
        sharding = ShardingConfig(shards=1, mode="connect", connect=[address])
        world = mosaik.World(shard_starters(sharding), mosaik_config={"start_timeout": 60},
                             skip_greetings=True, configure_logging=False)
        missing = tmp_path / "elsewhere" / "scenario.yaml"
        try:
            with pytest.raises(ShardConnectError, match=(
                    rf"sharding.connect: shard 0's process at '{address}' failed while it "
                    rf"was set up .*the resolved scenario at '{missing}' on its host")):
                start_connected_shard(world, 0, address, str(missing),
                                      {"run_dir": str(tmp_path), "start_step": 0,
                                       "checkpoint_every": 0})
        finally:
            world.shutdown()
        assert shard.procs[0].wait(timeout=EXIT_WAIT_S) == 2
        errors = _error_lines(shard.logs[0].read_text())
        assert errors == [f"error: cannot use scenario file '{missing}': not found"]
    finally:
        shard.kill()


@pytest.mark.parametrize(("sharding", "field", "message"), [
    ({"shards": 2, "mode": "connect", "connect": ["127.0.0.1:5001"]}, "sharding.connect",
     "1 address(es) for 2 shard(s); give exactly one HOST:PORT per shard"),
    ({"shards": 2, "mode": "connect"}, "sharding.connect",
     "mode 'connect' needs connect: one HOST:PORT per shard (2)"),
    ({"shards": 2, "mode": "cmd", "connect": ["127.0.0.1:5001", "127.0.0.1:5002"]},
     "sharding.connect", "only used with mode 'connect' (mode is 'cmd')"),
    ({"shards": 2, "mode": "connect", "connect": ["127.0.0.1:5001", "127.0.0.1:5001"]},
     "sharding.connect.1", "'127.0.0.1:5001' is given twice (shard 0 and 1)"),
    ({"shards": 2, "mode": "connect", "connect": ["127.0.0.1:5001", "127.0.0.1:70000"]},
     "sharding.connect.1", "port 70000 of '127.0.0.1:70000' is not in 1..65535"),
    ({"shards": 2, "mode": "connect", "connect": ["127.0.0.1:5001", "hostonly"]},
     "sharding.connect.1", "should match pattern"),
    ({"shards": 1, "mode": "connect", "connect": ["[::1]:5001"]},
     "sharding.connect.0", "should match pattern"),
])
def test_wrong_shard_addresses_fail_validation_naming_the_field(
        tmp_path: Path, capsys, sharding: dict[str, object], field: str, message: str):
    scenario = _scenario_file(tmp_path, sharding)
    rc = main(["validate", str(scenario)])
    errors = _error_lines(capsys.readouterr().err)
    assert rc == 2
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"error: {scenario}: {field}: "), errors[0]
    assert message in errors[0], errors[0]


def test_a_scenario_with_connected_shards_is_valid(tmp_path: Path, capsys):
    scenario = _scenario_file(tmp_path, {"shards": 2, "mode": "connect",
                                         "connect": ["127.0.0.1:5001", "shard-2.example:5001"]})
    assert main(["validate", str(scenario)]) == 0, capsys.readouterr().err


def test_cosim_shard_refuses_a_non_loopback_address_without_the_option(capsys):
    rc = main(["shard", "0.0.0.0:5678", "--timeout", "1"])
    errors = _error_lines(capsys.readouterr().err)
    assert rc == 2
    assert errors == [errors[0]] and "refusing to bind 0.0.0.0:5678" in errors[0]
    assert "--allow-remote-bind" in errors[0]


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":5678"])
def test_cosim_shard_refuses_a_malformed_address(capsys, address: str):
    rc = main(["shard", address, "--timeout", "1"])
    errors = _error_lines(capsys.readouterr().err)
    assert rc == 2
    assert errors == [f"error: {address!r}: give HOST:PORT, e.g. 127.0.0.1:5678 (a port in "
                      "1..65535)"]


def test_cosim_shard_cannot_listen_at_a_port_in_use(capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        rc = main(["shard", address, "--timeout", "1"])
    errors = _error_lines(capsys.readouterr().err)
    assert rc == 2
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot listen at {address}: ")


def test_cosim_shard_gives_up_when_no_run_connects(capsys):
    address = f"127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    rc = main(["shard", address, "--timeout", "1"])
    waited = time.monotonic() - t0
    captured = capsys.readouterr().err
    assert f"{LISTENING} {address}" in captured
    assert rc == 1
    assert _error_lines(captured) == [f"error: no run connected to {address} within 1 s "
                                      "(start the run with sharding.mode connect, or give a "
                                      "longer --timeout)"]
    assert 1.0 <= waited < EXIT_WAIT_S


def test_cosim_shard_is_in_the_command_line_help(capsys):
    with pytest.raises(SystemExit):
        from cosim.cli import build_parser

        build_parser().parse_args(["--help"])
    assert "shard" in capsys.readouterr().out
    assert main(["shard", "--help"]) == 0
    text = capsys.readouterr().out
    assert "sharding.mode: connect" in " ".join(text.split())
    assert "--allow-remote-bind" in text and "--timeout" in text
