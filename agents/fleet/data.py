"""Loader for the CityLearn 2022 extract shipped in ``data/citylearn_2022``.

Pure domain code (no mosaik, no torch). Every array is float64, hourly, 8,760
rows (one year). See ``data/README.md`` for provenance, licence and units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.fleet.paths import CITYLEARN_DATA_PATH, resolve_path
from grid_models.errors import InputError

DEMAND_COLUMN = "Equipment Electric Power [kWh]"
SOLAR_COLUMN = "Solar Generation [W/kW]"
PRICE_COLUMN = "Electricity Pricing [$/kWh]"
CARBON_COLUMN = "kg_CO2/kWh"
HOURS_PER_STEP = 1.0  # the CityLearn 2022 files are hourly
#: Plausible values; anything outside is refused with the file, column and row (or field).
MAX_DEMAND_KWH_PER_STEP = 1_000.0  # one building in one hour (the extract's peak is ~10)
MIN_PRICE_PER_KWH = 0.0
MAX_PRICE_PER_KWH = 100.0  # the extract's peak is 0.54; wholesale caps are ~10
MIN_SOLAR_W_PER_KW = 0.0
MAX_SOLAR_W_PER_KW = 2_000.0  # per kW of PV in one hour; 1,000 at full sun (extract: 976)
#: schema.json: battery capacity (kWh), battery power and PV size (kW) of one building
MAX_BATTERY_CAPACITY_KWH = 100_000.0
MAX_POWER_KW = 100_000.0

DEFAULT_CITYLEARN_DIR = resolve_path(CITYLEARN_DATA_PATH)


class DataError(InputError, ValueError):
    """A data file is missing, lacks a column, or holds values that cannot be used."""


@dataclass(frozen=True)
class BatteryParams:
    """Battery of one building, as in CityLearn's ``schema.json``."""

    capacity_kwh: float
    power_kw: float
    efficiency: float  # round-trip efficiency as CityLearn states it


@dataclass(frozen=True)
class BuildingData:
    """Profiles and equipment of one CityLearn building."""

    name: str
    demand_kwh: np.ndarray  # equipment electric energy per hour
    solar_w_per_kw: np.ndarray  # PV yield per kW of installed PV, per hour
    battery: BatteryParams
    pv_kw: float

    @property
    def n_steps(self) -> int:
        """Number of hourly rows in the profiles."""
        return int(self.demand_kwh.shape[0])


