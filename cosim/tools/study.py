"""``cosim study``: run a grid of scenario variants and collect their KPIs.

A study file (YAML)::

    name: paper_reproduction
    scenario: ../paper_fig1d.yaml          # relative to the study file
    engine: mosaik                         # or plain
    set: {output.plots: false}             # overrides for every run
    sweep:                                 # the grid (every combination)
      constraint.fraction_of_peak: [0.2, 0.3, 0.4, 0.5]
    variants:                              # crossed with the grid
      pi: {duals.mode: pi}
      independent: {duals.mode: independent}
      none: {controller.kind: none}
      oracle: {controller.kind: oracle}

Every run goes to ``<out>/runs/<variant>__<key>=<value>.../`` (a normal run
directory); the collected table to ``<out>/study.csv`` and ``study.md``; the
figures to ``<out>/*.png``. A variant whose scenario is infeasible (the oracle
with a limit no schedule meets) is recorded as such, not as a failure.

Safety and resuming: the study folder carries a marker (``study.json``) and a
lock while the study runs; a folder cosim did not make as a study is refused.
Run names are single, safe path components (variant names are checked; swept
values are sanitised), so nothing is written or deleted outside
``<out>/runs/``. Run again into the same folder, a study **skips** every run that
is complete with an unchanged resolved scenario, **resumes** an interrupted
one from its checkpoint, and replaces a run whose scenario changed only with
``--force``. ``study.csv`` is rewritten as each run finishes (its rows in the
grid's order), so an interrupted study keeps what it finished.

Workers: the runs go to ``dask.distributed`` workers, one run per single-threaded
worker process, so each run's mosaik world (and the simulator processes it starts)
lives inside its worker. By default a ``LocalCluster`` with one worker per core of
the machine starts for the study and closes with it; ``COSIM_STUDY_WORKERS=N`` sets
the count (``1``: every run in the study's own process, one after the other, as
does a study with at most one run to do) and ``COSIM_DASK_SCHEDULER=ADDRESS``
(e.g. ``tcp://host:8786``) uses a running cluster instead, whose workers must see
the study folder at the same path and have cosim installed. ``run_study`` takes
the same as ``workers=`` and ``scheduler=``. Runs that are complete are not sent
to the workers (their rows are read here). A run that fails (an invalid override,
an error while it runs, a worker that died) gets the row ``status: failed`` with
the error in ``note`` while the others go on; ``study.json`` counts them
(``failed``). A stop (Ctrl-C, SIGTERM) closes the cluster: the runs it was doing
stop where they are and resume from their checkpoints when the study runs again.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cosim.results.provenance import other_code
from cosim.results.readers import read_table
from cosim.scenario.limits import MAX_SCENARIO_FILE_BYTES

if TYPE_CHECKING:
    from distributed import Client, LocalCluster
from cosim.results.rundir import (
    STUDY_MARKER,
    DirLock,
    RunDirError,
    claim_directory,
    new_marker,
    read_marker,
)
from cosim.scenario.safe_yaml import YamlProblems, read_yaml
from cosim.scenario.schema import ScenarioError, ScenarioInfeasible

LAMBDA_AT_MAX_ATOL = 1e-9
#: a variant name: letters, digits, then also _ . = + - (no path separators, not . or ..)
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]")
MAX_RUN_NAME = 200
NEAR_MAX = 0.9  # "near lambda_max": at least 90 % of it
#: Columns of study.csv measured in wall time: they differ between two runs of a study.
TIMING_COLUMNS = ("wall_ms_per_step", "controller_ms_per_step")
#: A step is over the limit c when its district grid energy exceeds c (1 + this).
OVER_LIMIT_RTOL = 1e-6
MAX_NOTE = 300  # longest note of a failed run
POLL_S = 0.1  # how often a study waiting on its dask workers looks for a stop request


def _base_variant() -> dict[str, dict[str, Any]]:
    return {"base": {}}


class StudyFile(BaseModel):
    """The schema of a study file (module docstring); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    scenario: str
    engine: str = "mosaik"
    set: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(default_factory=_base_variant)


