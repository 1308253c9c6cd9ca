"""Communication graphs of the agents (docs/equations.md).

Every graph has nodes ``0..n-1`` (agent index = building's position in the
fleet) and no self-loops. ``make_graph`` builds one by name; consensus needs a
connected graph, so a disconnected one is refused (``GraphError``) unless the
caller passes ``allow_disconnected=True``, which is recorded as
``graph.graph["allow_disconnected"]`` so that the dual dynamics can honour it.

Topologies (``TOPOLOGIES``):
    complete          every pair of agents talks.
    ring              cycle 0-1-...-(n-1)-0.
    line              path 0-1-...-(n-1).
    star              agent 0 is the hub.
    two_clusters      the paper's Fig. 1d: two complete groups joined by one edge.
                      ``split`` = size of the first group (default n // 2, so 3 and 4
                      for n = 7); the bridge joins the first group's last agent
                      (``split - 1``) to the second group's first (``split``).
    random_geometric  agents uniform in the unit square, linked within ``radius``
                      (default ``sqrt(3 ln(n) / (pi n))``, capped at 1.5).
    small_world       Watts-Strogatz: ring lattice of ``k`` neighbours (default 4,
                      at most n - 1), each edge rewired with probability ``p``
                      (default 0.1).
                      Both random topologies are deterministic in ``seed``; unless
                      ``allow_disconnected``, the first connected of up to 100 draws
                      is kept (``graph.graph["draw"]`` says which).
    feeder            neighbours along a feeder's electrical topology; needs
                      ``net`` and ``building_buses``, see :func:`feeder_graph`.

Pure domain code: no mosaik, no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from grid_models.errors import InputError

TOPOLOGIES = (
    "complete",
    "ring",
    "line",
    "star",
    "two_clusters",
    "random_geometric",
    "small_world",
    "feeder",
)

#: The parameters a scenario may give each topology (``communication.params``), with their
#: type (float also takes an integer); ``feeder`` also takes ``net`` and ``building_buses``,
#: which the caller supplies.
TOPOLOGY_PARAMS: dict[str, dict[str, type]] = {
    "complete": {}, "ring": {}, "line": {}, "star": {},
    "two_clusters": {"split": int},
    "random_geometric": {"radius": float},
    "small_world": {"k": int, "p": float},
    "feeder": {"max_hops": int},
}
#: small_world's defaults: neighbours in the ring lattice, rewiring probability
SMALL_WORLD_K = 4
SMALL_WORLD_P = 0.1
#: The documented defaults of the topologies' parameters (docs tables).
TOPOLOGY_PARAM_DEFAULTS: dict[str, str] = {
    "split": "n // 2",
    "radius": "min(1.5, sqrt(3 ln(n) / (pi n)))",
    "k": f"{SMALL_WORLD_K} (at most n - 1)",
    "p": f"{SMALL_WORLD_P:g}",
    "max_hops": "none (every building on the feeder)",
}

ALLOW_DISCONNECTED_KEY = "allow_disconnected"
RANDOM_GRAPH_DRAWS = 100  # random topologies: draws tried until one is connected


class GraphError(InputError, ValueError):
    """A communication graph cannot be built or cannot be used as asked."""


def _check_params(topology: str, params: Mapping[str, Any], valid: Sequence[str]) -> None:
    unknown = set(params) - set(valid)
    if unknown:
        accepted = ", ".join(valid) if valid else "none"
        raise GraphError(
            f"topology {topology!r}: unknown parameter(s) {sorted(unknown)}; accepted: {accepted}"
        )


def _two_clusters(n: int, split: int | None) -> nx.Graph[int]:
    if n < 2:
        raise GraphError(f"topology 'two_clusters' needs n >= 2 agents, got {n}")
    split = n // 2 if split is None else int(split)
    if not 1 <= split <= n - 1:
        raise GraphError(f"topology 'two_clusters': split must lie in 1..{n - 1}, got {split}")
    g = nx.complete_graph(split)
    g.add_nodes_from(range(split, n))
    g.add_edges_from((i, j) for i in range(split, n) for j in range(i + 1, n))
    g.add_edge(split - 1, split)
    result: nx.Graph[int] = g
    return result


def default_radius(n: int) -> float:
    """random_geometric's default radius for ``n`` agents: ``sqrt(3 ln(n) / (pi n))``,
    capped at 1.5 (connected with high probability)."""
    return min(1.5, math.sqrt(3.0 * math.log(max(n, 2)) / (math.pi * max(n, 1))))


def _random_geometric(n: int, seed: int, radius: float | None) -> nx.Graph[int]:
    if radius is None:
        radius = default_radius(n)
    if not (np.isfinite(radius) and radius > 0):
        raise GraphError(f"topology 'random_geometric': radius must be > 0, got {radius}")
    g = nx.random_geometric_graph(n, float(radius), seed=seed)
    for node in g.nodes:  # plain floats so that the graph survives JSON
        g.nodes[node]["pos"] = [float(x) for x in g.nodes[node]["pos"]]
    return g


def _small_world(n: int, seed: int, k: int, p: float) -> nx.Graph[int]:
    if not 0.0 <= p <= 1.0:
        raise GraphError(f"topology 'small_world': p must lie in [0, 1], got {p}")
    if k < 2:
        raise GraphError(f"topology 'small_world': k must be >= 2, got {k}")
    if n <= 2:
        result: nx.Graph[int] = nx.complete_graph(n)
        return result
    result = nx.watts_strogatz_graph(n, min(int(k), n - 1), float(p), seed=seed)
    return result


def _first_connected(
    build: Callable[[int], nx.Graph[int]], seed: int, allow_disconnected: bool
) -> nx.Graph[int]:
    """The first connected draw of a random graph, as networkx's
    ``connected_watts_strogatz_graph`` does: draw 0 uses ``seed``, draw k > 0 a
    seed derived from ``(seed, k)``; at most ``RANDOM_GRAPH_DRAWS`` draws."""
    g = build(seed)
    draw = 0
    while not allow_disconnected and not nx.is_connected(g) and draw + 1 < RANDOM_GRAPH_DRAWS:
        draw += 1
        g = build(int(np.random.default_rng([seed, draw]).integers(2**31)))
    g.graph["draw"] = draw
    return g


def make_graph(
    topology: str,
    n: int,
    *,
    seed: int = 0,
    allow_disconnected: bool = False,
    **params: Any,  # per-topology parameters of mixed types, checked by _check_params
) -> nx.Graph[int]:
    """The communication graph ``topology`` over agents ``0..n-1``.

    Raises ``GraphError`` for an unknown topology or parameter, or for a
    disconnected result unless ``allow_disconnected`` is true.
    """
    if topology not in TOPOLOGIES:
        raise GraphError(f"unknown topology {topology!r}; valid: {', '.join(TOPOLOGIES)}")
    if int(n) != n or n < 1:
        raise GraphError(f"topology {topology!r}: n must be a positive integer, got {n}")
    n = int(n)
    if topology == "complete":
        _check_params(topology, params, ())
        g = nx.complete_graph(n)
    elif topology == "ring":
        _check_params(topology, params, ())
        g = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)  # no self-loop for n = 1
    elif topology == "line":
        _check_params(topology, params, ())
        g = nx.path_graph(n)
    elif topology == "star":
        _check_params(topology, params, ())
        g = nx.star_graph(n - 1)
    elif topology == "two_clusters":
        _check_params(topology, params, tuple(TOPOLOGY_PARAMS[topology]))
        g = _two_clusters(n, params.get("split"))
    elif topology == "random_geometric":
        _check_params(topology, params, tuple(TOPOLOGY_PARAMS[topology]))
        g = _first_connected(lambda s: _random_geometric(n, s, params.get("radius")),
                             seed, allow_disconnected)
    elif topology == "small_world":
        _check_params(topology, params, tuple(TOPOLOGY_PARAMS[topology]))
        k = int(params.get("k", SMALL_WORLD_K))
        p = float(params.get("p", SMALL_WORLD_P))
        g = _first_connected(lambda s: _small_world(n, s, k, p), seed, allow_disconnected)
    else:  # feeder
        _check_params(topology, params, ("net", "building_buses", *TOPOLOGY_PARAMS[topology]))
        if "net" not in params or "building_buses" not in params:
            raise GraphError("topology 'feeder' needs parameters net and building_buses")
        buses = params["building_buses"]
        if len(buses) != n:
            raise GraphError(
                f"topology 'feeder': {len(buses)} building_buses given for n = {n} agents"
            )
        g = feeder_graph(params["net"], buses, max_hops=params.get("max_hops"),
                         allow_disconnected=True)
    g.graph["topology"] = topology
    return check_connected(g, allow_disconnected=allow_disconnected)


def check_connected(g: nx.Graph[int], *, allow_disconnected: bool = False) -> nx.Graph[int]:
    """Return ``g`` after checking it is connected (or recording that it may not be)."""
    if g.number_of_nodes() == 0:
        raise GraphError("the communication graph has no agents")
    if not allow_disconnected and not nx.is_connected(g):
        parts = nx.number_connected_components(g)
        name = g.graph.get("topology", "given")
        raise GraphError(
            f"the {name} communication graph of {g.number_of_nodes()} agents is disconnected "
            f"({parts} components): consensus cannot reach agreement across components; "
            "pass allow_disconnected=True to use it anyway"
        )
    g.graph[ALLOW_DISCONNECTED_KEY] = bool(allow_disconnected)
    return g


def directed_edges(g: nx.Graph[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(src, dst)`` int arrays: each undirected edge both ways, in a fixed order.

    The order (sorted by ``(src, dst)``) is the message order the fault model's
    random draws follow; every implementation of the dual dynamics uses it.
    """
    pairs = sorted({(int(u), int(v)) for u, v in g.edges if u != v}
                   | {(int(v), int(u)) for u, v in g.edges if u != v})
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    arr = np.asarray(pairs, dtype=np.int64)
    return arr[:, 0].copy(), arr[:, 1].copy()


