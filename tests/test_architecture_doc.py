"""docs/architecture.md names every module of the three packages, and only modules that
exist (a moved or new module without its line fails here)."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "cosim", "grid_models")
DOC = REPO_ROOT / "docs" / "architecture.md"


def _modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            if path.name != "__init__.py":
                found.add(path.relative_to(REPO_ROOT).as_posix())
    return found


def test_every_module_has_its_line() -> None:
    text = DOC.read_text()
    missing = sorted(m for m in _modules() if f"`{m}`" not in text)
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_every_named_module_exists() -> None:
    named = set(re.findall(r"`((?:agents|cosim|grid_models)/[\w/]+\.py)`", DOC.read_text()))
    gone = sorted(named - _modules())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_every_subpackage_has_its_line() -> None:
    text = DOC.read_text()
    subpackages = sorted({p.parent.relative_to(REPO_ROOT).as_posix()
                          for package in PACKAGES
                          for p in (REPO_ROOT / package).rglob("__init__.py")})
    missing = [s for s in subpackages if f"`{s}/`" not in text]
    assert not missing, f"docs/architecture.md has no line for: {missing}"