@dataclass
class Study:
    """A loaded study: its base scenario (absolute path), overrides, sweep and variants."""

    name: str
    scenario: Path
    engine: str
    common: list[tuple[str, Any]]
    sweep: dict[str, list[Any]]
    variants: dict[str, list[tuple[str, Any]]]
    source: str = "<study>"
    runs: list[dict[str, Any]] = field(default_factory=list)

    def grid(self) -> list[tuple[str, dict[str, Any], list[tuple[str, Any]]]]:
        """(run id, sweep values, overrides) of every run; run ids are safe folder names."""
        bad = [n for n in self.variants if not VARIANT_NAME.match(str(n)) or ".." in str(n)]
        if bad:
            raise ScenarioError(self.source, [(f"variants.{bad[0]}", "a variant name is 1-64 "
                                               "letters, digits, _ . = + - starting with a "
                                               "letter or digit (no /, no ..)")])
        keys = list(self.sweep)
        out = []
        seen: dict[str, str] = {}
        for values in itertools.product(*(self.sweep[k] for k in keys)) if keys else [()]:
            point = dict(zip(keys, values, strict=True))
            for name, overrides in self.variants.items():
                tag = "__".join(f"{_safe(k.rsplit('.', 1)[-1])}={_safe(v)}"
                                for k, v in point.items())
                run_id = f"{name}__{tag}" if tag else name
                if len(run_id) > MAX_RUN_NAME:
                    raise ScenarioError(self.source, [("sweep", f"run name {run_id[:40]!r}... "
                                                       f"is longer than {MAX_RUN_NAME}")])
                label = f"{name} {point}"
                if run_id in seen:
                    raise ScenarioError(self.source, [("sweep", f"{seen[run_id]} and {label} "
                                                       f"both make the run name {run_id!r}")])
                seen[run_id] = label
                out.append((run_id, {"variant": name, **point},
                            [*self.common, *point.items(), *overrides]))
        return out


def _value(text: str, source: str) -> Any:
    """A command-line value read as YAML (``3``, ``0.5``, ``off``), bounded and strict."""
    try:
        return read_yaml(text)
    except YamlProblems as exc:
        raise ScenarioError(source, exc.errors) from None
    except yaml.YAMLError:
        return text


def _safe(value: Any) -> str:
    """A swept key or value as part of a folder name: unsafe characters become ``_``."""
    text = _UNSAFE.sub("_", str(value)).replace("..", "_")
    return text or "_"


