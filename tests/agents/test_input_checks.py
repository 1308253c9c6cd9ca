"""Policies and data with unusable values are refused on load, naming the file (and row)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from agents.fleet.data import DEFAULT_CITYLEARN_DIR, DataError, load_citylearn
from agents.learning.policy import PolicyFileError, load_policy, sha256_file
from tests.csv_edit import set_csv_cell

POLICY_DIR = Path(__file__).resolve().parents[2] / "data" / "policies"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    for suffix in (".json", ".safetensors"):
        shutil.copy2(POLICY_DIR / f"normal{suffix}", tmp_path / f"normal{suffix}")
    return tmp_path / "normal.json"


def _edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_shipped_policies_load():
    for name in ("normal", "double"):
        assert load_policy(POLICY_DIR / f"{name}.json").name == name


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weight(policy: Path, value: float):
    weights = policy.with_suffix(".safetensors")
    tensors = load_file(str(weights))
    tensors["layer1.weight"] = tensors["layer1.weight"].copy()
    tensors["layer1.weight"][3, 4] = value
    save_file(tensors, str(weights))
    _edit_json(policy, lambda m: m.update(weights_sha256=sha256_file(weights)))
    with pytest.raises(PolicyFileError, match=r"normal\.safetensors: layer1\.weight holds 1 "):
        load_policy(policy)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_bad_observation_scale(policy: Path, value: float):
    _edit_json(policy, lambda m: m["observation"]["scales"].update(backlog_kwh=value))
    with pytest.raises(PolicyFileError, match=r"normal\.json: observation\.scales\.backlog_kwh"):
        load_policy(policy)


def test_swapped_action_bounds(policy: Path):
    _edit_json(policy, lambda m: m["action"].update(low=[0.0, 1.0], high=[1.0, 0.0]))
    with pytest.raises(PolicyFileError, match=r"normal\.json: action bounds swapped for output 1"):
        load_policy(policy)


def test_non_finite_action_bound(policy: Path):
    _edit_json(policy, lambda m: m["action"].update(high=[1.0, float("inf")]))
    with pytest.raises(PolicyFileError, match=r"normal\.json: action\.high must be finite"):
        load_policy(policy)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    target = tmp_path / "cl"
    shutil.copytree(DEFAULT_CITYLEARN_DIR, target)
    return target


@pytest.mark.parametrize("file, column, value, fragment", [
    ("pricing.csv", "Electricity Pricing [$/kWh]", "-0.1",
     "not within [0, 100], first at data row 43"),
    ("pricing.csv", "Electricity Pricing [$/kWh]", "1e12",
     "not within [0, 100], first at data row 43"),
    ("Building_5.csv", "Solar Generation [W/kW]", "-3",
     "not within [0, 2000], first at data row 43"),
    ("Building_5.csv", "Solar Generation [W/kW]", "1e15",
     "not within [0, 2000], first at data row 43"),
    ("Building_5.csv", "Equipment Electric Power [kWh]", "1e6",
     "not within [0, 1000], first at data row 43"),
    ("Building_5.csv", "Equipment Electric Power [kWh]", "-0.5",
     "not within [0, 1000], first at data row 43"),
    ("pricing.csv", "Electricity Pricing [$/kWh]", "inf", "non-finite value(s), first at data "
     "row 43"),
])
def test_implausible_data(data_dir: Path, file: str, column: str, value: str, fragment: str):
    set_csv_cell(data_dir / file, column, 42, value)
    with pytest.raises(DataError) as info:
        load_citylearn(data_dir)
    message = str(info.value)
    assert message.startswith(str(data_dir / file)) and repr(column) in message
    assert fragment in message
