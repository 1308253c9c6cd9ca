"""Streamed end of run (issue 11, section 4).

* ``RunWriter.finalize`` appends the parts, one at a time, to the final Parquet files
  (one row group per part); what ``pd.read_parquet`` gives equals joining the parts in
  memory (the way it was done before), schema and dtypes included, and a run killed
  during finalize leaves its parts and no half-written final file.
* ``kpis.json`` comes from column-projected reads in pieces of whole steps and equals,
  bit for bit, the KPIs computed the old way from the whole tables read with pandas
  (``_old_*`` below are verbatim copies of the code before the change, but for the
  lambda spread of issue 12, computed here from the pivoted table). Every KPI is
  the same arithmetic in the same order, so the tolerance is zero; the totals use
  numpy's pairwise summation reproduced block by block (``PairwiseSum``).
* ``read_table`` reads complete and interrupted runs, all or some columns.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import agents.fleet.kpis as fleet_kpis_module
import cosim.results.jsonio as jsonio
import cosim.results.plots as plots
import cosim.results.readers as readers
import cosim.results.report as report
import cosim.results.writer as results
from agents.fleet.kpis import FLEET_KPI_COLUMNS, FleetKpiStream, PairwiseSum, fleet_kpis
from cosim.engine.checkpoint import STATE_DIR
from cosim.engine.run import execute, prepare_scenario
from cosim.results.parts import BUILDING_VALUE_COLUMNS, PARTS_DIR, TABLES
from cosim.results.readers import TableScan, read_table
from cosim.results.rundir import RunDirError
from cosim.results.writer import RunWriter
from grid_models.kpis import grid_kpis
from grid_models.powerflow.interface import BatchGridResult

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = REPO_ROOT / "scenarios"
KPI_RTOL = 0.0  # same arithmetic in the same order as the whole-table computation: exact
LAMBDA_MAX = 15.0
SMALL_BLOCK = 128  # the smallest PairwiseSum block: many blocks even for small tables
ODD_BATCH = 37  # pieces that cut steps apart


# --- the code before the change, kept as the reference ------------------------------------

def _old_fleet_kpis(df: pd.DataFrame, limit_kwh: float, dt_h: float,
                    lambda_max: float = 15.0) -> dict:
    grid = df.groupby("time", sort=True)["grid_kwh"].sum().to_numpy()
    steps = int(grid.shape[0])
    mean_grid = float(grid.mean())
    peak = float(grid.max())
    last = df[df["time"] == df["time"].max()]
    lam = last["lambda"].to_numpy(dtype=np.float64)
    unmet = df.groupby("time", sort=True)["unmet_kwh"].sum()
    cu = unmet.cumsum() / np.arange(1, len(unmet) + 1)
    return {
        "n_buildings": int(df["building"].nunique()),
        "steps": steps,
        "total_cost": float(df["cost"].sum()),
        "mean_district_grid_kwh": mean_grid,
        "limit_kwh": float(limit_kwh),
        "steps_over_limit": int((grid > limit_kwh).sum()),
        "final_avg_unmet_kwh": float(cu.iloc[-1]),
        "dropped_kwh": float(df["dropped_kwh"].sum()),
        "peak_district_import_kwh": peak,
        "peak_district_import_kw": peak / dt_h,
        "peak_to_average": peak / mean_grid if mean_grid > 0 else None,
        "ramping_kwh": float(np.abs(np.diff(grid)).sum()),
        **_reference_lambda_spread(df, steps, lambda_max),
        "final_lambda": [float(x) for x in lam],
        "agents_at_lambda_max": int((lam >= lambda_max - 1e-9).sum()),
    }


def _reference_lambda_spread(df: pd.DataFrame, steps: int, lambda_max: float) -> dict:
    wide = df.pivot(index="time", columns="building", values="lambda").to_numpy()
    spread = np.nanmax(wide, axis=1) - np.nanmin(wide, axis=1)
    window = spread[-math.ceil(steps / 10):]
    return {"lambda_spread_last10pct": float(window.max()),
            "lambda_spread_last10pct_mean": float(window.mean()),
            "lambda_spread_last10pct_rel": float(window.max()) / lambda_max}


def _old_wide(frame: pd.DataFrame, key: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    wide = frame.pivot(index="time", columns=key, values=value).sort_index()
    return wide.columns.to_numpy(), wide.to_numpy(dtype=float)


def _old_grid_batch(run_dir: Path) -> BatchGridResult:
    g = pd.read_parquet(run_dir / "grid.parquet").sort_values("time")
    buses, lines, trafos = (pd.read_parquet(run_dir / f"{t}.parquet")
                            for t in ("buses", "lines", "trafos"))
    _, vm = _old_wide(buses, "bus", "vm_pu")
    _, p = _old_wide(buses, "bus", "p_mw")
    _, q = _old_wide(buses, "bus", "q_mvar")
    steps = len(g)

    def wide_or_empty(frame: pd.DataFrame, key: str, value: str) -> np.ndarray:
        return _old_wide(frame, key, value)[1] if len(frame) else np.zeros((steps, 0))

    return BatchGridResult(
        bus_vm_pu=vm, bus_va_degree=np.full_like(vm, np.nan), bus_p_mw=p, bus_q_mvar=q,
        line_loading_percent=wide_or_empty(lines, "line", "loading_percent"),
        line_i_ka=wide_or_empty(lines, "line", "i_ka"),
        trafo_loading_percent=wide_or_empty(trafos, "trafo", "loading_percent"),
        trafo_p_hv_mw=wide_or_empty(trafos, "trafo", "p_hv_mw"),
        losses_mw=g["losses_mw"].to_numpy(), ext_grid_p_mw=g["ext_grid_p_mw"].to_numpy(),
        ext_grid_q_mvar=g["ext_grid_q_mvar"].to_numpy(), converged=g["converged"].to_numpy(),
        steps=g["time"].to_numpy(),
    )


def _old_join(parts_dir: Path, table: str) -> pd.DataFrame:
    """What the old ``finalize`` wrote, read back: all parts joined in memory."""
    parts = sorted((parts_dir / table).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pandas()


def _reference_kpis(run_dir: Path, limit_kwh: float, dt_h: float) -> dict:
    buildings = pd.read_parquet(run_dir / "buildings.parquet")
    return {"fleet": _old_fleet_kpis(buildings, limit_kwh, dt_h, LAMBDA_MAX),
            "grid": grid_kpis(_old_grid_batch(run_dir), dt_h)}


def _same(got: dict, want: dict) -> None:
    """Equal KPI dicts; numbers compared within ``KPI_RTOL`` (zero: bit for bit)."""
    assert got.keys() == want.keys()
    for key, value in want.items():
        value = jsonio.json_safe(value)
        if isinstance(value, list):
            np.testing.assert_allclose(got[key], value, rtol=KPI_RTOL, atol=0, err_msg=key)
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=KPI_RTOL, abs=0), key
            assert float(got[key]) == value, key
        else:
            assert got[key] == value, key


# --- a synthetic run written by a RunWriter ---------------------------------------------

N_BUSES, N_LINES, N_TRAFOS = 6, 4, 1
DEAD_LINE = 3  # de-energised: NaN in every step


def _grid_result(t: int, rng: np.random.Generator, *, converged: bool) -> SimpleNamespace:
    def values(n: int, low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, n) if converged else np.full(n, np.nan)

    line = values(N_LINES, 20, 130)
    line[DEAD_LINE] = np.nan
    if converged and t == 5:
        line[1] = np.nan  # a live line without a value: the step is unknown for lines
    scalar = (lambda v: v) if converged else (lambda v: np.nan)
    return SimpleNamespace(
        bus_vm_pu=values(N_BUSES, 0.88, 1.12), bus_va_degree=values(N_BUSES, -5, 5),
        bus_p_mw=values(N_BUSES, -1, 1), bus_q_mvar=values(N_BUSES, -1, 1),
        line_loading_percent=line, line_i_ka=values(N_LINES, 0, 1),
        trafo_loading_percent=values(N_TRAFOS, 40, 140), trafo_p_hv_mw=values(N_TRAFOS, 0, 1),
        losses_mw=scalar(rng.uniform(0, 0.1)), ext_grid_p_mw=scalar(rng.uniform(0, 1)),
        ext_grid_q_mvar=scalar(rng.uniform(0, 1)), converged=converged, step=t)


def make_writer_run(run_dir: Path, n_buildings: int = 11, steps: int = 47,
                    flush_every: int = 10, seed: int = 0) -> RunWriter:
    """A RunWriter fed ``steps`` steps of random results, parts flushed, not finalised.

    Step 7 did not converge; line 3 is de-energised; line 1 lacks a value at step 5.
    """
    rng = np.random.default_rng(seed)
    ids = [f"B{i:03d}" for i in range(n_buildings)]
    writer = RunWriter(run_dir, ids, np.arange(n_buildings) % N_BUSES, np.arange(N_BUSES),
                       np.arange(N_LINES), np.arange(N_TRAFOS), steps, flush_every,
                       engine="plain", heartbeat_s=0)
    for t in range(steps):
        values = {c: rng.uniform(0, 3, n_buildings) for c in BUILDING_VALUE_COLUMNS}
        values["lambda"] = np.where(rng.random(n_buildings) < 0.3, LAMBDA_MAX,
                                    rng.uniform(0, LAMBDA_MAX, n_buildings))
        values["dropped_kwh"][rng.random(n_buildings) < 0.5] = 0.0
        writer.add_buildings(t, values)
        writer.add_grid(t, _grid_result(t, rng, converged=t != 7))
        writer.step_done(t)
    return writer


@pytest.fixture()
def synthetic(tmp_path: Path) -> tuple[Path, Path]:
    """(finalised run, copy of its parts taken just before finalize)."""
    run = tmp_path / "run"
    writer = make_writer_run(run)
    writer.flush()
    saved = tmp_path / "parts"
    shutil.copytree(run / PARTS_DIR, saved)
    writer.finalize()
    writer.close()
    return run, saved


def test_finalize_appends_parts_equal_to_joining_them(synthetic):
    run, saved = synthetic
    assert not (run / PARTS_DIR).exists() and not (run / STATE_DIR).exists()
    assert not list(run.glob("*.tmp"))
    for table in TABLES:
        parts = sorted((saved / table).glob("part-*.parquet"))
        assert len(parts) == 5  # 47 steps, flush_every 10
        final = run / f"{table}.parquet"
        got = pd.read_parquet(final)
        pd.testing.assert_frame_equal(got, _old_join(saved, table), check_exact=True)
        pd.testing.assert_frame_equal(read_table(run, table), got, check_exact=True)
        meta = pq.ParquetFile(final).metadata
        assert meta.num_row_groups == len(parts)  # row groups = parts
        assert [meta.row_group(i).num_rows for i in range(len(parts))] == \
            [pq.read_metadata(p).num_rows for p in parts]
        assert pq.read_schema(final).equals(pq.read_schema(parts[0]), check_metadata=True)
    b = pd.read_parquet(run / "buildings.parquet")
    assert b["building"].dtype == object and isinstance(b["building"].iat[0], str)
    assert b["time"].dtype == np.int64 and b["bus"].dtype == np.int64


def test_write_joined_decodes_dictionary_parts(tmp_path: Path):
    """Parts with a dictionary-typed ``building`` still give plain strings on read."""
    frame = pd.DataFrame({"time": np.repeat(np.arange(4), 3), "building": ["a", "b", "c"] * 4,
                          "x": np.arange(12.0)})
    plain = pa.Table.from_pandas(frame, preserve_index=False)
    coded = plain.set_column(1, "building", pa.compute.dictionary_encode(plain["building"]))
    pq.write_table(plain.slice(0, 6), tmp_path / "p0.parquet")
    pq.write_table(coded.slice(6), tmp_path / "p1.parquet")
    assert results.write_joined([tmp_path / "p0.parquet", tmp_path / "p1.parquet"],
                                tmp_path / "all.parquet") == 12
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "all.parquet"), frame,
                                  check_exact=True)


def test_finalize_interrupted_leaves_parts_and_no_final_file(tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    writer = make_writer_run(run)
    writer.flush()  # the last, partial flush; finalize's own flush then writes nothing
    expected = {t: read_table(run, t) for t in TABLES}
    assert len(expected["buildings"]) == 47 * 11
    calls = []
    real = results.write_joined

    def interrupted(parts, path):
        calls.append(path)
        if len(calls) == 3:
            real(parts[:1], path)
            raise KeyboardInterrupt("killed while joining")
        return real(parts, path)

    monkeypatch.setattr(results, "write_joined", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer.finalize()
    writer.close()
    assert not [p for p in run.iterdir() if p.name.endswith((".parquet", ".tmp"))]
    for table in TABLES:
        pd.testing.assert_frame_equal(read_table(run, table), expected[table], check_exact=True)


KILL_SCRIPT = """
import os, sys
from pathlib import Path
import pyarrow.parquet as pq
from tests.cosim.test_streamed_results import make_writer_run
writer = make_writer_run(Path(sys.argv[1]))
real = pq.ParquetWriter.write_table
count = [0]
def write_table(self, table, row_group_size=None):
    count[0] += 1
    if count[0] == 5 + 5 + 3:  # last flush (5 tables), buildings (5 parts), 3rd part of buses
        os._exit(9)
    return real(self, table, row_group_size=row_group_size)
