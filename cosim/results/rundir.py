"""Run and study directories: what cosim created, what it may replace, one run at a time.

Rules (the user's data outlive any run):

- A directory is replaced only if cosim created it, which a **marker** written at
  creation proves (``status.json`` of a run, ``study.json`` of a study: a
  ``format`` field and a random ``run_id``), and only when asked (``--force``).
  A file that merely happens to be called ``status.json`` is no marker.
- Paths that would put a run over something larger are refused: an empty path,
  the working directory or any of its parents, the home directory and ``/``. A
  relative ``output.directory`` from a scenario file may not leave the working
  directory (an explicit ``--out`` may).
- Deleting never follows a symbolic link: a link is removed, not its target,
  and a run directory that is itself a link is never emptied.
- One run per directory: a kernel lock (``fcntl.flock``, through :mod:`filelock`) on
  ``.lock``, which holds the pid, the host and the start time of its holder. A second
  run is refused with a line naming the holder. The kernel releases the lock when its
  holder dies (even by SIGKILL), so there are no stale locks: a ``.lock`` file a dead
  run left is simply taken.
- Files cosim writes are written whole or not at all (:func:`write_atomic`: a temporary
  name, then a rename; the temporary file is removed when the write fails).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from grid_models.errors import InputError

RUN_FORMAT = "fleetcosim-run/1"
STUDY_FORMAT = "fleetcosim-study/1"
STATUS_FILE = "status.json"
STUDY_MARKER = "study.json"
LOCK_FILE = ".lock"
#: key of :func:`_read_holder`'s answer for a lock that stays empty or unreadable
UNREADABLE = "unreadable"
MARKERS = {"run": (STATUS_FILE, RUN_FORMAT), "study": (STUDY_MARKER, STUDY_FORMAT)}


class RunDirError(InputError, ValueError):
    """A run (or study) directory cannot be used, replaced or read."""


# --- markers ---------------------------------------------------------------------------------


def new_marker(kind: str) -> dict[str, Any]:
    """The identifying fields of a directory cosim creates (``kind``: run or study)."""
    _, fmt = MARKERS[kind]
    return {"format": fmt, "run_id": uuid.uuid4().hex, "created_unix": round(time.time(), 3)}


def read_marker(directory: str | Path, kind: str = "run") -> dict[str, Any] | None:
    """The marker file's content if ``directory`` is a ``kind`` directory cosim made, else None."""
    name, fmt = MARKERS[kind]
    path = Path(directory) / name
    if path.is_symlink() or not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict) or content.get("format") != fmt:
        return None
    if not isinstance(content.get("run_id"), str) or len(content["run_id"]) != 32:
        return None
    return content


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: ``<name>.tmp``, then a rename.

    A failed write (a full disk, Ctrl-C) removes the temporary file, so nothing half
    written is left under either name; only a kill (SIGKILL) in between can leave the
    ``.tmp`` file, which the run's set-up or ``--resume`` removes.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    raw = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


# --- where a run may go ----------------------------------------------------------------------


def check_output_path(path: str | Path, *, explicit: bool, what: str) -> Path:
    """Refuse output paths that would put a run over something larger; return the path.

    ``what`` names the source in messages (``--out`` or ``FILE: output.directory``).
    ``explicit``: the path was typed on the command line (it may leave the working
    directory); otherwise a relative path must stay inside it.
    """
    text = str(path)
    if not text.strip():
        raise RunDirError(f"{what}: an empty path cannot be a run directory; name a new folder")
    p = Path(text).expanduser()
    resolved = p.resolve()
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if resolved == Path(resolved.anchor):
        raise RunDirError(f"{what}: {text!r} is the file system's root; name a new folder")
    if resolved == cwd or resolved in cwd.parents:
        raise RunDirError(f"{what}: {text!r} is the working directory or one of its parents; "
                          "name a new folder such as runs/NAME")
    if resolved == home:
        raise RunDirError(f"{what}: {text!r} is the home directory; name a new folder")
    if not explicit and not p.is_absolute() and not resolved.is_relative_to(cwd):
        raise RunDirError(f"{what}: {text!r} leaves the working directory ({cwd}); give the "
                          "path with --out if you mean it")
    return p


def next_free_dir(base: str | Path) -> Path:
    """``base``, or the first ``<base>_2``, ``<base>_3``, ... not there yet: the folder a
    new run takes instead of replacing an earlier one (``cosim demo``, ``cosim run`` without
    ``--out``) and the one a refusal names."""
    base = Path(base)
    candidate, k = base, 2
    while candidate.exists() or candidate.is_symlink():
        candidate = base.with_name(f"{base.name}_{k}")
        k += 1
    return candidate


