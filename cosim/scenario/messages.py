"""pydantic's validation errors as the scenario's ``(field path, message)`` pairs: the
path dotted, the wrong input echoed, the valid keys listed for an unknown one."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from cosim.scenario.errors import FieldErrors
from cosim.scenario.fields import shown_value
from cosim.scenario.model import Scenario

_SHOWN_INPUT_CHARS = 60  # longest wrong input echoed in a message
_NO_INPUT_SHOWN = {"missing", "extra_forbidden", "value_error", "assertion_error"}


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys accepted where ``loc`` (the unknown key's path) points."""
    model: Any = Scenario
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_of(info.annotation) if info else None
    return list(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _message(err: ErrorDetails) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(tuple(err["loc"]))
        return "unknown key" + (f"; valid: {', '.join(valid)}" if valid else "")
    msg = re.sub(r"a valid dictionary or instance of \w+", "a mapping of fields", msg)
    value = err.get("input")
    if err["type"] not in _NO_INPUT_SHOWN and isinstance(value, (bool, int, float, str)):
        shown = shown_value(value)
        if len(shown) <= _SHOWN_INPUT_CHARS:
            msg = f"{msg}, got {shown}"
    return msg


def pydantic_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``exc``'s errors as ``(field path, message)`` pairs."""
    errors: list[tuple[str, str]] = []
    for err in exc.errors():
        where = _loc(err["loc"])
        inner = err.get("ctx", {}).get("error")
        if isinstance(inner, FieldErrors):
            errors.extend((".".join(p for p in (where, below) if p), msg)
                          for below, msg in inner.errors)
        else:
            errors.append((where, _message(err)))
    return errors

