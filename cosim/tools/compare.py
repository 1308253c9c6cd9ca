"""``cosim compare RUN REFERENCE``: a run against a reference, table by table, KPI by KPI.

Every value column of every table the reference holds (``status.json``'s ``tables``) is
compared row by row, matched on the table's keys (``time`` and the element), with a
named tolerance per quantity: a value passes when ``|run - ref| <= atol + rtol * |ref|``
(NaN matches NaN only: an unknown step must stay unknown). Then every number of
``kpis.json`` (timings left out). A check fails on a value beyond its tolerance, on rows
or keys that do not match, or on a table or column the run lacks. Rows are matched by an
inner join, so value and label columns keep their dtypes. Runs that cover different steps
fail with one check, ``steps``, and nothing else; ``overlap`` compares the common steps
(without ``kpis.json``). A NaN or ``null`` KPI matches only a NaN or ``null``.

Tolerances (:data:`DEFAULT_TOLERANCES`) are looked up by ``<table>.<column>`` first, then
``<column>``, then the default ``*``; KPIs by ``kpi.<section>.<key>``, ``kpi.<key>`` and
``kpi.*``. They are overridden by a tolerance file (YAML or JSON, ``{quantity: {atol: ..,
rtol: ..}}``) and by options (``--atol vm_pu=1e-3``). The defaults are tight: a rerun on
the same machine gives identical numbers (tests rely on it), so they only absorb
floating-point noise of another CPU or library build.

:func:`compare_runs` returns a :class:`Comparison` (one :class:`Check` per quantity, the
worst difference with its element and time); :func:`assert_run_matches` puts the same
check in a user's pytest suite; :func:`junit_xml` writes it for CI.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd

from agents.fleet.calendar import row_datetimes
from grid_models.errors import InputError

#: The keys of each table (the rest are values).
TABLE_KEYS = {"buildings": ("time", "building"), "buses": ("time", "bus"),
              "lines": ("time", "line"), "trafos": ("time", "trafo"), "grid": ("time",),
              "constraints": ("time", "constraint")}
#: Columns that describe rather than measure (compared exactly, as text).
LABEL_COLUMNS = {"buildings": ("bus",), "constraints": ("kind",)}
#: KPIs that measure the machine, not the run.
TIMING_KPIS = ("wall_s", "steps_per_s")


@dataclass(frozen=True)
class Tolerance:
    """``|run - ref| <= atol + rtol * |ref|``."""

    atol: float = 0.0
    rtol: float = 0.0

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"tolerance {name} must be a finite number >= 0, got {value!r}")

    def text(self) -> str:
        """The tolerance as text: ``atol 1e-09, rtol 1e-07`` (rtol left out when 0)."""
        return f"atol {self.atol:g}" + (f", rtol {self.rtol:g}" if self.rtol else "")


#: Named tolerances per quantity (units in the names; see the module docstring).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "*": Tolerance(atol=1e-9, rtol=1e-9),
    # buildings: energies in kWh per step, money, multipliers
    "buildings.cost": Tolerance(atol=1e-9),
    "lambda": Tolerance(atol=1e-9), "mu": Tolerance(atol=1e-9), "nu": Tolerance(atol=1e-9),
    "lambda_eff": Tolerance(atol=1e-9),
    # power flow: the solver's own tolerance (power-grid-model 1e-8 pu)
    "vm_pu": Tolerance(atol=1e-7),
    "p_mw": Tolerance(atol=1e-9), "q_mvar": Tolerance(atol=1e-9),
    "loading_percent": Tolerance(atol=1e-5),
    "i_ka": Tolerance(atol=1e-8), "p_hv_mw": Tolerance(atol=1e-9),
    "losses_mw": Tolerance(atol=1e-9),
    "ext_grid_p_mw": Tolerance(atol=1e-9), "ext_grid_q_mvar": Tolerance(atol=1e-9),
    "constraints.measured": Tolerance(atol=1e-5),
    # KPIs: relative
    "kpi.*": Tolerance(atol=1e-9, rtol=1e-7),
}


class CompareError(InputError, ValueError):
    """A run or reference that cannot be compared (not a run directory, unreadable)."""


@dataclass
class Check:
    """One compared quantity: ``table.column`` or ``kpi.<section>.<key>``."""

    quantity: str
    tolerance: Tolerance
    compared: int = 0  # values compared
    failed: int = 0  # values beyond the tolerance
    worst_diff: float = 0.0  # largest |run - ref|
    where: str = ""  # element and time of the worst difference
    run_value: Any = None
    ref_value: Any = None
    problem: str = ""  # a structural problem (missing table, keys that differ)

    @property
    def ok(self) -> bool:
        """Whether every value is within the tolerance and nothing structural is wrong."""
        return self.failed == 0 and not self.problem

    def message(self) -> str:
        """What was found: the problem, or how many values failed and the worst deviation."""
        if self.problem:
            return self.problem
        if self.compared == 0:
            return "nothing to compare"
        worst = f"worst |diff| {self.worst_diff:.3g}"
        if self.where:
            worst += f" at {self.where}: {_fmt(self.run_value)} vs {_fmt(self.ref_value)}"
        return (f"{self.failed} of {self.compared} beyond {self.tolerance.text()}; {worst}"
                if self.failed else f"{self.compared} values within {self.tolerance.text()}; "
                f"{worst}")


@dataclass
class Comparison:
    """The checks of one run against one reference."""

    run: Path
    reference: Path
    checks: list[Check] = field(default_factory=list)
    note: str = ""  # said under the headline (what --overlap left out)

    @property
    def ok(self) -> bool:
        """Whether every check passes."""
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that fail."""
        return [c for c in self.checks if not c.ok]

    def report(self, all_checks: bool = False) -> str:
        """A table: status, quantity, what was found (failures first)."""
        rows = sorted(self.checks, key=lambda c: (c.ok, c.quantity))
        if not all_checks:
            rows = [c for c in rows if not c.ok] or []
        width = max([len(c.quantity) for c in self.checks] + [8])
        lines = [f"compare {self.run} against {self.reference}: "
                 f"{len(self.checks) - len(self.failures)} of {len(self.checks)} checks pass"]
        if self.note:
            lines.append(f"  {self.note}")
        for c in rows:
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'}  {c.quantity:<{width}}  {c.message()}")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def tolerance_for(name: str, tolerances: Mapping[str, Tolerance]) -> Tolerance:
    """The tolerance of ``table.column`` (or ``kpi.section.key``): most specific first."""
    parts = name.split(".")
    candidates = [name]
    if parts[0] == "kpi":
        candidates += [f"kpi.{parts[-1]}", "kpi.*"]
    else:
        candidates += [parts[-1], "*"]
    for key in candidates:
        if key in tolerances:
            return tolerances[key]
    return DEFAULT_TOLERANCES["*"]


