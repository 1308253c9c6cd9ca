"""Validation: the constraint does not move with --steps, the bounded YAML reader, strictness."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cosim.cli import main
from cosim.engine.run import prepare_scenario
from cosim.scenario.checks import graph_edges_estimate
from cosim.scenario.errors import ScenarioError
from cosim.scenario.loader import load_scenario, resolved_yaml
from cosim.scenario.overrides import parse_overrides
from grid_models.support.safe_yaml import MAX_YAML_ALIASES, MAX_YAML_DEPTH, YamlProblems, read_yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "paper_fig1d.yaml"
LIMIT_RE = re.compile(r"limit (\d+\.\d+) kWh per step \(([^)]*)\)")


def _validate_limit(capsys, *args: str) -> tuple[str, str]:
    assert main(["validate", str(SCENARIO), *args]) == 0
    found = LIMIT_RE.search(capsys.readouterr().out)
    assert found is not None
    return found.group(1), found.group(2)


def test_steps_do_not_change_the_limit(capsys):
    full, basis_full = _validate_limit(capsys)
    short, basis_short = _validate_limit(capsys, "--steps", "100")
    assert full == short == "8.146"
    assert basis_full == basis_short
    assert "over the 3000 declared steps, data rows 0..2999" in basis_short


def test_steps_record_the_declared_horizon():
    sc, built = prepare_scenario(SCENARIO, steps=100)
    assert sc.time.steps == 100 and sc.constraint.peak_horizon_steps == 3000
    full_sc, full = prepare_scenario(SCENARIO)
    assert full_sc.constraint.peak_horizon_steps is None
    assert built.limit_kwh == full.limit_kwh
    resolved = yaml.safe_load(resolved_yaml(sc))
    assert resolved["time"]["steps"] == 100
    assert resolved["constraint"]["peak_horizon_steps"] == 3000


def test_resolved_scenario_reloads_to_the_same_limit(tmp_path: Path):
    sc, built = prepare_scenario(SCENARIO, steps=48)
    path = tmp_path / "scenario.yaml"
    path.write_text(resolved_yaml(sc))
    again, rebuilt = prepare_scenario(path)
    assert again == sc and rebuilt.limit_kwh == built.limit_kwh


@pytest.mark.parametrize("overrides", [
    [("controller.kind", "heuristic")],
    [("controller.kind", "heuristic"), ("controller.heuristic_price_threshold", 0.45),
     ("controller.heuristic_backlog_margin", 0.5)],
    [("controller.kind", "oracle"), ("controller.oracle_limit", "per_step")],
    [("controller.kind", "rule"), ("controller.rule_threshold_kwh", 2.0)],
    [("controller.kind", "none")],
])
def test_controller_fields_of_one_kind_resolve_and_reload(tmp_path: Path, overrides):
    """A kind's own fields get their defaults in the resolved scenario, the others stay
    null, and the resolved file (what --resume and the shards read) loads to the same."""
    sc = load_scenario(SCENARIO, overrides)
    ctl = sc.controller
    if ctl.kind == "heuristic":
        assert ctl.heuristic_price_threshold is not None
        assert ctl.heuristic_backlog_margin is not None
    assert (ctl.oracle_limit is None) == (ctl.kind != "oracle")
    if overrides == [("controller.kind", "heuristic")]:
        assert (ctl.heuristic_price_threshold, ctl.heuristic_backlog_margin) == (0.3, 0.8)
    path = tmp_path / "scenario.yaml"
    path.write_text(resolved_yaml(sc))
    assert load_scenario(path) == sc


def test_oracle_limit_defaults_to_the_run_average():
    assert load_scenario(SCENARIO, [("controller.kind", "oracle")]).controller.oracle_limit \
        == "run_average"


def test_a_set_override_of_steps_redefines_the_horizon():
    sc, built = prepare_scenario(SCENARIO, parse_overrides(["time.steps=100"]))
    _, short = prepare_scenario(SCENARIO, steps=100)
    assert sc.constraint.peak_horizon_steps is None
    assert built.limit_kwh < short.limit_kwh  # the peak of 100 hours, not of 3000


def test_limit_kw_needs_no_horizon():
    sc, built = prepare_scenario(SCENARIO, parse_overrides(
        ["constraint={limit_kw: 5.0}"]), steps=24)
    assert sc.constraint.peak_horizon_steps is None
    assert built.limit_kwh == 5.0 and "limit_kw" in built.limit_basis


def test_run_prints_the_limit(tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(SCENARIO), "--steps", "24", "--engine", "plain", "--quiet",
                 "--set", "output.plots=false", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "limit 8.146 kWh per step (0.27 x the district's peak demand" in printed


# --- warnings: valid but implausible values --------------------------------------------------


def test_a_percentage_typed_as_a_fraction_is_warned_about(capsys):
    assert main(["validate", str(SCENARIO), "--steps", "24",
                 "--set", "constraint.fraction_of_peak=27"]) == 0  # a warning: still valid
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: {SCENARIO}: constraint.fraction_of_peak: 27 is above 1: the "
                   "limit is 27 x the fleet's peak demand and never binds; a fraction is "
                   "wanted (0.27 for 27 %)"]


def test_a_limit_above_the_peak_is_warned_about(capsys):
    assert main(["validate", str(SCENARIO), "--steps", "24",
                 "--set", "constraint={limit_kw: 1000}"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {SCENARIO}: constraint.limit_kw: 1000 kW (")
    assert "is at or above the fleet's peak demand over the run" in err


def test_plausible_values_print_no_warning(capsys):
    assert main(["validate", str(SCENARIO), "--steps", "24"]) == 0
    assert main(["validate", str(SCENARIO), "--steps", "24",
                 "--set", "constraint={limit_kw: 5.0}"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_run_prints_the_warnings_and_still_runs(tmp_path: Path, capsys):
    assert main(["run", str(SCENARIO), "--steps", "4", "--engine", "plain", "--quiet",
                 "--set", "output.plots=false", "--set", "constraint.fraction_of_peak=2",
                 "--out", str(tmp_path / "run")]) == 0
    assert "warning: " in capsys.readouterr().err
    assert (tmp_path / "run" / "kpis.json").is_file()


# --- schema errors and data-dependent errors in one pass --------------------------------------


def _both_kinds(tmp_path: Path, **duals: object) -> Path:
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["time"]["steps"] = 24
    raw["duals"] = {**raw.get("duals", {}), **duals}
    raw["buildings"]["explicit"][2]["bus"] = 999  # not in the feeder: a data-dependent error
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_schema_and_data_errors_are_reported_in_one_pass(tmp_path: Path, capsys):
    path = _both_kinds(tmp_path, lambda_max="high")  # a wrong type: a schema error
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any(ln.startswith(f"error: {path}: duals.lambda_max: ") for ln in err), err
    assert any(ln.startswith(f"error: {path}: buildings.explicit.2.bus: ") for ln in err), err


def test_a_data_check_that_needs_a_refused_field_is_skipped(tmp_path: Path):
    raw = yaml.safe_load(_both_kinds(tmp_path).read_text())
    raw["feeder"]["source"] = 12  # the bus check needs the feeder: only the schema's error
    (tmp_path / "feeder.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ScenarioError) as caught:
        prepare_scenario(tmp_path / "feeder.yaml")
    fields = [path for path, _ in caught.value.errors]
    assert any(f.startswith("feeder") for f in fields), fields
    assert not any(f.startswith("buildings") for f in fields), fields


# --- the bounded YAML reader ------------------------------------------------------------------


def test_plain_yaml_reads_as_safe_load():
    text = SCENARIO.read_text()
    assert read_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text, fragment", [
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3"),
    ("a: &x [*x]\n", "recursive alias"),
    ("a: &x 1\nb: [" + ", ".join(["*x"] * (MAX_YAML_ALIASES + 1)) + "]\n", "alias uses"),
    ("a: " + "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1), "levels deep"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [" + ", ".join([f"*{p}"] * 10) + "]\n"
        for p, c in zip("abcdef", "bcdefg", strict=True)), "aliases are expanded"),
])
def test_reader_refuses(text: str, fragment: str):
    with pytest.raises(YamlProblems, match=re.escape(fragment)):
        read_yaml(text)


def test_reader_collects_every_duplicate_and_keeps_going():
    found: list[tuple[str, str]] = []
    value = read_yaml("a: {x: 1, x: 2}\nb: 1\nb: 2\n", duplicates=found)
    assert value == {"a": {"x": 2}, "b": 2}
    assert [path for path, _ in found] == ["b", "a.x"]


def test_merge_keys_are_not_duplicates():
    assert read_yaml("base: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n")["c"] == {"x": 3, "y": 2}


def test_set_values_are_read_with_the_bounded_reader():
    assert parse_overrides(["a.b=[1, 2]", "c=off", "d=x: y: z"]) == [
        ("a.b", [1, 2]), ("c", False), ("d", "x: y: z")]
    with pytest.raises(ScenarioError, match="recursive alias"):
        parse_overrides(["a=&x [*x]"])


def test_load_scenario_max_bytes(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.read_text())
    assert load_scenario(path).name == "paper_fig1d"
    with pytest.raises(ScenarioError, match="larger than 100 bytes"):
        load_scenario(path, max_bytes=100)


def test_graph_edge_estimates():
    assert graph_edges_estimate("complete", 1000, {}) == 1000 * 999 / 2
    assert graph_edges_estimate("two_clusters", 7, {}) == 3 + 6 + 1
    assert graph_edges_estimate("small_world", 1000, {"k": 6}) == 3000
    assert graph_edges_estimate("ring", 10, {}) == 10
    assert graph_edges_estimate("random_geometric", 100, {"radius": 2.0}) == 100 * 99 / 2


def test_dual_gains_of_the_scenario_reach_the_dynamics():
    """Every duals.* gain of the scenario is the one the run's DualDynamics uses (pi's
    gamma included: a range valid for the scenario but not for the default gamma)."""
    overrides = [("duals.alpha", 1.0), ("duals.beta", 0.6), ("duals.gamma", 0.9),
                 ("duals.rounds", 4), ("duals.eta", 0.5)]
    _, built = prepare_scenario(SCENARIO, steps=24, overrides=overrides)
    cfg = built.duals.config
    assert (cfg.mode, cfg.alpha, cfg.beta, cfg.gamma, cfg.rounds, cfg.eta) == \
        ("pi", 1.0, 0.6, 0.9, 4, 0.5)


def test_a_v1_window_longer_than_a_shortened_run_is_allowed():
    """--steps shortens the run, not the scenario: paper_fig1d's 24-step V1 window stays
    valid for a 10-step run; a window beyond the declared steps is still an error
    (tests/cosim/test_bad_scenarios.py)."""
    sc, built = prepare_scenario(SCENARIO, steps=10)
    assert sc.time.steps == 10 and built.duals.config.v1_window == 24
