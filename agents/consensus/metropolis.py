"""Metropolis(-Hastings) consensus weights of a communication graph, built in one place.

On the directed edges ``src[e] -> dst[e]`` of a graph (:func:`agents.consensus.graphs.
directed_edges`, each undirected edge both ways) the weight is
``W_ij = 1 / (1 + max(deg_i, deg_j))``; the rest of each row sits on the diagonal,
``W_ii = 1 - sum_j W_ij``. W is symmetric and doubly stochastic with ``W_ii > 0``;
``L = I - W`` is the Metropolis Laplacian. The dual dynamics
(:mod:`agents.consensus.duals`) and the distributed MPC (:mod:`agents.control.dmpc`)
both use these weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp

from agents.consensus.graphs import directed_edges


@dataclass(frozen=True)
class MetropolisWeights:
    """The Metropolis weights of ``n`` agents on the directed edges ``src -> dst``.

    ``edge[e]`` is ``W[dst[e], src[e]]``; ``degree`` the number of neighbours of each
    agent; ``weighted_degree[i] = sum_j W_ij`` (the diagonal of L) and
    ``self_weight = 1 - weighted_degree`` (the diagonal of W).
    """

    n: int
    src: np.ndarray
    dst: np.ndarray
    degree: np.ndarray
    edge: np.ndarray
    weighted_degree: np.ndarray
    self_weight: np.ndarray

    def off_diagonal(self) -> sp.csr_array:
        """The off-diagonal part of W, ``(n, n)``."""
        result = sp.csr_array((self.edge, (self.dst, self.src)), shape=(self.n, self.n))
        return result

    def matrix(self) -> sp.csr_array:
        """W, symmetric, rows and columns summing to 1."""
        result: sp.csr_array = (self.off_diagonal() + sp.diags_array(self.self_weight)).tocsr()
        return result

    def laplacian(self) -> sp.csr_array:
        """``L = I - W`` (symmetric, rows summing to 0)."""
        result: sp.csr_array = (sp.diags_array(self.weighted_degree)
                                - self.off_diagonal()).tocsr()
        return result

    def per_edge(self) -> sp.csr_array:
        """``(n, m)``: row ``dst[e]``, column ``e`` holds ``edge[e]`` (weighs received values)."""
        m = self.src.shape[0]
        result = sp.csr_array((self.edge, (self.dst, np.arange(m))), shape=(self.n, m))
        return result


def metropolis_from_edges(src: np.ndarray, dst: np.ndarray, n: int) -> MetropolisWeights:
    """The Metropolis weights of ``n`` agents on the directed edges ``src -> dst``."""
    deg = np.bincount(dst, minlength=n).astype(np.float64)
    w_edge = 1.0 / (1.0 + np.maximum(deg[src], deg[dst]))
    w_deg = np.bincount(dst, weights=w_edge, minlength=n).astype(np.float64)
    return MetropolisWeights(n=n, src=src, dst=dst, degree=deg, edge=w_edge,
                             weighted_degree=w_deg, self_weight=1.0 - w_deg)


def metropolis_weights(graph: nx.Graph[int], n: int | None = None) -> MetropolisWeights:
    """The Metropolis weights of ``graph`` on agents ``0..n-1`` (default: its node count)."""
    src, dst = directed_edges(graph)
    return metropolis_from_edges(src, dst, graph.number_of_nodes() if n is None else n)


def metropolis_matrix(graph: nx.Graph[int], n: int | None = None) -> sp.csr_array:
    """The averaging matrix W of ``graph`` on agents ``0..n-1`` (doubly stochastic)."""
    return metropolis_weights(graph, n).matrix()
