"""``cosim verify RUN``: check a run directory from its own files only.

First the **set-up files**: ``scenario.yaml``, ``feeder.json``, ``comm_graph.json`` (and
``grid_constraints.json``) must have the SHA-256 that ``status.json`` recorded when the
run wrote them (``setup_files``); a changed or truncated one fails, and the checks that
read it are not run. Then five checks (docs/results_contract.md, "Recomputing a run from
its files"), each with a named tolerance and its worst deviation:

* **energy balance** of every building and step: ``d + b(t-1) = g + x + b(t) + dropped``
  and ``unmet = b(t) + dropped`` (``ENERGY_ATOL_KWH``);
* **power flow** of every step re-solved at once with power-grid-model's batch solver
  (``PgmPowerFlow.solve_batch``), and on a sample of steps (``steps``) with pandapower as
  the independent reference, from ``feeder.json`` (read through the screening reader,
  its own loads and generators left out) and the recorded bus injections
  (``cosim.results.readers.recorded_bus_loads``): bus voltages, line and transformer
  loadings (``VM_ATOL_PU``, ``LOADING_ATOL_PERCENT``: the two backends agree to these);
* **multipliers** re-derived with ``agents.consensus.duals.DualDynamics`` from ``comm_graph.json``,
  the resolved scenario's ``duals`` and ``kpis.json``'s ``limit_kwh``, fed with the
  recorded grid energy and served demand: ``lambda``, ``mu``, ``nu`` as the agents used
  them (``MULTIPLIER_ATOL``); skipped, and said so, when message faults were configured
  (their random draws are not in the files). With grid constraints in operator mode,
  also ``mu`` of the constraints table (``mu(t+1) = clip(mu(t) + alpha e(t))`` per
  phase) and ``lambda_eff`` from ``grid_constraints.json``'s weights (rounded to 6
  decimals there: ``LAMBDA_EFF_ATOL``);
* **KPIs** recomputed from the tables and compared with ``kpis.json`` (``KPI_RTOL``);
* **calendar**: the ``datetime`` column of the buildings and grid tables is the data's
  calendar (``agents.fleet.calendar``) at data row ``time.start + time``, exactly.

Before them, **finite values**: no infinity in any table, NaN only where
docs/results_contract.md allows it (``NAN_ALLOWED``). A file a check needs that the run
lacks (``feeder.json``, ``comm_graph.json``, ``grid_constraints.json``) fails that check;
a table without a column a check reads (``REQUIRED_COLUMNS``) raises
:class:`VerifyInputError` (exit 2). Skipped, with the reason, are only checks a run
cannot support: the calendar without ``datetime`` (written before it was recorded), the
multiplier replay under message faults, peer-mode grid multipliers.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cosim.results.rundir import RunDirError
from cosim.tools.compare import deviation, flatten_kpis, worst_index

ENERGY_ATOL_KWH = 1e-9  # float64 sums of a few kWh
VM_ATOL_PU = 1e-4  # power-grid-model in the run vs pandapower here
LOADING_ATOL_PERCENT = 0.1
MULTIPLIER_ATOL = 1e-9  # the same float64 operations in the same order
LAMBDA_EFF_ATOL = 1e-4  # weights stored with 6 decimals
KPI_RTOL = 1e-9
KPI_ATOL = 1e-9
DEFAULT_SAMPLE_STEPS = 24


@dataclass
class VerifyCheck:
    """One check of a run: how many values it compared and failed, and the worst."""

    name: str
    tolerance: str
    worst: float = 0.0
    where: str = ""
    failed: int = 0
    compared: int = 0
    skipped: str = ""
    problem: str = ""  # an input the check needs is missing: a failure

    @property
    def ok(self) -> bool:
        """Whether no value is beyond the tolerance and no input was missing (a skipped
        check is ok)."""
        return self.failed == 0 and not self.problem

    def line(self) -> str:
        """The check as one line of the report: status, counts, worst deviation."""
        status = "skip" if self.skipped else ("ok  " if self.ok else "FAIL")
        if self.skipped:
            return f"  {status}  {self.name:<22} {self.skipped}"
        if self.problem:
            return f"  {status}  {self.name:<22} {self.problem}"
        where = f" at {self.where}" if self.where else ""
        return (f"  {status}  {self.name:<22} {self.compared} values, {self.failed} beyond "
                f"{self.tolerance}; worst {self.worst:.3g}{where}")


@dataclass
class Verification:
    """The checks of one run directory."""

    run: Path
    checks: list[VerifyCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check passes or was skipped."""
        return all(c.ok for c in self.checks)

    def report(self) -> str:
        """A header with the counts, then one line per check."""
        passed = sum(1 for c in self.checks if c.ok and not c.skipped)
        skipped = sum(1 for c in self.checks if c.skipped and c.ok)
        head = (f"verify {self.run}: {passed} checks pass, "
                f"{len(self.checks) - passed - skipped} fail, {skipped} skipped")
        return "\n".join([head, *(c.line() for c in self.checks)])


