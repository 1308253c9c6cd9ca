"""The state-augmented observation shared by training (the env) and execution.

One function builds it, for one building or a whole fleet, so that a policy sees
at execution exactly what it saw in training. The scaling is fixed here and
exported beside every trained policy (``ObservationScales``).

Columns (``OBS_NAMES``):
    demand       new demand d_t / demand_kwh
    backlog      backlog b_t / backlog_kwh
    soc          battery energy e_t / E_max (0 when E_max = 0)
    price        price p_t / price_per_kwh
    pv           PV yield s_t / pv_kwh
    hour_sin     sin(2 pi hour / 24)
    hour_cos     cos(2 pi hour / 24)
    lambda       lambda / lambda_max              (global multiplier; lambda_eff may be < 0)
    nu           nu / max(|nu_min|, |nu_max|)     (local multiplier, signed)

Observation layout 2 (``OBS_NAMES``, the default since the policies of issue 23) adds
features of the published tariff ahead, ``p_{t+1} .. p_{t+24}`` (``price_ahead_per_kwh``
of the observation; the tariff is published, so nothing from the future that the data
do not publish is read), each divided by ``price_per_kwh``:

    price_max_6h        max of the next 6 hours' prices
    price_max_12h       max of the next 12 hours' prices
    price_min_6h        min of the next 6 hours' prices
    price_min_12h       min of the next 12 hours' prices
    price_mean_24h      mean of the next 24 hours' prices
    price_dearer_12h    share of the next 12 hours dearer than now (not scaled)

Layout 1 (``OBS_NAMES_V1``, the first nine columns) is what the policies trained before
it see; a policy's JSON names its layout and is fed exactly that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from agents.fleet.building import FleetParams, FleetState, exogenous_kwh

OBS_NAMES_V1 = ("demand", "backlog", "soc", "price", "pv", "hour_sin", "hour_cos", "lambda",
                "nu")
PRICE_FEATURES = ("price_max_6h", "price_max_12h", "price_min_6h", "price_min_12h",
                  "price_mean_24h", "price_dearer_12h")
OBS_NAMES = OBS_NAMES_V1 + PRICE_FEATURES
OBS_DIM = len(OBS_NAMES)
#: the observation layouts a policy may name, by their column names
OBS_LAYOUTS: dict[str, tuple[str, ...]] = {"v1": OBS_NAMES_V1, "v2": OBS_NAMES}
#: hours of the tariff ahead an observation carries (``price_ahead_per_kwh``)
PRICE_AHEAD_H = 24


@dataclass(frozen=True)
class ObservationScales:
    """Divisors applied to the raw quantities; stored with each policy."""

    demand_kwh: float = 5.0
    backlog_kwh: float = 10.0
    price_per_kwh: float = 0.5
    pv_kwh: float = 5.0
    lambda_max: float = 15.0
    nu_abs_max: float = 20.0

    def to_dict(self) -> dict[str, float]:
        """The scales as a plain dict, field name to value."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> ObservationScales:
        """Scales from a dict of :meth:`to_dict`; missing fields keep their defaults."""
        return cls(**{k: float(v) for k, v in values.items()})


@dataclass(frozen=True)
class FleetObservation:
    """What every controller may look at, per building (arrays of shape (N,))."""

    demand_kwh: np.ndarray  # new demand d_t (already scaled by the demand scale)
    backlog_kwh: np.ndarray  # b_t
    soc_kwh: np.ndarray  # e_t
    capacity_kwh: np.ndarray  # E_max
    price_per_kwh: np.ndarray
    pv_kwh: np.ndarray  # s_t
    hour_of_day: np.ndarray  # 0..23 (may be fractional for sub-hourly steps)
    lam: np.ndarray  # lambda
    nu: np.ndarray
    battery_available_kwh: np.ndarray  # what the battery can deliver this step (not a policy input)
    # the published tariff of the next PRICE_AHEAD_H steps, (N, H) (may be a broadcast view)
    price_ahead_per_kwh: np.ndarray | None = None

    def select(self, index: np.ndarray) -> FleetObservation:
        """The observation of the buildings ``index`` (a policy class or a shard)."""
        fields: dict[str, np.ndarray | None] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            fields[name] = None if value is None else np.asarray(value)[index]
        return FleetObservation(**fields)  # type: ignore[arg-type]  # the fields as given

    @property
    def n(self) -> int:
        """Number of buildings N."""
        return int(self.demand_kwh.shape[0])


