"""Running a study: one run to one row (:func:`run_one`), here or on ``dask.distributed``
workers, and the whole study into its folder (:func:`run_study`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pandas as pd

from cosim.results.rundir import (
    new_marker,
    read_marker,
)
from cosim.scenario.errors import ScenarioError, ScenarioInfeasible
from cosim.tools.study.figures import study_figures
from cosim.tools.study.folder import (
    check_run_state,
    claim_study_dir,
    existing_run,
    failure_note,
    study_run_dir,
    write_csv,
    write_study_marker,
)
from cosim.tools.study.metrics import add_oracle_gap, run_metrics
from cosim.tools.study.schema import Study
from cosim.tools.study.tables import markdown_table

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

POLL_S = 0.1  # how often a study waiting on its dask workers looks for a stop request


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
    from cosim.scenario.loader import resolved_yaml

    out = Path(out)
    head: dict[str, Any] = {"run": run_id, **point}
    try:
        try:
            sc, built = prepare_scenario(scenario, overrides, steps)
        except ScenarioInfeasible as exc:
            return {**head, "status": "infeasible", "note": exc.errors[0][1]}
        run_dir = study_run_dir(out, run_id)
        state = existing_run(run_dir, resolved_yaml(sc))
        check_run_state(run_dir, state, force)
        if state == "incomplete":
            resume(run_dir, progress=False)
        elif state != "complete":
            execute(sc, built, run_dir, progress=False,
                    force=state in ("changed", "other_code"), engine=engine)
        metrics = run_metrics(run_dir, uses_duals=sc.controller.kind == "policy")
    except Exception as exc:  # recorded in the row; the study goes on
        return {**head, "status": "failed", "note": failure_note(exc)}
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

    from cosim.scenario.loader import load_scenario, resolved_yaml

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
            run_dir = study_run_dir(out, run_id)
            try:
                sc = load_scenario(study.scenario, overrides, steps)
            except ScenarioError:
                continue  # recorded as failed by run_one, here
            state = existing_run(run_dir, resolved_yaml(sc))
            check_run_state(run_dir, state, force)
            if state != "complete":
                todo.append(i)
        rows: dict[int, dict[str, Any]] = {}

        def record(i: int, row: dict[str, Any]) -> None:
            rows[i] = row
            write_csv(pd.DataFrame([rows[k] for k in sorted(rows)]), out / "study.csv")
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
        write_csv(table, out / "study.csv")
        (out / "study.md").write_text(markdown_table(table))
        study_figures(table, out)
        failed = int((table["status"] == "failed").sum())
        marker = read_marker(out, "study") or new_marker("study")
        write_study_marker(out, {**marker, "state": "complete", "runs": len(table),
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
                           "note": failure_note(exc) if exc else f"task {future.status}"}
                record(i, row)
                future.release()
    finally:
        client.close()  # type: ignore[no-untyped-call]  # distributed: Client.close untyped
        if cluster is not None:
            cluster.close()