def _worst(check: VerifyCheck, diff: np.ndarray, allowed: float, where: Any) -> VerifyCheck:
    """Fill ``check`` from absolute deviations ``diff`` (NaN: fails) and a locator."""
    diff = np.where(np.isnan(diff), np.inf, np.abs(diff))
    check.compared += int(diff.size)
    check.failed += int((diff > allowed).sum())
    if diff.size:
        i = int(np.argmax(diff))
        if diff.flat[i] > check.worst:
            check.worst = float(diff.flat[i])
            check.where = where(i)
    return check


def check_energy(b: pd.DataFrame) -> VerifyCheck:
    """The energy balance of every building and step of the buildings table ``b``."""
    check = VerifyCheck("energy balance", f"atol {ENERGY_ATOL_KWH:g} kWh")
    names = list(dict.fromkeys(b.building))
    wide = {c: b.pivot(index="time", columns="building", values=c)[names].to_numpy()
            for c in ("demand_kwh", "backlog_kwh", "grid_kwh", "battery_kwh", "dropped_kwh",
                      "unmet_kwh")}
    times = np.sort(b.time.unique())
    before = np.vstack([np.zeros((1, len(names))), wide["backlog_kwh"][:-1]])
    if times[0] != 0:  # a run that does not start at 0 (never written so): no b(-1)
        check.skipped = "the table does not start at step 0"
        return check
    lhs = wide["demand_kwh"] + before
    rhs = wide["grid_kwh"] + wide["battery_kwh"] + wide["backlog_kwh"] + wide["dropped_kwh"]

    def where(i: int) -> str:
        t, k = divmod(i, len(names))
        return f"building {names[k]}, step {int(times[t])}"

    _worst(check, lhs - rhs, ENERGY_ATOL_KWH, where)
    _worst(check, wide["unmet_kwh"] - wide["backlog_kwh"] - wide["dropped_kwh"],
           ENERGY_ATOL_KWH, where)
    return check


# Any: the values of a frame's index, of the dtype it was read with
def _sample(times: NDArray[Any], steps: int | None) -> NDArray[Any]:
    if steps is None or steps >= len(times):
        return times
    idx: NDArray[np.intp] = np.unique(
        np.linspace(0, len(times) - 1, max(steps, 2)).round().astype(int))
    return times[idx]


def check_power_flow(run: Path, steps: int | None = DEFAULT_SAMPLE_STEPS, *,
                     grid: pd.DataFrame | None = None,
                     every_step: bool = True) -> list[VerifyCheck]:
    """The recorded bus voltages and line and transformer loadings against a re-solve.

    Every step is re-solved at once with the power-grid-model backend
    (:meth:`~grid_models.powerflow.pgm_backend.PgmPowerFlow.solve_batch`) from the
    recorded bus injections, and ``steps`` steps spread over the run (None: all) with
    pandapower, the independent reference; ``every_step=False`` re-solves only the
    pandapower sample. Steps whose power flow did not converge in the run are left out.
    ``grid``: the run's grid table when the caller has read it already. A run with grid
    tables but no ``feeder.json`` fails.
    """
    from cosim.results.readers import read_table, recorded_bus_loads
    from grid_models.feeders import read_feeder_json

    vm = VerifyCheck("power flow: vm_pu", f"atol {VM_ATOL_PU:g} pu")
    loading = VerifyCheck("power flow: loading", f"atol {LOADING_ATOL_PERCENT:g} %")
    feeder_file = run / "feeder.json"
    if not feeder_file.is_file():
        vm.problem = loading.problem = ("feeder.json is missing: the run has grid tables, "
                                        "and nothing to re-solve them from")
        return [vm, loading]
    net = read_feeder_json(feeder_file)
    buses = read_table(run, "buses")
    grid = read_table(run, "grid") if grid is None else grid
    p_mw, q_mvar = recorded_bus_loads(run, net.ext_grid.bus, buses=buses, grid=grid)
    converged = grid.set_index("time").converged.reindex(p_mw.index).fillna(False)
    recorded = {"bus": buses.pivot(index="time", columns="bus", values="vm_pu"),
                "line": read_table(run, "lines").pivot(index="time", columns="line",
                                                       values="loading_percent"),
                "trafo": read_table(run, "trafos").pivot(index="time", columns="trafo",
                                                         values="loading_percent")}
    if every_step:
        _check_batch(net, p_mw, q_mvar, converged.to_numpy(dtype=bool), recorded, vm, loading)
    _check_sample(net, p_mw, q_mvar, converged, recorded, steps, vm, loading)
    return [vm, loading]


