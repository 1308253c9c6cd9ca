"""Which buildings each grid element concerns, and how much their consumption moves it.

Two building blocks for grid constraints that the buildings act on (a multiplier per
transformer / line loading or bus voltage limit, weighted per building):

* **Membership** (topology only). On a radial feeder every line and transformer has a
  *downstream* side: the buses whose supply passes through it, i.e. the buses that
  removing the element would cut off from the external grid.
  :func:`downstream_buses` lists them per in-service element, :func:`membership` turns
  them into a boolean mask over the buildings (building ``i`` sits on bus
  ``building_bus[i]``).
* **Linearisation** (AC power flow). :func:`linearised_sensitivities` measures, around an
  operating point, how each element's loading (percentage points) and each bus voltage
  (pu) change per kW of one building's extra consumption, by finite differences: one
  base power flow plus one power flow per distinct building bus with ``delta_kw`` more
  load there (buildings on the same bus share a column).

Graph (:func:`feeder_graph`): buses joined by in-service lines and transformers (and
three-winding transformers and impedances, which are never reported as elements),
closed bus-bus switches, and a virtual source node joined to the bus of every in-service
external grid. An open line / transformer switch cuts that element; out-of-service
buses and elements are left out.

**Meshed feeders.** An element that lies on a loop (its removal disconnects nothing,
e.g. a ring closed by a switch, two parallel lines, or a path between two external
grids) has no well-defined downstream side. :func:`downstream_buses` raises
:class:`~grid_models.errors.FeederError` naming such elements (``meshed="raise"``, the
default) or gives them an empty array (``meshed="empty"``); elements in radial parts of
a partly meshed feeder keep their downstream sets. The linearisation does not depend on
the topology and works on meshed feeders too. Elements that are in service but carry no
supply (cut off by an open switch or an out-of-service element) get an empty array.

**Signs and units.** Building consumption is positive (generation is negative
consumption), as everywhere in ``grid_models``. ``loading_pp_per_kw[k, i]`` is
d(loading of element k in %) / d(P of building i in kW): positive when building i's
consumption loads the element more (downstream, in a feeder that imports power), near
zero for buildings elsewhere (only second-order voltage effects), and negative where
the element carries reverse flow that the extra consumption relieves. ``vm_pu_per_kw``
is d(voltage magnitude in pu) / d(P in kW), negative under load. Loadings are
pandapower's current-based ``loading_percent``; at an element that carries no current,
a magnitude has a kink and the forward difference gives its one-sided slope.

**Reactive power.** The extra kW comes with ``tan(acos(power_factor))`` kvar, as in
:meth:`grid_models.grid_model.GridModel.injections` (default power factor 1: P only).
``fleet_scale`` multiplies the building's power as the GridModel does: the
sensitivities are per kW of the *building's* consumption.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from grid_models.errors import FeederError, GridModelError, PlacementError, format_choices
from grid_models.topology import supplied_buses

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd
    from pandapower.auxiliary import pandapowerNet

ElementKey = tuple[str, int]
#: a node of :func:`feeder_graph`: a bus index or :data:`SOURCE_NODE`
Node = int | str

#: Element tables whose loading the sensitivities report (in this order).
ELEMENT_TABLES = ("trafo", "line")
MESHED_MODES = ("raise", "empty")
#: The virtual node joined to every external grid's bus.
SOURCE_NODE = "source"
#: Default finite-difference step: extra consumption of one building, kW.
DEFAULT_DELTA_KW = 1.0


# -- topology -------------------------------------------------------------------------


def _in_service(df: pd.DataFrame) -> NDArray[np.bool_]:
    """The ``in_service`` column of a pandapower element table as booleans."""
    return df["in_service"].to_numpy(dtype=bool) if len(df) else np.zeros(0, dtype=bool)


def feeder_graph(net: pandapowerNet) -> nx.MultiGraph[Node]:
    """The feeder as a ``networkx.MultiGraph`` (see the module docstring).

    Nodes are bus indices plus :data:`SOURCE_NODE`; each edge's key is its element,
    ``("line", idx)``, ``("trafo", idx)``, ``("switch", idx)``, ``("ext_grid", idx)``,
    ``("trafo3w", idx)`` or ``("impedance", idx)``.
    """
    import networkx as nx

    graph: nx.MultiGraph[Node] = nx.MultiGraph()  # bus indices and SOURCE_NODE
    bus_ok = net.bus["in_service"].astype(bool)
    live = {int(b) for b in net.bus.index[bus_ok.to_numpy()]}
    graph.add_nodes_from(sorted(live))
    graph.add_node(SOURCE_NODE)

    sw = net.switch
    open_ends: dict[str, set[int]] = {"l": set(), "t": set(), "t3": set()}
    if len(sw):
        for et, element, closed in zip(sw["et"], sw["element"], sw["closed"], strict=True):
            if et in open_ends and not bool(closed):
                open_ends[et].add(int(element))

    def add(u: int, v: int, key: ElementKey) -> None:
        if u in live and v in live:
            graph.add_edge(u, v, key=key)

    for idx, f, t, ok in zip(net.line.index, net.line["from_bus"], net.line["to_bus"],
                             _in_service(net.line), strict=True):
        if ok and int(idx) not in open_ends["l"]:
            add(int(f), int(t), ("line", int(idx)))
    for idx, hv, lv, ok in zip(net.trafo.index, net.trafo["hv_bus"], net.trafo["lv_bus"],
                               _in_service(net.trafo), strict=True):
        if ok and int(idx) not in open_ends["t"]:
            add(int(hv), int(lv), ("trafo", int(idx)))
    t3 = net.get("trafo3w")
    if t3 is not None and len(t3):
        for idx, hv, mv, lv, ok in zip(t3.index, t3["hv_bus"], t3["mv_bus"], t3["lv_bus"],
                                       _in_service(t3), strict=True):
            if ok and int(idx) not in open_ends["t3"]:
                add(int(hv), int(mv), ("trafo3w", int(idx)))
                add(int(hv), int(lv), ("trafo3w", int(idx)))
    imp = net.get("impedance")
    if imp is not None and len(imp):
        for idx, f, t, ok in zip(imp.index, imp["from_bus"], imp["to_bus"], _in_service(imp),
                                 strict=True):
            if ok:
                add(int(f), int(t), ("impedance", int(idx)))
    if len(sw):
        for idx, bus, element, et, closed in zip(sw.index, sw["bus"], sw["element"], sw["et"],
                                                 sw["closed"], strict=True):
            if et == "b" and bool(closed):
                add(int(bus), int(element), ("switch", int(idx)))
    eg = net.ext_grid
    for idx, bus, ok in zip(eg.index, eg["bus"], _in_service(eg), strict=True):
        if ok and int(bus) in live:
            graph.add_edge(SOURCE_NODE, int(bus), key=("ext_grid", int(idx)))
    return graph


def _dfs_subtrees(
    graph: nx.MultiGraph[Node],
) -> tuple[dict[ElementKey, set[Node]], set[ElementKey], set[Node]]:
    """Iterative DFS from the source over a multigraph.

    Returns, for every tree edge (by key), the nodes of the subtree below it; the set of
    tree edges that are bridges (low-link of the child > discovery of the parent); and
    the nodes reached. Parallel edges count as distinct edges, so they are never bridges.
    """
    disc: dict[Node, int] = {SOURCE_NODE: 0}
    low: dict[Node, int] = {SOURCE_NODE: 0}
    order: list[Node] = [SOURCE_NODE]
    parent_edge: dict[Node, tuple[Node, ElementKey]] = {}
    children: dict[Node, list[Node]] = {SOURCE_NODE: []}
    # stack of (node, key of the edge we came by, iterator over incident edges)
    stack: list[tuple[Node, ElementKey | None, Iterator[tuple[Node, Node, ElementKey]]]] = [
        (SOURCE_NODE, None, iter(graph.edges(SOURCE_NODE, keys=True)))]
    while stack:
        node, via, edges = stack[-1]
        advanced = False
        for _, nbr, key in edges:
            if key == via:
                continue
            if nbr in disc:
                low[node] = min(low[node], disc[nbr])
                continue
            disc[nbr] = low[nbr] = len(order)
            order.append(nbr)
            parent_edge[nbr] = (node, key)
            children[nbr] = []
            children[node].append(nbr)
            stack.append((nbr, key, iter(graph.edges(nbr, keys=True))))
            advanced = True
            break
        if not advanced:
            stack.pop()
            if node in parent_edge:
                parent = parent_edge[node][0]
                low[parent] = min(low[parent], low[node])
    subtree: dict[Node, set[Node]] = {}
    for node in reversed(order):  # children are discovered after their parent
        below: set[Node] = {node}
        for child in children[node]:
            below |= subtree[child]
        subtree[node] = below
    by_edge: dict[ElementKey, set[Node]] = {}
    bridges: set[ElementKey] = set()
    for node, (parent, key) in parent_edge.items():
        by_edge[key] = subtree[node]
        if low[node] > disc[parent]:
            bridges.add(key)
    return by_edge, bridges, set(disc)


def element_keys(net: pandapowerNet, tables: Sequence[str] = ELEMENT_TABLES) -> list[ElementKey]:
    """In-service elements of ``tables`` (``"trafo"``, ``"line"``), sorted by index per table."""
    unknown = [t for t in tables if t not in ELEMENT_TABLES]
    if unknown:
        raise GridModelError(f"unknown element table(s) {unknown}; valid: "
                             f"{format_choices(ELEMENT_TABLES)}")
    keys: list[ElementKey] = []
    for table in tables:
        df = net[table]
        keys += [(table, int(i)) for i in sorted(df.index[_in_service(df)])]
    return keys


def downstream_buses(
    net: pandapowerNet, *, meshed: str = "raise"
) -> dict[ElementKey, np.ndarray]:
    """Per in-service ``("trafo", idx)`` / ``("line", idx)``: the sorted downstream buses.

    The downstream buses of an element are those on its far side from the external
    grid(s): the buses whose supply passes through it. Elements that carry no supply
    (cut off by an open switch or an out-of-service element) get an empty array.

    Args:
        net: the feeder.
        meshed: what to do with elements on a loop (see the module docstring):
            ``"raise"`` (default) or ``"empty"`` (an empty array for them).

    Raises:
        FeederError: ``meshed="raise"`` and some elements lie on a loop (the message
            names them), or an unknown ``meshed`` mode.
    """
    if meshed not in MESHED_MODES:
        raise FeederError(f"meshed must be one of {format_choices(MESHED_MODES)}, "
                          f"got {meshed!r}")
    graph = feeder_graph(net)
    by_edge, bridges, reached = _dfs_subtrees(graph)
    keys = element_keys(net)
    # supplied elements that are not bridges: tree edges with a back edge around them,
    # and the back edges themselves (never tree edges, both ends reached)
    looped = [k for k in keys if k not in bridges and graph.has_edge(*_ends(net, k), key=k)
              and _ends(net, k)[0] in reached]
    if looped and meshed == "raise":
        names = ", ".join(f"{t} {i}" for t, i in sorted(looped)[:20])
        more = f" ({len(looped)} in all)" if len(looped) > 20 else ""
        raise FeederError(
            f"the feeder is meshed: {names}{more} lie on a loop (removing one disconnects "
            "no bus), so they have no downstream side; open a switch to make the feeder "
            "radial, or pass meshed='empty'"
        )
    out: dict[ElementKey, np.ndarray] = {}
    for key in keys:
        if key in bridges:
            buses = [b for b in by_edge[key] if b != SOURCE_NODE]
            out[key] = np.array(sorted(buses), dtype=np.int64)
        else:
            out[key] = np.zeros(0, dtype=np.int64)
    return out


def _ends(net: pandapowerNet, key: ElementKey) -> tuple[int, int]:
    table, idx = key
    if table == "line":
        return int(net.line.at[idx, "from_bus"]), int(net.line.at[idx, "to_bus"])
    return int(net.trafo.at[idx, "hv_bus"]), int(net.trafo.at[idx, "lv_bus"])


def membership(
    net: pandapowerNet,
    building_bus: np.ndarray | Sequence[int],
    *,
    meshed: str = "raise",
) -> dict[ElementKey, np.ndarray]:
    """Per in-service trafo / line: boolean mask (N,), True for the buildings downstream.

    Building ``i`` sits on bus ``building_bus[i]``. See :func:`downstream_buses` for
    ``meshed`` and the errors.
    """
    buses = np.asarray(building_bus, dtype=np.int64)
    return {key: np.isin(buses, down) for key, down in
            downstream_buses(net, meshed=meshed).items()}


# -- linearisation --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Sensitivities:
    """Linearised grid response to the buildings' consumption around an operating point.

    Shapes: E elements (``element_keys``, trafos then lines), B buses (``bus_ids``, the
    energised buses, sorted), N buildings (``building_bus``).

    * ``loading_pp_per_kw`` (E, N): percentage points of loading per kW of building i;
    * ``vm_pu_per_kw`` (B, N): pu of voltage magnitude per kW of building i;
    * ``base_loading_percent`` (E,), ``base_vm_pu`` (B,): the operating point;
    * ``delta_kw``, ``power_factor``, ``fleet_scale``, ``backend``: how it was measured.
    """

    element_keys: list[ElementKey]
    building_bus: np.ndarray
    loading_pp_per_kw: np.ndarray
    bus_ids: np.ndarray
    vm_pu_per_kw: np.ndarray
    base_loading_percent: np.ndarray
    base_vm_pu: np.ndarray
    delta_kw: float
    power_factor: float
    fleet_scale: float
    backend: str

    def __post_init__(self) -> None:
        keys = [(str(t), int(i)) for t, i in self.element_keys]
        object.__setattr__(self, "element_keys", keys)
        for name, dtype in (("building_bus", np.int64), ("bus_ids", np.int64),
                            ("loading_pp_per_kw", float), ("vm_pu_per_kw", float),
                            ("base_loading_percent", float), ("base_vm_pu", float)):
            arr = np.array(getattr(self, name), dtype=dtype)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        n, e, b = len(self.building_bus), len(keys), len(self.bus_ids)
        expected = {"loading_pp_per_kw": (e, n), "vm_pu_per_kw": (b, n),
                    "base_loading_percent": (e,), "base_vm_pu": (b,)}
        for name, shape in expected.items():
            # reshape so that empty lists from JSON get their shape back
            arr = getattr(self, name)
            if arr.size == 0 and arr.shape != shape and int(np.prod(shape)) == 0:
                arr = arr.reshape(shape)
                arr.setflags(write=False)
                object.__setattr__(self, name, arr)
            if getattr(self, name).shape != shape:
                raise ValueError(f"Sensitivities.{name} has shape {getattr(self, name).shape}, "
                                 f"expected {shape}")
        for name in ("delta_kw", "power_factor", "fleet_scale"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def n_buildings(self) -> int:
        """Number of buildings N."""
        return len(self.building_bus)

    def element_index(self, key: ElementKey) -> int:
        """Row of element ``key`` (e.g. ``("line", 3)``) in the loading arrays."""
        return self.element_keys.index((str(key[0]), int(key[1])))

    def bus_index(self, bus: int) -> int:
        """Row of bus ``bus`` in the voltage arrays."""
        hits = np.flatnonzero(self.bus_ids == int(bus))
        if not len(hits):
            raise KeyError(f"bus {bus} is not among the sensitivities' buses")
        return int(hits[0])

    def predict(self, delta_p_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First-order (loading %, vm pu) when building i consumes ``delta_p_kw[i]`` more."""
        dp = np.asarray(delta_p_kw, dtype=float)
        if dp.shape != (self.n_buildings,):
            raise ValueError(f"delta_p_kw must have shape ({self.n_buildings},), got {dp.shape}")
        return (self.base_loading_percent + self.loading_pp_per_kw @ dp,
                self.base_vm_pu + self.vm_pu_per_kw @ dp)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (NaN as None), for JSON."""
        def plain(x: Any) -> Any:
            if isinstance(x, list):
                return [plain(v) for v in x]
            return None if isinstance(x, float) and not np.isfinite(x) else x

        return {
            "units": {"loading_pp_per_kw": "percentage points per kW of building consumption",
                      "vm_pu_per_kw": "pu per kW of building consumption",
                      "base_loading_percent": "%", "base_vm_pu": "pu",
                      "delta_kw": "kW"},
            "element_keys": [[t, i] for t, i in self.element_keys],
            "building_bus": self.building_bus.tolist(),
            "bus_ids": self.bus_ids.tolist(),
            "delta_kw": self.delta_kw,
            "power_factor": self.power_factor,
            "fleet_scale": self.fleet_scale,
            "backend": self.backend,
            "base_loading_percent": plain(self.base_loading_percent.tolist()),
            "base_vm_pu": plain(self.base_vm_pu.tolist()),
            "loading_pp_per_kw": plain(self.loading_pp_per_kw.tolist()),
            "vm_pu_per_kw": plain(self.vm_pu_per_kw.tolist()),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sensitivities:
        """Sensitivities from a :meth:`to_dict` dict (None read as NaN)."""
        def arr(name: str) -> np.ndarray:
            return np.array(data[name], dtype=float)  # None -> nan

        return cls(
            element_keys=[(str(t), int(i)) for t, i in data["element_keys"]],
            building_bus=np.array(data["building_bus"], dtype=np.int64),
            loading_pp_per_kw=arr("loading_pp_per_kw"),
            bus_ids=np.array(data["bus_ids"], dtype=np.int64),
            vm_pu_per_kw=arr("vm_pu_per_kw"),
            base_loading_percent=arr("base_loading_percent"),
            base_vm_pu=arr("base_vm_pu"),
            delta_kw=data["delta_kw"],
            power_factor=data["power_factor"],
            fleet_scale=data["fleet_scale"],
            backend=str(data["backend"]),
        )

    def to_json(self, indent: int | None = 1) -> str:
        """JSON text of :meth:`to_dict` (readable in a run directory)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Sensitivities:
        """Sensitivities from the JSON text of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def linearised_sensitivities(
    net: pandapowerNet,
    building_bus: np.ndarray | Sequence[int],
    base_p_mw: np.ndarray | None = None,
    base_q_mvar: np.ndarray | None = None,
    *,
    delta_kw: float = DEFAULT_DELTA_KW,
    power_factor: float = 1.0,
    fleet_scale: float = 1.0,
    elements: Sequence[str] = ELEMENT_TABLES,
    backend: str = "pandapower",
    **backend_options: Any,
) -> Sensitivities:
    """Finite-difference sensitivities of loadings and voltages to each building's kW.

    The operating point is the feeder's own loads and static generators (table values
    times ``scaling``) plus the per-bus net consumption ``base_p_mw`` / ``base_q_mvar``
    (MW / Mvar in ``net.bus.index`` order, e.g. the fleet's current consumption from
    :meth:`grid_models.grid_model.GridModel.injections`; default zero; ``base_q_mvar``
    defaults to ``base_p_mw * tan(acos(power_factor))``). One power flow solves the
    base, and one more per distinct building bus adds ``delta_kw * fleet_scale`` kW and
    the matching kvar there; the differences divided by ``delta_kw`` are the columns.

    Args:
        net: the feeder (not modified).
        building_bus: bus of each building, (N,).
        base_p_mw: extra per-bus consumption at the operating point, MW (default zero).
        base_q_mvar: the same in Mvar (default from ``base_p_mw`` and ``power_factor``).
        delta_kw: finite-difference step, kW of one building's consumption (> 0 or < 0,
            not 0; a negative step measures the slope towards less consumption).
        power_factor: the buildings' lagging power factor in (0, 1], as GridModel.
        fleet_scale: factor on every building's power, as GridModel.
        elements: which element tables to report, a subset of ``("trafo", "line")``.
        backend: ``"pandapower"`` (``runpp``, default) or ``"power-grid-model"``.
        **backend_options: passed to :func:`grid_models.powerflow.interface.make_powerflow`.

    Raises:
        PlacementError: building buses that are unknown or not energised.
        GridModelError: bad arguments, or a power flow that does not converge.
    """
    from grid_models.grid_model import q_per_p_of
    from grid_models.powerflow.interface import make_powerflow

    buses = np.asarray(building_bus, dtype=np.int64)
    if buses.ndim != 1 or len(buses) == 0:
        raise PlacementError(f"building_bus must list one bus per building (N >= 1), got "
                             f"shape {buses.shape}")
    delta_kw = float(delta_kw)
    if not np.isfinite(delta_kw) or delta_kw == 0.0:
        raise GridModelError(f"delta_kw must be finite and non-zero, got {delta_kw!r}")
    fleet_scale = float(fleet_scale)
    if not (np.isfinite(fleet_scale) and fleet_scale >= 0):
        raise GridModelError(f"fleet_scale must be finite and >= 0, got {fleet_scale!r}")
    q_per_p = q_per_p_of(power_factor)
    keys = element_keys(net, elements)

    energised = supplied_buses(net)
    off = sorted({int(b) for b in buses} - set(energised.tolist()))
    if off:
        raise PlacementError(f"building buses {off[:10]} are unknown or not energised; "
                             f"energised buses: {format_choices(energised.tolist())}")

    pf = make_powerflow(net, backend, nonfinite="raise", **backend_options)
    bus_ids = np.asarray(pf.bus_ids, dtype=np.int64)
    n_bus = len(bus_ids)
    p0 = np.zeros(n_bus) if base_p_mw is None else np.asarray(base_p_mw, dtype=float)
    if p0.shape != (n_bus,):
        raise GridModelError(f"base_p_mw must have shape ({n_bus},), got {p0.shape}")
    q0 = p0 * q_per_p if base_q_mvar is None else np.asarray(base_q_mvar, dtype=float)
    if q0.shape != (n_bus,):
        raise GridModelError(f"base_q_mvar must have shape ({n_bus},), got {q0.shape}")

    position = {int(b): i for i, b in enumerate(bus_ids)}
    distinct, column = np.unique(buses, return_inverse=True)
    dp_mw = delta_kw * fleet_scale / 1000.0
    p = np.tile(p0, (len(distinct) + 1, 1))
    q = np.tile(q0, (len(distinct) + 1, 1))
    for k, bus in enumerate(distinct):
        p[k + 1, position[int(bus)]] += dp_mw
        q[k + 1, position[int(bus)]] += dp_mw * q_per_p
    batch = pf.solve_batch(p, q)
    if not batch.converged.all():
        bad = np.flatnonzero(~batch.converged)
        what = ["the base" if r == 0 else f"bus {int(distinct[r - 1])}" for r in bad[:10]]
        raise GridModelError(f"power flow did not converge for {', '.join(what)} "
                             "(operating point beyond the feeder's limits?)")

    rows: list[np.ndarray] = []  # per element: (rows+1,) loading
    line_pos = {int(i): j for j, i in enumerate(pf.line_ids)}
    trafo_pos = {int(i): j for j, i in enumerate(pf.trafo_ids)}
    for table, idx in keys:
        if table == "trafo":
            rows.append(batch.trafo_loading_percent[:, trafo_pos[idx]])
        else:
            rows.append(batch.line_loading_percent[:, line_pos[idx]])
    loading = np.array(rows).reshape(len(keys), len(distinct) + 1)  # (E, 1 + n_distinct)

    vm_buses = energised
    vm_cols = np.array([position[int(b)] for b in vm_buses], dtype=np.int64)
    vm = batch.bus_vm_pu[:, vm_cols].T  # (B, 1 + n_distinct)

    d_loading = (loading[:, 1:] - loading[:, :1]) / delta_kw
    d_vm = (vm[:, 1:] - vm[:, :1]) / delta_kw
    # a de-energised element (NaN loading) is moved by no building
    d_loading = np.where(np.isfinite(d_loading), d_loading, 0.0)
    return Sensitivities(
        element_keys=keys,
        building_bus=buses,
        loading_pp_per_kw=d_loading[:, column],
        bus_ids=vm_buses,
        vm_pu_per_kw=d_vm[:, column],
        base_loading_percent=loading[:, 0],
        base_vm_pu=vm[:, 0],
        delta_kw=delta_kw,
        power_factor=float(power_factor),
        fleet_scale=fleet_scale,
        backend=pf.backend,
    )