def load_study(path: str | Path) -> Study:
    """Read and check a study file; its ``scenario`` is resolved from the file's folder.

    Raises :class:`~cosim.scenario.schema.ScenarioError` naming every problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(str(path), [("", "study file not found")])
    if path.stat().st_size > MAX_SCENARIO_FILE_BYTES:
        raise ScenarioError(str(path), [("", f"larger than {MAX_SCENARIO_FILE_BYTES} bytes")])
    try:
        raw = read_yaml(path.read_text())
        spec = StudyFile.model_validate(raw)
    except YamlProblems as exc:
        raise ScenarioError(str(path), exc.errors) from None
    except UnicodeDecodeError:
        raise ScenarioError(str(path), [("", "not a text file")]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), [("", f"malformed YAML: {exc}".replace("\n", " "))]) \
            from None
    except ValidationError as exc:
        raise ScenarioError(str(path), [(".".join(map(str, e["loc"])), e["msg"])
                                        for e in exc.errors()]) from None
    if spec.engine not in ("mosaik", "plain"):
        raise ScenarioError(str(path), [("engine", "must be 'mosaik' or 'plain'")])
    scenario = (path.parent / spec.scenario).resolve()
    return Study(spec.name, scenario, spec.engine, list(spec.set.items()), spec.sweep,
                 {k: list(v.items()) for k, v in spec.variants.items()}, str(path))


def study_from_args(scenario: str, sweeps: list[str], variants: list[str],
                    name: str = "study", engine: str = "mosaik") -> Study:
    """``--sweep key=v1,v2`` and ``--variant name:key=value,key=value`` from the command line."""
    sweep: dict[str, list[Any]] = {}
    for item in sweeps:
        key, sep, values = item.partition("=")
        if not sep:
            raise ScenarioError("--sweep", [("", f"{item!r} is not key=v1,v2,...")])
        sweep[key.strip()] = [_value(v, "--sweep") for v in values.split(",")]
    parsed: dict[str, list[tuple[str, Any]]] = {}
    for item in variants:
        label, sep, body = item.partition(":")
        if not sep:
            raise ScenarioError("--variant", [("", f"{item!r} is not name:key=value,...")])
        pairs = []
        for kv in filter(None, body.split(",")):
            k, s2, v = kv.partition("=")
            if not s2:
                raise ScenarioError("--variant", [("", f"{kv!r} in {item!r} is not key=value")])
            pairs.append((k.strip(), _value(v, "--variant")))
        parsed[label] = pairs
    return Study(_safe(name)[:64], Path(scenario).resolve(), engine, [], sweep,
                 parsed or {"base": []}, scenario)


def _slope(y: np.ndarray) -> float:
    x = np.arange(len(y), dtype=float)
    return float(np.polyfit(x, y, 1)[0]) if len(y) > 1 else 0.0


def run_metrics(run_dir: Path, classes: list[str], lambda_max: float,
                uses_duals: bool = True) -> dict[str, Any]:
    """The study table's columns for one finished run.

    ``uses_duals`` False (no control, rule, oracle): the multipliers are still
    computed and recorded but steer nothing, so their columns are left empty.
    """
    from agents.fleet.kpis import (
        cumulative_average_unmet_kwh,
        lambda_spread_kpis,
        lambda_spread_per_step,
    )

    kpis = json.loads((run_dir / "kpis.json").read_text())
    b = read_table(run_dir, "buildings",
                   columns=["time", "building", "unmet_kwh", "backlog_kwh", "lambda", "grid_kwh"])
    fleet, grid = kpis["fleet"], kpis["grid"]
    steps = fleet["steps"]
    third = max(2, steps // 3)
    cu = cumulative_average_unmet_kwh(b).to_numpy()
    backlog = b.groupby("time").backlog_kwh.sum().to_numpy()
    first, last = _slope(cu[:third]), _slope(cu[-third:])
    lam_by_building = b.pivot(index="time", columns="building", values="lambda")
    names = list(dict.fromkeys(b.building))
    lam = lam_by_building[names].to_numpy()
    final = lam[-1]
    at_max = lam >= lambda_max - LAMBDA_AT_MAX_ATOL
    double = [i for i, c in enumerate(classes) if c == "double"]
    nan = float("nan")
    spread = lambda_spread_kpis(lambda_spread_per_step(b), lambda_max)
    duals = {
        "lambda_mean_final": float(final.mean()),
        **{k: nan if v is None else v for k, v in spread.items()},
        "agents_at_lambda_max": int(at_max[-1].sum()),
        "double_share_at_lambda_max": float(at_max[:, double].mean()) if double else nan,
        "double_share_near_lambda_max": float((lam[:, double] >= NEAR_MAX * lambda_max).mean())
        if double else nan,
    }
    if not uses_duals:
        duals = dict.fromkeys(duals, nan)
    return {
        "cost": fleet["total_cost"],
        "mean_district_grid_kwh": fleet["mean_district_grid_kwh"],
        "limit_kwh": kpis["limit_kwh"],
        "grid_over_limit": fleet["mean_district_grid_kwh"] / kpis["limit_kwh"],
        "final_backlog_kwh": float(backlog[-1]),
        "final_avg_unmet_kwh": fleet["final_avg_unmet_kwh"],
        "unmet_slope_first_third": first,
        "unmet_slope_last_third": last,
        "unmet_slope_ratio": last / first if first > 0 else float("nan"),
        "dropped_kwh": fleet["dropped_kwh"],
        # steps whose district grid energy exceeds c (the per-step reading of the limit)
        "hours_over_limit": int((b.groupby("time").grid_kwh.sum().to_numpy()
                                 > kpis["limit_kwh"] * (1 + OVER_LIMIT_RTOL)).sum()),
        **duals,
        **controller_metrics(run_dir, steps),
        "trafo_overload_hours": grid.get("trafo_overload_hours", float("nan")),
        "max_trafo_loading_percent": grid.get("max_trafo_loading_percent", float("nan")),
        "line_overload_hours": grid.get("line_overload_hours", float("nan")),
        "hours_outside_095_105_pu": grid.get("hours_outside_095_105_pu", float("nan")),
        "hours_outside_090_110_pu": grid.get("hours_outside_090_110_pu", float("nan")),
        # the hours above are lower bounds when some power flows gave no answer
        "grid_unknown_steps": grid.get("unknown_steps", float("nan")),
        # hours with any declared grid constraint violated (runs with grid_constraints)
        "grid_constraint_violation_hours": (kpis.get("grid_constraint_totals") or {}).get(
            "grid_constraint_violation_hours", float("nan")),
    }


def controller_metrics(run_dir: Path, steps: int) -> dict[str, float]:
    """Messages and compute time per step of a run (NaN where the run did not record them).

    ``messages_per_step``: what a planning controller (dmpc, epos) exchanged, from its
    decision tables; ``wall_ms_per_step``: the whole run's wall time (status.json) per
    step; ``controller_ms_per_step``: the planning controller's own time (solver and
    negotiation, or plan making and selection) per step.
    """
    from cosim.results.decisions import DECISIONS_DIR, read_decisions

    nan = float("nan")
    out = {"messages_per_step": nan, "negotiation_iterations_mean": nan,
           "wall_ms_per_step": nan, "controller_ms_per_step": nan}
    wall = (read_marker(run_dir, "run") or {}).get("wall_s")
    if wall is not None and steps:
        out["wall_ms_per_step"] = 1e3 * float(wall) / steps
    dmpc = read_decisions(run_dir, "dmpc_steps")
    if dmpc is not None and len(dmpc):
        out["messages_per_step"] = float(dmpc["messages"].mean())
        out["negotiation_iterations_mean"] = float(dmpc["iterations"].mean())
    epos = read_decisions(run_dir, "epos_days")
    if epos is not None and len(epos) and steps:
        out["messages_per_step"] = float(epos["messages"].sum()) / steps
        out["negotiation_iterations_mean"] = float(epos["iterations"].mean())
    timing_path = run_dir / DECISIONS_DIR / "timing.json"
    if timing_path.is_file() and steps:
        timing = json.loads(timing_path.read_text())
        spent = sum(float(v) for k, v in timing.items() if k.endswith("_s"))
        out["controller_ms_per_step"] = 1e3 * spent / steps
    return out


def claim_study_dir(out: Path, study: Study, *, force: bool) -> DirLock:
    """Take the study folder: new, empty, or a study cosim made (continued); lock it."""
    out = Path(out)
    lock = claim_directory(out, "study", force=force, reuse=True)
    try:
        marker = read_marker(out, "study") or new_marker("study")
        _write_study_marker(out, {**marker, "kind": "study", "name": study.name,
                                  "scenario": str(study.scenario), "state": "running"})
    except BaseException:
        lock.release()
        raise
    return lock


def _write_study_marker(out: Path, content: dict[str, Any]) -> None:
    from cosim.results.jsonio import write_json

    write_json(out / STUDY_MARKER, content)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _existing_run(run_dir: Path, resolved: str) -> str:
    """``new``, ``complete`` or ``incomplete`` (same scenario and code), ``changed``
    (another scenario), ``other_code`` (made by other code, ``cosim.results.provenance``) or
    ``foreign``."""
    if not run_dir.exists() and not run_dir.is_symlink():
        return "new"
    status = read_marker(run_dir, "run")
    if status is None or run_dir.is_symlink():
        return "foreign"
    try:
        same = (run_dir / "scenario.yaml").read_text() == resolved
    except OSError:
        same = False
    if not same:
        return "changed"
    if other_code(status) is not None:  # older runs record no code: taken as they are
        return "other_code"
    return "complete" if status.get("state") == "complete" else "incomplete"


def _failure_note(exc: BaseException) -> str:
    """A failed run's ``note``: the exception's type and message on one short line."""
    text = " ".join(str(exc).split())
    note = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return note if len(note) <= MAX_NOTE else note[:MAX_NOTE - 3] + "..."


def _run_dir(out: Path, run_id: str) -> Path:
    runs_root = out / "runs"
    run_dir = runs_root / run_id
    if run_dir.resolve().parent != runs_root.resolve():
        raise RunDirError(f"{run_dir}: run folder outside {runs_root}")
    return run_dir


def _check_state(run_dir: Path, state: str, force: bool) -> None:
    if state == "foreign":
        raise RunDirError(f"{run_dir}: exists and is not a run made by cosim; "
                          "nothing was touched")
    if state == "changed" and not force:
        raise RunDirError(f"{run_dir}: holds a run of a different scenario (the study "
                          "changed); pass --force to replace the changed runs, or "
                          "choose another --out")
    if state == "other_code" and not force:
        raise RunDirError(f"{run_dir}: holds a run made by other code (cosim.results.provenance: "
                          "the sources changed since); its results would sit beside "
                          "today's in one table. Pass --force to run it again with this "
                          "code, or choose another --out")


def run_one(scenario: str | Path, run_id: str, point: dict[str, Any],
            overrides: list[tuple[str, Any]], steps: int | None, engine: str,
            out: str | Path, force: bool) -> dict[str, Any]:
    """One run of a study, start to row: build the scenario, skip the run when it is
    complete with the same resolved scenario, resume it when it was interrupted, else
    run it into ``<out>/runs/<run_id>``; return its ``study.csv`` row.

    A top-level function a dask worker can run (it imports what it needs; the run's
    mosaik world lives and ends inside the calling process). An infeasible scenario
    gives the row ``status="infeasible"``; any other error (an invalid override, a run
    that raised) ``status="failed"`` with the error in ``note``, so the other runs go
    on. Only interrupts (Ctrl-C, SIGTERM: ``KeyboardInterrupt``) propagate.
    """
    from cosim.engine.run import execute, prepare_scenario, resume
    from cosim.scenario.schema import resolved_yaml

    out = Path(out)
    head: dict[str, Any] = {"run": run_id, **point}
    try:
        try:
            sc, built = prepare_scenario(scenario, overrides, steps)
        except ScenarioInfeasible as exc:
            return {**head, "status": "infeasible", "note": exc.errors[0][1]}
        run_dir = _run_dir(out, run_id)
        state = _existing_run(run_dir, resolved_yaml(sc))
        _check_state(run_dir, state, force)
        if state == "incomplete":
            resume(run_dir, progress=False)
        elif state != "complete":
            execute(sc, built, run_dir, progress=False,
                    force=state in ("changed", "other_code"), engine=engine)
        metrics = run_metrics(run_dir, built.classes, sc.duals.lambda_max,
                              uses_duals=sc.controller.kind == "policy")
    except Exception as exc:  # recorded in the row; the study goes on
        return {**head, "status": "failed", "note": _failure_note(exc)}
    return {**head, "reused": state == "complete", "status": "ok",
            "run_dir": str(run_dir.relative_to(out)), **metrics}


def parse_workers(text: str) -> int:
    """A worker count given as text (``--workers``, ``COSIM_STUDY_WORKERS``).

    Raises:
        ValueError: ``text`` is not a whole number >= 1 (the message says so).
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{text!r} is not a whole number >= 1")
    return value


