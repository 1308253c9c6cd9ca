"""The repository root and the resolution of repository-relative paths, in one place.

Every package (``agents``, ``cosim``) resolves a relative data, policy, graph or
scenario path the same way: relative to a given base, by default the repository root.
``agents`` is the source (``cosim`` may import it, not the other way round).
"""

from __future__ import annotations

from pathlib import Path

#: the repository's root directory (the folder holding agents/, cosim/, grid_models/)
REPO_ROOT = Path(__file__).resolve().parents[2]
#: the CityLearn extract, relative to the repository root
CITYLEARN_DATA_PATH = "data/citylearn_2022"


def resolve_path(path: str | Path, base: Path | None = None) -> Path:
    """``path`` as it is when absolute, else relative to ``base`` (default: the repository)."""
    p = Path(path)
    return p if p.is_absolute() else (base or REPO_ROOT) / p
