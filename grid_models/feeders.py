"""Feeder sources: SimBench codes, pandapower's built-in networks, pandapower JSON files.

Sources are strings:

* ``"simbench:<code>"``, e.g. ``"simbench:1-LV-rural1--0-sw"`` (any code of
  :func:`simbench_codes`, loaded offline from the simbench package);
* ``"pandapower:<name>"`` with a name of :data:`PANDAPOWER_NETWORKS`
  (``cigre_lv``, ``kerber_dorfnetz``, ``kerber_landnetz``, ...);
* a path to a pandapower JSON file (``str`` ending in ``.json`` or a ``Path``).

A JSON file is screened before pandapower reads it (:func:`screen_feeder_json`):
pandapower's decoder imports the module a ``_module`` field names, so a crafted file
could make it run any importable module. Only the (module, class) pairs pandapower
writes for a net (:data:`ALLOWED_OBJECTS`) pass; the size is bounded
(:data:`MAX_FEEDER_JSON_BYTES`).

SimBench grids are cached twice: as pandapower JSON plus their relative profiles
(parquet) under :func:`feeder_cache_dir` (first load ~3 s, reload ~1 s), and in
process (a deep copy is returned each time, so callers may modify their net).
The returned SimBench net carries ``net.profiles`` like ``simbench.get_simbench_net``
does, so ``simbench.get_absolute_values(net, True)`` works on it.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grid_models.errors import FeederError, FeederFileError, format_choices

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

#: Largest feeder JSON file read (bytes); SimBench's largest grids are a few MB.
MAX_FEEDER_JSON_BYTES = 200 * 1024 * 1024
#: Deepest nesting of JSON objects/arrays (and JSON text inside strings) accepted.
MAX_FEEDER_JSON_DEPTH = 64

_NUMPY_SCALARS = frozenset({
    "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", "str_",
})
_PANDAS_INDEXES = frozenset({
    "Index", "RangeIndex", "MultiIndex", "CategoricalIndex", "DatetimeIndex",
    "TimedeltaIndex", "PeriodIndex", "IntervalIndex",
})
_TABLE_KEYS = frozenset({
    "orient", "dtype", "typ", "index_name", "index_names", "column_name", "column_names",
    "is_multiindex", "is_multicolumn",
})
#: ``_module`` -> the ``_class`` names allowed with it in a feeder JSON file: what
#: pandapower's ``to_json`` writes for a net (the net itself, pandas tables, numpy
#: arrays and scalars, the standard containers). Anything else is refused before
#: pandapower's decoder would import it.
ALLOWED_OBJECTS: dict[str, frozenset[str]] = {
    "pandapower.auxiliary": frozenset({"pandapowerNet"}),
    "pandas": frozenset({"DataFrame", "Series"}) | _PANDAS_INDEXES,
    "pandas.core.frame": frozenset({"DataFrame"}),
    "pandas.core.series": frozenset({"Series"}),
    "numpy": frozenset({"array"}) | _NUMPY_SCALARS,
    "builtins": frozenset({"complex", "tuple", "set", "frozenset", "list", "dict"}),
    "collections": frozenset({"OrderedDict", "deque"}),
}
#: Classes whose ``_object`` is JSON text that pandas parses (never a file path).
_TABLE_CLASSES = frozenset({"DataFrame", "Series"})


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


def feeder_json_text(net: pandapowerNet) -> str:
    """``net`` as pandapower JSON text without SimBench's yearly profiles (they are large);
    the same net gives the same text."""
    import pandapower as pp

    lean = copy.copy(net)  # shallow: the tables are shared, only the profiles key is dropped
    if "profiles" in lean:
        del lean["profiles"]
    text: str = pp.to_json(lean, None)
    return text


def save_feeder_json(net: pandapowerNet, path: str | os.PathLike[str]) -> Path:
    """Write ``net`` as pandapower JSON (:func:`feeder_json_text`) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(feeder_json_text(net))
    return path


def screen_feeder_json(text: str, path: str | os.PathLike[str] = "<string>") -> None:
    """Refuse JSON that pandapower's decoder must not see; return None when it is safe.

    Every object with a ``_module`` or ``_class`` key must be an allowed pair of
    :data:`ALLOWED_OBJECTS` with only the keys pandapower writes; JSON text inside
    strings (pandas tables are stored that way, and pandapower decodes it with the
    same hooks) is parsed and screened too; duplicate keys are refused (so no parser
    can read a different object than the one screened here).

    Raises:
        FeederFileError: naming ``path`` and the offending module/class or problem.
    """
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise FeederFileError(f"{path}: refused feeder JSON: duplicate key {exc.key!r}") from None
    except (ValueError, RecursionError) as exc:
        raise FeederFileError(f"cannot read pandapower JSON file {path}: not valid JSON "
                              f"({_json_reason(exc)})") from None
    _screen(doc, Path(path), 0)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _json_reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    return "nested too deeply" if isinstance(exc, RecursionError) else type(exc).__name__