def study_workers(workers: int | None = None,
                  scheduler: str | None = None) -> tuple[int, str | None]:
    """The worker count and scheduler address a study uses: the arguments, else
    ``COSIM_STUDY_WORKERS`` and ``COSIM_DASK_SCHEDULER``, else the machine's cores."""
    if scheduler is None:
        scheduler = os.environ.get("COSIM_DASK_SCHEDULER", "").strip() or None
    if workers is None:
        text = os.environ.get("COSIM_STUDY_WORKERS", "").strip()
        if text:
            try:
                workers = parse_workers(text)
            except ValueError as exc:
                raise ScenarioError("COSIM_STUDY_WORKERS", [("", str(exc))]) from None
        else:
            try:
                workers = len(os.sched_getaffinity(0))
            except AttributeError:  # not on Linux
                workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    return workers, scheduler


#: seconds a study waits for its dask scheduler to answer before it gives up
SCHEDULER_CONNECT_S = 5.0


def check_scheduler(address: str, source: str, timeout_s: float = SCHEDULER_CONNECT_S) -> None:
    """Refuse a dask scheduler address that does not answer, before anything is written.

    A ``tcp://`` or ``tls://`` address (or a bare ``host:port``) is tried with one TCP
    connection; other protocols are left to dask. ``source`` names where the address
    came from (``--scheduler`` or ``COSIM_DASK_SCHEDULER``).

    Raises:
        ScenarioError: the address is malformed or nothing answers there.
    """
    import socket
    from urllib.parse import urlsplit

    text = address if "://" in address else f"tcp://{address}"
    parts = urlsplit(text)
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ScenarioError(source, [("", f"{address!r} is not a scheduler address; give "
                                      "tcp://HOST:PORT")])
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = f"no answer within {timeout_s:g} s" if isinstance(exc, TimeoutError) else (
            exc.strerror or str(exc))
        raise ScenarioError(source, [("", f"cannot reach the dask scheduler at {address!r} "
                                      f"({reason}); start it, or run the study without a "
                                      "scheduler")]) from None