def check_agent_nodes(g: nx.Graph[int]) -> int:
    """Number of agents; raises unless the nodes are exactly ``0..n-1`` without self-loops."""
    n = g.number_of_nodes()
    if n == 0:
        raise GraphError("the communication graph has no agents")
    if set(g.nodes) != set(range(n)):
        raise GraphError(
            f"communication graph nodes must be the agent indices 0..{n - 1}; "
            f"got {sorted(g.nodes, key=str)[:10]}..."
        )
    if nx.number_of_selfloops(g):
        raise GraphError("communication graph has self-loops; an agent is not its own neighbour")
    return n


# --- feeder ---------------------------------------------------------------------------------


def feeder_graph(
    net: Any,  # a pandapower net (pandapower ships no types)
    building_buses: Sequence[int],
    *,
    max_hops: int | None = None,
    allow_disconnected: bool = False,
) -> nx.Graph[int]:
    """Communication graph of buildings that neighbour each other along a feeder.

    The rule (details in :mod:`agents.consensus.feeder_graph`): buildings are adjacent when
    their buses lie within ``max_hops`` branches (lines/transformers) of each
    other (default 1: same bus or directly connected buses); components left
    apart are then joined by the shortest feeder links between them (a minimum
    spanning tree of hop distances). The result is connected whenever the
    buildings' buses are connected in the feeder, e.g. on any radial feeder.
    """
    from agents.consensus.feeder_graph import build_feeder_graph

    return build_feeder_graph(net, building_buses, max_hops=max_hops,
                              allow_disconnected=allow_disconnected)