def price_features(price_now_per_kwh: np.ndarray, price_ahead_per_kwh: np.ndarray,
                   price_scale: float) -> np.ndarray:
    """(N, 6) columns of ``PRICE_FEATURES`` from the current price (N,) and the tariff
    ahead (N, H >= 24)."""
    ahead = np.asarray(price_ahead_per_kwh, dtype=np.float64)
    if ahead.ndim != 2 or ahead.shape[1] < PRICE_AHEAD_H:
        raise ValueError(f"price_ahead_per_kwh must be (N, >= {PRICE_AHEAD_H}), got {ahead.shape}")
    now = np.asarray(price_now_per_kwh, dtype=np.float64)
    cols = (
        ahead[:, :6].max(axis=1) / price_scale,
        ahead[:, :12].max(axis=1) / price_scale,
        ahead[:, :6].min(axis=1) / price_scale,
        ahead[:, :12].min(axis=1) / price_scale,
        ahead[:, :24].mean(axis=1) / price_scale,
        (ahead[:, :12] > now[:, None]).mean(axis=1),
    )
    return np.stack(cols, axis=1)


def observation_matrix(obs: FleetObservation, scales: ObservationScales,
                       names: tuple[str, ...] = OBS_NAMES) -> np.ndarray:
    """(N, len(names)) float32 matrix, the policy network's input, in layout ``names``
    (``OBS_NAMES`` or ``OBS_NAMES_V1``).

    Raises:
        ValueError: if ``names`` is no known layout, or layout 2 is asked of an
            observation without the tariff ahead.
    """
    if tuple(names) not in OBS_LAYOUTS.values():
        raise ValueError(f"unknown observation layout {list(names)}; valid: "
                         f"{ {k: list(v) for k, v in OBS_LAYOUTS.items()} }")
    n = obs.n
    soc = np.divide(obs.soc_kwh, obs.capacity_kwh, out=np.zeros(n), where=obs.capacity_kwh > 0)
    angle = 2.0 * np.pi * np.asarray(obs.hour_of_day, dtype=np.float64) / 24.0
    cols = (
        obs.demand_kwh / scales.demand_kwh,
        obs.backlog_kwh / scales.backlog_kwh,
        soc,
        np.broadcast_to(obs.price_per_kwh, (n,)) / scales.price_per_kwh,
        obs.pv_kwh / scales.pv_kwh,
        np.broadcast_to(np.sin(angle), (n,)),
        np.broadcast_to(np.cos(angle), (n,)),
        np.broadcast_to(obs.lam, (n,)) / scales.lambda_max,
        np.broadcast_to(obs.nu, (n,)) / scales.nu_abs_max,
    )
    base = np.stack(cols, axis=1)
    if len(names) == len(OBS_NAMES_V1):
        return base.astype(np.float32)
    if obs.price_ahead_per_kwh is None:
        raise ValueError("this observation layout needs the tariff ahead "
                         "(FleetObservation.price_ahead_per_kwh), which the caller did not give")
    now = np.broadcast_to(np.asarray(obs.price_per_kwh, dtype=np.float64), (n,))
    extra = price_features(now, obs.price_ahead_per_kwh, scales.price_per_kwh)
    return np.concatenate([base, extra], axis=1).astype(np.float32)


def fleet_observation(
    params: FleetParams,
    state: FleetState,
    base_demand_kwh: np.ndarray,
    solar_w_per_kw: np.ndarray,
    price_per_kwh: np.ndarray | float,
    hour_of_day: float,
    lam: np.ndarray | float,
    nu: np.ndarray | float,
    dt_h: float = 1.0,
    price_ahead_per_kwh: np.ndarray | None = None,
) -> FleetObservation:
    """The observation at the start of a step, from the same inputs as ``step_fleet``;
    ``price_ahead_per_kwh`` is the tariff of the next steps, (H,) for all or (N, H)."""
    demand, pv = exogenous_kwh(params, base_demand_kwh, solar_w_per_kw, dt_h)
    n = params.n
    return FleetObservation(
        demand_kwh=demand,
        backlog_kwh=state.backlog_kwh,
        soc_kwh=state.soc_kwh,
        capacity_kwh=params.capacity_kwh,
        price_per_kwh=np.broadcast_to(np.asarray(price_per_kwh, dtype=float), (n,)),
        pv_kwh=pv,
        hour_of_day=np.full(n, float(hour_of_day)),
        lam=np.broadcast_to(np.asarray(lam, dtype=float), (n,)),
        nu=np.broadcast_to(np.asarray(nu, dtype=float), (n,)),
        battery_available_kwh=battery_available_kwh(params, state, dt_h),
        price_ahead_per_kwh=None if price_ahead_per_kwh is None else np.broadcast_to(
            np.asarray(price_ahead_per_kwh, dtype=float),
            (n, np.shape(price_ahead_per_kwh)[-1])),
    )


def battery_available_kwh(params: FleetParams, state: FleetState, dt_h: float) -> np.ndarray:
    """The most the battery can deliver in a step: ``min(e * eta_dis, P * dt)``, kWh."""
    result: np.ndarray = np.minimum(state.soc_kwh * params.eta_discharge, params.power_kw * dt_h)
    return result