def _client(workers: int, scheduler: str | None) -> tuple[Client, LocalCluster | None]:
    """A dask client (and the LocalCluster it owns, None for ``scheduler``)."""
    from distributed import Client, LocalCluster

    # distributed leaves Client.__init__ and LocalCluster.__init__ unannotated
    if scheduler is not None:
        return Client(scheduler), None  # type: ignore[no-untyped-call]
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers, threads_per_worker=1, processes=True,
        dashboard_address=None, memory_limit=0, silence_logs=logging.ERROR)
    try:
        return Client(cluster), cluster  # type: ignore[no-untyped-call]
    except BaseException:
        cluster.close()
        raise


def run_study(study: Study, out: Path, *, steps: int | None = None,
              progress: bool = True, force: bool = False, workers: int | None = None,
              scheduler: str | None = None) -> pd.DataFrame:
    """Run every variant; write the table and figures; return the table.

    Continues a study already in ``out`` (see the module docstring); ``force``
    replaces runs whose resolved scenario changed. ``workers`` (default
    ``COSIM_STUDY_WORKERS``, else the machine's cores): with more than one, and more
    than one run to do, the runs go to a dask ``LocalCluster`` of that many
    single-threaded worker processes; ``workers=1`` runs them here, one after the
    other. ``scheduler`` (default ``COSIM_DASK_SCHEDULER``): the address of a running
    dask scheduler to use instead (its workers must see ``out`` and have cosim).
    """
    from tqdm import tqdm

    from cosim.scenario.schema import load_scenario, resolved_yaml

    out = Path(out)
    given = scheduler
    workers, scheduler = study_workers(workers, scheduler)
    grid = study.grid()  # checks the run names before anything is written
    if scheduler is not None:  # before anything is written
        check_scheduler(scheduler, "--scheduler" if given is not None else
                        "COSIM_DASK_SCHEDULER")
    lock = claim_study_dir(out, study, force=force)
    try:
        (out / "runs").mkdir(exist_ok=True)
        where = out.resolve()
        args = [(str(study.scenario), run_id, point, overrides, steps, study.engine,
                 str(where), force) for run_id, point, overrides in grid]
        # refuse a foreign or changed run folder before any run starts; find the runs
        # to do (complete ones are only read, here)
        todo: list[int] = []  # grid indices
        for i, (run_id, _, overrides) in enumerate(grid):
            run_dir = _run_dir(out, run_id)
            try:
                sc = load_scenario(study.scenario, overrides, steps)
            except ScenarioError:
                continue  # recorded as failed by run_one, here
            state = _existing_run(run_dir, resolved_yaml(sc))
            _check_state(run_dir, state, force)
            if state != "complete":
                todo.append(i)
        rows: dict[int, dict[str, Any]] = {}

        def record(i: int, row: dict[str, Any]) -> None:
            rows[i] = row
            _write_csv(pd.DataFrame([rows[k] for k in sorted(rows)]), out / "study.csv")
            bar.update()

        with tqdm(total=len(grid), desc=f"study {study.name}", unit="run",
                  disable=not progress) as bar:
            if scheduler is None and (workers == 1 or len(todo) <= 1):
                for i, a in enumerate(args):
                    record(i, run_one(*a))
            else:
                _run_on_dask(args, todo, record, min(workers, len(todo)), scheduler)
        table = pd.DataFrame([rows[k] for k in sorted(rows)])
        table = add_oracle_gap(table, list(study.sweep))
        _write_csv(table, out / "study.csv")
        (out / "study.md").write_text(markdown_table(table))
        study_figures(table, out)
        failed = int((table["status"] == "failed").sum())
        marker = read_marker(out, "study") or new_marker("study")
        _write_study_marker(out, {**marker, "state": "complete", "runs": len(table),
                                  "failed": failed})
    finally:
        lock.release()
    return table