# --- JSON (results contract: comm_graph.json) --------------------------------------------------


def graph_to_json(g: nx.Graph[int], names: Sequence[str]) -> str:
    """networkx node-link JSON of ``g`` with node ids = building ids ``names[i]``."""
    n = check_agent_nodes(g)
    names = [str(x) for x in names]
    if len(names) != n or len(set(names)) != n:
        raise GraphError(f"graph_to_json: need {n} distinct building ids, got {len(names)}")
    relabelled = nx.relabel_nodes(g, dict(enumerate(names)), copy=True)
    data = nx.node_link_data(relabelled, edges="edges")
    data["nodes"] = sorted(data["nodes"], key=lambda d: names.index(d["id"]))
    return json.dumps(data, indent=1, sort_keys=False)


def _node_id(value: Any, what: str) -> str | int:
    """A node id of a node-link file: a string or a whole number (never a bool, list, ...)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        shown = json.dumps(value)[:40] if _jsonable(value) else type(value).__name__
        raise GraphError(f"graph_from_json: {what} must be a building id (a string or a "
                         f"whole number), got {shown}")
    return value


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def graph_from_json(text: str | Mapping[str, Any]) -> tuple[nx.Graph[int], list[str]]:
    """Inverse of :func:`graph_to_json`: ``(graph over 0..n-1, building ids)``.

    Agent ``i`` is the ``i``-th node in the JSON's node list. Accepts the edge
    list under ``"edges"`` or networkx's older key ``"links"``. Every node id is a string
    or a whole number, every edge joins two listed nodes; anything else is a
    :class:`GraphError` naming the first offending node or edge.
    """
    try:
        data = json.loads(text) if isinstance(text, str) else dict(text)
    except json.JSONDecodeError as exc:
        raise GraphError(f"graph_from_json: not valid JSON ({exc})") from None
    except RecursionError:
        raise GraphError("graph_from_json: nested too deeply to be a node-link graph") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise GraphError("graph_from_json: not a node-link graph (an object with a 'nodes' "
                         "list)")
    if data.get("directed") or data.get("multigraph"):
        raise GraphError("graph_from_json: the communication graph must be undirected and simple")
    key = "edges" if "edges" in data else "links"
    links = data.get(key, [])
    if not isinstance(links, list):
        raise GraphError(f"graph_from_json: {key!r} must be a list of edges")
    ids: list[str | int] = []
    for k, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or "id" not in node:
            raise GraphError(f"graph_from_json: node {k} must be an object with an 'id'")
        ids.append(_node_id(node["id"], f"node {k}'s id"))
    names = [str(x) for x in ids]
    if len(set(names)) != len(names):
        raise GraphError("graph_from_json: building ids must be distinct")
    index = {node_id: i for i, node_id in enumerate(ids)}
    ordered: nx.Graph[int] = nx.Graph()
    graph_attrs = data.get("graph")
    if isinstance(graph_attrs, dict):
        ordered.graph.update(graph_attrs)
    ordered.add_nodes_from((i, {a: b for a, b in node.items() if a != "id"})
                           for i, node in enumerate(data["nodes"]))
    for k, edge in enumerate(links):
        if not isinstance(edge, dict) or "source" not in edge or "target" not in edge:
            raise GraphError(f"graph_from_json: edge {k} must be an object with 'source' and "
                             "'target'")
        ends = [_node_id(edge[end], f"edge {k}'s {end}") for end in ("source", "target")]
        unknown = [e for e in ends if e not in index]
        if unknown:
            raise GraphError(f"graph_from_json: edge {k} joins {unknown[0]!r}, which is not "
                             "in the node list")
        u, v = index[ends[0]], index[ends[1]]
        if ordered.has_edge(u, v):
            raise GraphError(f"graph_from_json: edge {k} ({ends[0]!r}, {ends[1]!r}) is listed "
                             "twice; the communication graph must be simple")
        attrs = {a: b for a, b in edge.items() if a not in ("source", "target", "key")}
        ordered.add_edge(u, v, **attrs)
    return ordered, names


# --- a graph from the user's file (communication.topology: file) ---------------------------


def graph_from_file(path: str | Path, names: Sequence[str], *, max_bytes: int,
                    max_edges: int, allow_disconnected: bool = False) -> nx.Graph[int]:
    """The communication graph of buildings ``names`` from a file, over agents 0..N-1.

    Two formats: networkx node-link JSON (as the run's ``comm_graph.json``: node ids =
    building ids) or an edge list, one ``ID ID`` pair per line (blank lines and ``#``
    comments ignored). Every building must appear (as a node, or in an edge) and no
    other id; no self-loops; at most ``max_edges`` edges; connected unless
    ``allow_disconnected``. Errors (:class:`GraphError`) name the file and what is
    wrong: missing or unknown ids (the first few), the line of a bad edge.
    """
    path = Path(path)
    where = f"{path}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise GraphError(f"{where}: cannot read the graph file ({exc.strerror or exc})") from None
    if not path.is_file():
        raise GraphError(f"{where}: not a regular file")
    if size > max_bytes:
        raise GraphError(f"{where}: larger than {max_bytes:,} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"{where}: cannot read the graph file as UTF-8 text ({exc})") from None
    names = [str(x) for x in names]
    index = {name: i for i, name in enumerate(names)}
    if text.lstrip().startswith("{"):
        try:
            graph, ids = graph_from_json(text)
        except GraphError as exc:
            raise GraphError(f"{where}: {str(exc).removeprefix('graph_from_json: ')}") from None
        unknown = [x for x in ids if x not in index]
        missing = [x for x in names if x not in set(ids)]
        edges = [(ids[u], ids[v]) for u, v in graph.edges]
    else:
        edges, seen = [], set()
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise GraphError(f"{where}, line {number}: expected two building ids "
                                 f"'ID ID', got {line[:60]!r}")
            edges.append((parts[0], parts[1]))
            seen.update(parts)
            if len(edges) > max_edges:
                break
        unknown = sorted(seen - set(index))
        missing = [x for x in names if x not in seen]
    if unknown:
        raise GraphError(f"{where}: unknown building ids {unknown[:10]} (the scenario's ids: "
                         f"{names[0]} .. {names[-1]})")
    if missing:
        raise GraphError(f"{where}: {len(missing)} building(s) of the scenario are not in the "
                         f"graph: {missing[:10]}")
    if len(edges) > max_edges:
        raise GraphError(f"{where}: more than {max_edges:,} edges")
    loops = [u for u, v in edges if u == v]
    if loops:
        raise GraphError(f"{where}: self-loop at {loops[0]} (a building cannot message "
                         "itself)")
    g: nx.Graph[int] = nx.Graph(topology=f"file {path.name}")
    g.add_nodes_from(range(len(names)))
    g.add_edges_from((index[u], index[v]) for u, v in edges)
    if not allow_disconnected and not nx.is_connected(g):
        raise GraphError(f"{where}: the graph is disconnected "
                         f"({nx.number_connected_components(g)} components): consensus cannot "
                         "agree across them; set communication.allow_disconnected: true to run "
                         "anyway")
    return check_connected(g, allow_disconnected=allow_disconnected)


# --- communities (the lambda plot's clusters) --------------------------------------------------

#: more edges than this: one community (modularity search costs O(edges) per pass)
COMMUNITY_EDGES_MAX = 200_000


def communities(g: nx.Graph[int], max_communities: int = 6, seed: int = 0) -> list[list[int]]:
    """Groups of agents that talk more among themselves than with the others.

    Louvain modularity communities (deterministic in ``seed``), each sorted, ordered by
    their smallest agent; beyond ``max_communities`` the smallest groups are merged into
    the last one. A graph with no edges or more than :data:`COMMUNITY_EDGES_MAX` edges
    is one group. Consensus agrees fast within a community and slowly across the few
    edges between them, so these are the groups whose multipliers differ.
    """
    if max_communities < 1:
        raise ValueError(f"max_communities must be >= 1, got {max_communities}")
    nodes = sorted(g.nodes)
    if g.number_of_edges() == 0 or g.number_of_edges() > COMMUNITY_EDGES_MAX:
        return [nodes] if nodes else []
    found = nx.community.louvain_communities(g, seed=seed)
    groups = sorted((sorted(c) for c in found), key=lambda c: (-len(c), c[0]))
    if len(groups) > max_communities:
        rest = sorted(x for c in groups[max_communities - 1:] for x in c)
        groups = [*groups[:max_communities - 1], rest]
    return sorted(groups, key=lambda c: c[0])
