"""Which buses of a feeder are energised: connected to an in-service external grid.

A bus is *energised* when it is in service and an in-service path (lines, transformers,
closed switches; out-of-service elements and open switches cut the path) joins it to the
bus of an in-service ``ext_grid``. A building on any other bus would have no voltage:
its power flow results are NaN, so its grid effects could not be measured. The checks
here let a scenario refuse that before a run starts (:func:`check_supply`, and
:func:`grid_models.placement.place_buildings`).

Only ``ext_grid`` counts as a source: both backends need one as the slack (a slack
``gen`` is not supported by the power-grid-model backend).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from grid_models.errors import SupplyError

if TYPE_CHECKING:
    import networkx as nx
    from pandapower.auxiliary import pandapowerNet

#: Explanations of why a bus is not energised (see :func:`unsupplied_reasons`).
REASON_CUT_OFF = (
    "cut off from the external grid by an open switch or an out-of-service line, "
    "transformer or bus"
)
REASON_NOT_CONNECTED = "not connected to the external grid by any line or transformer"


def source_buses(net: pandapowerNet) -> np.ndarray:
    """Sorted buses of the in-service external grids that sit on in-service buses."""
    eg = net.ext_grid
    buses = eg.loc[eg["in_service"].astype(bool), "bus"].to_numpy(dtype=np.int64)
    in_service = net.bus.index[net.bus["in_service"].astype(bool)].to_numpy(dtype=np.int64)
    return np.unique(buses[np.isin(buses, in_service)])


def check_supply(net: pandapowerNet) -> None:
    """Raise :class:`SupplyError` unless an in-service ext_grid sits on an in-service bus."""
    if len(source_buses(net)):
        return
    eg = net.ext_grid
    if not len(eg):
        raise SupplyError("the feeder has no external grid (ext_grid table empty): "
                          "no bus would be energised")
    off = eg.index[~eg["in_service"].astype(bool)].tolist()
    if len(off) == len(eg):
        raise SupplyError(f"the feeder's external grid(s) {off} are out of service: "
                          "no bus would be energised")
    buses = sorted({int(b) for b in eg.loc[eg["in_service"].astype(bool), "bus"]})
    raise SupplyError(f"the feeder's in-service external grid(s) sit on out-of-service or "
                      f"unknown bus(es) {buses}: no bus would be energised")


def supplied_buses(net: pandapowerNet) -> np.ndarray:
    """Sorted energised buses (see the module docstring); empty without a source."""
    import pandapower.topology as top

    sources = set(source_buses(net).tolist())
    in_service = net.bus.index[net.bus["in_service"].astype(bool)].to_numpy(dtype=np.int64)
    if not sources:
        return np.zeros(0, dtype=np.int64)
    graph = top.create_nxgraph(net, respect_switches=True, include_out_of_service=False)
    unsupplied = top.unsupplied_buses(net, mg=graph, slacks=sources)
    return np.sort(in_service[~np.isin(in_service, list(unsupplied))])


def unsupplied_reasons(net: pandapowerNet, buses: list[int]) -> list[str]:
    """Why each of ``buses`` (in service, not energised) has no supply: one reason each.

    A bus that would be energised with every switch closed and every element in service
    is :data:`REASON_CUT_OFF`, otherwise :data:`REASON_NOT_CONNECTED`. Out-of-service
    buses get ``"out of service"``.
    """
    import pandapower.topology as top

    sources = set(net.ext_grid["bus"].to_numpy(dtype=np.int64).tolist())
    full = top.create_nxgraph(net, respect_switches=False, include_out_of_service=True)
    reachable: set[int] = set()
    for component in _components(full):
        if component & sources:
            reachable |= component
    in_service = net.bus["in_service"].astype(bool)
    reasons = []
    for bus in buses:
        if bus in net.bus.index and not in_service.loc[bus]:
            reasons.append("out of service")
        elif bus in reachable:
            reasons.append(REASON_CUT_OFF)
        else:
            reasons.append(REASON_NOT_CONNECTED)
    return reasons


def _components(graph: nx.Graph[int]) -> list[set[int]]:
    import networkx as nx

    return [set(int(n) for n in c) for c in nx.connected_components(graph)]
