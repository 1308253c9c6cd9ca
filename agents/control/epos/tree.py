"""Tree overlays of I-EPOS (:mod:`agents.control.epos`): a BFS spanning tree of a graph,
a shuffled balanced tree (a reorganisation), and a tree's post order."""

from __future__ import annotations

import networkx as nx
import numpy as np


def tree_from_graph(graph: nx.Graph[int], root: int | None = None) -> np.ndarray:
    """Parent of each node 0..N-1 in a BFS spanning tree of ``graph`` (the root's: -1).

    The root is the node of highest degree (the smallest id among ties) unless given.

    Raises:
        ValueError: if the graph is empty or not connected.
    """
    n = graph.number_of_nodes()
    if n == 0:
        raise ValueError("the overlay graph has no nodes")
    if not nx.is_connected(graph):
        raise ValueError(f"the overlay graph is not connected "
                         f"({nx.number_connected_components(graph)} components)")
    if root is None:
        root = min(graph.nodes, key=lambda v: (-graph.degree(v), v))
    parent = np.full(n, -1, dtype=np.int64)
    for u, v in nx.bfs_edges(graph, root, sort_neighbors=sorted):
        parent[v] = u
    return parent


def shuffled_tree(n: int, rng: np.random.Generator, branching: int = 2) -> np.ndarray:
    """Parents of a balanced tree of ``branching`` over a random order of the N nodes."""
    order = rng.permutation(n)
    parent = np.full(n, -1, dtype=np.int64)
    for pos in range(1, n):
        parent[order[pos]] = order[(pos - 1) // branching]
    return parent


def _post_order(parent: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """Nodes children-first and the children of each node."""
    n = parent.shape[0]
    children: list[list[int]] = [[] for _ in range(n)]
    roots = []
    for v in range(n):
        if parent[v] < 0:
            roots.append(v)
        else:
            children[int(parent[v])].append(v)
    if len(roots) != 1:
        raise ValueError(f"a tree overlay has one root, got {len(roots)}")
    tree: nx.DiGraph[int] = nx.DiGraph()
    tree.add_nodes_from(range(n))
    tree.add_edges_from((v, c) for v in range(n) for c in children[v])
    # children in their order (networkx follows the order the edges were added in)
    order = list(nx.dfs_postorder_nodes(tree, source=roots[0]))
    if len(order) != n:
        raise ValueError("the overlay's parents do not form one tree")
    return order, children
