"""Tools over run directories: verify, compare, studies and the demo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from cosim.tools.compare import Comparison, Tolerance, compare_runs
    from cosim.tools.study.execution import run_study
    from cosim.tools.study.schema import Study, load_study
    from cosim.tools.verify import Verification, verify_run

_API = {
    "Comparison": "compare",
    "Tolerance": "compare",
    "compare_runs": "compare",
    "Study": "study.schema",
    "load_study": "study.schema",
    "run_study": "study.execution",
    "Verification": "verify",
    "verify_run": "verify",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
