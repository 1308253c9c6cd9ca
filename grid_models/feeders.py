"""Feeder sources: SimBench codes, pandapower's built-in networks, pandapower JSON files.

Sources are strings:

* ``"simbench:<code>"``, e.g. ``"simbench:1-LV-rural1--0-sw"`` (any code of
  :func:`simbench_codes`, loaded offline from the simbench package);
* ``"pandapower:<name>"`` with a name of :data:`PANDAPOWER_NETWORKS`
  (``cigre_lv``, ``kerber_dorfnetz``, ``kerber_landnetz``, ...);
* a path to a pandapower JSON file (``str`` ending in ``.json`` or a ``Path``).

SimBench grids are cached twice: as pandapower JSON plus their relative profiles
(parquet) under :func:`feeder_cache_dir` (first load ~3 s, reload ~1 s), and in
process (a deep copy is returned each time, so callers may modify their net).
The returned SimBench net carries ``net.profiles`` like ``simbench.get_simbench_net``
does, so ``simbench.get_absolute_values(net, True)`` works on it.
"""

from __future__ import annotations

import copy
import functools
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from grid_models.errors import FeederError, format_choices

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet

SIMBENCH_PREFIX = "simbench:"
PANDAPOWER_PREFIX = "pandapower:"
CACHE_ENV_VAR = "FLEETCOSIM_CACHE_DIR"

#: pandapower built-in networks by source name -> factory in ``pandapower.networks``.
#: ``kerber_landnetz`` is the overhead-line variant 1 (Kerber's rural reference grid).
PANDAPOWER_NETWORKS: dict[str, str] = {
    "cigre_lv": "create_cigre_network_lv",
    "kerber_dorfnetz": "create_kerber_dorfnetz",
    "kerber_landnetz": "create_kerber_landnetz_freileitung_1",
    "kerber_landnetz_freileitung_1": "create_kerber_landnetz_freileitung_1",
    "kerber_landnetz_freileitung_2": "create_kerber_landnetz_freileitung_2",
    "kerber_landnetz_kabel_1": "create_kerber_landnetz_kabel_1",
    "kerber_landnetz_kabel_2": "create_kerber_landnetz_kabel_2",
    "kerber_vorstadtnetz_kabel_1": "create_kerber_vorstadtnetz_kabel_1",
    "kerber_vorstadtnetz_kabel_2": "create_kerber_vorstadtnetz_kabel_2",
}

#: The SimBench grids this project is tested on.
TESTED_SIMBENCH_CODES = (
    "1-LV-rural1--0-sw",
    "1-LV-semiurb4--0-sw",
    "1-LV-urban6--0-sw",
    "1-MV-rural--0-sw",
)

_PROFILE_KEYS = ("load", "renewables", "powerplants", "storage")


def feeder_cache_dir() -> Path:
    """Directory of the on-disk feeder cache (``$FLEETCOSIM_CACHE_DIR`` or ``~/.cache``)."""
    root = os.environ.get(CACHE_ENV_VAR)
    if root:
        return Path(root).expanduser() / "feeders"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fleetcosim" / "feeders"


@functools.cache
def simbench_codes() -> tuple[str, ...]:
    """All SimBench codes that simbench can build offline."""
    import simbench

    return tuple(simbench.collect_all_simbench_codes())


def valid_sources_text() -> str:
    """A short description of the accepted source strings, for error messages."""
    return (
        f"'{SIMBENCH_PREFIX}<code>' (e.g. {SIMBENCH_PREFIX}{TESTED_SIMBENCH_CODES[0]}), "
        f"'{PANDAPOWER_PREFIX}<name>' with name one of "
        f"[{format_choices(PANDAPOWER_NETWORKS)}], or a path to a pandapower .json file"
    )


def load_feeder(source: str | os.PathLike[str], *, use_cache: bool = True) -> pandapowerNet:
    """Load a feeder as a pandapower net (a fresh copy the caller may modify).

    Args:
        source: ``"simbench:<code>"``, ``"pandapower:<name>"`` or a path to a pandapower
            JSON file (see the module docstring).
        use_cache: use the in-process and on-disk caches for SimBench grids.

    Raises:
        FeederError: unknown prefix, SimBench code or network name; missing or
            unreadable JSON file. The message lists the valid choices.
    """
    if isinstance(source, os.PathLike):
        return _load_json(Path(source))
    if not isinstance(source, str):
        raise FeederError(f"feeder source must be a string or a path, got {type(source).__name__}")
    if source.startswith(SIMBENCH_PREFIX):
        code = source[len(SIMBENCH_PREFIX) :].strip()
        if use_cache:
            return copy.deepcopy(_simbench_cached(code))
        return _simbench_fresh(code)
    if source.startswith(PANDAPOWER_PREFIX):
        return _pandapower_network(source[len(PANDAPOWER_PREFIX) :].strip())
    if source.lower().endswith(".json"):
        return _load_json(Path(source))
    raise FeederError(f"unknown feeder source {source!r}; valid sources: {valid_sources_text()}")