def load_tolerance_file(path: str | Path) -> dict[str, Tolerance]:
    """``{quantity: {atol: .., rtol: ..}}`` from YAML or JSON; errors name the entry."""
    from grid_models.support.safe_yaml import YamlProblems, read_yaml_file

    path = Path(path)
    try:
        raw = read_yaml_file(path, what="tolerance file")
    except YamlProblems as exc:
        raise CompareError(f"{path}: cannot read the tolerance file: {exc}") from None
    if not isinstance(raw, dict):
        raise CompareError(f"{path}: a tolerance file maps quantities to {{atol, rtol}}")
    out: dict[str, Tolerance] = {}
    for key, value in raw.items():
        if not isinstance(value, dict) or set(value) - {"atol", "rtol"}:
            raise CompareError(f"{path}: {key}: give a mapping with atol and/or rtol")
        try:
            out[str(key)] = Tolerance(**{k: float(v) for k, v in value.items()})
        except (TypeError, ValueError) as exc:
            raise CompareError(f"{path}: {key}: {exc}") from None
    return out


def _status_tables(run_dir: Path) -> list[str]:
    from cosim.results.readers import read_status
    from cosim.results.rundir import RunDirError

    try:
        status = read_status(run_dir)
    except (OSError, ValueError, RunDirError) as exc:
        raise CompareError(str(exc)) from None
    if status.get("state") != "complete":
        raise CompareError(f"{run_dir}: the run is {status.get('state')!r}, not complete")
    tables = status.get("tables")
    if not isinstance(tables, list) or not tables:
        raise CompareError(f"{run_dir}: status.json lists no tables")
    return [str(t) for t in tables]


