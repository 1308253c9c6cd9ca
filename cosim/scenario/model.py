"""``Scenario``: a whole scenario file, its sections validated, then checked across them
(``cosim.scenario.checks``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from cosim.scenario.checks import scenario_problems
from cosim.scenario.controller import ControllerConfig
from cosim.scenario.coordination import CommunicationConfig, DualsConfig, GridConstraintsConfig
from cosim.scenario.errors import FieldErrors
from cosim.scenario.fields import StrictModel
from cosim.scenario.fleet import (
    BuildingsConfig,
    ConstraintConfig,
    DataConfig,
    FeederConfig,
    OutputConfig,
    ShardingConfig,
    TimeConfig,
)
from cosim.scenario.limits import MAX_ID_CHARS, MAX_SEED, MAX_TEXT_CHARS


class Scenario(StrictModel):
    """A whole scenario file, validated, with every default filled in."""

    name: str = Field(min_length=1, max_length=2 * MAX_ID_CHARS,
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="letters, digits, '_', '-', '.'; starts with a letter or digit")
    description: str = Field("", max_length=MAX_TEXT_CHARS)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    time: TimeConfig
    data: DataConfig = DataConfig()
    feeder: FeederConfig
    buildings: BuildingsConfig
    controller: ControllerConfig = ControllerConfig()
    constraint: ConstraintConfig
    duals: DualsConfig = DualsConfig()
    grid_constraints: GridConstraintsConfig | None = None
    communication: CommunicationConfig = CommunicationConfig()
    output: OutputConfig = OutputConfig()
    sharding: ShardingConfig = ShardingConfig()

    def n_buildings(self) -> int:
        """The number of buildings, given or generated."""
        b = self.buildings
        if b.explicit is not None:
            return len(b.explicit)
        return b.generate.count  # type: ignore[union-attr]

    def buildings_field(self) -> str:
        """The field that sets the number of buildings, to name in errors."""
        return "buildings.explicit" if self.buildings.explicit is not None else \
            "buildings.generate.count"

    @model_validator(mode="after")
    def _sizes(self) -> Scenario:
        errors = scenario_problems(self)
        if errors:
            raise FieldErrors(errors)
        return self
