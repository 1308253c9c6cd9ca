"""Building blocks of the scenario's sections: the strict base model and the constrained
field types (ids, texts, counts, bus ids, steps), plus how a wrong value is echoed."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cosim.scenario.limits import (
    ID_PATTERN,
    ID_RULE,
    MAX_BUILDINGS,
    MAX_DEMAND_SCALE,
    MAX_TEXT_CHARS,
    MAX_TIME_STEPS,
)
from grid_models.support.settings import settings_of

MAX_BUS_ID = 2**31 - 1


def _check_id(value: str) -> str:
    if not re.fullmatch(ID_PATTERN, value):
        raise ValueError(f"{value!r} is not a valid id: {ID_RULE} (mosaik entity ids and file "
                         "names are made from it)")
    return value


def _check_text(value: str) -> str:
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"control character {bad!r} in the text; give printable characters")
    return value


Id = Annotated[str, AfterValidator(_check_id)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS),
                 AfterValidator(_check_text)]
Count = Annotated[int, Field(ge=1, le=MAX_BUILDINGS)]
BusId = Annotated[int, Field(ge=0, le=MAX_BUS_ID)]
Step = Annotated[int, Field(ge=0, le=MAX_TIME_STEPS)]
DemandScale = Annotated[float, Field(gt=0, le=MAX_DEMAND_SCALE)]

ElementId = Annotated[int, Field(ge=0, le=MAX_BUS_ID)]


class StrictModel(BaseModel):
    """A section: unknown keys rejected, frozen, finite numbers, no type coercion."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)



def is_number(text: str) -> bool:
    """Whether ``text`` spells a finite number."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def shown_value(value: Any) -> str:
    """A scalar as the scenario file would spell it."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def domain_field(cls: type, name: str, *, le: float | None = None, bounds: bool = True,
                 optional_for: str | None = None) -> Any:
    """The pydantic field of the setting ``name`` of the domain config ``cls``
    (``grid_models.support.settings``): its default, bounds and meaning, declared there once.

    ``le``: the scenario file's own cap, on top of the domain's bounds (a plausibility or
    resource limit of a file, ``cosim.scenario.limits``). ``bounds=False``: the section
    checks the value itself (with messages about the fields around it).
    ``optional_for``: a ``controller`` field of that kind only: ``None`` here, the
    domain's default filled in when the kind is given.
    """
    default, bound = settings_of(cls)[name]
    caps = [c for c in (bound.le, le) if c is not None]
    limits: dict[str, Any] = dict(ge=bound.ge, gt=bound.gt, le=min(caps) if caps else None) \
        if bounds else {}
    if optional_for is None:
        return Field(default, description=bound.doc, **limits)
    shown = "none" if default is None else default
    return Field(None, description=f"{bound.doc} (kind {optional_for}; default {shown})",
                 **limits)
