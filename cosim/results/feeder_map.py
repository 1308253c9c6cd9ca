"""The feeder map of a run (``plots/feeder_map.png``): every line and transformer
coloured by its maximum loading over the run, every bus by its minimum voltage.

Bus positions come from the feeder's geodata (pandapower's ``bus.geo`` GeoJSON points)
when every energised bus has one and they are not all in one place; otherwise from a
tree layout of the feeder's graph (:func:`tree_positions`: depth from the external grid
across, leaves in depth-first order down), which every radial feeder has.

Pure helpers (:func:`bus_positions`, :func:`element_extremes`) are apart from the
drawing (:func:`draw_feeder_map`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

#: colour scale of loading: 0 to the larger of this and the data's maximum
LOADING_SCALE_MIN_PERCENT = 100.0
#: voltage colour scale: at least this band around 1 pu (wider when the data are)
VOLTAGE_SCALE_PU = (0.95, 1.05)


def _geo_point(value: Any) -> tuple[float, float] | None:
    """(x, y) of a GeoJSON point string or dict, None when there is none."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        data = json.loads(value) if isinstance(value, str) else dict(value)
        x, y = data["coordinates"][:2]
        point = (float(x), float(y))
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return point if np.isfinite(point).all() else None


def feeder_nx(net: Any) -> nx.Graph[int]:  # net: pandapower ships no types
    """The feeder as a graph of its in-service buses, switches respected (pandapower's
    ``create_nxgraph``, as :mod:`agents.consensus.feeder_graph` builds it)."""
    import pandapower.topology as top

    g: nx.Graph[int] = nx.Graph(top.create_nxgraph(net, respect_switches=True, multi=False))
    return g


def tree_positions(g: nx.Graph[int], roots: list[int]) -> dict[int, tuple[float, float]]:
    """Depth from the nearest root across (x), depth-first leaf order down (y, a parent
    at the mean of its children). Buses no root reaches follow below, in a column."""
    pos: dict[int, tuple[float, float]] = {}
    next_leaf = [0.0]

    def place(tree: nx.DiGraph[int], node: int, depth: int) -> float:
        children = sorted(tree.successors(node))
        if not children:
            y = next_leaf[0]
            next_leaf[0] += 1.0
        else:
            y = float(np.mean([place(tree, c, depth + 1) for c in children]))
        pos[node] = (float(depth), -y)
        return y

    for root in sorted(set(roots)):
        if root in pos or root not in g:
            continue
        tree = nx.bfs_tree(g, root)
        tree.remove_nodes_from([n for n in list(tree) if n in pos])
        if root in tree:
            place(tree, root, 0)
    for node in sorted(n for n in g.nodes if n not in pos):
        pos[node] = (0.0, -next_leaf[0])
        next_leaf[0] += 1.0
    return pos


def bus_positions(net: Any) -> tuple[dict[int, tuple[float, float]], str]:
    """``(bus -> (x, y), "geodata" | "tree layout")`` for the in-service buses."""
    g = feeder_nx(net)
    if "geo" in net.bus.columns:
        points = {int(b): _geo_point(v) for b, v in net.bus.geo.items() if int(b) in g}
        found = [p for p in points.values() if p is not None]
        if len(found) == len(points) and len(set(found)) > 1:
            return {b: p for b, p in points.items() if p is not None}, "geodata"
    roots = [int(b) for b in net.ext_grid.bus[net.ext_grid.in_service.astype(bool)]]
    return tree_positions(g, roots), "tree layout"


def element_extremes(values: np.ndarray, ids: np.ndarray, how: str) -> dict[int, float]:
    """Per element id, the maximum (``how="max"``) or minimum (``"min"``) over the
    steps of a (steps, elements) array; NaN where an element has no finite value."""
    if how not in ("max", "min"):
        raise ValueError(f"how must be 'max' or 'min', got {how!r}")
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {int(i): float("nan") for i in ids}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        reduced = np.nanmax(arr, axis=0) if how == "max" else np.nanmin(arr, axis=0)
    return {int(i): float(v) for i, v in zip(ids, reduced, strict=True)}


