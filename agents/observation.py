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
    lambda       lambda / lambda_max              (global multiplier, >= 0)
    nu           nu / max(|nu_min|, |nu_max|)     (local multiplier, signed)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from agents.building import FleetParams, FleetState, exogenous_kwh

OBS_NAMES = ("demand", "backlog", "soc", "price", "pv", "hour_sin", "hour_cos", "lambda", "nu")
OBS_DIM = len(OBS_NAMES)


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

    @property
    def n(self) -> int:
        """Number of buildings N."""
        return int(self.demand_kwh.shape[0])


def observation_matrix(obs: FleetObservation, scales: ObservationScales) -> np.ndarray:
    """(N, OBS_DIM) float32 matrix, the policy network's input."""
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
    return np.stack(cols, axis=1).astype(np.float32)


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
) -> FleetObservation:
    """The observation at the start of a step, from the same inputs as ``step_fleet``."""
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
    )


def battery_available_kwh(params: FleetParams, state: FleetState, dt_h: float) -> np.ndarray:
    """The most the battery can deliver in a step: ``min(e * eta_dis, P * dt)``, kWh."""
    result: np.ndarray = np.minimum(state.soc_kwh * params.eta_discharge, params.power_kw * dt_h)
    return result
