"""The scenario's errors: ``ScenarioError`` (every problem, each naming its field), the
collector ``Problems`` the build checks use, and ``FieldErrors`` a validator raises to name
fields below the one it validates."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cosim.scenario.limits import MAX_REPORTED_ERRORS
from grid_models.errors import InputError

if TYPE_CHECKING:
    from cosim.scenario.model import Scenario


class ScenarioError(InputError, ValueError):
    """Invalid scenario. ``errors`` holds one ``(field path, message)`` per problem."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        # a schema error: the scenario without its refused fields (their defaults taken),
        # None if it cannot be had, and the sections that had refused fields; what
        # cosim.engine.run.prepare_scenario runs the data-dependent checks on
        self.partial: Scenario | None = None
        self.failed_sections: set[str] = set()
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem (a message's own line breaks become spaces), at most
        ``MAX_REPORTED_ERRORS`` and a last one counting the rest."""
        shown = [f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}"
                 for path, msg in ((p, " ".join(str(m).splitlines()))
                                   for p, m in self.errors[:MAX_REPORTED_ERRORS])]
        rest = len(self.errors) - MAX_REPORTED_ERRORS
        if rest > 0:
            shown.append(f"{self.source}: {rest} more problem(s) not shown")
        return shown


class ScenarioInfeasible(ScenarioError):
    """The scenario is valid, but no schedule meets its constraint (the oracle's LP)."""


class Problems:
    """Collects ``(field path, message)`` pairs; ``raise_if_any`` raises them as one error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[tuple[str, str]] = []

    def add(self, path: str, msg: str) -> None:
        """Record a problem with the field at ``path`` (dotted, e.g. ``time.steps``)."""
        self.errors.append((path, msg))

    def __bool__(self) -> bool:
        return bool(self.errors)

    def __len__(self) -> int:
        return len(self.errors)

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record a ``ScenarioError`` raised inside instead of letting it through."""
        try:
            yield
        except ScenarioError as exc:
            self.errors.extend(exc.errors)

    def raise_if_any(self) -> None:
        """Raise the recorded problems as one :class:`ScenarioError`; nothing if none."""
        if self.errors:
            raise ScenarioError(self.source, list(self.errors))


class FieldErrors(ValueError):
    """Raised by a validator to name fields below the one it validates."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(m for _, m in errors))


class FieldError(FieldErrors):
    """Raised by a validator to name one field below the one it validates."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__([(field, msg)])
