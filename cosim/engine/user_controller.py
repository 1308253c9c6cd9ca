"""A user's controller named in a scenario (``controller.kind: python``).

``controller.entry: "package.module:ClassName"`` is imported from the installed
environment, or, when the scenario gives ``controller.path``, from that directory first.
The working directory is never searched implicitly (a run started from a folder that
holds a ``mypkg/`` runs only what the scenario names). The class must implement the
contract of :mod:`agents.control.contract`; it is built per shard as ``cls(context, **params)``.

Such a scenario runs the named code with the rights of whoever runs it: name only code
you trust. Every failure (missing module or class, a class without ``act``, a
constructor that rejects the parameters or raises) is a :class:`UserControllerError`
that names the scenario field.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agents.control.contract import (
    Controller,
    ControllerContext,
    ControllerError,
    ControllerForecast,
    check_controller,
    contract_problems,
)


class UserControllerError(ControllerError):
    """A user's controller that cannot be loaded or built; ``field`` is the scenario field.

    When a scenario is built it becomes a ``ScenarioError`` naming the field (an input
    error); raised while a run builds a shard's controller it stays what every
    :class:`ControllerError` is, a run error.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def import_path(entries: list[str]) -> list[str]:
    """``entries`` (a ``sys.path``) without the working directory (``''``, ``.`` or its path,
    which ``python -m`` and ``python -c`` put first): a user's class is never imported from
    wherever the run happens to be started."""
    cwd = Path.cwd().resolve()
    kept = []
    for entry in entries:
        if entry in ("", "."):
            continue
        try:
            if Path(entry).resolve() == cwd:
                continue
        except OSError:
            pass
        kept.append(entry)
    return kept


def load_controller_class(entry: str, path: Path | None = None) -> type:
    """The class ``entry`` ("package.module:ClassName") names, imported (from ``path`` first).

    Raises:
        UserControllerError: naming ``controller.path`` or ``controller.entry``.
    """
    module_name, _, class_name = entry.partition(":")
    if path is not None and not path.is_dir():
        raise UserControllerError("controller.path", f"{path}: directory not found")
    where = "the installed environment" + (f" and {path}" if path is not None else "")
    saved = list(sys.path)
    sys.path[:] = ([str(path)] if path is not None else []) + import_path(saved)
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name
                                     or module_name.startswith(f"{exc.name}.")):
            raise UserControllerError("controller.entry", f"module {module_name!r} not found "
                                      f"(searched {where}; the working directory is not "
                                      "searched: give controller.path)") from None
        raise UserControllerError("controller.entry", f"importing {module_name!r} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # the user's module raised while it was imported
        raise UserControllerError("controller.entry", f"importing {module_name!r} raised "
                                  f"{type(exc).__name__}: {exc}") from exc
    finally:
        sys.path[:] = saved
    cls = getattr(module, class_name, None)
    if cls is None:
        defined = sorted(k for k, v in vars(module).items()
                         if isinstance(v, type) and v.__module__ == module.__name__)
        raise UserControllerError("controller.entry", f"module {module_name!r} has no "
                                  f"{class_name!r} (classes it defines: "
                                  f"{', '.join(defined) or 'none'})")
    if not isinstance(cls, type):
        raise UserControllerError("controller.entry", f"{entry} is a {type(cls).__name__}, "
                                  "not a class")
    problems = contract_problems(cls)
    if problems:
        raise UserControllerError("controller.entry", f"class {entry} " + "; ".join(problems)
                                  + " (agents.control.contract, docs/controllers.md)")
    return cls


def build_user_controller(cls: type, context: ControllerContext,
                          params: dict[str, Any] | None, entry: str) -> Controller:
    """``cls(context, **params)``, checked against the contract.

    Raises:
        UserControllerError: naming ``controller.params`` when the class rejects the
            parameters, ``controller.entry`` when its constructor raises or the object
            breaks the contract.
    """
    try:
        controller = cls(context, **(params or {}))
    except TypeError as exc:
        raise UserControllerError("controller.params", f"{entry}(context, **params) rejected "
                                  f"the parameters {sorted(params or {})}: {exc}") from exc
    except Exception as exc:
        raise UserControllerError("controller.entry", f"{entry}(context, **params) raised "
                                  f"{type(exc).__name__}: {exc}") from exc
    try:
        check_controller(controller, f"the object {entry}(...) built")
    except ControllerError as exc:
        raise UserControllerError("controller.entry", str(exc)) from None
    result: Controller = controller
    return result


def shard_forecast(forecast: Any, index: np.ndarray) -> ControllerForecast | None:
    """The forecast access of the buildings ``index`` (None without a forecast)."""
    return None if forecast is None else ControllerForecast(forecast, np.asarray(index))
