"""A user's controller on the bench: named in a scenario (``controller.kind: python``) or
given from Python (``execute(controller=...)``), run identically by both engines, with
clear errors when it breaks the contract and ``--resume`` after the user fixes it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.control.contract import ControllerError
from cosim.cli import main
from cosim.engine.run import execute, prepare_scenario, resume
from cosim.results.readers import read_status, read_table
from cosim.results.rundir import RunDirError
from cosim.scenario.build import build
from cosim.scenario.errors import ScenarioError
from cosim.scenario.loader import load_scenario
from tests.run_edit import assert_same_tables

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 24
USER_CODE = "tests/cosim/user_code"  # relative paths are taken from the project directory


def _python(entry: str, params: dict[str, object] | None = None,
            path: str | None = USER_CODE) -> list[tuple[str, object]]:
    ctl: dict[str, object] = {"kind": "python", "entry": entry}
    if path is not None:
        ctl["path"] = path
    if params is not None:
        ctl["params"] = params
    return [("controller", ctl), ("output.plots", False), ("output.flush_every", 8)]


def _built(overrides: list[tuple[str, object]]):
    sc = load_scenario(SCENARIO, overrides, STEPS)
    return sc, build(sc, str(SCENARIO))


class HalfFromGrid:
    """A user controller defined here, in a test module: half from the grid, battery first."""

    name = "half_from_grid"

    def act(self, obs):
        actions = np.empty((obs.n, 2))
        actions[:, 0] = 0.5
        actions[:, 1] = np.where(obs.price_per_kwh > np.median(obs.price_per_kwh), 1.0, 0.5)
        return actions


def test_a_controller_object_runs_identically_in_both_engines(tmp_path):
    runs = {}
    for engine in ("mosaik", "plain"):
        sc, built = prepare_scenario(SCENARIO, [("output.plots", False)], STEPS)
        runs[engine] = execute(sc, built, tmp_path / engine, progress=False, engine=engine,
                               controller=HalfFromGrid()).run_dir
    assert_same_tables(runs["mosaik"], runs["plain"])
    buildings = read_table(runs["mosaik"], "buildings")
    # the object acted: half of the energy to serve came from the grid in every step
    to_serve = buildings.demand_kwh + buildings.backlog_kwh.groupby(buildings.building).shift(
        fill_value=0.0)
    np.testing.assert_allclose(buildings.grid_kwh, 0.5 * to_serve, rtol=1e-12, atol=1e-12)
    assert read_status(runs["mosaik"])["controller_object"] == {
        "class": f"{__name__}:HalfFromGrid", "name": "half_from_grid"}


def test_an_object_set_on_built_is_honoured_by_mosaik_too(tmp_path):
    """The silent divergence of old: ``built.controller = Mine()`` ran the shipped policies
    under mosaik while the plain engine ran Mine."""
    tables = {}
    for engine in ("mosaik", "plain"):
        sc, built = prepare_scenario(SCENARIO, [("output.plots", False)], STEPS)
        built.controller = HalfFromGrid()
        out = execute(sc, built, tmp_path / engine, progress=False, engine=engine).run_dir
        tables[engine] = read_table(out, "buildings")
        assert read_status(out)["controller_object"]["name"] == "half_from_grid"
    sc, built = prepare_scenario(SCENARIO, [("output.plots", False)], STEPS)
    policy = read_table(execute(sc, built, tmp_path / "policy", progress=False).run_dir,
                        "buildings")
    assert tables["mosaik"].equals(tables["plain"])
    assert not tables["mosaik"].grid_kwh.equals(policy.grid_kwh)


def test_an_object_cannot_be_split_over_shards(tmp_path):
    sc, built = prepare_scenario(SCENARIO, [("sharding.shards", 2)], STEPS)
    with pytest.raises(ValueError, match="acts for the whole fleet.*shards: 1"):
        execute(sc, built, tmp_path / "run", progress=False, controller=HalfFromGrid())
    assert not (tmp_path / "run").exists()


def test_a_scenario_names_a_user_class_and_both_engines_agree(tmp_path):
    overrides = _python("bench_controllers:ShareOfGrid", {"share": 0.3, "cheap_share": 0.8})
    runs = {}
    for engine in ("mosaik", "plain"):
        sc, built = _built(overrides)
        runs[engine] = execute(sc, built, tmp_path / engine, progress=False,
                               engine=engine).run_dir
    assert_same_tables(runs["mosaik"], runs["plain"])
    assert "controller_object" not in read_status(runs["mosaik"])
    # in-process shards: each shard builds its own from the scenario
    sc, built = _built(overrides + [("sharding.shards", 3)])
    assert_same_tables(execute(sc, built, tmp_path / "shards", progress=False).run_dir,
                       runs["plain"])
    shares = read_table(runs["plain"], "buildings")
    assert not shares.grid_kwh.equals(shares.demand_kwh)


def _installed_here() -> bool:
    """Whether ``python -I`` (how a cmd-mode shard starts) imports this checkout's cosim."""
    import subprocess

    found = subprocess.run([sys.executable, "-I", "-c", "import cosim; print(cosim.__file__)"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return Path(found).resolve().parent.parent == REPO_ROOT.resolve()


@pytest.mark.skipif(not _installed_here(), reason="cmd-mode shards import the installed "
                    "package, which is another checkout than this one")
def test_cmd_shards_build_the_user_class_in_their_own_processes(tmp_path):
    overrides = _python("bench_controllers:ShareOfGrid", {"share": 0.3})
    sc, built = _built(overrides)
    ref = execute(sc, built, tmp_path / "plain", progress=False, engine="plain").run_dir
    sc, built = _built(overrides + [("sharding.shards", 3), ("sharding.mode", "cmd")])
    assert_same_tables(execute(sc, built, tmp_path / "cmd", progress=False).run_dir, ref)


@pytest.mark.parametrize(("entry", "params", "path", "field", "message"), [
    ("no_such_module:X", None, USER_CODE, "controller.entry",
     r"module 'no_such_module' not found \(searched the installed environment and .*user_code"),
    ("bench_controllers:Missing", None, USER_CODE, "controller.entry",
     r"has no 'Missing' \(classes it defines: .*ShareOfGrid"),
    ("bench_controllers:NoAct", None, USER_CODE, "controller.entry",
     r"class bench_controllers:NoAct has no method act\(obs\)"),
    ("bench_controllers:OnlySnapshot", None, USER_CODE, "controller.entry",
     r"only one of snapshot\(\) and restore\(snap\)"),
    ("bench_controllers:NeedsGain", None, USER_CODE, "controller.params",
     r"rejected the parameters \[\].*gain"),
    ("bench_controllers:ShareOfGrid", {"shear": 1}, USER_CODE, "controller.params",
     r"rejected the parameters \['shear'\]"),
    ("bench_controllers:ShareOfGrid", None, "tests/no_such_dir", "controller.path",
     "directory not found"),
])
def test_a_bad_class_is_refused_before_the_run_naming_the_field(
        entry, params, path, field, message):
    with pytest.raises(ScenarioError) as info:
        _built(_python(entry, params, path))
    fields = [f for f, _ in info.value.errors]
    assert fields == [field]
    assert any(__import__("re").search(message, m) for _, m in info.value.errors), \
        info.value.errors


def test_the_working_directory_is_never_searched(tmp_path, monkeypatch):
    (tmp_path / "cwd_only_controller.py").write_text(
        "class Planted:\n    def __init__(self, context):\n        pass\n\n"
        "    def act(self, obs):\n        raise SystemExit('ran')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` puts the working directory
    with pytest.raises(ScenarioError, match="controller.entry: module 'cwd_only_controller' "
                       "not found .*the working directory is not searched: give "
                       "controller.path"):
        _built(_python("cwd_only_controller:Planted", path=None))
    assert "cwd_only_controller" not in sys.modules
    # named explicitly, the same directory is used
    _, built = _built(_python("cwd_only_controller:Planted", path=str(tmp_path)))
    assert type(built.controller).__name__ == "Planted"
    sys.modules.pop("cwd_only_controller")


@pytest.mark.parametrize(("controller", "message"), [
    ({"kind": "python"}, "kind 'python' needs entry"),
    ({"kind": "python", "entry": "not an entry"}, "should match pattern"),
    ({"kind": "rule", "entry": "a:B"}, "only used with kind 'python'"),
])
def test_the_controller_fields_are_checked(controller, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(SCENARIO, [("controller", controller)], STEPS)


@pytest.mark.parametrize(("entry", "params", "message"), [
    ("bench_controllers:WrongShape", None,
     r"controller 'WrongShape' at step 0: actions must have shape \(N, 2\) = \(7, 2\), one "
     r"row \(u_grid, u_batt\) per building; got shape \(7, 1\)"),
    ("bench_controllers:NanAt", {"step": 3, "building": 2},
     r"controller 'NanAt' at step 3: building 'B3': u_batt = nan; every action must be "
     r"finite and in \[0, 1\]"),
    ("bench_controllers:NanAt", {"step": 5, "building": 6, "value": 1.5},
     r"controller 'NanAt' at step 5: building 'B7': u_batt = 1.5"),
    ("bench_controllers:NanAt", {"step": 0, "building": 0, "value": -0.25},
     r"controller 'NanAt' at step 0: building 'B1': u_batt = -0.25"),
])
@pytest.mark.parametrize("engine", ["mosaik", "plain"])
def test_bad_actions_fail_the_run_naming_step_and_building(entry, params, message, engine,
                                                           tmp_path):
    sc, built = _built(_python(entry, params))
    with pytest.raises(ControllerError, match=message):
        execute(sc, built, tmp_path / "run", progress=False, engine=engine)
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed"
    assert "ControllerError" in status["error"] and "at step" in status["error"]


_BUGGY = '''
import numpy as np

class Greedy:
    name = "greedy"

    def __init__(self, context):
        pass

    def act(self, obs):
        if obs.hour_of_day[0] >= 13:
            raise ZeroDivisionError("a bug at one o'clock")
        return np.column_stack([np.full(obs.n, 0.7), np.ones(obs.n)])
'''
_FIXED = _BUGGY.replace('raise ZeroDivisionError("a bug at one o\'clock")',
                        'return np.column_stack([np.full(obs.n, 0.6), np.ones(obs.n)])')


@pytest.mark.parametrize("engine", ["mosaik", "plain"])
def test_a_failure_mid_run_keeps_the_steps_and_resume_works_after_the_fix(
        engine, tmp_path, capsys, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    module = f"user_greedy_{engine}"  # one module per case: the import cache is per process
    (code / f"{module}.py").write_text(_BUGGY)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    controller = {"kind": "python", "entry": f"{module}:Greedy", "path": str(code)}
    argv = ["run", str(SCENARIO), "--steps", str(STEPS), "--quiet", "--engine", engine,
            "--set", "output.plots=false", "--set", "output.flush_every=4",
            "--set", f"controller={json.dumps(controller)}"]
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "controller 'greedy' raised at step 13" in err and "ZeroDivisionError" in err
    assert "continue with: cosim run --resume" in err
    status = read_status(out)
    assert status["state"] == "failed" and "a bug at one o'clock" in status["error"]
    assert status["steps_done"] >= 12  # every step before the failure was written

    (code / f"{module}.py").write_text(_FIXED)
    sys.modules.pop(module, None)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    capsys.readouterr()
    ref = tmp_path / "ref"
    assert main([*argv, "--out", str(ref)]) == 0
    assert_same_tables(out, ref)
    assert read_status(out)["resumes"][0]["from_step"] == 12


def test_resume_needs_the_object_a_run_was_started_with(tmp_path):
    class Failing(HalfFromGrid):
        def act(self, obs):
            if obs.hour_of_day[0] >= 10:
                raise RuntimeError("stop")
            return super().act(obs)

    sc, built = prepare_scenario(SCENARIO, [("output.plots", False),
                                            ("output.flush_every", 4)], STEPS)
    out = tmp_path / "run"
    with pytest.raises(ControllerError, match="raised at step 10"):
        execute(sc, built, out, progress=False, controller=Failing())
    with pytest.raises(RunDirError, match="controller object given from Python"):
        resume(out, progress=False)
    resume(out, progress=False, controller=HalfFromGrid())
    sc, built = prepare_scenario(SCENARIO, [("output.plots", False),
                                            ("output.flush_every", 4)], STEPS)
    ref = execute(sc, built, tmp_path / "ref", progress=False, controller=HalfFromGrid())
    assert_same_tables(out, ref.run_dir)
