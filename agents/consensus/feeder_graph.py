"""Communication graph along a pandapower feeder (topology ``feeder``).

The feeder is read with ``pandapower.topology.create_nxgraph`` (in-service lines
and transformers; open switches respected). Hop distance = number of branches on
the shortest path between two buses. Buildings i and j are adjacent when

1. their buses lie within ``max_hops`` hops (default 1: the same bus or two buses
   joined by one line or transformer), or
2. the edge is needed to join what rule 1 left apart: the candidate links are the
   boundaries between the buildings' "Voronoi cells" on the feeder (every bus
   belongs to its nearest building bus, ties to the earlier one in breadth-first
   order), weighted by the hop distance through the boundary; Kruskal adds the
   shortest links (ties by bus number) that join two components, each between
   the first building of either bus. This is Mehlhorn's construction of a
   minimum spanning tree of the hop distances between building buses.

So every building talks to the buildings next to it along the feeder, and the
graph is connected whenever the buildings' buses are connected in the feeder,
in particular on any radial feeder. Edge attribute ``hops`` holds the hop
distance of each link, node attribute ``bus`` each building's bus.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import networkx as nx

from agents.consensus.graphs import GraphError, check_connected


def _within(bus_graph: nx.Graph[int], start: int, max_hops: int) -> dict[int, int]:
    """Buses within ``max_hops`` of ``start`` and their hop distance (networkx's BFS with a
    cutoff: the same buses in the same order as a FIFO queue finds them)."""
    return dict(nx.single_source_shortest_path_length(bus_graph, start, cutoff=max_hops))


def _voronoi_links(bus_graph: nx.Graph[int], seeds: list[int]) -> list[tuple[int, int, int]]:
    """Candidate links ``(hops, seed_a, seed_b)`` between neighbouring cells, sorted."""
    label = {s: s for s in seeds}
    dist = {s: 0 for s in seeds}
    queue = deque(seeds)
    while queue:
        bus = queue.popleft()
        for nxt in sorted(bus_graph.neighbors(bus)):
            if nxt not in label:
                label[nxt], dist[nxt] = label[bus], dist[bus] + 1
                queue.append(nxt)
    links = set()
    for a, b in bus_graph.edges:
        if a in label and b in label and label[a] != label[b]:
            sa, sb = sorted((label[a], label[b]))
            links.add((dist[a] + dist[b] + 1, sa, sb))
    return sorted(links)


def build_feeder_graph(
    net: Any,  # a pandapower net (pandapower ships no types)
    building_buses: Sequence[int],
    *,
    max_hops: int | None = None,
    allow_disconnected: bool = False,
) -> nx.Graph[int]:
    """See the module docstring; ``agents.consensus.graphs.feeder_graph`` is the public name."""
    import pandapower.topology as top  # local: pandapower is slow to import

    buses = [int(b) for b in building_buses]
    if not buses:
        raise GraphError("feeder_graph: no buildings given")
    radius = 1 if max_hops is None else max_hops
    if int(radius) != radius or radius < 0:
        raise GraphError(f"feeder_graph: max_hops must be an integer >= 0, got {max_hops}")
    radius = int(radius)
    known = {int(b) for b in net.bus.index}
    missing = sorted({b for b in buses if b not in known})
    if missing:
        raise GraphError(
            f"feeder_graph: building bus(es) {missing[:10]} are not buses of the feeder "
            "(a building without a bus, -1, cannot take part in a feeder graph)"
        )
    bus_graph: nx.Graph[int] = nx.Graph(top.create_nxgraph(net, respect_switches=True, multi=False))
    bus_graph.add_nodes_from(buses)  # a building bus cut off by open switches still counts
    by_bus: dict[int, list[int]] = {}
    for i, b in enumerate(buses):
        by_bus.setdefault(b, []).append(i)

    g: nx.Graph[int] = nx.Graph()
    g.add_nodes_from((i, {"bus": b}) for i, b in enumerate(buses))
    for bus, members in by_bus.items():
        for other, hops in _within(bus_graph, bus, radius).items():
            if other in by_bus and other >= bus:
                g.add_edges_from(((a, c) for a in members for c in by_bus[other] if a != c),
                                 hops=hops)
    joined = nx.utils.UnionFind(range(len(buses)))
    for a, c in g.edges:
        joined.union(a, c)
    for hops, sa, sb in _voronoi_links(bus_graph, sorted(by_bus)):
        a, c = by_bus[sa][0], by_bus[sb][0]
        if joined[a] != joined[c]:  # a link only between groups not yet joined
            joined.union(a, c)
            g.add_edge(a, c, hops=hops)
    g.graph["topology"] = "feeder"
    return check_connected(g, allow_disconnected=allow_disconnected)
