"""Feeder JSON is screened before pandapower decodes it: no module outside the allowed
ones is ever imported, wherever the crafted node hides."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pandapower as pp
import pytest

from grid_models import feeders
from grid_models.errors import FeederError, FeederFileError
from grid_models.feeders import load_feeder, read_feeder_json, save_feeder_json

PLANTED_CLASS = "Payload"


@pytest.fixture(scope="module")
def feeder_doc(tmp_path_factory) -> dict:
    """A genuine pandapower JSON document (CIGRE LV, ~130 kB) as parsed JSON."""
    path = save_feeder_json(load_feeder("pandapower:cigre_lv"),
                            tmp_path_factory.mktemp("feeder") / "cigre.json")
    return json.loads(path.read_text())


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A module on sys.path that leaves a marker file when imported; yields (name, marker)."""
    name = f"fleetcosim_planted_{uuid.uuid4().hex[:12]}"
    folder = tmp_path / "plant"
    folder.mkdir()
    marker = folder / "IMPORTED"
    (folder / f"{name}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    yield name, marker
    sys.modules.pop(name, None)


def _write(doc: dict, path: Path) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _with_top_level_node(doc: dict, node: dict) -> dict:
    crafted = json.loads(json.dumps(doc))
    crafted["_object"]["payload"] = node
    return crafted


def _with_node_in_table(doc: dict, node: dict) -> dict:
    """``node`` as every cell of a new object column of the bus table (a JSON string)."""
    crafted = json.loads(json.dumps(doc))
    bus = crafted["_object"]["bus"]
    table = json.loads(bus["_object"])
    table["columns"].append("payload")
    for row in table["data"]:
        row.append(node)
    bus["_object"] = json.dumps(table)
    bus["dtype"]["payload"] = "object"
    return crafted


def test_genuine_file_passes(feeder_doc, tmp_path):
    net = read_feeder_json(_write(feeder_doc, tmp_path / "ok.json"))
    assert len(net.bus) == 44 and len(net.ext_grid) == 1


@pytest.mark.parametrize("where", [_with_top_level_node, _with_node_in_table])
def test_planted_module_is_never_imported(feeder_doc, planted, tmp_path, where):
    name, marker = planted
    path = _write(where(feeder_doc, {"_module": name, "_class": PLANTED_CLASS, "_object": "1"}),
                  tmp_path / "crafted.json")
    with pytest.raises(FeederFileError) as err:
        load_feeder(str(path))
    message = str(err.value)
    assert str(path) in message and repr(name) in message and "not allowed" in message
    assert not marker.exists() and name not in sys.modules
    # the threat is real: pandapower's own reader imports the planted module
    with pytest.raises(Exception):  # noqa: B017 - it imports, then fails on the class
        pp.from_json(str(path))
    assert marker.exists()


@pytest.mark.parametrize(
    ("node", "named"),
    [
        ({"_module": "os", "_class": "function", "_object": "system"}, "'os'"),
        ({"_module": "subprocess", "_class": "Popen", "_object": "[]"}, "'subprocess'"),
        ({"_module": "pandapower.auxiliary", "_class": "function", "_object": "x"},
         "'function'"),
        ({"_module": "pandapower.control", "_class": "ConstControl", "_object": "{}"},
         "'pandapower.control'"),
        ({"_module": "numpy", "_class": "load", "_object": "x.npy"}, "'load'"),
        ({"_class": "DataFrame", "_object": "{}"}, "_module=None"),
    ],
)
def test_disallowed_modules_and_classes_are_named(feeder_doc, tmp_path, node, named):
    path = _write(_with_top_level_node(feeder_doc, node), tmp_path / "crafted.json")
    with pytest.raises(FeederFileError, match="refused feeder JSON") as err:
        read_feeder_json(path)
    assert named in str(err.value) and str(path) in str(err.value)


def test_table_that_names_a_file_is_refused(feeder_doc, tmp_path):
    secret = tmp_path / "elsewhere.json"
    secret.write_text('{"columns": ["a"], "index": [0], "data": [[1]]}')
    node = {"_module": "pandas.core.frame", "_class": "DataFrame", "_object": str(secret),
            "orient": "split"}
    path = _write(_with_top_level_node(feeder_doc, node), tmp_path / "crafted.json")
    with pytest.raises(FeederFileError, match="file name"):
        read_feeder_json(path)


def test_unexpected_reader_options_are_refused(feeder_doc, tmp_path):
    crafted = json.loads(json.dumps(feeder_doc))
    crafted["_object"]["bus"]["storage_options"] = {"anon": True}
    with pytest.raises(FeederFileError, match="unexpected keys"):
        read_feeder_json(_write(crafted, tmp_path / "crafted.json"))


def test_duplicate_keys_are_refused(feeder_doc, tmp_path):
    text = json.dumps(feeder_doc)
    # the screen would see the first, another parser might keep the second
    text = text.replace('"_module": "pandapower.auxiliary"',
                        '"_module": "pandapower.auxiliary", "_module": "os"', 1)
    path = tmp_path / "dup.json"
    path.write_text(text)
    with pytest.raises(FeederFileError, match="duplicate key '_module'"):
        read_feeder_json(path)


def test_size_and_format_are_bounded(feeder_doc, tmp_path, monkeypatch):
    path = _write(feeder_doc, tmp_path / "big.json")
    monkeypatch.setattr(feeders, "MAX_FEEDER_JSON_BYTES", path.stat().st_size - 1)
    with pytest.raises(FeederFileError, match="larger than"):
        read_feeder_json(path)
    monkeypatch.undo()
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FeederFileError, match="not UTF-8"):
        read_feeder_json(binary)
    text = tmp_path / "text.json"
    text.write_text("net = {}\n")
    with pytest.raises(FeederFileError, match="cannot read .*not valid JSON"):
        read_feeder_json(text)
    with pytest.raises(FeederFileError, match="not a regular file"):
        read_feeder_json(tmp_path)
    assert issubclass(FeederFileError, FeederError)


def test_tampered_cache_entry_is_rebuilt_not_decoded(tmp_path, monkeypatch, planted):
    name, marker = planted
    monkeypatch.setenv(feeders.CACHE_ENV_VAR, str(tmp_path / "cache"))
    feeders._simbench_cached.cache_clear()
    try:
        code = "1-LV-rural1--0-sw"
        load_feeder(f"simbench:{code}")  # writes the cache entry
        json_path, _ = feeders._cache_paths(code)
        doc = json.loads(json_path.read_text())
        _write(_with_top_level_node(doc, {"_module": name, "_class": PLANTED_CLASS,
                                          "_object": "1"}), json_path)
        feeders._simbench_cached.cache_clear()
        net = load_feeder(f"simbench:{code}")
        assert len(net.bus) == 15 and not marker.exists()
        assert name not in json_path.read_text()  # rewritten from simbench
    finally:
        feeders._simbench_cached.cache_clear()
