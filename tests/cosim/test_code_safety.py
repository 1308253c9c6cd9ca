"""Code that runs is only the project's own: cmd-mode shards ignore the working
directory, crafted feeder JSON is refused before pandapower imports anything, and a
remote shard binds loopback by default and never echoes a file it is asked to read."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import traceback
import uuid
from pathlib import Path

import pytest
import yaml
from mosaik.starters import CmdStarter

from cosim.cli import main
from cosim.engine.sims import building_sim
from cosim.engine.sims.building_sim import (
    ALLOW_REMOTE_BIND,
    FleetSim,
    ShardScenarioError,
    bind_refusal,
    load_shard_scenario,
)
from cosim.engine.world import SHARD_STARTER, shard_command
from cosim.results.readers import read_status
from grid_models.feeders import load_feeder, save_feeder_json

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
SUBPROCESS_TIMEOUT_S = 300
SHARD_STEPS = 4
SECRET = "s3cr3t-Token-7f1c"

PLANTED_AGENTS = """\
from pathlib import Path
Path(__file__).resolve().parents[1].joinpath("PLANTED_IMPORTED").write_text("imported")
raise ImportError("a planted agents package was imported")
"""


def _plant_agents(folder: Path) -> Path:
    """An ``agents`` package in ``folder`` that leaves a marker when imported."""
    (folder / "agents").mkdir(parents=True)
    (folder / "agents" / "__init__.py").write_text(PLANTED_AGENTS)
    return folder / "PLANTED_IMPORTED"


def _interpreter_with_spaces(root: Path) -> Path | None:
    """This venv's interpreter reachable through a path with a space and a '%'.

    A venv is found from ``pyvenv.cfg`` next to the interpreter's folder, so a folder
    with a copy of it, a link to the interpreter and a link to site-packages is the
    same environment under another name. None where that layout does not hold.
    """
    prefix = Path(sys.prefix)
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not (prefix / "pyvenv.cfg").is_file() or not (site / "site-packages").is_dir():
        return None
    venv = root / "my venv 100%"
    (venv / "bin").mkdir(parents=True)
    (venv / site.relative_to(prefix)).mkdir(parents=True)
    shutil.copy2(prefix / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / site.relative_to(prefix) / "site-packages").symlink_to(site / "site-packages")
    probe = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", "import cosim"],
                           capture_output=True, timeout=SUBPROCESS_TIMEOUT_S)
    return venv / "bin" / "python" if probe.returncode == 0 else None


def test_shard_command_is_isolated_and_quoted():
    exe = str(Path("my tools") / "py 100%" / "bin" / "python")  # a space and a '%'
    cmd = shard_command(exe)
    starter = CmdStarter.from_starter_config({"cmd": cmd, **SHARD_STARTER})
    assert starter.posix is True
    # exactly what mosaik 3.6's CmdStarter.start does with it
    parts = shlex.split(starter.cmd % {"addr": "127.0.0.1:5555", "python": "x"},
                        posix=bool(starter.posix))
    assert parts == [exe, "-I", "-m", "cosim.engine.sims.building_sim", "127.0.0.1:5555"]


@pytest.mark.cosim
def test_cmd_shards_do_not_import_from_the_working_directory(tmp_path):
    cwd = tmp_path / "workdir"
    marker = _plant_agents(cwd)
    # the threat is real: an interpreter that puts the working directory first imports it
    threat = subprocess.run([sys.executable, "-c", "import agents"], cwd=cwd,
                            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert threat.returncode != 0 and marker.exists()
    marker.unlink()
    python = _interpreter_with_spaces(tmp_path) or Path(sys.executable)
    out = tmp_path / "run"
    # -I for the main process: only the shards could reach the planted package
    proc = subprocess.run(
        [str(python), "-I", "-m", "cosim.cli", "run", str(SCENARIO), "--steps",
         str(SHARD_STEPS), "--set", "sharding.shards=2", "--set", "sharding.mode=cmd",
         "--set", "output.plots=false", "--out", str(out)],
        cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists(), "a shard imported agents/ from the working directory"
    assert read_status(out)["state"] == "complete"
    assert (out / "buildings.parquet").is_file() and (out / "kpis.json").is_file()


def test_crafted_feeder_is_refused_at_validate(tmp_path, capsys, monkeypatch):
    name = f"fleetcosim_planted_{uuid.uuid4().hex[:12]}"
    plant = tmp_path / "plant"
    plant.mkdir()
    marker = plant / "IMPORTED"
    (plant / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n")
    monkeypatch.syspath_prepend(str(plant))
    feeder = save_feeder_json(load_feeder("pandapower:cigre_lv"), tmp_path / "feeder.json")
    text = feeder.read_text()
    feeder.write_text(text.replace(
        '"_object": {', f'"_object": {{"payload": {{"_module": "{name}", "_class": "X", '
        '"_object": "1"}, ', 1))
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["feeder"]["source"] = str(feeder)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    rc = main(["validate", str(scenario)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{scenario}: feeder.source:" in err and repr(name) in err, err
    assert not marker.exists() and name not in sys.modules


@pytest.mark.parametrize(
    ("address", "remote", "allow", "refused"),
    [
        ("127.0.0.1:5678", True, False, False),
        ("127.0.0.5:5678", True, False, False),
        ("localhost:5678", True, False, False),
        ("[::1]:5678", True, False, False),
        ("0.0.0.0:5678", True, False, True),
        ("192.168.1.20:5678", True, False, True),
        ("otherhost:5678", True, False, True),
        (":5678", True, False, True),
        ("0.0.0.0:5678", True, True, False),  # explicitly accepted
        ("10.0.0.1:5555", False, False, False),  # cmd mode connects out, binds nothing
    ],
)
def test_remote_shard_binds_loopback_unless_allowed(address, remote, allow, refused):
    assert (bind_refusal(address, remote, allow) is not None) is refused


def test_remote_shard_refusal_and_warning(capsys):
    sim = FleetSim()
    with pytest.raises(SystemExit) as exc:
        sim.configure({"HOST:PORT": "0.0.0.0:5678", "--remote": True,
                       ALLOW_REMOTE_BIND: False})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no authentication" in err and "SSH tunnel" in err and ALLOW_REMOTE_BIND in err
    sim.configure({"HOST:PORT": "0.0.0.0:5678", "--remote": True, ALLOW_REMOTE_BIND: True})
    assert "warning:" in capsys.readouterr().err


def test_remote_shard_refuses_from_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "cosim.engine.sims.building_sim", "0.0.0.0:5678", "--remote"],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 2 and "refusing to bind 0.0.0.0:5678" in proc.stderr


def _no_echo(path: Path, reason: str) -> None:
    with pytest.raises(ShardScenarioError) as err:
        load_shard_scenario(path)
    exc = err.value
    assert str(path) in str(exc) and reason in str(exc)
    # what mosaik_api_v3 would send back or print: message and traceback text
    text = "".join(traceback.format_exception(exc))
    assert SECRET not in text and SECRET.lower() not in text.lower()
    assert exc.__suppress_context__ and exc.__cause__ is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (f"token: [{SECRET}\n  other: {{\n", "not a valid scenario file"),  # broken YAML
        (f"{SECRET}: 1\nname: x\n", "not a valid scenario file"),  # secret as a key
        (f"name: x\nseed: {SECRET}\n", "not a valid scenario file"),  # secret as a value
        (f"- {SECRET}\n", "not a valid scenario file"),  # not a mapping
    ],
)
def test_shard_never_echoes_a_file_it_is_asked_to_read(tmp_path, content, reason):
    path = tmp_path / "secret.txt"
    path.write_text(content)
    _no_echo(path, reason)


def test_shard_scenario_checks_before_reading(tmp_path, monkeypatch):
    _no_echo(tmp_path / "missing.yaml", "not found")
    _no_echo(tmp_path, "not a regular file")
    big = tmp_path / "big.yaml"
    big.write_text(f"name: {SECRET}\n" * 10)
    monkeypatch.setattr(building_sim, "MAX_SHARD_SCENARIO_BYTES", 16)
    _no_echo(big, "larger than")


def test_shard_scenario_that_does_not_build_is_not_detailed(tmp_path):
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["data"] = {"path": str(tmp_path / SECRET)}
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ShardScenarioError) as err:
        FleetSim().init("Shard0", scenario_path=str(path))
    message = str(err.value)
    assert str(path) in message and SECRET not in message
    assert "does not build" in message or "not a valid scenario" in message


def test_shard_reads_a_valid_resolved_scenario(tmp_path):
    from cosim.engine.run import prepare_scenario
    from cosim.scenario.loader import resolved_yaml

    sc, _ = prepare_scenario(SCENARIO, steps=SHARD_STEPS)
    path = tmp_path / "scenario.yaml"
    path.write_text(resolved_yaml(sc))
    built = load_shard_scenario(path)
    assert built.n == 7 and built.grid is None


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_cmd_shard_exits_when_its_run_is_killed():
    """A run killed with SIGKILL cannot stop the shard processes it started; each shard
    notices that its parent is gone and exits instead of waiting on its socket for ever
    (cosim/engine/sims/building_sim.py, exit_when_orphaned)."""
    import signal
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    addr = f"127.0.0.1:{server.getsockname()[1]}"
    starter = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "p = subprocess.Popen([sys.executable, '-I', '-m', 'cosim.engine.sims.building_sim', "
         f"'{addr}'])\n"
         "print(p.pid, flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        shard = int(starter.stdout.readline())
        server.settimeout(60)
        conn, _ = server.accept()  # the shard connected and waits for mosaik's messages
        time.sleep(2 * building_sim.PARENT_CHECK_S)
        assert _alive(shard)  # the run is alive: the shard stays
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        deadline = time.monotonic() + 60  # a liveness bound, not a timing assertion
        while _alive(shard) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(shard), "the shard outlived the run that started it"
        conn.close()
    finally:
        if starter.poll() is None:
            starter.kill()
        server.close()
