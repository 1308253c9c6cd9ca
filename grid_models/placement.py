"""Building placement: which bus each building of the fleet is connected to.

Automatic placement (deterministic by seed) spreads the buildings over the feeder's
load buses: the load buses are shuffled once with ``numpy.random.default_rng(seed)``
and building ``i`` goes to bus ``perm[i % n_load_buses]``, so every load bus gets a
building before any gets a second one. Only energised buses (connected to an in-service
external grid, :mod:`grid_models.topology`) are candidates. Explicit placement takes a
list of bus indices and checks it: unknown, out-of-service and islanded buses are errors.

:func:`bus_injections` sums the buildings' kW per bus into the per-bus MW arrays that
:meth:`grid_models.powerflow.interface.PowerFlow.solve` takes; its ``scale`` multiplies every
building's power (e.g. to make a fleet overload the transformer, see
:func:`fleet_scale_for_trafo_loading`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from grid_models.errors import IslandedBusError, PlacementError, format_choices
from grid_models.topology import check_supply, supplied_buses, unsupplied_reasons

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet


#: At most this many islanded buildings are spelled out in one error message.
MAX_LISTED_BUILDINGS = 10


def load_buses(net: pandapowerNet) -> np.ndarray:
    """Sorted energised buses that hold at least one in-service load of the feeder."""
    from grid_models.powerflow.base import INJECTION_LOAD_PREFIX

    load = net.load
    own = ~load["name"].astype(str).str.startswith(INJECTION_LOAD_PREFIX)
    active = load["in_service"].astype(bool) & own
    buses = np.unique(load.loc[active, "bus"].to_numpy(dtype=np.int64))
    return buses[np.isin(buses, supplied_buses(net))]


def place_buildings(
    net: pandapowerNet,
    n_buildings: int,
    seed: int | None = 0,
    buses: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Bus index of each of ``n_buildings`` buildings.

    Args:
        net: the feeder.
        n_buildings: number of buildings N (>= 1).
        seed: seed of the automatic placement (ignored when ``buses`` is given).
        buses: explicit placement, N energised bus indices (repeats allowed).

    Raises:
        SupplyError: the feeder has no in-service external grid.
        IslandedBusError: explicit buses that are in service but not energised (its
            ``positions`` name the buildings).
        PlacementError: wrong count, unknown or out-of-service bus (the message lists the
            valid buses), or a feeder without energised load buses for automatic placement.
    """
    if isinstance(n_buildings, bool) or not isinstance(n_buildings, (int, np.integer)):
        raise PlacementError(f"n_buildings must be an integer, got {n_buildings!r}")
    if n_buildings < 1:
        raise PlacementError(f"n_buildings must be >= 1, got {n_buildings}")
    valid = np.sort(net.bus.index[net.bus["in_service"].astype(bool)].to_numpy())
    if buses is not None:
        chosen = np.asarray(buses)
        if chosen.ndim != 1 or len(chosen) != n_buildings:
            raise PlacementError(
                f"buses must list one bus per building: expected {n_buildings}, "
                f"got {len(np.atleast_1d(chosen))}"
            )
        valid_set = set(valid.tolist())
        unknown = [b for b in chosen.tolist() if not _is_int(b) or int(b) not in valid_set]
        if unknown:
            energised = supplied_buses(net)
            listed = energised if len(energised) else valid
            raise PlacementError(
                f"unknown or out-of-service bus(es) {sorted(set(map(str, unknown)))} in buses; "
                f"valid buses: [{format_choices(listed.tolist(), limit=200)}] "
                f"(load buses: [{format_choices(load_buses(net).tolist(), limit=200)}])"
            )
        chosen = chosen.astype(np.int64)
        _check_energised(net, chosen)
        return chosen
    check_supply(net)
    candidates = load_buses(net)
    if len(candidates) == 0:
        raise PlacementError("the feeder has no energised load buses; pass buses= explicitly")
    perm = np.random.default_rng(seed).permutation(candidates)
    return perm[np.arange(n_buildings) % len(perm)].astype(np.int64)


