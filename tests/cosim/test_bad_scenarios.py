"""Bad scenarios fail cleanly: one ``error:`` line naming the file and the field, exit 2.

Every case is derived from ``scenarios/paper_fig1d.yaml`` (24 steps). Most kinds
run in-process through ``cosim.cli.main`` (fast); a few run ``python -m
cosim.cli`` as a subprocess to prove the end-to-end contract: exit code 2, no
traceback, and no run directory (validation happens before it is made).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from cosim.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
POLICY_DIR = REPO_ROOT / "data" / "policies"
POLICY_FILES = ("normal.json", "normal.safetensors", "double.json", "double.safetensors")
STEPS = 24
SUBPROCESS_TIMEOUT_S = 120


def _base() -> dict[str, Any]:
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["time"]["steps"] = STEPS
    return raw


def _copy_policies(dest: Path) -> Path:
    dest.mkdir()
    for name in POLICY_FILES:
        shutil.copy2(POLICY_DIR / name, dest / name)
    return dest


def _empty_policy_dir(d: dict, tmp: Path) -> None:
    (tmp / "no_policies").mkdir()
    d["controller"]["policy_dir"] = str(tmp / "no_policies")


def _deleted_policy_file(d: dict, tmp: Path) -> None:
    pol = _copy_policies(tmp / "policies")
    (pol / "double.json").unlink()
    d["controller"]["policy_dir"] = str(pol)


def _tampered_weights(d: dict, tmp: Path) -> None:
    pol = _copy_policies(tmp / "policies")
    weights = bytearray((pol / "normal.safetensors").read_bytes())
    weights[-1] ^= 0x01  # flip one bit of the last weight
    (pol / "normal.safetensors").write_bytes(bytes(weights))
    d["controller"]["policy_dir"] = str(pol)


def _explicit(i: int, **changes: Any) -> Callable[[dict, Path], None]:
    def mutate(d: dict, _tmp: Path) -> None:
        d["buildings"]["explicit"][i].update(changes)
    return mutate


def _section(name: str, **changes: Any) -> Callable[[dict, Path], None]:
    def mutate(d: dict, _tmp: Path) -> None:
        d.setdefault(name, {}).update(changes)
    return mutate


@dataclass
class Case:
    """A bad scenario: how to make it and the field its error must name."""

    id: str
    field_path: str  # expected in the error line; "" for file-level errors
    mutate: Callable[[dict, Path], None] | None = None
    text: str | None = None  # the scenario file's raw text, instead of a mutated dict
    args: list[str] = field(default_factory=list)  # extra CLI arguments
    missing_file: bool = False


CASES = [
    Case("unknown_top_level_key", "colour", _section("colour", shade="red")),
    Case("unknown_nested_key", "duals.gamma", _section("duals", gamma=0.1)),
    Case("wrong_type", "time.steps", _section("time", steps="many")),
    Case("negative_battery_capacity", "buildings.explicit.0.battery.capacity_kwh",
         _explicit(0, battery={"capacity_kwh": -1})),
    Case("non_finite_value", "buildings.explicit.0.demand_scale",
         _explicit(0, demand_scale=float("inf"))),
    Case("unknown_feeder_source", "feeder.source", _section("feeder", source="matpower:case9")),
    Case("unknown_simbench_code", "feeder.source",
         _section("feeder", source="simbench:9-XX-nowhere--0-sw")),
    Case("bus_not_in_feeder", "buildings.explicit.2.bus", _explicit(2, bus=999)),
    Case("unknown_citylearn_profile", "buildings.explicit.1.profile",
         _explicit(1, profile="Building_99")),
    Case("unknown_policy_class", "buildings.explicit.3.policy_class",
         _explicit(3, policy_class="triple")),
    Case("empty_policy_dir", "controller.policy_dir", _empty_policy_dir),
    Case("deleted_policy_file", "buildings.explicit.1.policy_class", _deleted_policy_file),
    Case("tampered_policy_weights", "controller.policy_dir", _tampered_weights),
    Case("more_steps_than_data", "time.steps", _section("time", start=8000, steps=1000)),
    Case("consensus_on_disconnected_graph", "communication.topology",
         _section("communication", topology="random_geometric", params={"radius": 0.01})),
    Case("graph_parameter_of_wrong_type", "communication.params",
         _section("communication", params={"split": "half"})),
    Case("malformed_yaml", "", text="name: x\ntime: {start: 0, steps: 24\nfeeder: [\n"),
    Case("not_a_mapping", "", text="- name: paper_fig1d\n- time: {steps: 24}\n"),
    Case("missing_required_section", "constraint",
         lambda d, _tmp: d.pop("constraint")),
    Case("both_fraction_of_peak_and_limit_kw", "constraint",
         _section("constraint", limit_kw=50.0)),
    Case("unknown_dual_mode", "duals.mode", _section("duals", mode="telepathy")),
    Case("unknown_topology", "communication.topology",
         _section("communication", topology="hypercube")),
    Case("duplicate_building_ids", "buildings.explicit.1.id", _explicit(1, id="B1")),
    Case("silent_fault_unknown_agent", "communication.faults.silent.0.agent",
         _section("communication", faults={"silent": [{"agent": "B42", "start": 0, "end": 5}]})),
    Case("lambda_max_above_training_range", "duals.lambda_max",
         _section("duals", lambda_max=50.0)),
    Case("more_shards_than_buildings", "sharding.shards", _section("sharding", shards=8)),
    Case("negative_seed", "seed", lambda d, _tmp: d.update(seed=-1)),
    Case("bad_output_placeholder", "output.directory",
         _section("output", directory="runs/{nmae}")),
    Case("set_override_bad_value", "time.steps", args=["--set", "time.steps=-5"]),
    Case("set_override_bad_path", "buildings.explicit.9",
         args=["--set", "buildings.explicit.9.bus=3"]),
    Case("set_override_not_path_value", "--set", args=["--set", "time.steps"]),
    Case("scenario_file_not_found", "", missing_file=True),
    Case("step_h_not_1", "time.step_h", _section("time", step_h=0.5)),
]


def _write_case(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / f"{case.id}.yaml"
    if case.missing_file:
        return path
    if case.text is not None:
        path.write_text(case.text)
        return path
    raw = copy.deepcopy(_base())
    if case.mutate is not None:
        case.mutate(raw, tmp_path)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _check_error(returncode: int, stderr: str, scenario: Path, expected_field: str,
                 run_dir: Path) -> None:
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: "), line
    assert str(scenario) in line, line
    if expected_field:
        assert f"{scenario}: {expected_field}: " in line, line
    assert not run_dir.exists(), "validation must fail before the run directory is made"


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code) if exc.code is not None else 0


def test_there_are_enough_kinds():
    assert len({c.id for c in CASES}) == len(CASES) >= 18


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_scenario_one_line_error_exit_2(case: Case, tmp_path: Path, capsys):
    scenario = _write_case(case, tmp_path)
    run_dir = tmp_path / "run"
    rc = _main(["run", str(scenario), "--out", str(run_dir), "--quiet", *case.args])
    captured = capsys.readouterr()
    _check_error(rc, captured.err, scenario, case.field_path, run_dir)
    assert captured.out == ""


SUBPROCESS_CASES = ("unknown_nested_key", "bus_not_in_feeder", "malformed_yaml")


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_scenario_end_to_end(case_id: str, tmp_path: Path):
    case = next(c for c in CASES if c.id == case_id)
    scenario = _write_case(case, tmp_path)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cosim.cli", "run", str(scenario), "--out", str(run_dir),
         "--quiet", *case.args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
    )
    _check_error(proc.returncode, proc.stderr, scenario, case.field_path, run_dir)
    assert proc.stdout == ""


def test_validate_accepts_the_paper_scenario(capsys):
    assert _main(["validate", str(SCENARIO)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert f"{SCENARIO}: valid. 7 buildings, 3000 steps" in captured.out


def test_validate_rejects_a_bad_scenario(tmp_path: Path, capsys):
    case = next(c for c in CASES if c.id == "bus_not_in_feeder")
    scenario = _write_case(case, tmp_path)
    rc = _main(["validate", str(scenario)])
    captured = capsys.readouterr()
    _check_error(rc, captured.err, scenario, case.field_path, tmp_path / "run")


def test_run_directory_that_cannot_be_made(tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "run"
    rc = _main(["run", str(SCENARIO), "--steps", str(STEPS), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: {out}: cannot create the run directory"), lines[0]