def _start_row(run_dir: Path) -> int | None:
    """The data row of step 0 (``time.start`` of the run's scenario.yaml), None if unknown."""
    from cosim.scenario.errors import ScenarioError
    from cosim.scenario.loader import load_run_scenario

    try:
        return load_run_scenario(run_dir).time.start
    except ScenarioError:
        return None


def _where(keys: tuple[str, ...], row: pd.Series, start_row: int | None = None) -> str:
    """``bus 17, step 4,311 (2017-01-17 14:00)``: the keys of ``row`` and its datetime."""
    parts = [f"{k} {row[k]}" for k in keys if k != "time"]
    step = f"step {int(row['time'])}"
    if start_row is not None:
        when = row_datetimes(start_row, np.array([int(row["time"])]))[0]
        step += f" ({pd.Timestamp(when):%Y-%m-%d %H:%M})"
    return ", ".join([*parts, step])


def _same_labels(ref: pd.Series, run: pd.Series) -> np.ndarray:
    """Where two label columns differ: by value with their own dtypes (29 matches 29, a
    missing value only a missing one); text when the values cannot be compared."""
    try:
        equal = (ref.to_numpy() == run.to_numpy())
        equal = np.asarray(equal, dtype=bool)
    except (TypeError, ValueError):
        equal = (ref.astype(str) == run.astype(str)).to_numpy()
    both_missing = (ref.isna() & run.isna()).to_numpy()
    result: np.ndarray = ~(equal | both_missing)
    return result


def _compare_table(table: str, run_df: pd.DataFrame, ref_df: pd.DataFrame,
                   tolerances: Mapping[str, Tolerance], start_row: int | None = None
                   ) -> list[Check]:
    keys = TABLE_KEYS.get(table, ("time",))
    checks: list[Check] = []
    missing = [c for c in ref_df.columns if c not in run_df.columns]
    if missing:
        checks.append(Check(f"{table}.columns", Tolerance(),
                            problem=f"the run lacks columns {missing}"))
    if len(run_df) != len(ref_df):
        checks.append(Check(f"{table}.rows", Tolerance(),
                            problem=f"{len(run_df)} rows, the reference {len(ref_df)}"))
    lacking = [k for k in keys if k not in run_df.columns or k not in ref_df.columns]
    if lacking:
        checks.append(Check(f"{table}.keys", Tolerance(),
                            problem=f"no key column {lacking} to match rows on"))
        return checks
    # reference rows without a match: an anti-join on the keys alone, so that the value
    # columns of the inner join below keep their dtypes (a left join would turn the
    # integer ``bus`` of unmatched rows into float)
    found = ref_df[list(keys)].merge(run_df[list(keys)].drop_duplicates(), on=list(keys),
                                     how="left", indicator=True)
    unmatched = int((found["_merge"] != "both").sum())
    if unmatched:
        first = found[found["_merge"] != "both"].iloc[0]
        checks.append(Check(f"{table}.keys", Tolerance(), problem=(
            f"{unmatched} reference rows have no match in the run, first: "
            f"{_where(keys, first, start_row)}")))
    merged = ref_df.merge(run_df, on=list(keys), how="inner", suffixes=("_ref", "_run"))
    for col in ref_df.columns:
        if col in keys or col in missing:
            continue
        name = f"{table}.{col}"
        ref, run = merged[f"{col}_ref"], merged[f"{col}_run"]
        if (col in LABEL_COLUMNS.get(table, ()) or ref.dtype == object or ref.dtype == bool
                or pd.api.types.is_string_dtype(ref)
                or pd.api.types.is_datetime64_any_dtype(ref)):
            differs = _same_labels(ref, run)
            check = Check(name, Tolerance(), compared=len(ref), failed=int(differs.sum()))
            if check.failed:
                i = int(np.flatnonzero(differs)[0])
                check.where = _where(keys, merged[list(keys)].iloc[i], start_row)
                check.run_value, check.ref_value = run.iloc[i], ref.iloc[i]
                check.worst_diff = float("nan")
            checks.append(check)
            continue
        tol = tolerance_for(name, tolerances)
        a = ref.to_numpy(dtype=float)
        b = run.to_numpy(dtype=float)
        diff = deviation(b, a)
        bad = diff > tol.atol + tol.rtol * np.abs(np.nan_to_num(a))
        check = Check(name, tol, compared=len(a), failed=int(bad.sum()))
        if len(a):
            i = worst_index(diff, bad)
            check.worst_diff = float(diff[i])
            if check.worst_diff > 0 or bad.any():
                check.where = _where(keys, merged[list(keys)].iloc[i], start_row)
                check.run_value, check.ref_value = float(b[i]), float(a[i])
        checks.append(check)
    return checks