def _run_on_dask(args: list[tuple[Any, ...]], todo: list[int], record: Any, workers: int,
                 scheduler: str | None) -> None:
    """The runs ``todo`` on dask workers, the others (skipped, invalid) here; ``record``
    each row as its run finishes. Stopping (Ctrl-C, SIGTERM) closes the cluster: its
    runs stop where they are and resume from their checkpoints next time."""
    from distributed import as_completed

    from cosim.results.stop import steps_finished

    client, cluster = _client(workers, scheduler)
    try:
        futures = {client.submit(run_one, *args[i], key=f"run-{args[i][1]}-{uuid4().hex[:8]}",
                                 pure=False): i for i in todo}
        sent = set(todo)
        for i in range(len(args)):  # while the workers run
            if i not in sent:
                record(i, run_one(*args[i]))
        # a stop request (SIGTERM) from now on raises at once: nothing steps here
        steps_finished()
        # distributed leaves as_completed and its methods unannotated
        done = as_completed(futures)  # type: ignore[no-untyped-call]
        while not done.is_empty():  # type: ignore[no-untyped-call]
            batch = (done.next_batch(block=False)  # type: ignore[no-untyped-call]
                     if done.has_ready() else [])  # type: ignore[no-untyped-call]
            if not batch:
                time.sleep(POLL_S)
                continue
            for future in batch:
                i = futures[future]
                if future.status == "finished":
                    row = future.result()
                else:  # the worker died (KilledWorker), the task was cancelled
                    exc = future.exception() if future.status == "error" else None
                    run_id, point = args[i][1], args[i][2]
                    row = {"run": run_id, **point, "status": "failed",
                           "note": _failure_note(exc) if exc else f"task {future.status}"}
                record(i, row)
                future.release()
    finally:
        client.close()  # type: ignore[no-untyped-call]  # distributed: Client.close untyped
        if cluster is not None:
            cluster.close()


