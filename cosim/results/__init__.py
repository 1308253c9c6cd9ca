"""What a run writes and how it is read: the run directory, streamed results, KPIs,
plots and the HTML report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from cosim.results.html import write_run_report, write_study_report
    from cosim.results.provenance import code_fingerprint
    from cosim.results.readers import read_status, read_table
    from cosim.results.report import compute_kpis, load_kpis, summary_table, write_report
    from cosim.results.rundir import DirLock, RunDirError
    from cosim.results.stop import RunStopped
    from cosim.results.writer import RunWriteError, RunWriter

_API = {
    "write_run_report": "html",
    "write_study_report": "html",
    "code_fingerprint": "provenance",
    "compute_kpis": "report",
    "load_kpis": "report",
    "summary_table": "report",
    "write_report": "report",
    "DirLock": "rundir",
    "RunDirError": "rundir",
    "RunStopped": "stop",
    "RunWriteError": "writer",
    "RunWriter": "writer",
    "read_status": "readers",
    "read_table": "readers",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