pq.ParquetWriter.write_table = write_table
writer.finalize()
"""


def test_finalize_killed_hard_leaves_no_final_file(tmp_path: Path):
    """A process that dies (no clean-up) in finalize: a ``.tmp`` at most, the parts intact;
    a later finalize (as after ``--resume``) writes the files over the leftover."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(run)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not [p for p in run.iterdir() if p.name.endswith(".parquet")]
    assert {p.name for p in run.iterdir() if p.name.endswith(".tmp")} == {
        "buildings.parquet.tmp", "buses.parquet.tmp"}  # written, never renamed
    reference = tmp_path / "reference"
    ref_writer = make_writer_run(reference)
    ref_writer.flush()  # all 47 steps in parts, as the killed finalize had them
    ref_writer.close()
    for table in TABLES:
        pd.testing.assert_frame_equal(read_table(run, table), read_table(reference, table),
                                      check_exact=True)
    parts = run / PARTS_DIR / "buses"
    results.write_joined(sorted(parts.glob("part-*.parquet")), run / "buses.parquet.tmp")
    pd.testing.assert_frame_equal(pd.read_parquet(run / "buses.parquet.tmp"),
                                  read_table(reference, "buses"), check_exact=True)


def test_kpis_of_synthetic_run_equal_old_computation(synthetic, monkeypatch):
    run, _ = synthetic
    want = _reference_kpis(run, limit_kwh=17.0, dt_h=0.5)
    assert want["grid"]["nonconverged_steps"] == 1
    assert want["grid"]["line_overload_hours_unknown_steps"] >= 1  # the NaN line at step 5
    for batch_rows, block in ((None, None), (ODD_BATCH, SMALL_BLOCK), (1, SMALL_BLOCK)):
        if batch_rows is not None:
            monkeypatch.setattr(readers, "SCAN_BATCH_ROWS", batch_rows)
            monkeypatch.setattr(fleet_kpis_module, "PAIRWISE_BLOCK", block)
        got = report.compute_kpis(run, 17.0, 0.5, LAMBDA_MAX, "synthetic")
        _same(got["fleet"], want["fleet"])
        _same(got["grid"], want["grid"])