def save_feeder_json(net: pandapowerNet, path: str | os.PathLike[str]) -> Path:
    """Write ``net`` as pandapower JSON without SimBench's yearly profiles (they are large)."""
    import pandapower as pp

    path = Path(path)
    lean = copy.copy(net)  # shallow: the tables are shared, only the profiles key is dropped
    if "profiles" in lean:
        del lean["profiles"]
    path.parent.mkdir(parents=True, exist_ok=True)
    pp.to_json(lean, str(path))
    return path


def _load_json(path: Path) -> pandapowerNet:
    import pandapower as pp

    if not path.is_file():
        raise FeederError(f"feeder JSON file not found: {path}")
    try:
        return pp.from_json(str(path))
    except Exception as exc:  # pandapower raises many types for a bad file
        raise FeederError(f"cannot read pandapower JSON file {path}: {exc}") from exc


def _pandapower_network(name: str) -> pandapowerNet:
    import pandapower.networks as pn

    factory = PANDAPOWER_NETWORKS.get(name)
    if factory is None:
        raise FeederError(
            f"unknown pandapower network {name!r}; "
            f"valid names: {format_choices(PANDAPOWER_NETWORKS)}"
        )
    return getattr(pn, factory)()


def _check_simbench_code(code: str) -> None:
    codes = simbench_codes()
    if code in codes:
        return
    import difflib

    close = difflib.get_close_matches(code, codes, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise FeederError(
        f"unknown SimBench code {code!r}.{hint} Valid codes ({len(codes)}): {format_choices(codes)}"
    )


def _simbench_fresh(code: str) -> pandapowerNet:
    _check_simbench_code(code)
    import simbench

    return simbench.get_simbench_net(code)


def _cache_paths(code: str) -> tuple[Path, Path]:
    tag = f"simbench-{metadata.version('simbench')}_pandapower-{metadata.version('pandapower')}"
    folder = feeder_cache_dir() / tag
    return folder / f"{code}.json", folder / f"{code}.profiles"


@functools.lru_cache(maxsize=8)
def _simbench_cached(code: str) -> pandapowerNet:
    """The master copy of a SimBench grid (never handed out; callers get deep copies)."""
    json_path, profiles_dir = _cache_paths(code)
    if json_path.is_file() and profiles_dir.is_dir():
        try:
            return _read_cached(json_path, profiles_dir)
        except Exception:  # a corrupt cache entry is rebuilt below
            pass
    net = _simbench_fresh(code)
    try:
        _write_cached(net, json_path, profiles_dir)
    except OSError:  # a read-only cache location must not break loading
        pass
    return net


def _read_cached(json_path: Path, profiles_dir: Path) -> pandapowerNet:
    import pandapower as pp
    import pandas as pd

    net = pp.from_json(str(json_path))
    net["profiles"] = {
        key: pd.read_parquet(profiles_dir / f"{key}.parquet")
        for key in _PROFILE_KEYS
        if (profiles_dir / f"{key}.parquet").is_file()
    }
    return net


def _write_cached(net: pandapowerNet, json_path: Path, profiles_dir: Path) -> None:
    """Write atomically: a half-written cache entry is never visible to a reader."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=json_path.parent, prefix=".tmp-"))
    tmp_dir.chmod(0o755)
    for key, frame in net.get("profiles", {}).items():
        if key in _PROFILE_KEYS:
            frame.to_parquet(tmp_dir / f"{key}.parquet")
    tmp_json = json_path.with_name(f".{json_path.name}.{os.getpid()}.tmp")
    save_feeder_json(net, tmp_json)
    if profiles_dir.exists():
        import shutil

        shutil.rmtree(profiles_dir, ignore_errors=True)
    os.replace(tmp_dir, profiles_dir)
    os.replace(tmp_json, json_path)
