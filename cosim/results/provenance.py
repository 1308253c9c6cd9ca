"""Which code made a run: a fingerprint of the package's sources, kept in ``status.json``.

``cosim run --resume`` continues a run with the code at hand; if that code differs from
the code that wrote the first steps, the tables would join results of two versions
without saying so. The run's marker therefore records :func:`code_fingerprint` (``code``)
and a resume with other code is refused (``cosim.engine.run.resume``).

The fingerprint is the SHA-256 of the package version and of every ``*.py`` file of
``agents/``, ``grid_models/`` and ``cosim/`` (relative path and bytes, in sorted order),
so any edit to the code changes it, whether or not it is committed; data, policies and
installed libraries are not part of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from agents.fleet.paths import REPO_ROOT

PACKAGES = ("agents", "grid_models", "cosim")
FINGERPRINT_HEX = 16  # characters kept: 64 bits, plenty to tell versions apart


def _version() -> str:
    from cosim import __version__

    return __version__


def fingerprint_of(root: Path, version: str) -> str:
    """The fingerprint of the sources under ``root`` (module docstring)."""
    digest = hashlib.sha256(f"fleetcosim {version}\n".encode())
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            digest.update(f"{rel}\n".encode())
            digest.update(path.read_bytes())
            digest.update(b"\n")
    return digest.hexdigest()[:FINGERPRINT_HEX]


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The fingerprint of the code this process runs (computed once per process)."""
    return fingerprint_of(REPO_ROOT, _version())


def other_code(status: Mapping[str, Any]) -> str | None:
    """The fingerprint a run's ``status.json`` records when it is not this code's, else
    None (also for runs of older versions, which record none)."""
    made_by = status.get("code")
    return str(made_by) if made_by is not None and made_by != code_fingerprint() else None
