"""`cosim study`: a small grid of variants, its table, gaps to the oracle and figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cosim.cli import main

ROOT = Path(__file__).resolve().parents[2]
COST_RTOL = 1e-9


@pytest.mark.slow
def test_study_runs_grid_and_writes_table(tmp_path: Path, capsys):
    out = tmp_path / "study"
    code = main([
        "study", str(ROOT / "scenarios" / "paper_fig1d.yaml"), "--steps", "72",
        "--engine", "plain", "--quiet", "--out", str(out),
        "--sweep", "constraint.fraction_of_peak=0.4,0.6",
        "--variant", "consensus:duals.mode=consensus,output.plots=false",
        "--variant", "independent:duals.mode=independent,output.plots=false",
        "--variant", "none:controller.kind=none,output.plots=false",
        "--variant", "oracle:controller.kind=oracle,output.plots=false",
    ])
    assert code == 0
    table = pd.read_csv(out / "study.csv")
    assert len(table) == 8 and set(table["variant"]) == {"consensus", "independent", "none",
                                                          "oracle"}
    ok = table[table.status == "ok"]
    oracle = ok[ok.variant == "oracle"]
    assert (oracle["cost_gap_to_oracle"].abs() < COST_RTOL).all()
    # the oracle serves everything by the end at minimum cost: a lower bound for 'none'
    none = ok[ok.variant == "none"].set_index("constraint.fraction_of_peak")
    orc = oracle.set_index("constraint.fraction_of_peak")
    common = none.index.intersection(orc.index)
    assert len(common) and (none.loc[common, "cost"] >= orc.loc[common, "cost"]).all()
    assert table.loc[table.variant == "none", "lambda_spread_final"].isna().all()
    for name in ("study.md", "unmet_by_c.png", "lambda_trajectories.png", "grid_vs_c.png"):
        assert (out / name).is_file(), name
    assert "gap to oracle" in capsys.readouterr().out
