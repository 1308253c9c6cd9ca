"""``cosim run``: scenario file in, run directory out (docs/results_contract.md).

Order of work: validate and build everything (errors name the field, nothing is
written yet); create the run directory, write its marker ``status.json`` first (with
``setup: started`` and the hashes of its inputs, ``cosim.engine.inputs``), then
``scenario.yaml``, ``feeder.json``, ``comm_graph.json`` (and ``grid_constraints.json``),
each whole or not at all, then ``setup: complete``; run mosaik while the Collector
streams results; join the parts, compute ``kpis.json``, the plots and ``report.html``;
mark the run ``complete`` in ``status.json``. A failure after the directory exists (an
exception, Ctrl-C, SIGTERM, a full disk) writes the whole steps still buffered,
marks it ``failed`` with the reason and keeps whatever was flushed; ``resume``
checks that the inputs are unchanged and continues such a run from its newest
checkpoint, or from step 0 when its set-up had not finished.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.consensus.graphs import graph_to_json
from agents.control.contract import Controller, check_controller, controller_name
from cosim.engine.checkpoint import (
    DUALS_COMPONENT,
    FLEET_COMPONENT,
    GRID_COMPONENT,
    STATE_DIR,
    shard_component,
)
from cosim.engine.inputs import changed_inputs, changed_setup_files, input_hashes, sha256_file
from cosim.results.jsonio import json_text
from cosim.results.parts import PARTS_DIR
from cosim.results.provenance import code_fingerprint, other_code
from cosim.results.resume import resume_point, truncate_parts
from cosim.results.rundir import (
    STATUS_FILE,
    DirLock,
    RunDirError,
    check_output_path,
    claim_directory,
    new_marker,
    read_marker,
    unmarked_entries,
    write_atomic,
)
from cosim.results.stop import steps_finished, steps_starting
from cosim.results.writer import RunWriteError, RunWriter
from cosim.scenario.build import Built, build, data_problems
from cosim.scenario.errors import ScenarioError
from cosim.scenario.limits import MAX_RESOLVED_SCENARIO_BYTES
from cosim.scenario.loader import load_scenario, resolved_yaml
from cosim.scenario.model import Scenario

ENGINES = ("mosaik", "plain")
SCENARIO_FILE = "scenario.yaml"
FEEDER_FILE = "feeder.json"
#: the set-up files a run may have, written in this order before its first step
SETUP_FILES = (SCENARIO_FILE, FEEDER_FILE, "comm_graph.json", "grid_constraints.json")
#: ``setup`` in status.json: the set-up files are being written / are all in place
SETUP_STARTED, SETUP_COMPLETE = "started", "complete"


@dataclass
class RunOutcome:
    """What a run returns: its directory, KPIs, wall time (s) and steps run."""

    run_dir: Path
    kpis: dict[str, Any]
    wall_s: float
    steps: int  # steps run by this call (fewer than the scenario's after --resume)
    scenario: Scenario | None = None


def run_directory(sc: Scenario, out: str | Path | None, source: str = "<scenario>") -> Path:
    """Where a run goes: ``--out`` (explicit) or the scenario's ``output.directory``.

    Dangerous places are refused (``cosim.results.rundir.check_output_path``); a relative
    ``output.directory`` may not leave the working directory.
    """
    if out is not None:
        return check_output_path(out, explicit=True, what="--out")
    return check_output_path(sc.output.directory.format(name=sc.name), explicit=False,
                             what=f"{source}: output.directory")


def prepare_scenario(path: str | Path, overrides: list[tuple[str, Any]] | None = None,
                     steps: int | None = None) -> tuple[Scenario, Built]:
    """Load, override and build a scenario. ``steps`` (``--steps``) changes the run's
    length, not its constraint: a peak-based c is still taken over the steps the
    scenario declares (recorded as ``constraint.peak_horizon_steps``)."""
    try:
        sc = load_scenario(path, overrides, steps)
    except ScenarioError as exc:  # the data checks the schema's errors leave possible, too
        if exc.partial is not None:
            exc.errors.extend(data_problems(exc.partial, exc.failed_sections, str(path)))
            raise ScenarioError(str(path), exc.errors) from None
        raise
    return sc, build(sc, str(path))


def checkpoint_components(built: Built, engine: str) -> list[str]:
    """The state files an engine saves with each checkpoint (``cosim.engine.checkpoint``)."""
    grid = [GRID_COMPONENT] if built.grid is not None else []
    if engine == "plain":
        return [FLEET_COMPONENT, *grid]
    from cosim.engine.world import shard_bounds

    shards = shard_bounds(built.n, built.scenario.sharding.shards)
    return [DUALS_COMPONENT, *(shard_component(start) for start, _ in shards), *grid]


def grid_solve_mode(built: Built, extend: Callable[..., None] | None) -> str:
    """``batch`` when nothing reads the grid's results within the run, else ``per_step``.

    Only the writer reads them, unless the scenario has grid constraints (their
    multipliers are fed by the power flow of every step) or a caller adds simulators of
    its own (``extend``), which might. Both give the same numbers (``GridFeed``); the choice
    is recorded in ``status.json`` (``grid_solve``).
    """
    if extend is not None or built.grid is None or built.grid_constraints is not None:
        return "per_step"
    return "batch"


def _writer(sc: Scenario, built: Built, run_dir: Path, **kwargs: Any) -> RunWriter:
    grid = built.grid
    gc = built.grid_constraints
    constraints = [(s.name, s.kind) for s in gc.specs] if gc is not None else None
    return RunWriter(
        run_dir, built.names, built.setup.bus,
        grid.powerflow.bus_ids if grid else None, grid.powerflow.line_ids if grid else None,
        grid.powerflow.trafo_ids if grid else None, sc.time.steps, sc.output.flush_every,
        constraints=constraints, start_row=sc.time.start, **kwargs,
    )


def given_controller_marker(built: Built) -> dict[str, Any]:
    """What ``status.json`` records of a controller object given from Python (else {})."""
    given = built.given_controller
    if given is None:
        return {}
    cls = type(given)
    return {"controller_object": {"class": f"{cls.__module__}:{cls.__qualname__}",
                                  "name": controller_name(given)}}


def use_controller(built: Built, controller: Controller | None) -> None:
    """Put a controller object given from Python in place of the scenario's.

    Both engines then run this object (``built.controller``) for the whole fleet.

    Raises:
        ControllerError: if the object breaks the contract (agents.control.contract).
        ValueError: if the scenario shards the fleet (the object cannot be split) or runs
            shards in processes of their own (the object cannot travel there).
    """
    if controller is not None:
        check_controller(controller, "controller=")
        built.controller = controller
    given = built.given_controller
    if given is None:
        return
    sharding = built.scenario.sharding
    if sharding.shards > 1 or sharding.mode != "inprocess":
        raise ValueError(f"the controller object {type(given).__qualname__} given from Python "
                         "acts for the whole fleet in this process; the scenario has "
                         f"sharding.shards {sharding.shards}, mode {sharding.mode!r}. Give "
                         "shards: 1, mode: inprocess, or name the class in the scenario "
                         "(controller.kind: python) so that each shard builds its own")


def execute(sc: Scenario, built: Built, run_dir: Path, *, progress: bool = True,
            force: bool = False, engine: str = "mosaik",
            notes: list[str] | None = None, extend: Callable[..., None] | None = None,
            extra_sims: dict[str, dict[str, Any]] | None = None,
            grid_solve: str | None = None,
            controller: Controller | None = None) -> RunOutcome:
    """Run a built scenario into a new ``run_dir`` (``engine``: "mosaik" or "plain").

    ``controller``: an object that implements the contract of :mod:`agents.control.contract`,
    run by both engines in place of the scenario's controller (so is an object assigned
    to ``built.controller``); ``status.json`` records its class as ``controller_object``,
    and :func:`resume` then needs it again.

    The directory is locked for the run; an earlier run there is replaced only
    with ``force`` (``cosim.results.rundir.claim_directory``). With the mosaik engine,
    ``extend(handles)`` may add simulators of one's own (their sim_config entries in
    ``extra_sims``) and connect them, e.g. to one building (``cosim.engine.world.Handles``).
    ``grid_solve`` ("batch" or "per_step") overrides the automatic choice
    (:func:`grid_solve_mode`); batching is refused when the world is extended.
    """
    if grid_solve == "batch" and extend is not None:
        raise ValueError("grid_solve='batch' with extend: an added simulator may read the "
                         "grid's results within the run; use per_step")
    if (extend is not None or extra_sims) and engine != "mosaik":
        raise ValueError("extend/extra_sims need the mosaik engine")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if sc.controller.kind == "remote" and engine != "mosaik":
        raise ValueError("controller.kind remote joins the co-simulation through mosaik; run "
                         "it with the mosaik engine")
    use_controller(built, controller)
    lock = claim_directory(run_dir, "run", force=force)
    try:
        run_dir = Path(run_dir)
        texts = setup_texts(sc, built)
        feeder = texts.get(FEEDER_FILE)
        recorded = {"setup": SETUP_STARTED,
                    "inputs": input_hashes(built, texts[SCENARIO_FILE], feeder)}
        try:  # the marker first: from here on the folder is recognisably this run's
            writer = _writer(sc, built, run_dir, engine=engine,
                             grid_solve=grid_solve or grid_solve_mode(built, extend),
                             marker={**new_marker("run"), **given_controller_marker(built)},
                             recorded=recorded, begin=False)
        except OSError as exc:
            raise RunWriteError(f"{run_dir}: cannot write the run's marker status.json: "
                                f"{exc.strerror or exc}") from exc
        write_setup(writer, texts)
        return _run_engine(sc, built, writer, engine, progress, start_step=0, extend=extend,
                           extra_sims=extra_sims)
    finally:
        lock.release()


def setup_texts(sc: Scenario, built: Built) -> dict[str, str]:
    """The set-up files of a run (docs/results_contract.md) by name, in writing order."""
    texts = {SCENARIO_FILE: resolved_yaml(sc)}
    if built.grid is not None:
        from grid_models.feeders import feeder_json_text

        texts[FEEDER_FILE] = feeder_json_text(built.grid.net)
    # only a shard built without the feeder lacks the graph (cosim.scenario.build.Built)
    assert built.graph is not None
    texts["comm_graph.json"] = graph_to_json(built.graph, built.names)
    if built.grid_constraints is not None:
        texts["grid_constraints.json"] = json_text(built.grid_constraints.describe(built.names))
    return texts


def write_setup(writer: RunWriter, texts: dict[str, str]) -> None:
    """Write the set-up files (each whole or not at all), then start the run's steps.

    The marker already says ``setup: started``; only when every file is in place does it
    say ``complete`` (with their hashes). A failure here (a full disk, Ctrl-C) marks the
    run failed with the set-up unfinished: ``--resume`` then starts it again from step 0,
    ``--force`` replaces it.
    """
    run_dir = writer.run_dir
    try:
        for name, text in texts.items():
            write_atomic(run_dir / name, text)
        setup_files = {name: sha256_file(run_dir / name) for name in SETUP_FILES
                       if (run_dir / name).is_file()}
        writer.recorded.update(setup=SETUP_COMPLETE, setup_files=setup_files)
        writer.begin()
    except BaseException as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, OSError):
            reason = exc.strerror or reason
        writer.fail(f"{type(exc).__name__} during the set-up: {reason}")
        if isinstance(exc, OSError):
            raise RunWriteError(f"{run_dir}: cannot write the run's set-up files: "
                                f"{exc.strerror or exc}") from exc
        raise


def _refuse_changed_inputs(run_dir: Path, status: dict[str, Any], now: dict[str, Any],
                           notes: list[str] | None) -> None:
    """Raise if the run's recorded inputs (or its set-up files) differ from today's."""
    recorded = status.get("inputs")
    if not isinstance(recorded, dict):
        if notes is not None:
            notes.append(f"{run_dir}: status.json records no input hashes (a run from an "
                         "older version): cannot tell whether its inputs changed since it "
                         "started")
        return
    changes = changed_inputs(recorded, now)
    setup_files = status.get("setup_files")
    if status.get("setup") == SETUP_COMPLETE and isinstance(setup_files, dict):
        changes.extend(changed_setup_files(run_dir, setup_files))
    if changes:
        raise _changed(run_dir, changes)


def _changed(run_dir: Path, changes: list[str]) -> RunDirError:
    return RunDirError(
        f"{run_dir}: cannot resume: changed since the run started: {'; '.join(changes)}. "
        "Resuming would join results of different inputs in one table; restore them, "
        "or run anew (cosim run SCENARIO --out DIR --force)")


def _clear_failed_setup(run_dir: Path) -> None:
    """Remove what an unfinished set-up may have left: the set-up files but the scenario,
    their temporary files, the part and state folders (nothing else: only ``--force``
    empties a run directory)."""
    names = [*SETUP_FILES[1:], *(f"{name}.tmp" for name in (*SETUP_FILES, STATUS_FILE))]
    for name in names:
        (run_dir / name).unlink(missing_ok=True)
    for folder in (PARTS_DIR, STATE_DIR):
        path = run_dir / folder
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def _moved_on(now: dict[str, Any] | None, then: dict[str, Any]) -> bool:
    """True if the run's marker ``now`` is not the one ``then`` that resume checked."""
    keys = ("run_id", "state", "steps_done", "setup", "updated_unix")
    return now is None or any(now.get(k) != then.get(k) for k in keys)


