"""A bounded YAML reader: refuses duplicate keys, alias bombs and deep nesting.

PyYAML's ``safe_load`` keeps the last of two equal keys silently, and expands
aliases without limit once the value is used (a 1.5 KB "billion laughs" file
becomes gigabytes when validated). ``read_yaml`` composes the node graph first,
checks it (alias uses, nesting depth, size after expanding every alias,
recursive aliases, duplicate keys) and only then builds Python values.
No maintained library does this: PyYAML and ruamel.yaml bound neither alias expansion nor
nesting depth, and ruamel's duplicate-key check stops at the first one, while a scenario
file needs every problem listed with its path, so the checks stay here, on PyYAML's nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import Event
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from grid_models.errors import InputError

# what one YAML document may hold (scenario, study, recipe and a run's stored scenario)
MAX_YAML_ALIASES = 100  # alias uses (*name) in one document
MAX_YAML_DEPTH = 32  # nesting of mappings and lists
MAX_YAML_NODES = 1_000_000  # values after expanding every alias
#: a file larger than this is refused before it is parsed (scenario, study and recipe files
#: are a few KB; a run's resolved scenario.yaml passes a larger bound)
MAX_YAML_FILE_BYTES = 1 << 20
MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlProblems(InputError, ValueError):
    """The text cannot be used; ``errors`` holds ``(field path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in errors))


def _line(node_or_event: Node | Event) -> int:
    mark = node_or_event.start_mark
    assert mark is not None  # the parser marks where every event and node starts
    return mark.line + 1


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts alias uses and nesting while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_uses = 0
        self.depth = 0

    # Any: PyYAML passes None, a list position or a mapping's key node as index (its
    # stubs say int); the return type is the stubs' (Composer.compose_node)
    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.alias_uses += 1
            if self.alias_uses > MAX_YAML_ALIASES:
                # the stubs leave Parser.peek_event unannotated
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise YamlProblems([("", f"more than {MAX_YAML_ALIASES} alias uses (*name), "
                                     f"the last at line {_line(event)}; "
                                     "write the values out")])
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]  # as above
                raise YamlProblems([("", f"nested more than {MAX_YAML_DEPTH} levels deep at "
                                     f"line {_line(event)}")])
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _where(node: Node) -> str:
    return f"line {_line(node)}, column {node.start_mark.column + 1}"


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


@dataclass
class _Walk:
    """One pass over the node graph: expanded size, recursion, duplicate keys."""

    sizes: dict[int, int] = field(default_factory=dict)
    open: set[int] = field(default_factory=set)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def size(self, node: Node, path: str) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise YamlProblems([(path, f"recursive alias at line {_line(node)}")])
        self.open.add(key)
        if isinstance(node, MappingNode):
            self._duplicates(node, path)
            total = 1
            for k, v in node.value:
                name = k.value if isinstance(k, ScalarNode) else "?"
                total += self.size(k, path) + self.size(v, _join(path, name))
        else:
            total = 1 + sum(self.size(c, _join(path, str(i)))
                            for i, c in enumerate(_children(node)))
        self.open.discard(key)
        if total > MAX_YAML_NODES:
            raise YamlProblems([("", f"more than {MAX_YAML_NODES:,} values once aliases are "
                                 f"expanded (at line {_line(node)}); a scenario needs far fewer")])
        self.sizes[key] = total
        return total

    def _duplicates(self, node: MappingNode, path: str) -> None:
        seen: dict[tuple[str, str], str] = {}
        for k, _ in node.value:
            if not isinstance(k, ScalarNode) or k.tag == MERGE_TAG:
                continue
            ident = (k.tag, k.value)
            if ident in seen:
                self.errors.append((_join(path, k.value), f"duplicate key {k.value!r} at "
                                    f"{_where(k)} (first at {seen[ident]}); YAML would keep "
                                    "only the last, so give each key once"))
            else:
                seen[ident] = _where(k)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def read_yaml(text: str, duplicates: list[tuple[str, str]] | None = None) -> Any:
    """The checked value of a one-document YAML ``text``.

    Raises ``YamlProblems`` (limits; duplicate keys unless a ``duplicates`` list is
    given, which then receives them while the value is still built, last key
    winning) or ``yaml.YAMLError`` (syntax).
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        walk = _Walk()
        walk.size(node, "")
        if walk.errors and duplicates is None:
            raise YamlProblems(walk.errors)
        if duplicates is not None:
            duplicates.extend(walk.errors)
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError) as exc:  # e.g. an integer with 10,000 digits
            reason = str(exc).split(";")[0]
            raise YamlProblems([("", f"cannot read a value: {reason}")]) from None
    finally:
        loader.dispose()


def _not_a_file(path: Path, what: str) -> str:
    """Why ``path`` (not a regular file) cannot be read as a ``what``, in words."""
    if not path.exists():
        return f"{what} not found"
    if path.is_dir():
        return f"is a directory, not a {what}; give the YAML file inside it"
    kind = "a FIFO (named pipe)" if path.is_fifo() else (
        "a socket" if path.is_socket() else "a device" if path.is_char_device() or
        path.is_block_device() else "not a regular file")
    return f"is {kind}, not a {what}; give a YAML file"


def _not_utf8(data: bytes) -> str:
    """What a file that is not UTF-8 is, in words."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            data.decode("utf-16")
        except UnicodeDecodeError:
            pass
        else:
            return "UTF-16 text; save the file as UTF-8"
    if b"\x00" in data:
        return "a binary file, not YAML text (UTF-8)"
    return "not UTF-8 text (another encoding?); save the file as UTF-8"


def read_yaml_file(path: str | os.PathLike[str], *, what: str = "YAML file",
                   max_bytes: int = MAX_YAML_FILE_BYTES, too_large: str = "",
                   duplicates: list[tuple[str, str]] | None = None) -> Any:
    """The checked value of the YAML file ``path``: every YAML file of the testbed (scenario,
    study, recipe, a run's stored scenario) is read here.

    Refuses what is not a regular file, more than ``max_bytes`` (``too_large``: what to do
    instead), not UTF-8, malformed YAML and what :func:`read_yaml` refuses, all as
    :class:`YamlProblems` whose messages call the file a ``what``.
    """
    path = Path(path)
    if not path.is_file():
        raise YamlProblems([("", _not_a_file(path, what))])
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise YamlProblems([("", f"cannot read the {what}: {exc.strerror or exc}")]) from None
    if len(data) > max_bytes:
        hint = f"; {too_large}" if too_large else ""
        raise YamlProblems([("", f"larger than {max_bytes:,} bytes{hint}")])
    try:
        return read_yaml(data.decode("utf-8"), duplicates)
    except UnicodeDecodeError:
        raise YamlProblems([("", _not_utf8(data))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split()) or "cannot parse"
        raise YamlProblems([("", f"malformed YAML{where}: {problem}")]) from None
