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

Modules: ``schema`` (the study file and its grid of runs), ``metrics`` (a run's row of
``study.csv``), ``folder`` (the study folder and its run folders), ``execution`` (runs
here or on dask workers), ``tables`` (``study.md``), ``figures`` (the PNGs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from cosim.tools.study.execution import (
        check_scheduler,
        parse_workers,
        run_one,
        run_study,
        study_workers,
    )
    from cosim.tools.study.metrics import TIMING_COLUMNS, controller_metrics, run_metrics
    from cosim.tools.study.schema import Study, StudyFile, load_study, study_from_args

_API = {
    "check_scheduler": "execution",
    "parse_workers": "execution",
    "run_one": "execution",
    "run_study": "execution",
    "study_workers": "execution",
    "TIMING_COLUMNS": "metrics",
    "controller_metrics": "metrics",
    "run_metrics": "metrics",
    "Study": "schema",
    "StudyFile": "schema",
    "load_study": "schema",
    "study_from_args": "schema",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
