"""Grid constraints (issue: transformer, line and voltage limits the agents act on).

The scenario schema and its errors, what the run directory holds (the constraints table,
``grid_constraints.json``, ``lambda_eff``), the time shift and the update read back from
the tables, the flow sign, mosaik equal to the plain loop, a resumed run equal to an
uninterrupted one, the peer mode, and the LP oracle's linearised bound replayed through
the AC power flow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cosim.cli import main
from cosim.engine.run import execute, prepare_scenario
from cosim.results.readers import read_status, read_table
from cosim.scenario.errors import ScenarioError
from cosim.scenario.loader import load_scenario
from tests.run_edit import assert_same_tables, stopped_at

REPO_ROOT = Path(__file__).resolve().parents[2]
LV_GRID = REPO_ROOT / "scenarios" / "lv_semiurb_40_grid.yaml"
PV_RICH = REPO_ROOT / "scenarios" / "lv_pv_rich.yaml"
STEPS = 48
QUICK = [("output.plots", False)]
MU_ATOL = 1e-12  # the multiplier update read back from float64 tables
LAMBDA_ATOL = 1e-9  # lambda_eff recomputed from grid_constraints.json (6 decimals: 1e-6)
LAMBDA_WEIGHT_ATOL = 1e-4  # ... with weights rounded to 6 decimals
LOADING_ATOL_PERCENT = 1e-9  # the constraints table vs the lines/trafos tables
#: share of steps (no bound reached) in which the peers' mean multiplier moves with the
#: sign of the measured excess; the rest: a member's own multiplier hit 0
PEER_SIGN_AGREEMENT = 0.9
COST_ATOL = 1e-6  # $, the LP's optimum with and without extra rows
DROPPED_ATOL_KWH = 1e-6  # the LP plan replayed: rounding residue of its solution

pytestmark = pytest.mark.cosim


def _run(tmp: Path, name: str, scenario: Path = LV_GRID, overrides=(), engine="plain",
         steps: int = STEPS) -> Path:
    sc, built = prepare_scenario(scenario, [*QUICK, *overrides], steps=steps)
    return execute(sc, built, tmp / name, progress=False, engine=engine).run_dir


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("gc"), "plain", overrides=[("grid_constraints.alpha",
                                                                     1.0)])


# -- schema -------------------------------------------------------------------------------


def _errors(tmp: Path, text: str) -> list[tuple[str, str]]:
    base = LV_GRID.read_text().split("grid_constraints:")[0]
    path = tmp / "s.yaml"
    path.write_text(base + text + '\noutput: {directory: "runs/x"}\n')
    with pytest.raises(ScenarioError) as info:
        sc = load_scenario(path)
        from cosim.scenario.build import build

        build(sc, str(path))
    return info.value.errors


@pytest.mark.parametrize(("text", "field", "words"), [
    ("grid_constraints: {mode: operator}", "grid_constraints", "at least one"),
    ("grid_constraints: {loading: [{element: cable}]}", "grid_constraints.loading.0.element",
     "trafo"),
    ("grid_constraints: {loading: [{element: line, ids: []}]}",
     "grid_constraints.loading.0.ids", "at least one"),
    ("grid_constraints: {loading: [{element: line, ids: [3, 3]}]}",
     "grid_constraints.loading.0.ids", "twice"),
    ("grid_constraints: {voltage: [{min_pu: 1.05, max_pu: 0.95}]}",
     "grid_constraints.voltage.0.min_pu", "below max_pu"),
    ("grid_constraints: {voltage: [{min_pu: null, max_pu: null}]}", "grid_constraints.voltage.0",
     "min_pu, max_pu or both"),
    ("grid_constraints: {peak_kw: 100, colour: red}", "grid_constraints.colour", "unknown key"),
    ("grid_constraints: {mode: peer, alpha: 1.0, beta: 10.0, peak_kw: 100}",
     "grid_constraints.gamma", "alpha*beta < gamma"),
])
def test_schema_errors_name_the_field(tmp_path: Path, text: str, field: str, words: str):
    errors = _errors(tmp_path, text)
    assert any(f == field and words in m for f, m in errors), errors


@pytest.mark.parametrize(("text", "field", "words"), [
    ("grid_constraints: {loading: [{element: line, ids: [999]}]}",
     "grid_constraints.loading.0.ids", "not in service"),
    ("grid_constraints: {loading: [{element: trafo, ids: [0]}, {element: trafo}]}",
     "grid_constraints.loading.1.ids", "already constrained"),
    ("grid_constraints: {voltage: [{buses: [12345]}]}", "grid_constraints.voltage.0.buses",
     "not energised"),
])
def test_unknown_elements_are_errors_that_name_the_field(tmp_path: Path, text: str, field: str,
                                                          words: str):
    errors = _errors(tmp_path, text)
    assert any(f == field and words in m for f, m in errors), errors


# -- what a run writes --------------------------------------------------------------------


def test_run_directory_holds_the_constraints(plain_run: Path):
    assert read_status(plain_run)["tables"][-1] == "constraints"
    described = json.loads((plain_run / "grid_constraints.json").read_text())
    names = [c["name"] for c in described["constraints"]]
    assert names[0] == "trafo 0 loading" and all("loading" in n for n in names)
    assert len(names) == len(set(names)) > 10  # the transformer and every line
    table = read_table(plain_run, "constraints")
    assert len(table) == STEPS * len(names)
    assert list(table.constraint.unique()) == names
    kpis = json.loads((plain_run / "kpis.json").read_text())
    assert list(kpis["grid_constraints"]) == names
    for c in described["constraints"]:  # the most concerned building has weight 1
        assert max(abs(w) for w in c["weights"].values()) == pytest.approx(1.0)
        assert c["buildings_concerned"]


def test_measured_loading_is_the_power_flow_result(plain_run: Path):
    table = read_table(plain_run, "constraints")
    lines = read_table(plain_run, "lines").set_index(["time", "line"]).loading_percent
    trafos = read_table(plain_run, "trafos").set_index(["time", "trafo"]).loading_percent
    for _, row in table.sample(40, random_state=0).iterrows():
        table_name, idx, _ = row.constraint.split()
        ref = (lines if table_name == "line" else trafos)[(row.time, int(idx))]
        assert row.measured == pytest.approx(ref, abs=LOADING_ATOL_PERCENT)


def test_multipliers_are_time_shifted_dual_ascent(plain_run: Path):
    """mu used at step t = clip(mu(t-1) + alpha * excess(t-1), 0, mu_max)."""
    table = read_table(plain_run, "constraints")
    described = json.loads((plain_run / "grid_constraints.json").read_text())
    alpha, mu_max = described["alpha"][0], described["mu_max"]
    mu = table.pivot(index="time", columns="constraint", values="mu")
    excess = table.pivot(index="time", columns="constraint", values="excess")
    assert (mu.iloc[0] == 0).all()
    expected = np.clip(mu.to_numpy()[:-1] + alpha * excess.to_numpy()[:-1], 0, mu_max)
    np.testing.assert_allclose(mu.to_numpy()[1:], expected, rtol=0, atol=MU_ATOL)
    assert (mu.to_numpy() > 0).any(), "some limit must be violated in this test"


def test_policies_see_lambda_plus_the_weighted_grid_multipliers(plain_run: Path):
    table = read_table(plain_run, "constraints")
    b = read_table(plain_run, "buildings")
    described = json.loads((plain_run / "grid_constraints.json").read_text())
    names = list(dict.fromkeys(b.building))
    weights = np.array([[c["weights"].get(n, 0.0) for n in names]
                        for c in described["constraints"]])
    mu = table.pivot(index="time", columns="constraint", values="mu")[
        [c["name"] for c in described["constraints"]]].to_numpy()
    sign = table.pivot(index="time", columns="constraint", values="sign")[
        [c["name"] for c in described["constraints"]]].to_numpy()
    lam = b.pivot(index="time", columns="building", values="lambda")[names].to_numpy()
    eff = b.pivot(index="time", columns="building", values="lambda_eff")[names].to_numpy()
    expected = np.clip(lam + (mu * sign) @ weights, 0, described["lambda_max"])
    np.testing.assert_allclose(eff, expected, rtol=0, atol=LAMBDA_WEIGHT_ATOL)
    assert (eff > lam + LAMBDA_WEIGHT_ATOL).any(), "the grid must move some lambda_eff"


def test_release_analysis_counts_the_overload_steps(plain_run: Path, tmp_path: Path):
    from cosim.results.constraint_report import release_at_overloads

    got = release_at_overloads(plain_run, threshold_percent=50.0)
    loading = read_table(plain_run, "trafos").groupby("time").loading_percent.max()
    assert got["overload_steps"] == int((loading > 50.0).sum()) > 0
    assert 0 <= got["after_lambda_eff_fell"] <= got["overload_steps"]
    assert 0 <= got["released_kwh"] and got["bought_kwh"] > 0
    none = _run(tmp_path, "none", overrides=[("controller.kind", "none")], steps=24)
    assert release_at_overloads(none, threshold_percent=50.0)["released_kwh"] == 0.0


def test_without_grid_constraints_lambda_eff_is_lambda(tmp_path: Path):
    run = _run(tmp_path, "energy", overrides=[("grid_constraints", None)], steps=24)
    b = read_table(run, "buildings")
    np.testing.assert_array_equal(b["lambda_eff"].to_numpy(), b["lambda"].to_numpy())
    assert "constraints" not in read_status(run)["tables"]
    assert not (run / "grid_constraints.json").exists()


def test_reverse_flow_turns_the_sign(tmp_path: Path):
    """At midday on the PV-rich feeder the transformer carries power upstream: the sign of
    the buildings' influence on its loading is -1, at night +1."""
    from cosim.scenario.build import build

    sc = load_scenario(PV_RICH, [("grid_constraints", {"loading": [{"element": "trafo"}]})],
                       steps=24)
    built = build(sc, str(PV_RICH))
    gc, grid = built.grid_constraints, built.grid
    export = -20.0 * np.ones(built.n)  # every building exports 20 kW
    measured, sign = gc.probe.measure(grid.solve(12, export), export)
    assert sign[0] == -1.0 and measured[0] > 0
    load = 2.0 * np.ones(built.n)
    _, sign = gc.probe.measure(grid.solve(2, load), load)
    assert sign[0] == 1.0


