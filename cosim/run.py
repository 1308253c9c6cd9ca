"""``cosim run``: scenario file in, run directory out (DESIGN.md §7).

Order of work: validate and build everything (errors name the field, nothing is
written yet); create the run directory and write ``scenario.yaml``,
``feeder.json`` and ``comm_graph.json``; run mosaik while the Collector streams
results; join the parts, compute ``kpis.json`` and the plots; mark the run
``complete`` in ``status.json``. A failure after the directory exists marks it
``failed`` and keeps whatever was flushed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.graphs import graph_to_json
from cosim.build import Built, build, resolve_path
from cosim.results import RunWriter, prepare_run_dir
from cosim.scenario import Scenario, load_scenario, resolved_yaml


@dataclass
class RunOutcome:
    run_dir: Path
    kpis: dict[str, Any]
    wall_s: float
    steps: int


def run_directory(sc: Scenario, out: str | Path | None) -> Path:
    if out is not None:
        return Path(out)
    return resolve_path(sc.output.directory.format(name=sc.name), base=Path.cwd())


def prepare_scenario(path: str | Path, overrides: list[tuple[str, Any]] | None = None,
                     steps: int | None = None) -> tuple[Scenario, Built]:
    if steps is not None:
        overrides = [*(overrides or []), ("time.steps", steps)]
    sc = load_scenario(path, overrides)
    return sc, build(sc, str(path))


def execute(sc: Scenario, built: Built, run_dir: Path, *, progress: bool = True,
            force: bool = False, engine: str = "mosaik") -> RunOutcome:
    """Run a built scenario into ``run_dir`` (``engine``: "mosaik" or "plain")."""
    from cosim.report import write_report

    run_dir = prepare_run_dir(run_dir, force=force)
    scenario_file = run_dir / "scenario.yaml"
    scenario_file.write_text(resolved_yaml(sc))
    grid = built.grid
    if grid is not None:
        from grid_models.feeders import save_feeder_json

        save_feeder_json(grid.net, run_dir / "feeder.json")
    (run_dir / "comm_graph.json").write_text(graph_to_json(built.graph, built.names))
    writer = RunWriter(
        run_dir, built.names, built.setup.bus,
        grid.powerflow.bus_ids if grid else None, grid.powerflow.line_ids if grid else None,
        grid.powerflow.trafo_ids if grid else None, sc.time.steps, sc.output.flush_every,
    )
    t0 = time.perf_counter()
    try:
        if engine == "mosaik":
            from cosim.world import run_world

            run_world(built, writer, scenario_path=scenario_file, progress=progress)
        elif engine == "plain":
            from cosim.plain import run_plain_into

            run_plain_into(built, writer, progress=progress)
        else:
            raise ValueError(f"unknown engine {engine!r}; valid: mosaik, plain")
        wall = time.perf_counter() - t0
        if writer.steps_done != sc.time.steps:
            raise RuntimeError(f"the run stopped after {writer.steps_done} of "
                               f"{sc.time.steps} steps")
        writer.finalize()
        kpis = write_report(run_dir, built, plots=sc.output.plots, wall_s=wall)
    except BaseException as exc:
        writer.set_status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    writer.set_status("complete", wall_s=round(wall, 3), engine=engine)
    return RunOutcome(run_dir, kpis, wall, sc.time.steps)
