"""The scenario's sections about the run and its fleet: ``time``, ``data``, ``feeder``,
``buildings``, ``constraint``, ``output`` and ``sharding``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agents.fleet.paths import CITYLEARN_DATA_PATH
from cosim.scenario.errors import FieldError, FieldErrors
from cosim.scenario.fields import (
    BusId,
    Count,
    DemandScale,
    Id,
    Step,
    StrictModel,
    Text,
    is_number,
)
from cosim.scenario.limits import (
    MAX_BATTERY_CAPACITY_KWH,
    MAX_BUILDINGS,
    MAX_FLEET_SCALE,
    MAX_FLUSH_EVERY,
    MAX_HOST_PORT_CHARS,
    MAX_LIST_ITEMS,
    MAX_PORT,
    MAX_POWER_KW,
    MAX_SHARDS,
    MAX_TIME_STEPS,
)


class TimeConfig(StrictModel):
    """The run's steps: the data row of step 0, how many steps, their length."""

    start: Step = Field(0, description="data row (hour of the CityLearn year) of step 0")
    steps: int = Field(ge=1, le=MAX_TIME_STEPS)
    step_h: float = Field(1.0, gt=0, le=24, description="step length in hours")


class DataConfig(StrictModel):
    """Where the buildings' data set is read from."""

    source: Literal["citylearn_2022"] = "citylearn_2022"
    path: Text = CITYLEARN_DATA_PATH


class BackgroundConfig(StrictModel):
    """The feeder's own loads besides the fleet: SimBench profiles, nominal or off; scaled."""

    mode: Literal["simbench", "nominal", "off"] = "off"
    scale: float = Field(1.0, ge=0, le=MAX_FLEET_SCALE)


class FeederConfig(StrictModel):
    """The distribution feeder, its power flow backend and the fleet's load on it."""

    source: Text = Field(description="simbench:CODE, pandapower:NAME or a pandapower JSON path")
    backend: Literal["pandapower", "power-grid-model"] = "power-grid-model"
    background: BackgroundConfig = BackgroundConfig()
    fleet_scale: float = Field(1.0, gt=0, le=MAX_FLEET_SCALE,
                               description="multiplies the fleet's feeder load")
    power_factor: float = Field(0.95, gt=0, le=1)


class BatteryConfig(StrictModel):
    """A building's battery; a None field keeps the value of its data."""

    capacity_kwh: float | None = Field(None, ge=0, le=MAX_BATTERY_CAPACITY_KWH)
    power_kw: float | None = Field(None, ge=0, le=MAX_POWER_KW)
    efficiency: float | None = Field(None, gt=0, le=1, description="round trip")


class BuildingSpec(StrictModel):
    """One building given by hand: its profile, scale, policy class, bus and battery."""

    id: Id
    profile: Text = Field(description="CityLearn building name, e.g. Building_1")
    demand_scale: DemandScale = 1.0
    policy_class: Id | None = None
    bus: BusId | None = None
    battery: BatteryConfig = BatteryConfig()
    pv_kw: float | None = Field(None, ge=0, le=MAX_POWER_KW)


class GeneratorConfig(StrictModel):
    """``count`` buildings generated from cycled profiles and demand scales."""

    count: Count
    profiles: list[Text] | None = Field(None, min_length=1, max_length=MAX_LIST_ITEMS,
                                        description="cycled; default all")
    demand_scales: list[DemandScale] = Field(default_factory=lambda: [1.0], min_length=1,
                                             max_length=MAX_LIST_ITEMS)
    battery: BatteryConfig = BatteryConfig()
    pv_kw: float | None = Field(None, ge=0, le=MAX_POWER_KW)
    buses: list[BusId] | None = Field(None, min_length=1, max_length=MAX_BUILDINGS,
                                      description="one per building; default: placed")

    @model_validator(mode="after")
    def _one_bus_each(self) -> GeneratorConfig:
        if self.buses is not None and len(self.buses) != self.count:
            raise FieldError("buses", f"give one bus per building ({self.count}), "
                              f"got {len(self.buses)}")
        return self