def _check_energised(net: pandapowerNet, chosen: np.ndarray) -> None:
    """Raise :class:`IslandedBusError` for buildings on buses that are not energised."""
    check_supply(net)
    islanded = np.flatnonzero(~np.isin(chosen, supplied_buses(net)))
    if not len(islanded):
        return
    buses = [int(chosen[i]) for i in islanded]
    reasons = unsupplied_reasons(net, buses)
    listed = [f"building {int(i)} on bus {b} ({r})"
              for i, b, r in zip(islanded[:MAX_LISTED_BUILDINGS], buses, reasons, strict=False)]
    more = (f" and {len(islanded) - MAX_LISTED_BUILDINGS} more"
            if len(islanded) > MAX_LISTED_BUILDINGS else "")
    raise IslandedBusError(
        f"{len(islanded)} building(s) on buses that are not energised: {'; '.join(listed)}{more}",
        positions=islanded.tolist(), buses=buses, reasons=reasons,
    )


def _is_int(value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def bus_injections(
    building_bus: np.ndarray,
    p_kw: np.ndarray,
    q_kvar: np.ndarray | None = None,
    *,
    bus_ids: np.ndarray,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bus net consumption in MW/Mvar from per-building kW/kvar.

    Args:
        building_bus: bus of each building, shape (N,).
        p_kw: building net consumption, kW, shape (N,) or (T, N).
        q_kvar: building reactive consumption, kvar, the shape of ``p_kw`` (default 0).
        bus_ids: the power flow's bus order (``PowerFlow.bus_ids``).
        scale: factor on every building's power.

    Returns:
        ``(p_mw, q_mvar)`` of shape (n_bus,) or (T, n_bus).
    """
    building_bus = np.asarray(building_bus, dtype=np.int64)
    bus_ids = np.asarray(bus_ids)
    position = {int(b): i for i, b in enumerate(bus_ids)}
    missing = sorted({int(b) for b in building_bus} - set(position))
    if missing:
        raise PlacementError(f"building buses {missing} are not in bus_ids")
    p = np.asarray(p_kw, dtype=float)
    q = np.zeros_like(p) if q_kvar is None else np.asarray(q_kvar, dtype=float)
    if p.shape[-1:] != building_bus.shape or q.shape != p.shape or p.ndim > 2:
        raise PlacementError(
            f"p_kw/q_kvar must have shape (N,) or (T, N) with N={len(building_bus)}, "
            f"got {p.shape} and {q.shape}"
        )
    positions = np.array([position[int(b)] for b in building_bus], dtype=np.int64)
    factor = scale / 1000.0
    return (sum_by_bus(positions, p, len(bus_ids)) * factor,
            sum_by_bus(positions, q, len(bus_ids)) * factor)


def sum_by_bus(positions: np.ndarray, values: np.ndarray, n_bus: int) -> np.ndarray:
    """Sum per-building ``values`` ((N,) or (T, N)) into buses: (n_bus,) or (T, n_bus).

    ``positions[i]`` is building i's position in the bus order. Each bus's sum adds its
    buildings in building order, whatever T is, so a step's injections are the same
    bit for bit whether it is computed alone or in a batch (unlike a BLAS product).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        return np.bincount(positions, weights=v, minlength=n_bus)
    n_steps = v.shape[0]
    index = (positions[None, :] + n_bus * np.arange(n_steps)[:, None]).ravel()
    return np.bincount(index, weights=v.ravel(), minlength=n_steps * n_bus).reshape(
        n_steps, n_bus)


def fleet_scale_for_trafo_loading(
    net: pandapowerNet,
    fleet_peak_kw: float,
    target_loading_percent: float = 120.0,
    *,
    background_peak_mw: float = 0.0,
    power_factor: float = 1.0,
) -> float:
    """First-order ``scale`` that makes the fleet's peak load the transformers to a target.

    ``(scale * fleet_peak_kw / 1000 + background_peak_mw) / power_factor`` (MVA) equals
    ``target_loading_percent`` of the summed rating of the in-service transformers
    (losses and voltage drop ignored; check the result with a power flow).
    """
    if fleet_peak_kw <= 0:
        raise PlacementError(f"fleet_peak_kw must be > 0, got {fleet_peak_kw}")
    if not 0 < power_factor <= 1:
        raise PlacementError(f"power_factor must be in (0, 1], got {power_factor}")
    tr = net.trafo[net.trafo["in_service"].astype(bool)]
    if not len(tr):
        raise PlacementError("the feeder has no in-service transformer")
    rating_mva = float((tr["sn_mva"] * tr["parallel"]).sum())
    needed_mw = target_loading_percent / 100.0 * rating_mva * power_factor - background_peak_mw
    if needed_mw <= 0:
        raise PlacementError("the background alone already reaches the target loading")
    return needed_mw * 1000.0 / fleet_peak_kw
