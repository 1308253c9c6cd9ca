"""A third-party mosaik simulator attached to one building (mosaik-csv, from the ecosystem).

The default wiring moves arrays between fleet-level entities; a ``Building`` entity of
the fleet simulator still lets anyone's simulator feed one building. Here mosaik-csv
feeds an extra load to B3: its demand rises by exactly the CSV's values, every other
building is unchanged, and the energy balance still holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim.engine.run import execute, prepare_scenario
from cosim.results.readers import read_table

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
STEPS = 24
TARGET = "B3"
DEMAND_ATOL_KWH = 1e-12  # (base + extra / scale) * scale vs base * scale + extra
BALANCE_ATOL_KWH = 1e-9


def _csv(path: Path) -> np.ndarray:
    extra = 0.5 + 0.1 * np.arange(STEPS)
    dates = pd.date_range("2022-08-01 00:00:00", periods=STEPS, freq="h")
    lines = ["ExtraLoad", "Date,P"] + [f"{d:%Y-%m-%d %H:%M:%S},{v:.1f}"
                                        for d, v in zip(dates, extra, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return np.round(extra, 1)


def _run(out: Path, csv_path: Path | None) -> pd.DataFrame:
    sc, built = prepare_scenario(SCENARIO, [("output.plots", False)], steps=STEPS)
    extend = extra_sims = None
    if csv_path is not None:
        extra_sims = {"CSV": {"python": "mosaik_csv:CSV"}}

        def extend(handles) -> None:
            csv = handles.world.start("CSV", sim_start="2022-08-01 00:00:00",
                                      datafile=str(csv_path))
            load = csv.ExtraLoad.create(1)[0]
            handles.world.connect(load, handles.building(TARGET), ("P", "extra_demand_kwh"))

    execute(sc, built, out, progress=False, extend=extend, extra_sims=extra_sims)
    return read_table(out, "buildings")


@pytest.mark.cosim
def test_mosaik_csv_feeds_one_building(tmp_path: Path):
    extra = _csv(tmp_path / "extra.csv")
    base = _run(tmp_path / "base", None)
    fed = _run(tmp_path / "fed", tmp_path / "extra.csv")
    d_base = base.pivot(index="time", columns="building", values="demand_kwh")
    d_fed = fed.pivot(index="time", columns="building", values="demand_kwh")
    np.testing.assert_allclose(d_fed[TARGET] - d_base[TARGET], extra, rtol=0,
                               atol=DEMAND_ATOL_KWH)
    others = [c for c in d_base.columns if c != TARGET]
    pd.testing.assert_frame_equal(d_fed[others], d_base[others], check_exact=True)
    assert fed.groupby("time").grid_kwh.sum().sum() > base.groupby("time").grid_kwh.sum().sum()
    b = fed[fed.building == TARGET].sort_values("time")
    previous = b.backlog_kwh.shift(1, fill_value=0.0).to_numpy()
    lhs = b.demand_kwh.to_numpy() + previous
    rhs = (b.grid_kwh + b.battery_kwh + b.backlog_kwh + b.dropped_kwh).to_numpy()
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=BALANCE_ATOL_KWH)


def test_attaching_an_unknown_building_is_refused(tmp_path: Path):
    sc, built = prepare_scenario(SCENARIO, [("output.plots", False)], steps=2)

    def extend(handles) -> None:
        handles.building("B99")

    with pytest.raises(ValueError, match="unknown building 'B99'"):
        execute(sc, built, tmp_path / "run", progress=False, extend=extend)
