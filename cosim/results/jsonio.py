"""Strict JSON as cosim writes it: non-finite floats as null, numpy values as plain ones,
written atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cosim.results import rundir


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf; numpy scalars too) as ``None``,
    numpy scalars and arrays as plain Python values: what strict JSON can hold."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def json_text(obj: Any) -> str:
    """``obj`` as the strict, indented JSON text cosim writes (:func:`json_safe` first)."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    rundir.write_atomic(Path(path), json_text(obj))