def _screen(node: object, path: Path, depth: int) -> None:
    if depth > MAX_FEEDER_JSON_DEPTH:
        raise FeederFileError(f"{path}: refused feeder JSON: nested deeper than "
                              f"{MAX_FEEDER_JSON_DEPTH} levels")
    if isinstance(node, dict):
        if "_module" in node or "_class" in node:
            _screen_object(node, path)
        for value in node.values():
            _screen(value, path, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _screen(value, path, depth + 1)
    elif isinstance(node, str) and node.lstrip()[:1] in ("{", "["):
        try:
            inner = json.loads(node, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as exc:
            raise FeederFileError(f"{path}: refused feeder JSON: duplicate key {exc.key!r} "
                                  "in embedded JSON") from None
        except (ValueError, RecursionError):
            return  # plain text that pandapower does not decode either (tables are checked)
        _screen(inner, path, depth + 1)


def _screen_object(node: dict[str, Any], path: Path) -> None:
    module, cls = node.get("_module"), node.get("_class")
    if not isinstance(module, str) or not isinstance(cls, str):
        raise FeederFileError(f"{path}: refused feeder JSON: object with _module={module!r}, "
                              f"_class={cls!r} (both must be given as strings)")
    allowed = ALLOWED_OBJECTS.get(module)
    if allowed is None:
        raise FeederFileError(
            f"{path}: refused feeder JSON: module {module!r} (class {cls!r}) is not allowed; "
            f"a feeder file may only name {', '.join(sorted(ALLOWED_OBJECTS))}"
        )
    if cls not in allowed:
        raise FeederFileError(f"{path}: refused feeder JSON: class {cls!r} of module {module!r} "
                              f"is not allowed (allowed: {', '.join(sorted(allowed))})")
    extra = set(node) - {"_module", "_class", "_object"}
    if cls in _TABLE_CLASSES:
        extra -= _TABLE_KEYS
        obj = node.get("_object")
        if isinstance(obj, str) and obj.lstrip()[:1] not in ("{", "["):
            raise FeederFileError(f"{path}: refused feeder JSON: a {cls} whose data is not JSON "
                                  "text (pandas would read it as a file name)")
        if isinstance(obj, str):
            try:
                json.loads(obj, object_pairs_hook=_no_duplicate_keys)
            except (ValueError, RecursionError):
                raise FeederFileError(f"{path}: refused feeder JSON: a {cls} holds invalid "
                                      "JSON text") from None
    if extra:
        raise FeederFileError(f"{path}: refused feeder JSON: unexpected keys {sorted(extra)} "
                              f"in a {module}.{cls} object")


def read_feeder_json(path: str | os.PathLike[str]) -> pandapowerNet:
    """Read a pandapower JSON file after screening it (see :func:`screen_feeder_json`).

    Raises:
        FeederError: missing file, not a regular file, too large, not JSON, refused
            content, or a file pandapower cannot read. The message names the file.
    """
    import pandapower as pp

    path = Path(path)
    if not path.exists():
        raise FeederError(f"feeder JSON file not found: {path}")
    if not path.is_file():
        raise FeederFileError(f"{path}: not a regular file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FEEDER_JSON_BYTES + 1)
    except OSError as exc:
        raise FeederFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_FEEDER_JSON_BYTES:
        raise FeederFileError(f"{path}: larger than {MAX_FEEDER_JSON_BYTES // 2**20} MiB; "
                              "refused as a feeder JSON file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FeederFileError(f"cannot read pandapower JSON file {path}: not UTF-8 text") from None
    screen_feeder_json(text, path)
    try:
        # the screened text itself, never the file again (it could change in between)
        return pp.from_json_string(text)
    except Exception as exc:  # pandapower raises many types for a bad file
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise FeederError(f"cannot read pandapower JSON file {path}: {reason}") from None


def _load_json(path: Path) -> pandapowerNet:
    return read_feeder_json(path)


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
    import pandas as pd

    net = read_feeder_json(json_path)  # the cache directory may be shared: screened too
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