def draw_feeder_map(net: Any, line_max: dict[int, float], trafo_max: dict[int, float],
                    bus_min: dict[int, float], path: Path, title: str = "") -> Path:
    """Draw and save the map (module docstring); elements without values are grey."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    pos, source = bus_positions(net)
    fig, ax = plt.subplots(figsize=(9, 7))
    loads = [v for v in [*line_max.values(), *trafo_max.values()] if np.isfinite(v)]
    lmax = max([LOADING_SCALE_MIN_PERCENT, *loads])
    loading_norm = Normalize(0.0, lmax)
    loading_cmap = plt.get_cmap("RdYlGn_r")
    for table, a, b, values, width in (("line", "from_bus", "to_bus", line_max, 2.0),
                                       ("trafo", "hv_bus", "lv_bus", trafo_max, 6.0)):
        frame = getattr(net, table)
        segments, colours = [], []
        for idx, (u, v) in zip(frame.index, frame[[a, b]].to_numpy(dtype=int), strict=True):
            if int(u) not in pos or int(v) not in pos:
                continue
            segments.append([pos[int(u)], pos[int(v)]])
            value = values.get(int(idx), float("nan"))
            colours.append(loading_cmap(loading_norm(value)) if np.isfinite(value)
                           else (0.7, 0.7, 0.7, 1.0))
        if segments:
            ax.add_collection(LineCollection(segments, colors=colours, linewidths=width,
                                             zorder=1 if table == "line" else 2))
    buses = [b for b in pos if b in bus_min and np.isfinite(bus_min[b])]
    vm = np.array([bus_min[b] for b in buses])
    low = min(VOLTAGE_SCALE_PU[0], float(vm.min()) if vm.size else 1.0)
    high = max(VOLTAGE_SCALE_PU[1], float(vm.max()) if vm.size else 1.0)
    voltage_norm = Normalize(low, high)
    xy = np.array([pos[b] for b in buses]).reshape(-1, 2)
    ax.scatter(xy[:, 0], xy[:, 1], c=vm, cmap="coolwarm_r", norm=voltage_norm, s=18,
               edgecolors="black", linewidths=0.3, zorder=3)
    drawn = set(buses)
    others = np.array([p for b, p in pos.items() if b not in drawn]).reshape(-1, 2)
    if len(others):
        ax.scatter(others[:, 0], others[:, 1], color="lightgrey", s=8, zorder=3)
    worst_bus = min(buses, key=lambda b: bus_min[b]) if buses else None
    if worst_bus is not None:
        ax.annotate(f"bus {worst_bus}: {bus_min[worst_bus]:.3f} pu", pos[worst_bus],
                    textcoords="offset points", xytext=(6, -12), fontsize=8)
    finite_lines = {k: v for k, v in line_max.items() if np.isfinite(v)}
    if finite_lines:
        worst_line = max(finite_lines, key=lambda k: finite_lines[k])
        u, v = net.line.loc[worst_line, ["from_bus", "to_bus"]].to_numpy(dtype=int)
        if int(u) in pos and int(v) in pos:
            mid = np.mean([pos[int(u)], pos[int(v)]], axis=0)
            ax.annotate(f"line {worst_line}: {finite_lines[worst_line]:.0f} %", mid,
                        textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.autoscale_view()
    ax.set_aspect("equal" if source == "geodata" else "auto")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(plt.cm.ScalarMappable(norm=loading_norm, cmap=loading_cmap), ax=ax,
                 shrink=0.7, pad=0.01, label="maximum loading [%] (lines, transformers)")
    fig.colorbar(plt.cm.ScalarMappable(norm=voltage_norm, cmap="coolwarm_r"), ax=ax,
                 shrink=0.7, pad=0.02, label="minimum voltage [pu] (buses)")
    ax.set_title(title or f"Feeder map ({source}): maximum loading, minimum voltage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
