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


def _groups(parent: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The tree's agents in batches that can decide at once: ``(agents (G,), children (G, c))``
    by height (leaves first, every child in an earlier batch than its parent), then by
    number of children c; agents ascending and each one's children in their order
    (:func:`_post_order`)."""
    order, children = _post_order(parent)
    n = parent.shape[0]
    height = np.zeros(n, dtype=np.int64)
    for v in order:  # children first
        if children[v]:
            height[v] = 1 + max(int(height[c]) for c in children[v])
    count = np.array([len(c) for c in children], dtype=np.int64)
    by_parent = np.argsort(parent, kind="stable")  # children grouped, ascending in a group
    start = np.searchsorted(parent[by_parent], np.arange(n))
    groups = []
    for level in range(int(height.max()) + 1):
        for c in np.unique(count[height == level]):
            idx = np.flatnonzero((height == level) & (count == c))
            kids = by_parent[start[idx][:, None] + np.arange(c)[None, :]]
            groups.append((idx, kids.reshape(idx.size, int(c))))
    return groups