def _check_batch(net: Any, p_mw: pd.DataFrame, q_mvar: pd.DataFrame, converged: NDArray[Any],
                 recorded: dict[str, pd.DataFrame], vm: VerifyCheck,
                 loading: VerifyCheck) -> None:
    """Every converged step at once with power-grid-model's batch solver."""
    import warnings

    from grid_models.powerflow.pgm_backend import PgmPowerFlow

    net = copy.deepcopy(net)
    for table in ("load", "sgen", "storage"):  # the recorded injections include them
        if table in net and len(net[table]):  # (and the run's own injection loads)
            net[table] = net[table].iloc[0:0]
    pf = PgmPowerFlow(net, nonfinite="unknown")
    times = np.asarray(p_mw.index)[converged]
    if not len(times):
        return
    p = p_mw.loc[times].reindex(columns=pf.bus_ids, fill_value=0.0).to_numpy(dtype=float)
    q = q_mvar.loc[times].reindex(columns=pf.bus_ids, fill_value=0.0).to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = pf.solve_batch(p, q)
    for kind, solved, ids, check in (
            ("bus", batch.bus_vm_pu, pf.bus_ids, vm),
            ("line", batch.line_loading_percent, pf.line_ids, loading),
            ("trafo", batch.trafo_loading_percent, pf.trafo_ids, loading)):
        rec = recorded[kind].reindex(times)
        cols = list(rec.columns)
        n_cols = len(cols)
        if not cols:
            continue
        pos = {e: k for k, e in enumerate(ids)}
        missing = [c for c in cols if c not in pos]
        if missing:
            check.problem = f"{kind} {missing[0]} of the tables is not in feeder.json"
            continue
        got = solved[:, [pos[c] for c in cols]]
        want = rec.to_numpy(dtype=float)
        diff = deviation(got, want)
        if kind != "bus":  # a de-energised element: NaN recorded, nothing to compare
            diff = np.where(np.isnan(want), 0.0, diff)
        _worst(check, diff, VM_ATOL_PU if kind == "bus" else LOADING_ATOL_PERCENT,
               lambda i, n=n_cols, c=cols, k=kind:
               f"{k} {c[i % n]}, step {int(times[i // n])}")


def _check_sample(net: Any, p_mw: pd.DataFrame, q_mvar: pd.DataFrame, converged: pd.Series,
                  recorded: dict[str, pd.DataFrame], steps: int | None, vm: VerifyCheck,
                  loading: VerifyCheck) -> None:
    """``steps`` steps spread over the run with pandapower (the reference)."""
    import warnings

    import pandapower as pp

    net.load["in_service"] = False
    net.sgen["in_service"] = False
    loads = [pp.create_load(net, int(b), p_mw=0.0, q_mvar=0.0) for b in p_mw.columns]
    for t in _sample(np.asarray(p_mw.index), steps):
        if not bool(converged.get(t, False)):
            continue  # an unknown step stays unknown: nothing to re-solve
        net.load.loc[loads, "p_mw"] = p_mw.loc[t].to_numpy()
        net.load.loc[loads, "q_mvar"] = q_mvar.loc[t].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(net)
        rec = recorded["bus"].loc[t]
        _worst(vm, deviation(net.res_bus.loc[rec.index, "vm_pu"].to_numpy(), rec.to_numpy()),
               VM_ATOL_PU, lambda i, t=t, ix=rec.index: f"bus {ix[i]}, step {int(t)}")
        for table, res in (("line", net.res_line), ("trafo", net.res_trafo)):
            if t not in recorded[table].index:
                continue
            rec = recorded[table].loc[t].dropna()
            _worst(loading, res.loc[rec.index, "loading_percent"].to_numpy() - rec.to_numpy(),
                   LOADING_ATOL_PERCENT,
                   lambda i, t=t, ix=rec.index, tb=table: f"{tb} {ix[i]}, step {int(t)}")


