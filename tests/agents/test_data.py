"""CityLearn loader: shipped data load; broken data fail with the file and column named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from agents.fleet.data import DEFAULT_CITYLEARN_DIR, DataError, load_citylearn


def test_shipped_extract_loads():
    data = load_citylearn()
    assert len(data.buildings) == 17
    assert data.n_steps == 8760
    b1 = data.building("Building_1")
    assert b1.demand_kwh.shape == (8760,) and b1.demand_kwh.dtype == np.float64
    assert b1.battery.capacity_kwh == 6.4 and b1.battery.power_kw == 5.0
    assert b1.pv_kw == 4.0 and data.building("Building_4").pv_kw == 5.0
    assert np.isfinite(data.price_per_kwh).all()
    demand, solar, price = data.window(["Building_1", "Building_2"], 10, 5)
    assert demand.shape == (5, 2) and solar.shape == (5, 2) and price.shape == (5,)


@pytest.fixture
def copy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "cl"
    shutil.copytree(DEFAULT_CITYLEARN_DIR, target)
    return target


def test_missing_file(copy_dir: Path):
    (copy_dir / "Building_3.csv").unlink()
    with pytest.raises(DataError, match=r"Building_3\.csv: file not found"):
        load_citylearn(copy_dir)


def test_missing_column(copy_dir: Path):
    path = copy_dir / "Building_2.csv"
    path.write_text(path.read_text().replace("Solar Generation [W/kW]", "Solar [W]", 1))
    with pytest.raises(DataError, match=r"Building_2\.csv: missing column 'Solar Generation"):
        load_citylearn(copy_dir)


def test_nan_value(copy_dir: Path):
    path = copy_dir / "pricing.csv"
    lines = path.read_text().splitlines()
    lines[5] = "nan," + lines[5].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"pricing\.csv: column 'Electricity Pricing .* row 5"):
        load_citylearn(copy_dir)


def test_bad_schema_field(copy_dir: Path):
    path = copy_dir / "schema.json"
    path.write_text(path.read_text().replace('"capacity": 6.4', '"capacity": "big"', 1))
    with pytest.raises(DataError, match=r"schema\.json: field buildings\.Building_1\."
                                        r"electrical_storage\.attributes\.capacity"):
        load_citylearn(copy_dir)


def test_window_out_of_range_and_unknown_building():
    data = load_citylearn()
    with pytest.raises(DataError, match="data hold hours 0..8759"):
        data.window(["Building_1"], 8700, 100)
    with pytest.raises(DataError, match="unknown building 'Building_99'"):
        data.window(["Building_99"], 0, 1)
