"""What a run was started from, as hashes, so that ``cosim run --resume`` can check it.

A resume builds the run again from its own ``scenario.yaml`` and continues it; if the
scenario file, a data file or the feeder changed since the first steps, the tables
would join results of two different inputs without saying so. The run's marker
(``status.json``, written before any other file of the run) therefore records
``inputs``, SHA-256 hashes of:

- ``scenario``: the resolved scenario, i.e. the run's ``scenario.yaml`` byte for byte;
- ``data``: every file the CityLearn loader reads (``schema.json``, the price, carbon
  and profile CSVs), by path;
- ``feeder``: the feeder as built (its pandapower JSON, the run's ``feeder.json``), so a
  changed feeder file or feeder code shows as well; absent without a feeder;
- ``files``: the other files the build reads: the communication graph file and the
  policy files of the classes in use, by path.

:func:`changed_inputs` names every difference; ``cosim.engine.run.resume`` refuses to go on
when there is one. Once the set-up files are written the marker records their hashes
too (``setup_files``), so an edited or truncated ``feeder.json`` in the run directory
is refused as well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cosim.scenario.build import Built

_CHUNK_BYTES = 1 << 20


def sha256_text(data: str | bytes) -> str:
    """The SHA-256 hex digest of ``data`` (text is hashed as UTF-8)."""
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def sha256_file(path: str | Path) -> str | None:
    """The SHA-256 hex digest of a file's bytes, or None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _read_files(built: Built) -> list[Path]:
    """The files besides the data and the feeder that the build of ``built`` read."""
    from agents.fleet.paths import resolve_path

    sc = built.scenario
    files: list[Path] = []
    if sc.communication.graph_file is not None:
        files.append(resolve_path(sc.communication.graph_file))
    if sc.controller.kind == "policy":
        policy_dir = resolve_path(sc.controller.policy_dir)
        files.extend(policy_dir / f"{cls}.json" for cls in sorted(set(built.classes)))
    return files


def input_hashes(built: Built, scenario_text: str | bytes,
                 feeder_text: str | None) -> dict[str, Any]:
    """The ``inputs`` a run records (module docstring): ``scenario_text`` is its
    ``scenario.yaml``, ``feeder_text`` its ``feeder.json`` (None without a feeder)."""
    from agents.fleet.data import load_citylearn
    from agents.fleet.paths import resolve_path

    data = load_citylearn(resolve_path(built.scenario.data.path))
    hashes: dict[str, Any] = {
        "scenario": sha256_text(scenario_text),
        "data": {str(p): sha256_file(p) for p in data.files},
        "files": {str(p): sha256_file(p) for p in _read_files(built)},
    }
    if feeder_text is not None:
        hashes["feeder"] = sha256_text(feeder_text)
    return hashes


def _changed_files(what: str, then: Any, now: Mapping[str, Any]) -> list[str]:
    if not isinstance(then, Mapping):
        return [f"the {what} (their hashes in status.json are unreadable)"]
    changes = [f"{what} file {path!r}" + ("" if path in now else " (no longer read)")
               for path in sorted(then) if now.get(path) != then[path]]
    changes.extend(f"{what} file {path!r} (not read when the run started)"
                   for path in sorted(set(now) - set(then)))
    return changes


def changed_inputs(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the ``inputs`` a run recorded and those of today, in words
    (an empty list: nothing changed)."""
    changes: list[str] = []
    if recorded.get("scenario") != now.get("scenario"):
        changes.append("the resolved scenario (the run's scenario.yaml)")
    changes.extend(_changed_files("data", recorded.get("data"), now.get("data", {})))
    if recorded.get("feeder") != now.get("feeder"):
        changes.append("the feeder (as built from feeder.source)")
    changes.extend(_changed_files("input", recorded.get("files", {}), now.get("files", {})))
    return changes


def changed_setup_files(run_dir: Path, recorded: Mapping[str, Any]) -> list[str]:
    """The run's set-up files (``setup_files`` in its status.json) whose bytes differ now."""
    return [f"{name!r} in the run directory" for name, digest in sorted(recorded.items())
            if sha256_file(Path(run_dir) / name) != digest]