def test_read_table_columns_complete_and_interrupted(tmp_path: Path):
    run = tmp_path / "run"
    writer = make_writer_run(run)  # parts only: an interrupted run
    full = read_table(run, "buildings")
    assert len(full) == 40 * 11  # whole flushes: 4 parts of 10 steps
    some = read_table(run, "buildings", columns=["lambda", "time"])
    assert list(some.columns) == ["lambda", "time"]
    pd.testing.assert_frame_equal(some, full[["lambda", "time"]], check_exact=True)
    with pytest.raises(RunDirError, match="no column 'nope'"):
        read_table(run, "buildings", columns=["time", "nope"])
    scan = TableScan(run, "buildings", ["grid_kwh"], batch_rows=ODD_BATCH)
    assert scan.num_rows == len(full)
    pieces = list(scan.steps())
    assert all(list(p.columns) == ["time", "grid_kwh"] for p in pieces)
    times = [set(p["time"]) for p in pieces]
    assert all(not (a & b) for a, b in zip(times, times[1:], strict=False))  # whole steps
    pd.testing.assert_frame_equal(pd.concat(pieces, ignore_index=True),
                                  full[["time", "grid_kwh"]], check_exact=True)
    writer.finalize()
    writer.close()
    pd.testing.assert_frame_equal(read_table(run, "buildings", columns=["lambda", "time"]),
                                  read_table(run, "buildings")[["lambda", "time"]],
                                  check_exact=True)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 1000, 4097, 100_003, 1_234_567])