def check_calendar(tables: dict[str, pd.DataFrame], scenario: dict[str, Any]
                   ) -> VerifyCheck:
    """Each table's ``datetime`` against :func:`agents.fleet.calendar.row_datetimes` (hours)."""
    from agents.fleet.calendar import row_datetimes

    check = VerifyCheck("calendar", "exact (hours)")
    start = int((scenario.get("time") or {}).get("start", 0))
    having = {name: t for name, t in tables.items() if "datetime" in t.columns}
    if not having:
        check.skipped = "no datetime column (a run from before the calendar was recorded)"
        return check
    for name, table in having.items():
        times = table["time"].to_numpy(dtype=np.int64)
        expected = row_datetimes(start, times)
        recorded = table["datetime"].to_numpy().astype("datetime64[s]")
        diff_h = (recorded - expected).astype(np.int64) / 3600.0
        _worst(check, diff_h, 0.0,
               lambda i, t=times, n=name: f"{n} table, step {int(t[i])}")
    return check


def check_multipliers(run: Path, b: pd.DataFrame, scenario: dict[str, Any],
                      kpis: dict[str, Any], constraints: bool = False) -> list[VerifyCheck]:
    """The multipliers of the buildings table ``b`` against a replay of the duals
    (``constraints``: the run has a constraints table)."""
    from agents.consensus.duals import DualConfig, DualDynamics
    from agents.consensus.graphs import graph_from_json

    check = VerifyCheck("multipliers", f"atol {MULTIPLIER_ATOL:g}")
    faults = (scenario.get("communication") or {}).get("faults") or {}
    if faults.get("drop_probability") or faults.get("delay_steps") or faults.get("silent"):
        check.skipped = "message faults configured (their random draws are not in the files)"
        return [check]
    comm = run / "comm_graph.json"
    if not comm.is_file():  # every run writes one (cosim.engine.run.setup_texts)
        check.problem = "comm_graph.json is missing: nothing to replay the multipliers on"
        return [check]
    graph, names = graph_from_json(comm.read_text())
    duals = DualDynamics(DualConfig(**scenario["duals"]), graph, kpis["limit_kwh"])

    def wide(col: str) -> np.ndarray:
        return b.pivot(index="time", columns="building", values=col)[names].to_numpy()

    lam, mu, nu = wide("lambda"), wide("mu"), wide("nu")
    grid, served = wide("grid_kwh"), wide("grid_kwh") + wide("battery_kwh") - wide("demand_kwh")
    n = len(names)
    for t in range(lam.shape[0]):
        s = duals.state
        for used, want in ((lam[t], s.lam), (mu[t], s.mu), (nu[t], s.nu)):
            _worst(check, used - want, MULTIPLIER_ATOL,
                   lambda i, t=t: f"building {names[i % n]}, step {t}")
        duals.update(grid[t], served[t])
    checks = [check]
    if (run / "grid_constraints.json").is_file() and "lambda_eff" in b:
        checks += _check_grid_multipliers(run, b, names, lam)
    elif constraints:
        missing = VerifyCheck("grid multipliers", f"atol {MULTIPLIER_ATOL:g}", problem=(
            "grid_constraints.json is missing: the run has a constraints table"))
        checks.append(missing)
    return checks


def _check_grid_multipliers(run: Path, b: pd.DataFrame, names: list[str],
                            lam: np.ndarray) -> list[VerifyCheck]:
    from cosim.results.readers import read_table

    described = json.loads((run / "grid_constraints.json").read_text())
    mu_check = VerifyCheck("grid multipliers", f"atol {MULTIPLIER_ATOL:g}")
    eff_check = VerifyCheck("lambda_eff", f"atol {LAMBDA_EFF_ATOL:g}")
    if described.get("mode") != "operator":
        mu_check.skipped = eff_check.skipped = ("peer mode: the buildings' own multipliers "
                                                "are not recorded, only their mean")
        return [mu_check, eff_check]
    table = read_table(run, "constraints")
    order = [c["name"] for c in described["constraints"]]
    mu = table.pivot(index="time", columns="constraint", values="mu")[order].to_numpy()
    excess = table.pivot(index="time", columns="constraint", values="excess")[order].to_numpy()
    sign = table.pivot(index="time", columns="constraint", values="sign")[order].to_numpy()
    alpha = np.asarray(described["alpha"], dtype=float)
    period = int(described.get("period_steps", 1))
    state = np.zeros((period, len(order)))
    for t in range(mu.shape[0]):
        phase = t % period
        _worst(mu_check, mu[t] - state[phase], MULTIPLIER_ATOL,
               lambda i, t=t: f"{order[i]}, step {t}")
        step = np.clip(state[phase] + alpha * np.nan_to_num(excess[t]), 0, described["mu_max"])
        state[phase] = np.where(np.isfinite(excess[t]), step, state[phase])
    weights = np.array([[c["weights"].get(x, 0.0) for x in names]
                        for c in described["constraints"]])
    eff = b.pivot(index="time", columns="building", values="lambda_eff")[names].to_numpy()
    want = np.clip(lam + (mu * sign) @ weights, 0, described["lambda_max"])
    n = len(names)
    _worst(eff_check, eff - want, LAMBDA_EFF_ATOL,
           lambda i: f"building {names[i % n]}, step {i // n}")
    return [mu_check, eff_check]


