"""KPIs, plot and table of the long-format grid constraint table
(cosim.results.constraint_report)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim.results.constraint_report import (
    CONSTRAINT_COLUMNS,
    check_constraint_frame,
    constraint_kpis,
    constraint_table_md,
    constraint_totals,
    plot_constraints,
)

HOURS_ATOL = 1e-12
VALUE_ATOL = 1e-12
DT_H = 0.25
NAN = math.nan

#: measured values per constraint over steps 0..9; step 4 did not converge
TRAFO = [90.0, 100.0, 105.0, 110.0, NAN, 95.0, 101.0, 80.0, 100.0, 99.0]  # > 100 at 2, 3, 6
VMIN = [0.96, 0.95, 0.94, 0.97, NAN, 0.93, 0.98, 0.99, 0.96, 0.97]  # < 0.95 at 2, 5
PEAK = [400.0, 480.0, 450.0, 300.0, 350.0, 410.0, 420.0, 430.0, 440.0, 460.0]  # never > 500
SPREAD = [0.0, 0.1, 0.2, 0.2, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0]


def _rows(name: str, kind: str, limit: float, measured: list[float],
          spread: list[float] | None = None) -> list[dict]:
    sign = 1.0 if kind != "voltage_min" else -1.0
    rows = []
    for t, value in enumerate(measured):
        excess = sign * (value - limit) / abs(limit)
        rows.append({
            "time": t, "constraint": name, "kind": kind, "measured": value, "limit": limit,
            "excess": excess, "mu": 0.1 * t, "mu_spread": spread[t] if spread else 0.0,
            "sign": sign,
        })
    return rows


def _frame(*blocks: list[dict]) -> pd.DataFrame:
    """Rows step by step (all constraints of step 0, then step 1, ...) as the run writes."""
    frame = pd.DataFrame([row for block in blocks for row in block],
                         columns=list(CONSTRAINT_COLUMNS))
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    return frame.astype({"time": "int64"})


@pytest.fixture
def frame() -> pd.DataFrame:
    return _frame(
        _rows("trafo 0 loading", "loading_max", 100.0, TRAFO, SPREAD),
        _rows("voltage min", "voltage_min", 0.95, VMIN),
        _rows("peak kW", "peak_kw_max", 500.0, PEAK),
    )


def test_kpis_in_first_appearance_order(frame: pd.DataFrame) -> None:
    kpis = constraint_kpis(frame, DT_H)
    assert list(kpis) == ["trafo 0 loading", "voltage min", "peak kW"]
    assert [k["kind"] for k in kpis.values()] == ["loading_max", "voltage_min", "peak_kw_max"]


def test_violation_hours_are_strict_and_skip_unknown_steps(frame: pd.DataFrame) -> None:
    kpis = constraint_kpis(frame, DT_H)
    # values equal to the limit (trafo at steps 1 and 8, voltage at step 1) do not count
    assert kpis["trafo 0 loading"]["violation_hours"] == pytest.approx(3 * DT_H, abs=HOURS_ATOL)
    assert kpis["voltage min"]["violation_hours"] == pytest.approx(2 * DT_H, abs=HOURS_ATOL)
    assert kpis["peak kW"]["violation_hours"] == pytest.approx(0.0, abs=HOURS_ATOL)
    assert kpis["trafo 0 loading"]["unknown_steps"] == 1
    assert kpis["voltage min"]["unknown_steps"] == 1
    assert kpis["peak kW"]["unknown_steps"] == 0


def test_value_at_limit_is_no_violation() -> None:
    at_limit = _frame(_rows("line 1 loading", "loading_max", 100.0, [100.0] * 4),
                      _rows("voltage min", "voltage_min", 0.95, [0.95] * 4))
    kpis = constraint_kpis(at_limit, DT_H)
    for kpi in kpis.values():
        assert kpi["violation_hours"] == pytest.approx(0.0, abs=HOURS_ATOL)
        assert kpi["worst_excess"] == pytest.approx(0.0, abs=VALUE_ATOL)
    assert constraint_totals(at_limit, DT_H)["grid_constraint_violation_hours"] == 0.0


def test_worst_excess_and_step(frame: pd.DataFrame) -> None:
    kpis = constraint_kpis(frame, DT_H)
    trafo, vmin, peak = kpis["trafo 0 loading"], kpis["voltage min"], kpis["peak kW"]
    assert trafo["worst_excess"] == pytest.approx(10.0, abs=VALUE_ATOL)
    assert trafo["worst_step"] == 3
    # voltage_min: limit - measured, positive when violated (0.95 - 0.93 at step 5)
    assert vmin["worst_excess"] == pytest.approx(0.02, abs=VALUE_ATOL)
    assert vmin["worst_step"] == 5
    # never reached: negative (500 - 480 below the limit at step 1)
    assert peak["worst_excess"] == pytest.approx(-20.0, abs=VALUE_ATOL)
    assert peak["worst_step"] == 1
    assert trafo["limit"] == pytest.approx(100.0, abs=VALUE_ATOL)
    assert vmin["limit"] == pytest.approx(0.95, abs=VALUE_ATOL)


def test_voltage_min_never_violated_has_negative_worst_excess() -> None:
    high = _frame(_rows("voltage min", "voltage_min", 0.95, [0.99, 0.97, NAN, 1.0]))
    kpi = constraint_kpis(high, DT_H)["voltage min"]
    assert kpi["worst_excess"] == pytest.approx(0.95 - 0.97, abs=VALUE_ATOL)
    assert kpi["worst_step"] == 1
    assert kpi["violation_hours"] == pytest.approx(0.0, abs=HOURS_ATOL)


def test_multiplier_statistics(frame: pd.DataFrame) -> None:
    trafo = constraint_kpis(frame, DT_H)["trafo 0 loading"]
    mu = 0.1 * np.arange(10)
    np.testing.assert_allclose(trafo["mu_max"], mu.max(), atol=VALUE_ATOL, rtol=0)
    np.testing.assert_allclose(trafo["mu_mean"], mu.mean(), atol=VALUE_ATOL, rtol=0)
    np.testing.assert_allclose(trafo["mu_spread_max"], max(SPREAD), atol=VALUE_ATOL, rtol=0)


def test_totals_count_hours_with_any_violation(frame: pd.DataFrame) -> None:
    totals = constraint_totals(frame, DT_H)
    assert totals["grid_constraints"] == 3
    # steps 2, 3, 6 (trafo) and 2, 5 (voltage): 4 distinct steps
    assert totals["grid_constraint_violation_hours"] == pytest.approx(4 * DT_H, abs=HOURS_ATOL)
    assert totals["grid_constraint_unknown_steps"] == 1


def test_output_is_strict_json_with_plain_types(frame: pd.DataFrame) -> None:
    never_known = _frame(_rows("line 7 loading", "loading_max", 100.0, [NAN] * 10))
    mixed = pd.concat([frame, never_known], ignore_index=True)
    kpis = constraint_kpis(mixed, DT_H)
    assert kpis["line 7 loading"]["worst_excess"] is None
    assert kpis["line 7 loading"]["worst_step"] is None
    assert kpis["line 7 loading"]["unknown_steps"] == 10
    payload = {"kpis": kpis, "totals": constraint_totals(mixed, DT_H)}
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text) == payload
    for kpi in kpis.values():
        for key, value in kpi.items():
            assert value is None or type(value) in (int, float, str), (key, type(value))


def test_plot_written_and_names_chosen_by_violation_hours(frame: pd.DataFrame,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "plots" / "constraints.png"
    names = plot_constraints(frame, path, max_panels=2, title="test run")
    assert names == ["trafo 0 loading", "voltage min"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_constraints(frame, tmp_path / "one.png", max_panels=1) == ["trafo 0 loading"]
    assert plot_constraints(frame, tmp_path / "all.png") == [
        "trafo 0 loading", "voltage min", "peak kW"]


def test_plot_ties_broken_by_worst_excess_then_name(tmp_path: Path) -> None:
    tied = _frame(
        _rows("b line", "loading_max", 100.0, [101.0, 90.0]),  # 1 step, excess 1
        _rows("a line", "loading_max", 100.0, [90.0, 101.0]),  # 1 step, excess 1
        _rows("c line", "loading_max", 100.0, [130.0, 90.0]),  # 1 step, excess 30
    )
    assert plot_constraints(tied, tmp_path / "tied.png") == ["c line", "a line", "b line"]


def test_plot_handles_all_nan_constraint(tmp_path: Path) -> None:
    frame = _frame(_rows("line 7 loading", "loading_max", 100.0, [NAN] * 5),
                   _rows("voltage max", "voltage_max", 1.05, [1.0, NAN, 1.06, 1.04, NAN]))
    names = plot_constraints(frame, tmp_path / "nan.png")
    assert names == ["voltage max", "line 7 loading"]
    assert (tmp_path / "nan.png").stat().st_size > 0


def test_table_markdown(frame: pd.DataFrame) -> None:
    table = constraint_table_md(constraint_kpis(frame, DT_H))
    lines = table.strip().splitlines()
    assert lines[0] == "| constraint | kind | limit | violation h | worst excess | max mu |"
    assert len(lines) == 2 + 3
    assert lines[2].startswith("| trafo 0 loading | loading_max | 100 % |")
    assert ">= 0.75 (1 steps unknown)" in lines[2]
    assert "| -20 kW |" in lines[4]


def test_missing_columns_are_named(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="mu_spread, sign"):
        check_constraint_frame(frame.drop(columns=["mu_spread", "sign"]))
    with pytest.raises(ValueError, match="measured"):
        constraint_kpis(frame.drop(columns=["measured"]), DT_H)


def test_unknown_kind_rejected(frame: pd.DataFrame) -> None:
    frame.loc[0, "kind"] = "current_max"
    with pytest.raises(ValueError, match="current_max"):
        check_constraint_frame(frame)


def test_empty_frame_rejected(tmp_path: Path) -> None:
    empty = pd.DataFrame(columns=list(CONSTRAINT_COLUMNS))
    with pytest.raises(ValueError, match="empty"):
        plot_constraints(empty, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="empty"):
        constraint_kpis(empty, DT_H)
    assert not (tmp_path / "empty.png").exists()


@pytest.mark.parametrize("dt_h", [0.0, -1.0, math.nan])
def test_bad_step_length_rejected(frame: pd.DataFrame, dt_h: float) -> None:
    with pytest.raises(ValueError, match="dt_h"):
        constraint_kpis(frame, dt_h)
