"""Changes to a scenario before it is validated: ``--set path=value`` overrides and
``--steps`` (a shortened run)."""

from __future__ import annotations

from typing import Any

import yaml

from cosim.scenario.errors import ScenarioError
from grid_models.support.safe_yaml import YamlProblems, read_yaml


def set_path(raw: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    """Set the field at ``dotted`` (``a.b.0.c``) of the raw scenario ``raw`` to ``value``."""
    keys = dotted.split(".")
    node: Any = raw
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not (key.isdigit() and int(key) < len(node)):
                raise ScenarioError(source, [(".".join(keys[: i + 1]),
                                              f"no item {key} in a list of {len(node)}")])
            node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise ScenarioError(source, [(".".join(keys[: i + 1]), "cannot set inside a value")])
        node = node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            raise ScenarioError(source, [(dotted, f"no item {last} in a list of {len(node)}")])
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError(source, [(dotted, "cannot set inside a value")])


def parse_overrides(items: list[str] | None,
                    source: str = "<command line>") -> list[tuple[str, Any]]:
    """``path=value`` strings; the value is read as YAML (``3``, ``0.5``, ``[1, 2]``, ``off``)."""
    out = []
    for item in items or []:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise ScenarioError(source, [("--set", f"{item!r} is not of the form path=value")])
        try:
            value = read_yaml(text) if text.strip() else ""
        except YamlProblems as exc:
            raise ScenarioError(source, [(path.strip(), f"--set value: {m}")
                                         for _, m in exc.errors]) from None
        except yaml.YAMLError:
            value = text
        out.append((path.strip(), value))
    return out


def shorten_run(raw: dict[str, Any], steps: int) -> None:
    """``--steps``: run ``steps`` steps, but keep c from the declared horizon."""
    time_, constraint = raw.get("time"), raw.get("constraint")
    declared = time_.get("steps") if isinstance(time_, dict) else None
    if (isinstance(constraint, dict) and constraint.get("fraction_of_peak") is not None
            and constraint.get("peak_horizon_steps") is None
            and isinstance(declared, int) and not isinstance(declared, bool)
            and declared != steps):
        constraint["peak_horizon_steps"] = declared
    set_path(raw, "time.steps", steps, "<--steps>")