def add_oracle_gap(table: pd.DataFrame, sweep_keys: list[str]) -> pd.DataFrame:
    """``cost_gap_to_oracle``: (cost - oracle cost) / oracle cost at the same sweep point."""
    if "cost" not in table or not (table["variant"] == "oracle").any():
        return table
    oracle = table[(table["variant"] == "oracle") & (table["status"] == "ok")]
    gaps = []
    for _, row in table.iterrows():
        match = oracle
        for k in sweep_keys:
            match = match[match[k] == row[k]]
        if row.get("status") != "ok" or match.empty:
            gaps.append(float("nan"))
        else:
            ref = float(match["cost"].iloc[0])
            gaps.append((row["cost"] - ref) / ref)
    table = table.copy()
    table["cost_gap_to_oracle"] = gaps
    return table


MD_COLUMNS = [
    ("variant", "variant", "{}"), ("fraction_of_peak", "c", "{:g}"), ("status", "status", "{}"),
    ("cost", "cost $", "{:,.0f}"), ("cost_gap_to_oracle", "gap to oracle", "{:+.1%}"),
    ("mean_district_grid_kwh", "grid kWh/step", "{:.3f}"), ("limit_kwh", "c kWh/step", "{:.3f}"),
    ("grid_over_limit", "grid/c", "{:.3f}"), ("final_backlog_kwh", "final backlog kWh", "{:.1f}"),
    ("final_avg_unmet_kwh", "cum. avg unmet kWh", "{:.2f}"),
    ("unmet_slope_ratio", "unmet slope last/first", "{:.3f}"),
    ("dropped_kwh", "dropped kWh", "{:.1f}"), ("hours_over_limit", "h over c", "{:g}"),
    ("lambda_mean_final", "mean lambda", "{:.2f}"),
    ("lambda_spread_last10pct", "lambda spread, last 10 %", "{:.2f}"),
    ("lambda_spread_last10pct_rel", "spread / lambda_max", "{:.1%}"),
    ("agents_at_lambda_max", "at lambda_max", "{:.0f}"),
    ("double_share_at_lambda_max", "double agents' time at lambda_max", "{:.0%}"),
    ("double_share_near_lambda_max", "... >= 0.9 lambda_max", "{:.0%}"),
    ("trafo_overload_hours", "trafo >100 % h", "{:g}"),
    ("max_trafo_loading_percent", "max trafo %", "{:.1f}"),
    ("line_overload_hours", "line >100 % h", "{:g}"),
    ("hours_outside_095_105_pu", "V outside 0.95-1.05 h", "{:g}"),
    ("hours_outside_090_110_pu", "V outside 0.90-1.10 h", "{:g}"),
    ("grid_unknown_steps", "unknown grid steps (hours are lower bounds)", "{:g}"),
    ("grid_constraint_violation_hours", "grid constraint violated h", "{:g}"),
    ("messages_per_step", "messages/step", "{:,.0f}"),
    ("negotiation_iterations_mean", "negotiation iterations", "{:.1f}"),
    ("wall_ms_per_step", "wall ms/step", "{:,.1f}"),
    ("controller_ms_per_step", "controller ms/step", "{:,.1f}"),
]


