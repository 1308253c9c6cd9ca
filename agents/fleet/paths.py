"""Where the shipped inputs lie, and how a relative path is resolved, in one place.

Two ways to have the code:

- a **source checkout** (``pyproject.toml`` next to ``agents/``): the shipped inputs are
  the repository's ``scenarios/`` and ``data/``, and a relative data, policy or graph path
  in a scenario is taken from the repository root, whatever the working directory;
- an **installed wheel** (``pip install fleetcosim``): the wheel carries ``scenarios/``
  and the shipped parts of ``data/`` (the CityLearn extract, the policies) as package
  data under ``cosim/_bundled`` (pyproject.toml ``[tool.setuptools]``), in the same
  layout. A relative path is the user's, taken from the working directory; where that
  file is not there, the bundled copy of the same path is used, so the defaults
  (``data/citylearn_2022``, ``data/policies``) work from any folder.

Every package (``agents``, ``cosim``) resolves paths through this module. ``agents`` is
the source (``cosim`` may import it, not the other way round).
"""

from __future__ import annotations

from pathlib import Path

#: the folder holding agents/, cosim/, grid_models/: the repository root in a checkout,
#: ``site-packages`` when installed
REPO_ROOT = Path(__file__).resolve().parents[2]
#: True in a source checkout, False when installed from a wheel
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()
#: where an installed wheel keeps scenarios/ and data/ (the package cosim._bundled)
BUNDLED_ROOT = REPO_ROOT / "cosim" / "_bundled"
#: the folder holding the shipped scenarios/ and data/: the checkout, or the bundled copy
SHIPPED_ROOT = REPO_ROOT if IN_CHECKOUT else BUNDLED_ROOT
#: the CityLearn extract, relative to :data:`SHIPPED_ROOT` (a scenario's default data.path)
CITYLEARN_DATA_PATH = "data/citylearn_2022"
#: the shipped scenarios and study files, relative to :data:`SHIPPED_ROOT`
SCENARIOS_DIR = "scenarios"
STUDIES_DIR = "scenarios/studies"


def resolve_path(path: str | Path, base: Path | None = None) -> Path:
    """``path`` as it is when absolute, else relative to ``base`` when given; else, in a
    checkout, relative to the repository; installed, relative to the working directory,
    or the bundled copy of ``path`` where the working directory has none."""
    p = Path(path)
    if p.is_absolute():
        return p
    if base is not None:
        return base / p
    if IN_CHECKOUT:
        return REPO_ROOT / p
    if not p.exists() and (BUNDLED_ROOT / p).exists():
        return BUNDLED_ROOT / p
    return Path.cwd() / p


def find_input_file(name: str | Path, folder: str = SCENARIOS_DIR) -> Path:
    """The scenario or study file the user names on the command line.

    In this order: ``name`` as a path (absolute, or from the working directory); the
    shipped file of that relative path (``scenarios/paper_fig1d.yaml`` from any folder);
    for a bare name (no folder, no suffix), the shipped ``<folder>/<name>.yaml``
    (``paper_fig1d``). When none exists, ``name`` itself, for the error to name it.
    """
    p = Path(name)
    if p.exists() or p.is_absolute():
        return p
    shipped = SHIPPED_ROOT / p
    if shipped.is_file():
        return shipped
    if len(p.parts) == 1 and not p.suffix:
        by_name = SHIPPED_ROOT / folder / f"{p.name}.yaml"
        if by_name.is_file():
            return by_name
    return p


def shipped_names(folder: str = SCENARIOS_DIR) -> list[str]:
    """The names of the shipped ``*.yaml`` files in ``folder`` (for messages)."""
    return sorted(p.stem for p in (SHIPPED_ROOT / folder).glob("*.yaml"))