@pytest.mark.slow
def test_mosaik_equals_the_plain_loop(tmp_path: Path):
    overrides = [("grid_constraints.alpha", 1.0), ("grid_constraints.period_steps", 24)]
    plain = _run(tmp_path, "plain", overrides=overrides)
    world = _run(tmp_path, "mosaik", overrides=overrides, engine="mosaik")
    assert_same_tables(world, plain)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["plain", "mosaik"])
def test_a_resumed_run_equals_an_uninterrupted_one(engine: str, tmp_path: Path, monkeypatch):
    base = ["run", str(LV_GRID), "--steps", "72", "--set", "output.flush_every=12",
            "--set", "output.plots=false", "--quiet", "--engine", engine,
            "--set", "grid_constraints.alpha=1.0", "--set", "grid_constraints.period_steps=24",
            "--set", "grid_constraints.mode=peer", "--set", "grid_constraints.beta=0.5"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main([*base, "--out", str(ref)]) == 0
    assert stopped_at(41, [*base, "--out", str(run)], monkeypatch) == 130
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    assert read_status(run)["resumes"][0]["from_step"] == 36
    assert_same_tables(run, ref)


def test_peer_mode_agrees_within_clusters(tmp_path: Path):
    # limits at 50 %: the multipliers stay positive for long stretches
    run = _run(tmp_path, "peer", overrides=[("grid_constraints.mode", "peer"),
                                            ("grid_constraints.alpha", 0.5),
                                            ("grid_constraints.beta", 1.0),
                                            ("grid_constraints.loading.0.max_percent", 50.0),
                                            ("grid_constraints.loading.1.max_percent", 50.0)])
    table = read_table(run, "constraints")
    assert (table.mu_spread >= 0).all() and (table.mu > 0).any()
    described = json.loads((run / "grid_constraints.json").read_text())
    assert described["mode"] == "peer"
    # the peers' mean multiplier moves like the operator's (pi keeps the cluster's sum)
    mu = table.pivot(index="time", columns="constraint", values="mu")
    excess = table.pivot(index="time", columns="constraint", values="excess")
    step = mu.to_numpy()[1:] - mu.to_numpy()[:-1]
    e = excess.to_numpy()[:-1]
    free = (mu.to_numpy()[1:] > 0) & (mu.to_numpy()[:-1] > 0)  # no lower bound reached
    assert free.sum() > 10
    assert np.mean(np.sign(step[free]) == np.sign(e[free])) >= PEER_SIGN_AGREEMENT


# -- the oracle's bound ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_oracle_bound_keeps_the_voltage_band_through_the_ac_power_flow(tmp_path: Path):
    """Five PV-rich August days: the oracle's cheapest schedule without grid limits buys
    in the cheap evening hours and pulls the voltage below 0.95 pu (hour 21 of days 4
    and 5); with the linearised limits it plans within the band, and the AC power flow
    of its replay confirms it (the table says by how much the linearisation misses)."""
    steps = 120
    free = _run(tmp_path, "free", PV_RICH, [("controller.kind", "oracle"),
                                            ("grid_constraints", None)], steps=steps)
    bound = _run(tmp_path, "bound", PV_RICH, [("controller.kind", "oracle")], steps=steps)
    k_free, k_bound = (json.loads((r / "kpis.json").read_text()) for r in (free, bound))
    assert k_free["grid"]["hours_outside_095_105_pu"] >= 2
    assert k_bound["grid"]["hours_outside_095_105_pu"] == 0
    assert k_bound["grid_constraint_totals"]["grid_constraint_violation_hours"] == 0
    assert k_bound["fleet"]["dropped_kwh"] <= DROPPED_ATOL_KWH
    # the bound costs at least the unconstrained optimum
    assert k_bound["oracle"]["planned_cost"] >= k_free["oracle"]["planned_cost"] - COST_ATOL