def test_pairwise_sum_equals_numpy_and_pandas(n: int):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 6, n)
    if n > 10:
        x[rng.integers(0, n, 5)] = np.nan
    frame = pd.DataFrame({"a": rng.random(n), "x": x, "b": rng.random(n)})
    want = frame["x"].sum()  # as the old KPIs summed a column of the read table
    assert want == np.sum(np.nan_to_num(x, nan=0.0))
    for block in (SMALL_BLOCK, 1000, 1 << 16):
        acc = PairwiseSum(n, block)
        cuts = np.sort(rng.integers(0, n + 1, 7)) if n else np.zeros(0, dtype=int)
        for piece in np.split(x, cuts):
            acc.add(piece)
        assert acc.result() == want, (n, block)


def test_fleet_kpi_stream_equals_fleet_kpis_in_memory(synthetic):
    run, _ = synthetic
    df = pd.read_parquet(run / "buildings.parquet")
    want = _old_fleet_kpis(df, 17.0, 0.5, LAMBDA_MAX)
    _same(fleet_kpis(df, 17.0, 0.5, LAMBDA_MAX), want)
    scan = TableScan(run, "buildings", FLEET_KPI_COLUMNS, batch_rows=ODD_BATCH)
    stream = FleetKpiStream(scan.num_rows, block=SMALL_BLOCK)
    for piece in scan.steps():
        stream.add(piece)
    _same(stream.kpis(17.0, 0.5, LAMBDA_MAX), want)