@dataclass(frozen=True)
class CityLearnData:
    """The whole extract: 17 buildings, one price series, one carbon series."""

    directory: Path
    buildings: dict[str, BuildingData]
    price_per_kwh: np.ndarray
    carbon_kg_per_kwh: np.ndarray
    hours_per_step: float = HOURS_PER_STEP
    #: every file the loader read (schema, price, carbon, profiles), in reading order
    files: tuple[Path, ...] = ()

    @property
    def n_steps(self) -> int:
        """Number of hourly rows in the price series."""
        return int(self.price_per_kwh.shape[0])

    @property
    def names(self) -> list[str]:
        """Names of the included buildings, in the order of the schema."""
        return list(self.buildings)

    def window(
        self, names: list[str], start: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Profiles of ``names`` for hours ``start .. start+steps-1``.

        Returns ``(base_demand_kwh (T, N), solar_w_per_kw (T, N), price_per_kwh (T,))``.
        """
        if start < 0 or steps < 1 or start + steps > self.n_steps:
            raise DataError(
                f"{self.directory}: hours {start}..{start + steps - 1} requested, "
                f"but the data hold hours 0..{self.n_steps - 1}"
            )
        chosen = [self.building(n) for n in names]
        window = slice(start, start + steps)
        demand = np.stack([b.demand_kwh[window] for b in chosen], axis=1)
        solar = np.stack([b.solar_w_per_kw[window] for b in chosen], axis=1)
        return demand, solar, np.array(self.price_per_kwh[window])

    def price_outlook(self, start: int, steps: int, ahead: int = 24) -> np.ndarray:
        """The tariff of hours ``start .. start+steps+ahead-1``, wrapping past the year's
        end (the tariff a run of ``steps`` from ``start`` sees ``ahead`` hours beyond)."""
        rows = (int(start) + np.arange(int(steps) + int(ahead))) % self.n_steps
        return np.array(self.price_per_kwh[rows], dtype=np.float64)

    def building(self, name: str) -> BuildingData:
        """The building called ``name``.

        Raises:
            DataError: if the data hold no such building.
        """
        try:
            return self.buildings[name]
        except KeyError:
            raise DataError(
                f"{self.directory}: unknown building {name!r}; valid: {', '.join(self.names)}"
            ) from None


def _read_column(path: Path, column: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if column not in frame.columns:
        raise DataError(
            f"{path}: missing column {column!r}; "
            f"columns present: {', '.join(map(str, frame.columns))}"
        )
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(
            f"{path}: column {column!r} has {bad.size} missing, non-numeric or non-finite "
            f"value(s), first at data row {int(bad[0]) + 1}"
        )
    return values


def _check_range(path: Path, column: str, values: np.ndarray, low: float,
                 high: float = np.inf) -> None:
    """Refuse values outside ``[low, high]``, naming the first (data rows count from 1)."""
    bad = np.flatnonzero((values < low) | (values > high))
    if bad.size:
        row = int(bad[0])
        bounds = f">= {low:g}" if np.isinf(high) else f"within [{low:g}, {high:g}]"
        raise DataError(
            f"{path}: column {column!r} has {bad.size} value(s) that are not {bounds}, "
            f"first at data row {row + 1}: {values[row]:g}"
        )


def _read_schema(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise DataError(f"{path}: nested too deeply to be a CityLearn schema") from None
    if not isinstance(schema, dict) or not isinstance(schema.get("buildings"), dict) \
            or not schema["buildings"]:
        raise DataError(f"{path}: field 'buildings' must be a non-empty mapping")
    for name, spec in schema["buildings"].items():
        if not isinstance(spec, dict):
            raise DataError(f"{path}: field buildings.{name} must be a mapping")
        csv = spec.get("energy_simulation", f"{name}.csv")
        if not isinstance(csv, str) or Path(csv).name != csv:
            raise DataError(f"{path}: field buildings.{name}.energy_simulation must be the "
                            f"name of a CSV file in the same directory, got {csv!r}")
    result: dict[str, Any] = schema
    return result


def _attribute(path: Path, building: str, spec: dict[str, Any], device: str, key: str,
               high: float, *, low_open: bool = False) -> float:
    """A number of ``schema.json``, checked to lie in ``[0, high]`` (``(0, high]`` with
    ``low_open``)."""
    field = f"buildings.{building}.{device}.attributes.{key}"
    try:
        value = float(spec[device]["attributes"][key])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: field {field} is missing or not a number") from None
    low_ok = value > 0 if low_open else value >= 0
    if not (np.isfinite(value) and low_ok and value <= high):
        low = "> 0" if low_open else ">= 0"
        raise DataError(f"{path}: field {field} must be a finite number {low} and <= "
                        f"{high:,g}, got {value}")
    return value


def load_citylearn(directory: str | Path | None = None) -> CityLearnData:
    """Load the CityLearn 2022 extract (cached per directory; arrays are read-only)."""
    return _load_cached(Path(directory or DEFAULT_CITYLEARN_DIR).resolve())


@lru_cache(maxsize=4)
def _load_cached(directory: Path) -> CityLearnData:
    schema_path = directory / "schema.json"
    schema = _read_schema(schema_path)
    price = _read_column(directory / "pricing.csv", PRICE_COLUMN)
    _check_range(directory / "pricing.csv", PRICE_COLUMN, price, MIN_PRICE_PER_KWH,
                 MAX_PRICE_PER_KWH)
    carbon = _read_column(directory / "carbon_intensity.csv", CARBON_COLUMN)
    n_steps = price.shape[0]
    buildings: dict[str, BuildingData] = {}
    files = [schema_path, directory / "pricing.csv", directory / "carbon_intensity.csv"]
    for name, spec in schema["buildings"].items():
        if not spec.get("include", True):
            continue
        csv_name = spec.get("energy_simulation", f"{name}.csv")
        csv_path = directory / csv_name
        if csv_path not in files:
            files.append(csv_path)
        demand = _read_column(csv_path, DEMAND_COLUMN)
        solar = _read_column(csv_path, SOLAR_COLUMN)
        if demand.shape[0] != n_steps:
            raise DataError(
                f"{csv_path}: {demand.shape[0]} rows, but pricing.csv has {n_steps}; "
                "all profiles must cover the same hours"
            )
        _check_range(csv_path, DEMAND_COLUMN, demand, 0.0, MAX_DEMAND_KWH_PER_STEP)
        _check_range(csv_path, SOLAR_COLUMN, solar, MIN_SOLAR_W_PER_KW, MAX_SOLAR_W_PER_KW)
        storage = "electrical_storage"
        battery = BatteryParams(
            capacity_kwh=_attribute(schema_path, name, spec, storage, "capacity",
                                    MAX_BATTERY_CAPACITY_KWH),
            power_kw=_attribute(schema_path, name, spec, storage, "nominal_power",
                                MAX_POWER_KW),
            # round trip, as a share: a battery returns at most what it took
            efficiency=_attribute(schema_path, name, spec, storage, "efficiency", 1.0,
                                  low_open=True),
        )
        pv_kw = _attribute(schema_path, name, spec, "pv", "nominal_power", MAX_POWER_KW)
        for arr in (demand, solar):
            arr.setflags(write=False)
        buildings[name] = BuildingData(name, demand, solar, battery, pv_kw)
    if carbon.shape[0] != n_steps:
        raise DataError(
            f"{directory / 'carbon_intensity.csv'}: {carbon.shape[0]} rows, "
            f"but pricing.csv has {n_steps}"
        )
    for arr in (price, carbon):
        arr.setflags(write=False)
    return CityLearnData(directory, buildings, price, carbon, files=tuple(files))
