"""The tables of scenario fields, defaults and bounds in docs/, generated from the schema
(whose agent settings come from the domain configs, ``grid_models.support.settings``):
the agents' settings in ``docs/running.md`` and ``docs/equations.md``, and every field of
the ``Scenario`` model in ``docs/scenario_reference.md``.

Each table sits between ``<!-- fields:NAME:start -->`` and ``<!-- fields:NAME:end -->``.
``python -m cosim.scenario.doc_tables`` rewrites them; ``--check`` only reports the files
whose tables differ from the schema (exit status 1), as ``tests/cosim/test_doc_tables.py``
does.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agents.consensus.graphs import TOPOLOGY_PARAM_DEFAULTS, TOPOLOGY_PARAMS
from cosim.scenario.controller import CONTROLLER_KIND_FIELDS, ControllerConfig
from cosim.scenario.coordination import DualsConfig
from cosim.scenario.model import Scenario

#: the files that hold tables, relative to the project directory
DOC_FILES = ("docs/running.md", "docs/equations.md", "docs/scenario_reference.md")
_ROOT = Path(__file__).resolve().parents[2]


def _num(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _metadata(info: FieldInfo) -> list[Any]:
    """The field's constraints, with those of an optional ``Annotated`` type inside it."""
    inner = [m for a in get_args(info.annotation) if hasattr(a, "__metadata__")
             for m in a.__metadata__]
    inner = [x for m in inner for x in (m.metadata if isinstance(m, FieldInfo) else [m])]
    return [*info.metadata, *inner]


def _bounds(info: FieldInfo) -> str:
    """A field's bounds and choices in words (``>= 0``, ``(0, 1]``, ``a|b``)."""
    low = high = ""
    for m in _metadata(info):
        if isinstance(m, annotated_types.Ge):
            low = f"[{_num(m.ge)}"
        elif isinstance(m, annotated_types.Gt):
            low = f"({_num(m.gt)}"
        elif isinstance(m, annotated_types.Le):
            high = f"{_num(m.le)}]"
    choices = _choices(info.annotation)
    if choices:
        return "|".join(f"`{c}`" for c in choices)
    if low and high:
        return f"{low}, {high}"
    if low:
        return (">= " if low[0] == "[" else "> ") + low[1:]
    return f"<= {high[:-1]}" if high else "any"


def _choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    return [c for a in get_args(annotation) for c in _choices(a)]


def _shown(value: Any) -> str:
    return "none" if value is None else f"`{value:g}`" if isinstance(value, float) \
        else f"`{value}`"


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| field | default | bounds | meaning |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in (f"`{f}`", d, b, m)) + " |"
              for f, d, b, m in rows]
    return "\n".join(lines)


def _section_rows(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    return [(name, _shown(info.default), _bounds(info), info.description or "")
            for name, info in model.model_fields.items()]


def _controller_rows(kind: str) -> list[tuple[str, str, str, str]]:
    fields = ControllerConfig.model_fields
    return [(name, _shown(default), _bounds(fields[name]),
             re.sub(r" ?\(kind \w+; default [^)]*\)$", "", fields[name].description or ""))
            for name, (owner, default) in CONTROLLER_KIND_FIELDS.items() if owner == kind]


def _topology_rows() -> list[tuple[str, str, str, str]]:
    return [(f"{param}", TOPOLOGY_PARAM_DEFAULTS.get(param, "none"),
             "integer >= 1" if kind is int else "> 0", f"topology `{topology}`")
            for topology, params in TOPOLOGY_PARAMS.items() for param, kind in params.items()]


def _type_name(annotation: Any) -> str:
    """A field's type in words: ``int``, ``list[BuildingSpec]``, ``float or none``."""
    if hasattr(annotation, "__metadata__"):  # Annotated[T, ...]: T
        return _type_name(get_args(annotation)[0])
    if annotation is type(None):
        return "none"
    origin = get_origin(annotation)
    if origin is Literal:
        return "str"
    if origin is None:
        return getattr(annotation, "__name__", str(annotation))
    args = [_type_name(a) for a in get_args(annotation)]
    name = getattr(origin, "__name__", str(origin))
    if name in ("Union", "UnionType") or "Union" in str(origin):
        return " or ".join(args)
    return f"{name}[{', '.join(args)}]" if args else name


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field holds (itself, in a list, dict or union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models_in(a)]


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return _shown(info.default_factory())  # type: ignore[call-arg]  # no-argument factories
    if info.default is PydanticUndefined:
        return "required"
    if isinstance(info.default, BaseModel):
        return "(section)"
    return _shown(info.default)


def _reference_rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        bounds = _bounds(info)
        lengths = [f"{m.__class__.__name__} {getattr(m, 'min_length', None) or ''}"
                   f"{getattr(m, 'max_length', None) or ''}"
                   for m in _metadata(info)
                   if isinstance(m, (annotated_types.MinLen, annotated_types.MaxLen))]
        if lengths and bounds == "any":
            bounds = ", ".join(x.replace("MinLen ", "length >= ").replace("MaxLen ", "length <= ")
                               for x in lengths)
        meaning = " ".join((info.description or "").split())
        rows.append((path, _default(info), bounds,
                     f"{_type_name(info.annotation)}" + (f"; {meaning}" if meaning else "")))
        many = get_origin(info.annotation) in (list, dict) or any(
            get_origin(a) in (list, dict) for a in get_args(info.annotation))
        for sub in _models_in(info.annotation):
            rows += _reference_rows(sub, f"{path}{'[]' if many else ''}.")
    return rows


def _reference() -> str:
    """Every field of ``Scenario``, one table per top-level section."""
    out = [_table([r for r in _reference_rows(Scenario, "") if "." not in r[0]])]
    for name, info in Scenario.model_fields.items():
        rows = [r for r in _reference_rows(Scenario, "") if r[0].startswith(name)
                and r[0] != name]
        if _models_in(info.annotation):
            out.append(f"### `{name}`\n\n" + _table(rows))
    return "\n\n".join(out)


#: table name -> how it is made
TABLES: dict[str, Callable[[], str]] = {
    "duals": lambda: _table(_section_rows(DualsConfig)),
    "dmpc": lambda: _table(_controller_rows("dmpc")),
    "epos": lambda: _table(_controller_rows("epos")),
    "topology": lambda: _table(_topology_rows()),
    "reference": _reference,
}
_MARKED = re.compile(r"(<!-- fields:(\w+):start -->\n)(.*?)(<!-- fields:\2:end -->)", re.S)


def render(text: str) -> str:
    """``text`` with every marked table regenerated (an unknown name is an error)."""
    def fill(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
        return f"{m.group(1)}{TABLES[name]()}\n{m.group(4)}"
    return _MARKED.sub(fill, text)


def stale(root: Path = _ROOT) -> list[str]:
    """The files under ``root`` whose tables differ from the schema."""
    return [f for f in DOC_FILES
            if render(text := (root / f).read_text(encoding="utf-8")) != text]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the tables (``--check``: list the stale files instead; 1 if any)."""
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        bad = stale()
        for f in bad:
            print(f"{f}: the scenario tables differ from the schema; run "
                  "python -m cosim.scenario.doc_tables")
        return 1 if bad else 0
    for f in DOC_FILES:
        path = _ROOT / f
        text = path.read_text(encoding="utf-8")
        if render(text) != text:
            path.write_text(render(text), encoding="utf-8")
            print(f"rewrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
