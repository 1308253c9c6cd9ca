"""Stop requests (Ctrl-C, SIGTERM): process-wide flags a running engine checks at the
end of every step, so no exception lands inside the event loop, a lock or a file write.
"""

from __future__ import annotations

import threading


class RunStopped(KeyboardInterrupt):
    """A stop was requested (Ctrl-C, SIGTERM); raised at the end of a whole step.

    ``exit_code``: what the command exits with (128 + the signal's number: 130 for
    SIGINT, 143 for SIGTERM)."""

    def __init__(self, reason: str, exit_code: int = 143) -> None:
        super().__init__(reason)
        self.exit_code = int(exit_code)


_STOP = threading.Event()


_STOP_AT_ONCE = threading.Event()


_STOP_REASON: list[str] = []


_STOP_CODE: list[int] = []


def request_stop(reason: str, exit_code: int = 143) -> None:
    """Ask the running engine to stop after the step it is in (e.g. from a signal handler).

    Safe in a signal handler: while the engine steps it only sets a flag (checked at the
    end of every step), so no exception lands inside the event loop, a lock or a file
    write. A second request while the first is pending, or a request while no engine
    steps (set-up after :func:`stops_at_once`, joining the results, the report), raises
    at once, wherever the program is.
    """
    if _STOP.is_set() or _STOP_AT_ONCE.is_set():
        raise RunStopped(reason, exit_code)
    _STOP_REASON[:] = [reason]
    _STOP_CODE[:] = [int(exit_code)]
    _STOP.set()


def _pending_stop() -> RunStopped:
    return RunStopped(_STOP_REASON[0] if _STOP_REASON else "stop requested",
                      _STOP_CODE[0] if _STOP_CODE else 143)


def stops_at_once() -> None:
    """Nothing steps yet (set-up): stop requests raise at once until :func:`steps_starting`."""
    _STOP_AT_ONCE.set()


def steps_starting() -> None:
    """An engine starts stepping: stop requests wait for the end of a step again."""
    _STOP_AT_ONCE.clear()


def steps_finished() -> None:
    """The engine's steps are over: a pending stop request raises now, later ones at once."""
    _STOP_AT_ONCE.set()
    if _STOP.is_set():
        raise _pending_stop()


def raise_if_stop_requested() -> None:
    """Raise the pending :class:`RunStopped` (a stop was requested); the end of a step."""
    if _STOP.is_set():
        raise _pending_stop()


def clear_stop() -> None:
    """Forget every stop request (a new command starts)."""
    _STOP.clear()
    _STOP_AT_ONCE.clear()
    _STOP_REASON.clear()
    _STOP_CODE.clear()