def is_taken(path: str | Path) -> bool:
    """True if ``path`` exists and is not an empty directory (a new run would not simply
    go there)."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return True
    return path.is_dir() and any(path.iterdir())


# --- one run per directory ----------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux ``/proc``), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of proc(5), counted after the command name
    except (IndexError, ValueError):
        return None


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return None


def holder_alive(holder: dict[str, Any]) -> bool | None:
    """True if the process ``holder`` names (pid, host, start ticks: a run's status.json)
    runs, False if it is gone (or ``holder`` is unreadable), None if that cannot be told
    (another host)."""
    if holder.get(UNREADABLE):
        return False
    if holder.get("host") != socket.gethostname():
        return None
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _process_state(pid) == "Z":  # exited, not yet reaped
        return False
    ticks = holder.get("start_ticks")
    return not (ticks is not None and process_start_ticks(pid) not in (None, ticks))


def describe_holder(holder: dict[str, Any]) -> str:
    """Who holds a lock, in words: pid, host and start time."""
    if holder.get(UNREADABLE):
        return "a process that has not written its pid into the lock file"
    since = holder.get("started_unix")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"


def _read_holder(path: Path) -> dict[str, Any]:
    for _ in range(20):  # a holder writes its lock right after creating it
        try:
            content = json.loads(path.read_text())
            if isinstance(content, dict):
                return content
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return {UNREADABLE: True}


class DirLock:
    """An exclusive lock on a run directory: a kernel lock (``fcntl.flock`` through
    :mod:`filelock`) on ``<dir>/.lock``, which also holds its holder's pid and host for
    the message a second run gets. The kernel releases it when its holder dies, so no lock
    is ever stale."""

    def __init__(self, path: Path, info: dict[str, Any], lock: FileLock) -> None:
        self.path = path
        self.info = info
        self._lock = lock

    @classmethod
    def acquire(cls, directory: Path) -> DirLock:
        """Take the lock of ``directory``; raise :class:`RunDirError` naming the holder when
        another process holds it (a lock file left by a dead run is simply taken)."""
        path = Path(directory) / LOCK_FILE
        pid = os.getpid()
        info = {"pid": pid, "host": socket.gethostname(), "started_unix": round(time.time(), 3)}
        raw = json.dumps(info).encode()

        def write_holder(fd: int) -> None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, raw, 0)

        lock = FileLock(str(path), timeout=0, thread_local=False, fallback_to_soft=False,
                        on_acquired=write_holder)
        try:
            lock.acquire()
        except Timeout:
            who = describe_holder(_read_holder(path))
            raise RunDirError(f"{directory}: another cosim run is using this directory "
                              f"({who}); wait for it or choose another --out") from None
        return cls(path, info, lock)

    def release(self) -> None:
        """Remove the lock file while still holding it, then let the lock go (a contender
        that opened the removed file sees it unlinked and tries again: filelock)."""
        with contextlib.suppress(OSError):
            if self._lock.is_locked:
                self.path.unlink(missing_ok=True)
            self._lock.release()


# --- creating and replacing ----------------------------------------------------------------


def clear_contents(directory: Path, keep: set[str]) -> None:
    """Delete what is inside ``directory`` except ``keep``; links are removed, never followed."""
    for entry in Path(directory).iterdir():
        if entry.name in keep:
            continue
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        else:
            shutil.rmtree(entry)


def _partial_marker(path: Path, kind: str) -> bool:
    """True if ``path`` is the temporary file of a ``kind`` marker that a killed cosim was
    writing: empty, or the beginning of the JSON that :func:`write_atomic` writes."""
    if path.is_symlink() or not path.is_file():
        return False
    head = f'{{\n  "format": "{MARKERS[kind][1]}"'.encode()
    try:
        with open(path, "rb") as f:
            start = f.read(len(head))
    except OSError:
        return False
    return head.startswith(start)


def unmarked_entries(path: Path, kind: str = "run") -> list[Path]:
    """What ``path`` holds besides its lock and a half-written marker (``<marker>.tmp``) of
    a set-up killed before its marker was in place."""
    marker_tmp = f"{MARKERS[kind][0]}.tmp"
    return [e for e in Path(path).iterdir() if e.name != LOCK_FILE and not (
        e.name == marker_tmp and _partial_marker(e, kind))]


def refuse_foreign(path: Path, kind: str) -> None:
    """Raise if ``path`` holds anything and is not a ``kind`` directory cosim made."""
    if not path.is_dir():
        return
    if unmarked_entries(path, kind) and read_marker(path, kind) is None:
        raise RunDirError(f"{path}: exists, is not empty and is not a {kind} directory made by "
                          f"cosim (no {kind} marker in {MARKERS[kind][0]}); nothing was "
                          f"touched; choose another --out (free: {next_free_dir(path)})")


def _refuse_earlier(path: Path, kind: str) -> None:
    """Raise if ``path`` holds an earlier ``kind`` (replacing it needs ``--force``)."""
    marker = read_marker(path, kind) if path.is_dir() else None
    if marker is None:
        return
    state = marker.get("state", "")
    hint = " or --resume to continue it" if kind == "run" and state not in (
        "complete", "") else ""
    raise RunDirError(f"{path}: holds an earlier {kind} ({state or 'made by cosim'}, id "
                      f"{marker['run_id'][:8]}); pass --force to replace it{hint}, or choose "
                      f"another --out (free: {next_free_dir(path)})")


def claim_directory(directory: str | Path, kind: str, *, force: bool,
                    reuse: bool = False) -> DirLock:
    """Create ``directory`` for a new ``kind`` (run or study) and lock it.

    An empty or missing directory is taken. One that holds an earlier ``kind``
    cosim made is emptied only with ``force`` (with ``reuse``, kept as it is, to be
    continued: a study); anything else is refused. The caller writes the marker and
    releases the lock when done.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: exists and is not a directory")
    # before the lock: a user's folder is not even touched. A folder with a lock is left to
    # the lock: another cosim process may be between taking it and writing its marker
    if not (path / LOCK_FILE).exists():
        refuse_foreign(path, kind)
    if not (force or reuse):
        _refuse_earlier(path, kind)
    path.mkdir(parents=True, exist_ok=True)
    lock = DirLock.acquire(path)
    try:
        if any(e.name != LOCK_FILE for e in path.iterdir()):
            refuse_foreign(path, kind)
            if reuse:
                return lock
            if not force:
                _refuse_earlier(path, kind)
            if path.is_symlink():
                raise RunDirError(f"{path}: is a symbolic link; cosim does not delete through "
                                  "links; choose another --out")
            clear_contents(path, keep={LOCK_FILE})
    except BaseException:
        lock.release()
        raise
    return lock
