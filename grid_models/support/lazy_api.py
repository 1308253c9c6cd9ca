"""The packages' public APIs, imported when first used (PEP 562).

Each package's ``__init__`` names what it offers and the module that defines it; nothing
heavy (torch, pandapower, mosaik) is imported before a name is asked for. ``agents`` and
``cosim`` use it too (``grid_models`` is the lowest layer, importable from both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_api(package: str, api: Mapping[str, str]) -> tuple[Callable[[str], Any],
                                                           Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``api`` maps each public name to the
    module (relative to ``package``) that defines it."""
    def __getattr__(name: str) -> Any:
        module = api.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(api)

    return __getattr__, __dir__
