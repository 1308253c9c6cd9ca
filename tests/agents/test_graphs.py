"""Communication graphs: every topology, connectivity checks, feeder rule, JSON."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from agents.consensus.graphs import (
    ALLOW_DISCONNECTED_KEY,
    TOPOLOGIES,
    GraphError,
    communities,
    directed_edges,
    feeder_graph,
    graph_from_json,
    graph_to_json,
    make_graph,
)

GENERIC = tuple(t for t in TOPOLOGIES if t != "feeder")


def _radial_net(n_bus: int = 5):
    """A hand-built LV feeder: ext grid - trafo - bus 1 - bus 2 - ... (a line)."""
    import pandapower as pp

    net = pp.create_empty_network()
    buses = [pp.create_bus(net, vn_kv=20.0 if i == 0 else 0.4, index=i) for i in range(n_bus)]
    pp.create_ext_grid(net, buses[0])
    pp.create_transformer(net, buses[0], buses[1], std_type="0.4 MVA 20/0.4 kV")
    for a, b in zip(buses[1:-1], buses[2:], strict=True):
        pp.create_line(net, a, b, length_km=0.05, std_type="NAYY 4x150 SE")
    return net


@pytest.mark.parametrize("n", [7, 50])
@pytest.mark.parametrize("topology", GENERIC)
def test_each_topology_builds_connected_over_agents(topology, n):
    g = make_graph(topology, n, seed=0)
    assert sorted(g.nodes) == list(range(n))
    assert nx.is_connected(g)
    assert nx.number_of_selfloops(g) == 0
    assert g.graph["topology"] == topology
    assert g.graph[ALLOW_DISCONNECTED_KEY] is False


@pytest.mark.parametrize("topology", ["random_geometric", "small_world"])
def test_random_topologies_are_deterministic_in_the_seed(topology):
    a, b = make_graph(topology, 40, seed=3), make_graph(topology, 40, seed=3)
    c = make_graph(topology, 40, seed=4)
    assert sorted(a.edges) == sorted(b.edges)
    assert sorted(a.edges) != sorted(c.edges)


def test_two_clusters_default_is_the_papers_fig_1d():
    g = make_graph("two_clusters", 7)
    assert g.number_of_edges() == 3 + 6 + 1  # K3, K4 and the bridge
    bridges = list(nx.bridges(g))
    assert bridges == [(2, 3)]
    h = g.copy()
    h.remove_edge(2, 3)
    assert sorted(len(c) for c in nx.connected_components(h)) == [3, 4]


def test_two_clusters_split_parameter():
    g = make_graph("two_clusters", 10, split=2)
    h = g.copy()
    h.remove_edge(1, 2)
    assert sorted(len(c) for c in nx.connected_components(h)) == [2, 8]
    with pytest.raises(GraphError, match="split"):
        make_graph("two_clusters", 10, split=10)


def test_unknown_topology_lists_valid_ones():
    with pytest.raises(GraphError, match="unknown topology 'mesh'; valid: complete, ring"):
        make_graph("mesh", 5)


def test_unknown_parameter_is_refused():
    with pytest.raises(GraphError, match="unknown parameter"):
        make_graph("ring", 5, radius=0.2)


def test_disconnected_graph_refused_unless_allowed():
    with pytest.raises(GraphError, match=r"disconnected \(\d+ components\).*allow_disconnected"):
        make_graph("random_geometric", 30, radius=0.01)
    g = make_graph("random_geometric", 30, radius=0.01, allow_disconnected=True)
    assert not nx.is_connected(g)
    assert g.graph[ALLOW_DISCONNECTED_KEY] is True


def test_small_n_edge_cases():
    for topology in GENERIC:
        if topology == "two_clusters":
            continue
        g = make_graph(topology, 1)
        assert list(g.nodes) == [0] and g.number_of_edges() == 0
    assert make_graph("two_clusters", 2).number_of_edges() == 1
    with pytest.raises(GraphError, match="n >= 2"):
        make_graph("two_clusters", 1)
    with pytest.raises(GraphError, match="positive integer"):
        make_graph("ring", 0)


def test_directed_edges_both_ways_sorted():
    src, dst = directed_edges(make_graph("line", 3))
    assert list(zip(src.tolist(), dst.tolist(), strict=True)) == [(0, 1), (1, 0), (1, 2), (2, 1)]


# --- feeder -----------------------------------------------------------------------------------


def test_feeder_graph_on_hand_built_radial_net():
    net = _radial_net(6)  # buses 0 (MV), 1..5 along the LV line
    # buildings: two on bus 2, one each on buses 3 and 5; bus 4 hosts none
    g = feeder_graph(net, [2, 2, 3, 5])
    assert nx.is_connected(g)
    assert g.has_edge(0, 1) and g.edges[0, 1]["hops"] == 0  # same bus
    assert g.has_edge(0, 2) and g.has_edge(1, 2)  # adjacent buses (one line)
    assert g.edges[0, 2]["hops"] == 1
    # bus 5 is two lines from bus 3: joined by the shortest link, to bus 3's building only
    assert g.has_edge(2, 3) and g.edges[2, 3]["hops"] == 2
    assert g.number_of_edges() == 4
    assert [g.nodes[i]["bus"] for i in range(4)] == [2, 2, 3, 5]


def test_feeder_graph_max_hops_widens_neighbourhood():
    net = _radial_net(6)
    g = feeder_graph(net, [1, 2, 3, 4, 5], max_hops=2)
    assert g.has_edge(0, 2) and not g.has_edge(0, 3)
    assert nx.is_connected(g)


def test_feeder_graph_kerber_dorfnetz_is_connected_and_sparse():
    import pandapower.networks as pn

    net = pn.create_kerber_dorfnetz()
    buses = [int(b) for b in net.load.bus]
    g = feeder_graph(net, buses)
    assert g.number_of_nodes() == len(buses)
    assert nx.is_connected(g)
    assert g.number_of_edges() < 2 * len(buses)  # neighbours along the feeder, not a clique
    g = make_graph("feeder", len(buses), net=net, building_buses=buses)
    assert nx.is_connected(g) and g.graph["topology"] == "feeder"


def test_feeder_graph_refuses_unknown_buses_and_wrong_counts():
    net = _radial_net(4)
    with pytest.raises(GraphError, match=r"bus\(es\) \[-1\]"):
        feeder_graph(net, [1, -1])
    with pytest.raises(GraphError, match="2 building_buses given for n = 3"):
        make_graph("feeder", 3, net=net, building_buses=[1, 2])
    with pytest.raises(GraphError, match="needs parameters net and building_buses"):
        make_graph("feeder", 3)


def test_feeder_graph_islanded_buildings_are_disconnected():
    import pandapower as pp

    net = _radial_net(5)
    line = int(net.line.index[net.line.from_bus == 2][0])
    pp.create_switch(net, 2, line, et="l", closed=False)
    with pytest.raises(GraphError, match="disconnected"):
        feeder_graph(net, [1, 4])
    g = feeder_graph(net, [1, 4], allow_disconnected=True)
    assert g.number_of_edges() == 0


# --- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["two_clusters", "random_geometric"])
def test_json_round_trip(topology):
    g = make_graph(topology, 7, seed=1)
    names = [f"Building_{i + 1}" for i in range(7)]
    text = graph_to_json(g, names)
    data = json.loads(text)
    assert [node["id"] for node in data["nodes"]] == names
    h, names_back = graph_from_json(text)
    assert names_back == names
    assert sorted(h.nodes) == list(range(7))
    assert sorted(map(sorted, h.edges)) == sorted(map(sorted, g.edges))
    assert h.graph["topology"] == topology
    if topology == "random_geometric":
        np.testing.assert_array_equal(h.nodes[3]["pos"], g.nodes[3]["pos"])
    h2, _ = graph_from_json(data)  # a parsed dict works too
    assert sorted(h2.edges) == sorted(h.edges)


def test_json_needs_distinct_names():
    with pytest.raises(GraphError, match="distinct building ids"):
        graph_to_json(make_graph("ring", 3), ["a", "a", "b"])


def test_communities_find_the_papers_two_clusters():
    assert communities(make_graph("two_clusters", 7)) == [[0, 1, 2], [3, 4, 5, 6]]
    assert communities(make_graph("two_clusters", 12, split=5)) == [list(range(5)),
                                                                     list(range(5, 12))]


def test_communities_cover_every_agent_once_and_respect_the_cap():
    g = make_graph("ring", 60)
    for cap in (1, 3, 6):
        groups = communities(g, max_communities=cap)
        assert 1 <= len(groups) <= cap
        assert sorted(x for c in groups for x in c) == list(range(60))
        assert [c[0] for c in groups] == sorted(c[0] for c in groups)
    assert communities(g) == communities(g)  # deterministic in the seed
    assert communities(make_graph("complete", 9)) == [list(range(9))]
    assert communities(nx.empty_graph(4)) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="max_communities"):
        communities(g, max_communities=0)