def _no_marker(run_dir: Path) -> RunDirError:
    """The error for ``--resume`` on a folder without a run marker."""
    if run_dir.is_dir() and not unmarked_entries(run_dir):
        return RunDirError(f"{run_dir}: the run's set-up was interrupted before its marker "
                           "status.json was written; nothing to resume; start the run again "
                           f"(cosim run SCENARIO --out {run_dir} --force)")
    return RunDirError(f"{run_dir}: not a run directory made by cosim (no run marker in "
                       "status.json); nothing to resume")


def resume(run_dir: str | Path, *, progress: bool = True,
           notes: list[str] | None = None, controller: Controller | None = None) -> RunOutcome:
    """Continue an interrupted run from its newest checkpoint (``cosim run --resume``).

    The run's own ``scenario.yaml`` (the resolved scenario) is built again and the
    inputs' hashes compared with those recorded at its start (``cosim.engine.inputs``): any
    change is refused. Then the fleet, duals and controller state saved with the
    checkpoint are set, the results after it dropped, and the run goes on with the
    engine it started with. The tables then equal those of an uninterrupted run, bit
    for bit. A run whose set-up did not finish starts again from step 0.
    A run started with a controller object given from Python (``controller_object``
    in ``status.json``) needs that object again as ``controller``; a run of a scenario
    that names a class (``controller.kind: python``) imports the class anew, so a fixed
    controller continues the run.
    """
    run_dir = Path(run_dir)
    status = read_marker(run_dir, "run")
    if status is None:
        raise _no_marker(run_dir)
    if status.get("state") == "complete":
        raise RunDirError(f"{run_dir}: the run is complete; nothing to resume")
    made_by = other_code(status)
    if made_by is not None:
        raise RunDirError(
            f"{run_dir}: the run was started by other code (fingerprint {made_by}, this code "
            f"{code_fingerprint()}; cosim.results.provenance); resuming would join results of two "
            "versions in one table. Resume it with the code that started it, or run it anew "
            "(cosim run SCENARIO --out DIR --force)")
    if status.get("code") is None and notes is not None:
        notes.append(f"{run_dir}: status.json records no code fingerprint (a run from an "
                     "older version): cannot tell whether the code changed since it started")
    given = status.get("controller_object")
    if given is not None and controller is None:
        raise RunDirError(f"{run_dir}: the run was started with a controller object given "
                          f"from Python ({given.get('class')}), which scenario.yaml does not "
                          "name; resume it from Python with "
                          "cosim.engine.run.resume(RUN_DIR, controller=...)")
    if given is None and controller is not None:
        raise RunDirError(f"{run_dir}: the run was started with the scenario's controller; "
                          "resume it without controller=")
    # every check reads only: a refused resume leaves the folder as it was, lock included
    scenario_file = run_dir / SCENARIO_FILE
    if not scenario_file.is_file():
        raise RunDirError(f"{run_dir}: the run's set-up stopped before scenario.yaml was "
                          "written; nothing to resume; start the run again (cosim run "
                          f"SCENARIO --out {run_dir} --force)")
    recorded_inputs = status.get("inputs")
    if isinstance(recorded_inputs, dict) and recorded_inputs.get(
            "scenario") != sha256_file(scenario_file):  # before it is even read
        raise _changed(run_dir, ["the resolved scenario (the run's scenario.yaml)"])
    sc = load_scenario(scenario_file, max_bytes=MAX_RESOLVED_SCENARIO_BYTES)
    built = build(sc, str(scenario_file))
    use_controller(built, controller)
    texts = setup_texts(sc, built)
    now = input_hashes(built, scenario_file.read_bytes(), texts.get(FEEDER_FILE))
    _refuse_changed_inputs(run_dir, status, now, notes)
    engine = status.get("engine") or "mosaik"
    if engine not in ENGINES:
        raise RunDirError(f"{run_dir}: status.json names an unknown engine {engine!r}")
    lock = DirLock.acquire(run_dir)
    try:
        if _moved_on(read_marker(run_dir, "run"), status):
            raise RunDirError(f"{run_dir}: another cosim process changed the run while this "
                              "one checked it; look at its status.json before resuming again")
        # runs of older versions record no set-up state: theirs finished before any step
        setup_done = status.get("setup", SETUP_COMPLETE) == SETUP_COMPLETE
        if setup_done:
            start, next_part = resume_point(run_dir, checkpoint_components(built, engine))
            truncate_parts(run_dir, next_part, start)
        else:  # the set-up failed: what it may have written, bar the scenario, is redone
            _clear_failed_setup(run_dir)
            start, next_part = 0, 0
        history = [*status.get("resumes", []),
                   {"from_step": start, "at_unix": round(time.time(), 3),
                    "previous_state": status.get("state")}]
        marker = {k: status[k] for k in ("format", "run_id", "created_unix",
                                         "controller_object") if k in status}
        recorded = {k: status[k] for k in ("setup", "inputs", "setup_files") if k in status}
        recorded.setdefault("inputs", now)
        writer = _writer(sc, built, run_dir, engine=engine,
                         grid_solve=status.get("grid_solve") or grid_solve_mode(built, None),
                         marker=marker, start_step=start,
                         next_part=next_part, history=history, recorded=recorded,
                         begin=setup_done)
        if not setup_done:
            write_setup(writer, {k: v for k, v in texts.items() if k != SCENARIO_FILE})
        if notes is not None:
            notes.append(f"resuming {run_dir} at step {start} of {sc.time.steps}"
                         + ("" if setup_done else " (its set-up had not finished)"))
        return _run_engine(sc, built, writer, engine, progress, start_step=start)
    finally:
        lock.release()