def deviation(run: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``|run - ref|`` element by element: 0 where both are NaN (unknown stays unknown),
    inf where only one is."""
    run, ref = np.asarray(run, dtype=float), np.asarray(ref, dtype=float)
    diff = np.where(np.isnan(run) & np.isnan(ref), 0.0, np.abs(run - ref))
    return np.where(np.isnan(diff), np.inf, diff)


def worst_index(diff: np.ndarray, bad: np.ndarray) -> int:
    """Where to report: the largest deviation beyond the tolerance, else the largest."""
    return int(np.argmax(np.where(bad, diff, -1.0))) if bad.any() else int(np.argmax(diff))


def flatten_kpis(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``kpis.json`` (or a part) as ``{"fleet.total_cost": value, "fleet.final_lambda[3]":
    value, ...}`` under ``prefix``; timings and ``units`` left out."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in TIMING_KPIS or k == "units":
                continue
            out.update(flatten_kpis(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten_kpis(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _missing_kpi(value: Any) -> bool:
    """A KPI without a value: ``null`` in kpis.json, or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _compare_kpis(run_dir: Path, ref_dir: Path,
                  tolerances: Mapping[str, Tolerance]) -> list[Check]:
    try:
        run_k = json.loads((run_dir / "kpis.json").read_text())
        ref_k = json.loads((ref_dir / "kpis.json").read_text())
    except (OSError, ValueError) as exc:
        return [Check("kpi", Tolerance(), problem=f"cannot read kpis.json: {exc}")]
    run_flat, ref_flat = flatten_kpis(run_k, "kpi"), flatten_kpis(ref_k, "kpi")
    checks = []
    for name, ref in ref_flat.items():
        base = name.split("[")[0]
        tol = tolerance_for(base, tolerances)
        check = Check(name, tol, compared=1)
        if name not in run_flat:
            check.problem = "missing in the run's kpis.json"
        else:
            run = run_flat[name]
            check.run_value, check.ref_value = run, ref
            if _missing_kpi(run) or _missing_kpi(ref):
                # NaN or null (kpis.json writes NaN as null): unknown matches unknown only
                both = _missing_kpi(run) and _missing_kpi(ref)
                check.failed = int(not both)
                check.worst_diff = 0.0 if both else float("inf")
            elif _is_number(ref) and _is_number(run):
                check.worst_diff = abs(float(run) - float(ref))
                if math.isnan(check.worst_diff):  # inf - inf
                    check.worst_diff = 0.0 if float(run) == float(ref) else float("inf")
                check.failed = int(check.worst_diff > tol.atol + tol.rtol * abs(float(ref)))
            else:
                check.failed = int(run != ref)
                check.worst_diff = 0.0 if not check.failed else float("nan")
        checks.append(check)
    return checks


def _at(frame: pd.DataFrame, times: np.ndarray) -> pd.DataFrame:
    return frame[frame["time"].isin(times)] if "time" in frame else frame


def _steps_text(times: np.ndarray) -> str:
    return f"{len(times)} steps" + (f" ({int(times[0])}..{int(times[-1])})" if len(times)
                                   else "")


def compare_runs(run: str | Path, reference: str | Path,
                 tolerances: Mapping[str, Tolerance] | None = None, *,
                 overlap: bool = False) -> Comparison:
    """Compare ``run`` with ``reference`` (module docstring); ``tolerances`` override the
    defaults per quantity. Raises :class:`CompareError` when either is not a run.

    Runs that cover different steps fail with one check, ``steps``, that says so (no
    value is compared); with ``overlap`` the steps both hold are compared instead, and
    ``kpis.json`` is left out (its numbers sum over different steps)."""
    from cosim.results.readers import read_table

    run_dir, ref_dir = Path(run), Path(reference)
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    ref_tables = _status_tables(ref_dir)
    run_tables = _status_tables(run_dir)
    result = Comparison(run_dir, ref_dir)
    start_row = _start_row(ref_dir)
    frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for table in ref_tables:
        if table not in run_tables:
            result.checks.append(Check(f"{table}", Tolerance(),
                                       problem="the run has no such table"))
            continue
        try:
            frames[table] = (read_table(ref_dir, table), read_table(run_dir, table))
        except (OSError, ValueError) as exc:
            result.checks.append(Check(f"{table}", Tolerance(),
                                       problem=f"cannot read the table: {exc}"))
    # the steps each run covers: the union of the tables' times
    ref_times = np.unique(np.concatenate(
        [f[0]["time"].to_numpy(dtype=np.int64) for f in frames.values() if "time" in f[0]]
        or [np.zeros(0, dtype=np.int64)]))
    run_times = np.unique(np.concatenate(
        [f[1]["time"].to_numpy(dtype=np.int64) for f in frames.values() if "time" in f[1]]
        or [np.zeros(0, dtype=np.int64)]))
    same_steps = np.array_equal(ref_times, run_times)
    if not same_steps and not overlap:
        what = (f"the runs differ in length: {len(run_times)} vs {len(ref_times)} steps"
                if len(run_times) != len(ref_times) else
                f"the runs cover different steps: {_steps_text(run_times)} vs "
                f"{_steps_text(ref_times)}")
        result.checks.append(Check("steps", Tolerance(), problem=(
            f"{what}; compare the common steps with --overlap")))
        return result
    if not same_steps:
        common = np.intersect1d(ref_times, run_times)
        result.note = (f"--overlap: {len(common)} common steps compared (the run has "
                       f"{len(run_times)}, the reference {len(ref_times)}); kpis.json "
                       "left out")
        if not len(common):
            result.checks.append(Check("steps", Tolerance(),
                                       problem="the runs have no step in common"))
            return result
        frames = {t: (_at(r, common), _at(u, common)) for t, (r, u) in frames.items()}
    for table, (ref_df, run_df) in frames.items():
        result.checks.extend(_compare_table(table, run_df, ref_df, tol, start_row))
    if same_steps:
        result.checks.extend(_compare_kpis(run_dir, ref_dir, tol))
    return result


def assert_run_matches(run: str | Path, reference: str | Path,
                       tolerance_file: str | Path | None = None,
                       **atol: float) -> Comparison:
    """``AssertionError`` with the report unless ``run`` matches ``reference``.

    Keyword arguments set absolute tolerances by quantity name, e.g.
    ``assert_run_matches(run, ref, vm_pu=1e-4, loading_percent=0.01)`` (use a tolerance
    file for names that are not identifiers or for rtol).
    """
    tol = load_tolerance_file(tolerance_file) if tolerance_file else {}
    tol.update({k: Tolerance(atol=float(v)) for k, v in atol.items()})
    result = compare_runs(run, reference, tol)
    if not result.ok:
        raise AssertionError(result.report())
    return result


def junit_xml(result: Comparison) -> str:
    """The comparison as a JUnit XML report: one test case per quantity."""
    suite = ET.Element("testsuite", name="cosim compare", tests=str(len(result.checks)),
                       failures=str(len(result.failures)))
    for c in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"cosim.compare.{result.reference.name}",
                             name=c.quantity)
        if not c.ok:
            failure = ET.SubElement(case, "failure", message=c.message())
            failure.text = c.message()
    # ElementTree(suite).getroot() is suite itself
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def parse_tolerance_options(items: list[str] | None, kind: str) -> dict[str, float]:
    """``--atol Q=V`` / ``--rtol Q=V`` options into ``{Q: V}``; errors say what is valid."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not name or not math.isfinite(number) or number < 0:
            raise CompareError(f"--{kind} {item!r}: give QUANTITY=NUMBER with a number >= 0, "
                               "e.g. vm_pu=1e-4 or lines.loading_percent=0.01")
        out[name] = number
    return out


def merge_options(base: dict[str, Tolerance], atol: dict[str, float],
                  rtol: dict[str, float]) -> dict[str, Tolerance]:
    """Options over a file's tolerances over the defaults, per quantity."""
    out = dict(base)
    for name in set(atol) | set(rtol):
        current = out.get(name) or tolerance_for(name, {**DEFAULT_TOLERANCES, **base})
        out[name] = Tolerance(atol=atol.get(name, current.atol),
                              rtol=rtol.get(name, current.rtol))
    return out
