"""Settings declared once: a domain config's field carries its default, bounds and meaning.

A frozen dataclass declares ``alpha: float = setting(0.1, ge=0, doc="step of lambda")``;
its ``__post_init__`` checks the values with :func:`check_settings`, and the scenario
schema (``cosim.scenario``) builds its fields, and the documentation its tables, from
:func:`settings_of`, so a default or a bound is written in one place. Used by
``agents`` (the lowest layer holds it, as it holds ``lazy_api``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

_KEY = "setting"


@dataclass(frozen=True)
class Bound:
    """The valid values of one setting: inclusive (``ge``, ``le``) or strict (``gt``)
    bounds, whether it is an integer, and what it means (``doc``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    integer: bool = False
    doc: str = ""

    def rule(self) -> str:
        """The bounds in words: ``>= 0``, ``> 0``, ``in [0, 1]``."""
        low = self.ge if self.ge is not None else self.gt
        if self.ge is not None and self.le is not None:
            return f"in [{self.ge:g}, {self.le:g}]"
        parts = [f">= {low:g}" if self.ge is not None else f"> {low:g}" if low is not None
                 else "", f"<= {self.le:g}" if self.le is not None else ""]
        return " and ".join(p for p in parts if p)


def setting(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, integer: bool = False, doc: str = "") -> Any:
    """A dataclass field with ``default`` and its :class:`Bound` (``integer``: a whole
    number; a ``None`` default means the setting is optional)."""
    bound = Bound(ge=ge, gt=gt, le=le, integer=integer, doc=doc)
    return dataclasses.field(default=default, metadata={_KEY: bound})


def settings_of(cls: type) -> dict[str, tuple[Any, Bound]]:
    """``name -> (default, bound)`` of every field of the dataclass ``cls`` declared with
    :func:`setting`, in declaration order."""
    return {f.name: (f.default, f.metadata[_KEY]) for f in dataclasses.fields(cls)
            if _KEY in f.metadata}


def check_settings(obj: Any, prefix: str = "") -> None:
    """Check every :func:`setting` of the frozen dataclass ``obj`` against its bounds and
    store it normalised (``float`` or ``int``; a setting with a text default is left to
    the class); raise ``ValueError`` naming the first
    wrong one as ``{prefix}{name} must be ...``."""
    for name, (default, bound) in settings_of(type(obj)).items():
        value = getattr(obj, name)
        if (value is None and default is None) or isinstance(default, str):
            continue  # optional and not given; a name (its class checks it)
        rule = bound.rule()
        if bound.integer:
            if isinstance(value, bool) or int(value) != value or not _within(value, bound):
                raise ValueError(f"{prefix}{name} must be an integer {rule}, got {value}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{prefix}{name} must be finite, got {value}")
            if not _within(value, bound):
                raise ValueError(f"{prefix}{name} must be {rule}, got {value}")
        object.__setattr__(obj, name, value)


def _within(value: float, bound: Bound) -> bool:
    return ((bound.ge is None or value >= bound.ge) and (bound.gt is None or value > bound.gt)
            and (bound.le is None or value <= bound.le))