def _run_engine(sc: Scenario, built: Built, writer: RunWriter, engine: str, progress: bool,
                start_step: int, extend: Callable[..., None] | None = None,
                extra_sims: dict[str, dict[str, Any]] | None = None) -> RunOutcome:
    from cosim.results.report import write_report

    run_dir = writer.run_dir
    grid_solve = writer.grid_solve
    steps_starting()
    t0 = time.perf_counter()
    try:
        if engine == "mosaik":
            from cosim.engine.world import run_world

            run_world(built, writer, scenario_path=run_dir / "scenario.yaml", progress=progress,
                      start_step=start_step, extend=extend, extra_sims=extra_sims,
                      grid_solve=grid_solve)
        else:
            from cosim.engine.plain import run_plain_into

            run_plain_into(built, writer, progress=progress, start_step=start_step,
                           grid_solve=grid_solve)
        wall = time.perf_counter() - t0
        steps_finished()  # a SIGTERM from now on stops at once (no step boundary to wait for)
        if writer.steps_done != sc.time.steps:
            raise RuntimeError(f"the run stopped after {writer.steps_done} of "
                               f"{sc.time.steps} steps")
        writer.finalize()
        kpis = write_report(run_dir, built, plots=sc.output.plots, wall_s=wall,
                            steps_run=sc.time.steps - start_step)
        from cosim.results.html import write_run_report

        write_run_report(run_dir)
    except BaseException as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, KeyboardInterrupt):
            reason = f"interrupted ({reason})"
        problem = writer.fail(f"{type(exc).__name__}: {reason}")
        if isinstance(exc, OSError):
            raise RunWriteError(f"{run_dir}: cannot write: {exc.strerror or exc}") from exc
        if problem is not None and not isinstance(exc, RunWriteError):
            raise RunWriteError(problem) from exc
        raise
    writer.set_status("complete", wall_s=round(wall, 3))
    writer.close()
    return RunOutcome(run_dir, kpis, wall, sc.time.steps - start_step, sc)
