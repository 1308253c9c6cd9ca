"""What a planning controller decided, written to the run directory (``decisions/``).

The model-based controllers (``controller.kind`` dmpc and epos) keep a log of their
decisions: per step the negotiation of DMPC (iterations, excess, messages, the
multipliers), per day the plan selection of EPOS (the plan index of every building).
At the end of a run each of their tables goes to ``decisions/<table>.csv`` and their
own timing (solver and negotiation seconds) to ``decisions/timing.json``
(docs/results_contract.md). The log is part of the controller's checkpoint, so a
resumed run writes the whole of it. Controllers without ``decisions()`` write nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The folder of a run directory that holds the decision tables.
DECISIONS_DIR = "decisions"


def write_decisions(run_dir: str | Path, controller: Any) -> list[Path]:
    """Write ``controller.decisions()`` tables and its ``timing``; the files written.

    ``controller`` is any controller (Any: the Controller protocol has no decisions).
    """
    decisions = getattr(controller, "decisions", None)
    if decisions is None:
        return []
    from cosim.results.jsonio import write_json

    out = Path(run_dir) / DECISIONS_DIR
    out.mkdir(exist_ok=True)
    written = []
    for name, table in decisions().items():
        path = out / f"{name}.csv"
        tmp = path.with_suffix(".csv.tmp")
        table.to_csv(tmp, index=False)
        tmp.replace(path)
        written.append(path)
    timing = getattr(controller, "timing", None)
    if timing is not None:
        path = out / "timing.json"
        write_json(path, {k: float(v) for k, v in timing.items()})
        written.append(path)
    return written


def read_decisions(run_dir: str | Path, name: str) -> Any:
    """The decision table ``name`` of a run (a pandas DataFrame), or None if absent."""
    path = Path(run_dir) / DECISIONS_DIR / f"{name}.csv"
    if not path.is_file():
        return None
    import pandas as pd

    return pd.read_csv(path)
