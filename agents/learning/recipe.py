"""The training recipe (``cosim train RECIPE.yaml``), validated strictly with pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents.fleet.paths import CITYLEARN_DATA_PATH, resolve_path
from agents.learning.tariffs import MultiplierDraw, TariffDraw
from grid_models.errors import InputError
from grid_models.support.safe_yaml import YamlProblems, read_yaml_file


class RecipeError(InputError, ValueError):
    """A recipe file is unreadable or invalid; the message names file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PPOConfig(_Strict):
    """PPO settings: SB3 hyperparameters, network layers and activation, length and threads."""

    n_envs: int = Field(4, ge=1)
    n_steps: int = Field(1024, ge=8)
    batch_size: int = Field(256, ge=8)
    n_epochs: int = Field(10, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, gt=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    ent_coef: float = Field(0.0, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    net_arch: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: Literal["tanh", "relu"] = "tanh"
    normalize_reward: bool = True
    total_timesteps: int = Field(800_000, ge=1)
    torch_threads: int = Field(1, ge=1)
    # a tanh-squashed Gaussian (SB3's gSDE with squash_output): the action keeps a
    # gradient at its bounds, where a clipped Gaussian has none
    squash: bool = False
    log_std_init: float = 0.0



class SACConfig(_Strict):
    """SAC settings (``algorithm: sac``): SB3 hyperparameters, network and length."""

    learning_rate: float = Field(3e-4, gt=0)
    buffer_size: int = Field(1_000_000, ge=1000)
    batch_size: int = Field(512, ge=8)
    tau: float = Field(0.005, gt=0, le=1)
    gamma: float = Field(0.99, gt=0, le=1)
    gradient_steps: int = Field(8, ge=1)  # per vectorised step (lanes transitions)
    learning_starts: int = Field(10_000, ge=0)
    ent_coef: str = "auto"
    net_arch: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: Literal["tanh", "relu"] = "tanh"
    total_timesteps: int = Field(200_000, ge=1)
    torch_threads: int = Field(1, ge=1)



class NuOffsetConfig(_Strict):
    """The offset of nu_0 from eta x b_0, drawn per episode
    (agents.learning.tariffs.MultiplierDraw)."""

    low: float = -5.0
    high: float = 5.0
    zero_share: float = Field(0.5, ge=0, le=1)
    power: float = Field(2.0, ge=1)


class MultipliersConfig(_Strict):
    """Multipliers that evolve within an episode
    (agents.learning.training_fleet.MultiplierProcess)."""

    lambda_low: float = Field(-2.0, le=0)
    negative_share: float = Field(0.1, ge=0, le=1)
    reversion: float = Field(0.1, ge=0, le=1)
    noise: float = Field(0.15, ge=0)
    nu_offset: NuOffsetConfig = NuOffsetConfig()
    eta: tuple[float, float] = (1.0, 1.0)
    fixed_share: float = Field(0.1, ge=0, le=1)


class WarmStartConfig(_Strict):
    """Behaviour cloning of the local-LP teacher (agents.learning.teacher) before RL fine-tuning."""

    steps: int = Field(2000, ge=1)  # vectorised steps of demonstrations (x lanes samples)
    horizon: int = Field(24, ge=1, le=24)
    mix: float = Field(0.3, ge=0, le=1)
    noise: float = Field(0.3, ge=0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(4096, ge=8)
    learning_rate: float = Field(1e-3, gt=0)
    critic_warmup_steps: int = Field(100_000, ge=0)  # RL steps with the actor frozen
    # DAgger: rounds of demonstrations on the states the cloned policy itself visits
    # (labelled by the teacher), each followed by cloning on everything collected
    dagger_rounds: int = Field(0, ge=0)
    dagger_steps: int = Field(1000, ge=1)
    # the demonstrations' own seed: training seeds that share it share the first round's
    # demonstrations (and their cache), and differ in network initialisation and RL
    seed: int = 0
    cache_dir: str | None = None  # where the first round is kept and reused (None: not kept)


class ClassConfig(_Strict):
    """A demand class: its demand scale and its buildings (None: all buildings of the data)."""

    demand_scale: float = Field(gt=0)
    buildings: list[str] | None = None  # None: all buildings of the data


class DrawConfig(_Strict):
    """How a multiplier is drawn per episode (agents.learning.tariffs.MultiplierDraw)."""

    zero_share: float = Field(0.0, ge=0, le=1)
    power: float = Field(1.0, ge=1)
    negative_share: float | None = Field(None, ge=0, le=1)


class TariffConfig(_Strict):
    """The tariff of each training episode (agents.learning.tariffs.TariffDraw)."""

    synthetic_share: float = Field(0.0, ge=0, le=1)
    data_scale: tuple[float, float] = (1.0, 1.0)
    offpeak: tuple[float, float] = (0.15, 0.28)
    peak_extra: tuple[float, float] = (0.15, 0.40)
    peak_start: tuple[int, int] = (6, 21)
    peak_hours: tuple[int, int] = (2, 7)

    @model_validator(mode="after")
    def _check(self) -> TariffConfig:
        TariffDraw(**self.model_dump())  # raises ValueError naming the field
        return self


class HeldOut(_Strict):
    """Hours kept out of training episodes: ``steps`` hours from data row ``start``."""

    start: int = Field(ge=0)
    steps: int = Field(ge=1)


class Recipe(_Strict):
    """A whole training recipe: data, episodes, draws, reward, PPO settings and demand classes."""

    seed: int = 0
    data: str = CITYLEARN_DATA_PATH
    episode_steps: int = Field(80, ge=1)
    lambda_range: tuple[float, float] = (0.0, 15.0)
    nu_range: tuple[float, float] = (-20.0, 20.0)
    lambda_draw: DrawConfig = DrawConfig()
    nu_draw: DrawConfig = DrawConfig()
    tariff: TariffConfig = TariffConfig()
    # shaped: see agents.learning.env; exogenous_nu (training fleet only):
    # agents.learning.training_fleet
    reward: Literal["lagrangian", "shaped", "exogenous_nu"] = "lagrangian"
    scale_by_multipliers: bool = False  # divide an episode's rewards by 1 + lambda + |nu|
    action_order: Literal["grid_first", "battery_first"] = "grid_first"  # agents.fleet.actions
    backlog_cap_kwh: float = Field(24.0, gt=0)
    limit_per_agent_kwh: float = Field(1.0, ge=0)
    heldout: HeldOut = HeldOut(start=6552, steps=168)
    response_steps: int = Field(336, ge=1)  # held-out hours the response curves run over
    checkpoint_every: int = Field(100_000, ge=1)
    ppo: PPOConfig = PPOConfig()
    classes: dict[str, ClassConfig] = Field(min_length=1)
    # the training fleet (agents.learning.training_fleet): 0 = one gymnasium env per building
    # (BuildingEnv, multipliers fixed per episode, observation v1 only)
    lanes: int = Field(0, ge=0)
    algorithm: Literal["ppo", "sac"] = "ppo"
    observation: Literal["v1", "v2"] = "v1"  # agents.fleet.observation.OBS_LAYOUTS
    multipliers: MultipliersConfig | None = None  # None: fixed per episode (the paper)
    warm_start: WarmStartConfig | None = None
    sac: SACConfig = SACConfig()

    @model_validator(mode="after")
    def _ranges(self) -> Recipe:
        lo, hi = self.lambda_range
        if not 0 <= lo <= hi:
            raise ValueError(f"lambda_range must satisfy 0 <= low <= high, got {self.lambda_range}")
        if self.nu_range[0] > self.nu_range[1]:
            raise ValueError(f"nu_range must satisfy low <= high, got {self.nu_range}")
        if self.lanes and self.reward == "shaped":
            raise ValueError("reward 'shaped' is for the per-building env (lanes: 0); the "
                             "training fleet takes 'lagrangian' or 'exogenous_nu'")
        if self.lanes == 0 and self.reward == "exogenous_nu":
            raise ValueError("reward 'exogenous_nu' needs the training fleet: set lanes >= 1")
        if self.lanes == 0 and (self.observation != "v1" or self.multipliers is not None
                                or self.warm_start is not None or self.algorithm != "ppo"):
            raise ValueError("observation v2, evolving multipliers, warm_start and sac need the "
                             "training fleet: set lanes >= 1")
        return self

    def multiplier_draws(self) -> tuple[MultiplierDraw, MultiplierDraw]:
        """The lambda and nu draws of a training episode."""
        return (MultiplierDraw(*self.lambda_range, **self.lambda_draw.model_dump()),
                MultiplierDraw(*self.nu_range, **self.nu_draw.model_dump()))

    def tariff_draw(self) -> TariffDraw:
        """The tariff draw of a training episode."""
        return TariffDraw(**self.tariff.model_dump())

    def data_dir(self, base: Path | None = None) -> Path:
        """The data directory; a relative ``data`` lies under ``base`` (default: the repository)."""
        return resolve_path(self.data, base)


def _format_errors(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{path}: {loc}: {err['msg']}")
    return "\n".join(lines)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file.

    Raises:
        RecipeError: if the file is missing, malformed or invalid (the message names the field).
    """
    path = Path(path)
    try:
        raw = read_yaml_file(path, what="recipe file")
    except YamlProblems as exc:
        raise RecipeError("\n".join(f"{path}: {f'{where}: ' if where else ''}{message}"
                                     for where, message in exc.errors)) from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: the recipe must be a mapping of fields")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(_format_errors(path, exc)) from None