def test_plots_read_only_what_they_draw(synthetic, monkeypatch):
    run, _ = synthetic
    kpis = report.compute_kpis(run, 17.0, 0.5, LAMBDA_MAX, "synthetic")
    read: list[tuple[str, tuple]] = []
    real = TableScan.__init__

    def spy(self, run_dir, table, columns=None, **kw):
        read.append((table, tuple(columns) if columns is not None else None))
        real(self, run_dir, table, columns, **kw)

    monkeypatch.setattr(TableScan, "__init__", spy)
    paths = plots.write_plots(run, kpis)
    assert {p.name for p in paths} == {"district_grid.png", "lambda.png", "unmet.png",
                                       "trafo_duration.png", "line_duration.png",
                                       "voltage_envelope.png", "worst_bus_voltage.png"}
    assert ("buildings", report.PLOT_BUILDING_COLUMNS) in read
    assert all(cols is not None for _, cols in read)
    # the values drawn (the element ids for the labels come from the same reads)
    assert {cols for table, cols in read if table != "buildings"} == \
        {("time", "bus", "vm_pu"), ("time", "trafo", "loading_percent"),
         ("time", "line", "loading_percent")}


def test_grid_batch_equals_pivoted_tables(synthetic):
    run, _ = synthetic
    old, new = _old_grid_batch(run), report.grid_batch(run)
    for name in ("bus_vm_pu", "bus_va_degree", "bus_p_mw", "bus_q_mvar", "line_loading_percent",
                 "line_i_ka", "trafo_loading_percent", "trafo_p_hv_mw", "losses_mw",
                 "ext_grid_p_mw", "ext_grid_q_mvar", "converged", "steps"):
        np.testing.assert_array_equal(getattr(new, name), getattr(old, name), err_msg=name)
    kpi_only = report.grid_batch(run, report.KPI_GRID_FIELDS)
    assert kpi_only.bus_p_mw.shape == (len(old), 0)
    np.testing.assert_array_equal(kpi_only.bus_vm_pu, old.bus_vm_pu)


# --- real runs: kpis.json against the old computation -----------------------------------

RUNS = {
    # 7 homes, per-agent lambda lines; parts of 10 steps
    "fig1d": ("paper_fig1d.yaml", 96, [("output.flush_every", 10)]),
    # 40 homes (lambda band), SimBench feeder with transformer overloads
    "semiurb": ("lv_semiurb_40.yaml", 48, [("output.flush_every", 7),
                                           ("controller.kind", "none")]),
}


@pytest.mark.cosim
@pytest.mark.parametrize("name", list(RUNS))
def test_kpis_json_of_a_run_equal_old_computation(tmp_path: Path, name: str):
    scenario, steps, overrides = RUNS[name]
    sc, built = prepare_scenario(SCENARIOS / scenario, overrides, steps=steps)
    run = execute(sc, built, tmp_path / name, progress=False, engine="plain").run_dir
    kpis = json.loads((run / "kpis.json").read_text())
    want = _reference_kpis(run, built.limit_kwh, sc.time.step_h)
    _same(kpis["fleet"], json.loads(json.dumps(jsonio.json_safe(want["fleet"]))))
    _same(kpis["grid"], json.loads(json.dumps(jsonio.json_safe(want["grid"]))))
    assert kpis["fleet"]["steps"] == steps
    assert {p.name for p in (run / "plots").iterdir()} >= {
        "district_grid.png", "lambda.png", "unmet.png", "trafo_duration.png",
        "voltage_envelope.png", "comm_graph.png"}
    assert not (run / PARTS_DIR).exists() and not (run / STATE_DIR).exists()
    for table in TABLES:
        assert pq.ParquetFile(run / f"{table}.parquet").metadata.num_row_groups == \
            -(-steps // sc.output.flush_every)