def _numbers(obj: Any) -> dict[str, float]:
    """The numbers of a part of ``kpis.json`` by flat name (null: NaN)."""
    return {k: float("nan") if v is None else float(v)
            for k, v in flatten_kpis(obj).items()
            if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


def check_kpis(run: Path, scenario: dict[str, Any], kpis: dict[str, Any]) -> VerifyCheck:
    """The fleet, grid and constraint KPIs of ``kpis.json`` against a recomputation."""
    from cosim.results.report import compute_kpis

    check = VerifyCheck("KPIs", f"rtol {KPI_RTOL:g}")
    again = compute_kpis(run, kpis["limit_kwh"], float(scenario["time"]["step_h"]),
                         float(scenario["duals"]["lambda_max"]), kpis.get("scenario", ""))
    if (run / "constraints.parquet").is_file():
        from cosim.results.constraint_report import constraint_kpis, constraint_totals
        from cosim.results.readers import read_table

        frame = read_table(run, "constraints")
        again["grid_constraints"] = json.loads(json.dumps(constraint_kpis(
            frame, float(scenario["time"]["step_h"]))))
        again["grid_constraint_totals"] = constraint_totals(frame,
                                                            float(scenario["time"]["step_h"]))
    want = _numbers({k: again[k] for k in ("fleet", "grid", "grid_constraints",
                                           "grid_constraint_totals") if k in again})
    got = _numbers({k: kpis[k] for k in ("fleet", "grid", "grid_constraints",
                                         "grid_constraint_totals") if k in kpis})
    missing = sorted(set(want) - set(got))
    keys = sorted(set(want) & set(got))
    a = np.array([got[k] for k in keys])
    w = np.array([want[k] for k in keys])
    diff = deviation(a, w)
    bad = diff > KPI_ATOL + KPI_RTOL * np.abs(np.nan_to_num(w))
    check.compared = len(keys)
    check.failed = int(bad.sum()) + len(missing)
    if keys:
        i = worst_index(diff, bad)
        check.worst = float(diff[i])
        if check.worst > 0:
            check.where = f"{keys[i]}: {a[i]:.6g} in kpis.json, {w[i]:.6g} recomputed"
    if missing:
        check.where = f"missing in kpis.json: {missing[:3]}"
    return check


def check_setup_files(run: Path, status: dict[str, Any]) -> VerifyCheck:
    """The set-up files against the hashes ``status.json`` recorded (``setup_files``)."""
    from cosim.engine.inputs import changed_setup_files

    check = VerifyCheck("set-up files", "SHA-256 as recorded")
    recorded = status.get("setup_files")
    if not isinstance(recorded, dict) or not recorded:
        check.skipped = "status.json records no hashes of the set-up files (an older run)"
        return check
    changed = changed_setup_files(run, recorded)
    check.compared, check.failed = len(recorded), len(changed)
    if changed:
        check.worst, check.where = 1.0, ", ".join(changed)
    return check


#: The columns each check reads, by table (docs/results_contract.md); a run without one
#: cannot be verified (exit 2), ``datetime`` is optional (the calendar check skips).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "buildings": ("time", "building", "demand_kwh", "backlog_kwh", "grid_kwh", "battery_kwh",
                  "unmet_kwh", "dropped_kwh", "lambda", "mu", "nu"),
    "buses": ("time", "bus", "vm_pu", "p_mw", "q_mvar"),
    "lines": ("time", "line", "loading_percent"),
    "trafos": ("time", "trafo", "loading_percent"),
    "grid": ("time", "converged", "ext_grid_p_mw", "ext_grid_q_mvar"),
    "constraints": ("time", "constraint", "mu", "excess", "sign"),
}
#: Value columns that may hold NaN (an unknown grid step, an unsupplied bus, a
#: de-energised line); every other float column must be finite, and no column may hold
#: an infinity.
NAN_ALLOWED: dict[str, tuple[str, ...] | None] = {
    "buses": None, "lines": None, "trafos": None, "grid": None,  # None: every column
    "constraints": ("measured", "excess"),
}