class BuildingsConfig(StrictModel):
    """The fleet: ``explicit`` buildings or ``generate``, and their shared settings."""

    explicit: list[BuildingSpec] | None = Field(None, min_length=1, max_length=MAX_BUILDINGS)
    generate: GeneratorConfig | None = None
    backlog_cap_kwh: float = Field(24.0, gt=0)
    export_pv: bool = True
    initial_soc_fraction: float = Field(0.0, ge=0, le=1)
    class_for_scale: dict[str, Id] = Field(
        default_factory=lambda: {"1.0": "normal", "2.0": "double"}, max_length=MAX_LIST_ITEMS,
        description="policy class of a building by its demand scale",
    )

    @model_validator(mode="after")
    def _consistent(self) -> BuildingsConfig:
        errors = []
        if (self.explicit is None) == (self.generate is None):
            errors.append(("", "give exactly one of 'explicit' or 'generate'"))
        if self.explicit is not None:
            ids = [b.id for b in self.explicit]
            seen: set[str] = set()
            for k, i in enumerate(ids):
                if i in seen:
                    errors.append((f"explicit.{k}.id", f"building ids must be unique; {i!r} "
                                   f"is given before (item {ids.index(i)})"))
                seen.add(i)
        for key in self.class_for_scale:
            if not is_number(key):
                errors.append((f"class_for_scale.{key}", "keys must be demand scales written "
                               "as quoted numbers, e.g. '2.0': double"))
        if errors:
            raise FieldErrors(errors)
        return self


class ConstraintConfig(StrictModel):
    """The fleet's grid limit c: a fraction of its peak demand or ``limit_kw``."""

    fraction_of_peak: float | None = Field(None, gt=0, le=1_000)
    limit_kw: float | None = Field(None, gt=0)
    peak_horizon_steps: int | None = Field(
        None, ge=1, le=MAX_TIME_STEPS,
        description="steps from time.start over which the peak is taken (default: time.steps; "
                    "--steps sets it to the declared steps so that c does not move)")

    @model_validator(mode="after")
    def _exactly_one(self) -> ConstraintConfig:
        if (self.fraction_of_peak is None) == (self.limit_kw is None):
            raise ValueError("give exactly one of 'fraction_of_peak' or 'limit_kw'")
        if self.limit_kw is not None and self.peak_horizon_steps is not None:
            raise FieldError("peak_horizon_steps", "only used with fraction_of_peak "
                              "(limit_kw needs no peak)")
        return self


class OutputConfig(StrictModel):
    """Where the run is written, how often it is flushed, whether plots are drawn."""

    directory: Text = "runs/{name}"
    flush_every: int = Field(100, ge=1, le=MAX_FLUSH_EVERY,
                             description="steps between flushes to disk")
    plots: bool = True

    @field_validator("directory")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            v.format(name="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{v!r}: the only placeholder allowed is {{name}} ({exc!r})") from None
        return v


#: ``sharding.connect``: HOST:PORT, a host name or IPv4 address (mosaik's connect starter
#: splits the address at its one colon, so no IPv6 literal) and a port.
SHARD_ADDRESS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*:[0-9]{1,5}$"
ShardAddress = Annotated[str, Field(max_length=MAX_HOST_PORT_CHARS,
                                    pattern=SHARD_ADDRESS_PATTERN)]


class ShardingConfig(StrictModel):
    """How many shards the fleet is split into and where they run."""

    shards: int = Field(1, ge=1, le=MAX_SHARDS)
    mode: Literal["inprocess", "cmd", "connect"] = Field(
        "inprocess", description="inprocess: the shards in the run's process; cmd: each in a "
                                 "process the run starts on loopback; connect: each in a "
                                 "process already listening at its sharding.connect address "
                                 "(started with `cosim shard HOST:PORT`, maybe on another host)")
    connect: list[ShardAddress] | None = Field(
        None, max_length=MAX_SHARDS,
        description="HOST:PORT of each shard process (mode connect): exactly one per shard, "
                    "all different; each reads the run's resolved scenario.yaml at the same "
                    "path on its host")

    @model_validator(mode="after")
    def _addresses(self) -> ShardingConfig:
        if self.mode != "connect":
            if self.connect is not None:
                raise FieldError("connect", f"only used with mode 'connect' (mode is "
                                            f"{self.mode!r})")
            return self
        if self.connect is None:
            raise FieldError("connect", f"mode 'connect' needs connect: one HOST:PORT per shard "
                                        f"({self.shards}), of shard processes already "
                                        "listening (cosim shard HOST:PORT)")
        if len(self.connect) != self.shards:
            raise FieldError("connect", f"{len(self.connect)} address(es) for {self.shards} "
                                        "shard(s); give exactly one HOST:PORT per shard")
        errors = []
        for i, address in enumerate(self.connect):
            port = int(address.rsplit(":", 1)[1])
            if not 1 <= port <= MAX_PORT:
                errors.append((f"connect.{i}", f"port {port} of {address!r} is not in "
                                               f"1..{MAX_PORT}"))
            if address in self.connect[:i]:
                errors.append((f"connect.{i}", f"{address!r} is given twice (shard "
                                               f"{self.connect.index(address)} and {i}); "
                                               "each shard needs its own process"))
        if errors:
            raise FieldErrors(errors)
        return self