def markdown_table(table: pd.DataFrame) -> str:
    """The study table as Markdown: the columns of ``MD_COLUMNS`` it has, formatted."""
    df = table.rename(columns=lambda c: c.rsplit(".", 1)[-1])
    cols = [(c, h, f) for c, h, f in MD_COLUMNS if c in df]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c, _, fmt in cols:
            v = row[c]
            if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
                cells.append("")
            else:
                try:
                    cells.append(fmt.format(v))
                except (ValueError, TypeError):
                    cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def study_figures(table: pd.DataFrame, out: Path) -> None:
    """Cumulative average unmet demand per c (one panel per variant), lambda
    trajectories, and district grid energy against c."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.consensus.duals import DUAL_MODES
    from agents.fleet.kpis import cumulative_average_unmet_kwh

    ok = table[table["status"] == "ok"]
    if ok.empty:
        return
    key = next((c for c in table.columns if c.endswith("fraction_of_peak")), None)
    variants = list(dict.fromkeys(ok["variant"]))
    ncols = min(4, len(variants))
    nrows = -(-len(variants) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), sharey=True,
                             squeeze=False)
    for ax, variant in zip(axes.flat, variants, strict=False):
        for _, row in ok[ok["variant"] == variant].iterrows():
            b = read_table(out / row["run_dir"], "buildings",
                           columns=["time", "unmet_kwh"])
            cu = cumulative_average_unmet_kwh(b)
            label = f"c={row[key]:g}" if key else row["run"]
            ax.plot(cu.index, cu.to_numpy(), label=label)
        ax.set(title=variant, xlabel="step", ylabel="cumulative avg unmet [kWh/step]")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(variants):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "unmet_by_c.png", dpi=100)
    plt.close(fig)

    modes = [v for v in variants if v in DUAL_MODES]  # variants named after a dual mode
    if modes:
        points = sorted(ok[key].unique()) if key else [None]
        fig, axes = plt.subplots(len(modes), len(points),
                                 figsize=(3.6 * len(points), 2.6 * len(modes)),
                                 sharey=True, squeeze=False)
        for r, variant in enumerate(modes):
            for c, point in enumerate(points):
                ax = axes[r][c]
                sel = ok[(ok["variant"] == variant) & ((ok[key] == point) if key else True)]
                if sel.empty:
                    ax.axis("off")
                    continue
                b = read_table(out / sel["run_dir"].iloc[0], "buildings",
                               columns=["time", "building", "lambda"])
                lam = b.pivot(index="time", columns="building", values="lambda")
                for col in lam.columns:
                    ax.plot(lam.index, lam[col].to_numpy(), lw=0.4)
                ax.set_title(f"{variant}, c={point:g}" if key else variant, fontsize=9)
                if c == 0:
                    ax.set_ylabel("lambda")
                if r == len(modes) - 1:
                    ax.set_xlabel("step")
        fig.tight_layout()
        fig.savefig(out / "lambda_trajectories.png", dpi=90)
        plt.close(fig)

    gc_hours = ok.get("grid_constraint_violation_hours")
    if gc_hours is not None and gc_hours.notna().any():
        grid_hours_figure(ok, out / "grid_hours.png")

    if key:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for variant in variants:
            part = ok[ok["variant"] == variant].sort_values("limit_kwh")
            ax.plot(part["limit_kwh"], part["mean_district_grid_kwh"], "o-", label=variant)
        lim = ok["limit_kwh"]
        ax.plot([lim.min(), lim.max()], [lim.min(), lim.max()], "k--", lw=0.8, label="= c")
        ax.set(xlabel="limit c [kWh/step]", ylabel="mean district grid [kWh/step]",
               title="District grid energy against c")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "grid_vs_c.png", dpi=100)
        plt.close(fig)


#: the grid KPIs of ``grid_hours.png`` (column, label)
GRID_HOURS = (("trafo_overload_hours", "transformer > 100 %"),
              ("line_overload_hours", "any line > 100 %"),
              ("hours_outside_095_105_pu", "a voltage outside 0.95-1.05 pu"))


def grid_hours_figure(ok: pd.DataFrame, path: Path) -> None:
    """Bars per variant: transformer and line overload hours and hours outside the voltage
    band (one point per variant: a study with grid constraints, no sweep), with the
    cost relative to the first variant written above each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(v) for v in ok["variant"]]
    x = np.arange(len(labels))
    width = 0.8 / len(GRID_HOURS)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels)), 4))
    for j, (col, name) in enumerate(GRID_HOURS):
        ax.bar(x + (j - 1) * width, ok[col].to_numpy(dtype=float), width, label=name)
    top = np.nanmax(ok[[c for c, _ in GRID_HOURS]].to_numpy(dtype=float))
    for xi, cost in zip(x, ok["cost"].to_numpy(dtype=float), strict=True):
        ax.text(float(xi), top * 1.02, f"${cost:,.0f}", ha="center", fontsize=7)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set(ylabel="hours", title="Grid limits by controller (cost above)")
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