class VerifyInputError(RunDirError):
    """A run whose tables lack a column a check reads."""


def require_columns(name: str, table: pd.DataFrame) -> None:
    """Raise :class:`VerifyInputError` naming the table and the first missing column."""
    missing = [c for c in REQUIRED_COLUMNS.get(name, ()) if c not in table.columns]
    if missing:
        raise VerifyInputError(f"the {name} table lacks the column {missing[0]!r}"
                               + (f" (and {missing[1:]})" if len(missing) > 1 else "")
                               + "; docs/results_contract.md lists the columns")


def check_finite(tables: dict[str, pd.DataFrame]) -> VerifyCheck:
    """No infinity anywhere, and NaN only where the results contract allows it."""
    check = VerifyCheck("finite values", "no inf; NaN per the contract")
    for name, table in tables.items():
        allowed = NAN_ALLOWED.get(name, ())
        times = table["time"].to_numpy() if "time" in table else np.arange(len(table))
        for col in table.columns:
            if col == "time" or not pd.api.types.is_float_dtype(table[col]):
                continue
            values = table[col].to_numpy(dtype=float)
            nan_ok = allowed is None or col in allowed
            if name == "grid" and "converged" in table:  # NaN only where unknown
                nan_ok = nan_ok and col not in ("losses_mw", "ext_grid_p_mw",
                                                "ext_grid_q_mvar")
                bad = np.isinf(values) | (np.isnan(values)
                                          & table["converged"].to_numpy(dtype=bool))
            else:
                bad = np.isinf(values) | (np.isnan(values) & (not nan_ok))
            check.compared += int(values.size)
            n_bad = int(bad.sum())
            if n_bad:
                i = int(np.flatnonzero(bad)[0])
                if not check.failed:
                    check.worst = float("inf")
                    check.where = f"{name}.{col} = {values[i]}, step {int(times[i])}"
                check.failed += n_bad
    return check


def verify_run(run: str | Path, steps: int | None = DEFAULT_SAMPLE_STEPS, *,
               every_step: bool = True) -> Verification:
    """All checks of a complete run (module docstring); ``steps``: how many steps
    pandapower re-solves, spread over the run (None: all); power-grid-model re-solves
    every step unless ``every_step`` is False. Raises :class:`VerifyInputError` (a
    :class:`~cosim.results.rundir.RunDirError`) when a table lacks a column."""

    from cosim.results.readers import read_status, read_table

    run = Path(run)
    status = read_status(run)
    if status.get("state") != "complete":
        raise RunDirError(f"{run}: the run is {status.get('state')!r}; verify checks "
                          "complete runs")
    result = Verification(run)
    setup = check_setup_files(run, status)
    result.checks.append(setup)
    if not setup.ok:  # the other checks would read files the run did not write
        return result
    from cosim.scenario.loader import load_run_scenario

    # read like any scenario (bounded reader, schema), then checked as the plain values
    scenario = load_run_scenario(run).model_dump(mode="json")
    kpis = json.loads((run / "kpis.json").read_text())
    # each table read once, for the checks that use it
    listed = status.get("tables", [])
    tables = {name: read_table(run, name) for name in
              ("buildings", "grid", "buses", "lines", "trafos", "constraints")
              if name == "buildings" or name in listed}
    for name, table in tables.items():
        require_columns(name, table)
    buildings = tables["buildings"]
    result.checks.append(check_finite(tables))
    result.checks.append(check_energy(buildings))
    if "buses" in tables:
        result.checks.extend(check_power_flow(run, steps, grid=tables.get("grid"),
                                              every_step=every_step))
    else:
        for name in ("power flow: vm_pu", "power flow: loading"):
            result.checks.append(VerifyCheck(name, "", skipped="a run without a grid"))
    result.checks.extend(check_multipliers(run, buildings, scenario, kpis,
                                           constraints="constraints" in tables))
    result.checks.append(check_kpis(run, scenario, kpis))
    result.checks.append(check_calendar({k: tables[k] for k in ("buildings", "grid")
                                         if k in tables}, scenario))
    return result
