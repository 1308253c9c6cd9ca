"""Convert a pandapower net into power-grid-model input arrays (our own small converter).

Supported (in service): ``bus``, ``line``, ``trafo`` (two-winding, ratio tap changer or
none), ``load`` (constant power), ``sgen``, ``storage`` (as a load), ``shunt``,
``ext_grid``, and ``switch`` of kind bus-bus (closed: a zero-impedance ``link``), line
and trafo (open: the branch is disconnected at that end). Anything else in service
(``gen``, ``trafo3w``, ``impedance``, ``ward``, voltage-dependent loads, phase-shifting
taps, ...) raises :class:`~grid_models.errors.ConversionError`; use the pandapower
backend for such nets.

Models and why they agree with pandapower (``runpp`` defaults, ``trafo_model="t"``):

* line: pi model, ``r1 = r_ohm_per_km * length_km / parallel``, ``x1`` alike,
  ``c1 = c_nf_per_km * 1e-9 * length_km * parallel``, ``tan1 = g / (2 pi f c)``.
* transformer: power-grid-model's transformer from the rated data (``u1, u2, sn, uk,
  pk, i0, p0``) with ``sn``, ``pk`` and ``p0`` multiplied by ``parallel``. The clock
  number is ``shift_degree / 30``; as only the positive sequence is solved, the winding
  types just have to be consistent with it (Dyn for odd clocks, YNyn for even ones).
  pandapower 3 applies a tap only when ``tap_changer_type == "Ratio"`` (or
  Symmetrical/Ideal, which are rejected here unless the tap is at neutral); so do we.
* ext_grid: a source with ``u_ref = vm_pu``, ``u_ref_angle = va_degree`` and a very
  large short-circuit power (:data:`SOURCE_SK_VA`), i.e. the ideal slack of pandapower.
* loads and static generators keep pandapower's scaling folded in by the caller.

Loading is not taken from power-grid-model (it rates transformers by apparent power);
the backend computes pandapower's current-based definitions from the branch currents,
using the ratings returned here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from grid_models.errors import ConversionError

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet

#: Short-circuit power of the slack source; its internal impedance then changes
#: voltages by about S_load / SOURCE_SK_VA, i.e. < 1e-8 pu on these feeders.
SOURCE_SK_VA = 1e15

#: Element tables the converter cannot represent (checked for in-service rows).
UNSUPPORTED_TABLES = (
    "gen",
    "trafo3w",
    "impedance",
    "ward",
    "xward",
    "dcline",
    "motor",
    "asymmetric_load",
    "asymmetric_sgen",
    "svc",
    "tcsc",
    "ssc",
    "vsc",
)


@dataclass(frozen=True)
class PgmModel:
    """power-grid-model input plus what is needed to map results back to pandapower ids.

    Every ``*_pgm_ids`` array follows the row order of the pandapower table it mirrors.
    """

    input_data: dict[str, np.ndarray]
    system_frequency: float
    node_pgm_ids: np.ndarray
    line_pgm_ids: np.ndarray
    trafo_pgm_ids: np.ndarray
    source_pgm_ids: np.ndarray
    load_pgm_ids: np.ndarray
    sgen_pgm_ids: np.ndarray
    line_rating_ka: np.ndarray
    trafo_vn_hv_kv: np.ndarray
    trafo_vn_lv_kv: np.ndarray
    trafo_rating_mva: np.ndarray


class _Ids:
    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> np.ndarray:
        ids = np.arange(self.next, self.next + n, dtype=np.int32)
        self.next += n
        return ids


def _check_supported(net: pandapowerNet) -> None:
    problems = []
    for table in UNSUPPORTED_TABLES:
        if table in net and len(net[table]) and net[table]["in_service"].astype(bool).any():
            problems.append(
                f"{int(net[table]['in_service'].astype(bool).sum())} in-service {table}"
            )
    load = net.load[net.load["in_service"].astype(bool)]
    for col in (
        "const_z_p_percent",
        "const_i_p_percent",
        "const_z_q_percent",
        "const_i_q_percent",
        "const_z_percent",
        "const_i_percent",
    ):
        if col in load and (load[col].fillna(0.0) != 0.0).any():
            problems.append(f"voltage-dependent loads (load.{col} != 0)")
    sw = net.switch
    if len(sw) and not sw["et"].isin(["b", "l", "t"]).all():
        problems.append(f"switches of kind {sorted(set(sw['et']) - {'b', 'l', 't'})}")
    closed_bb = sw[(sw["et"] == "b") & sw["closed"].astype(bool)] if len(sw) else sw
    if len(closed_bb) and "z_ohm" in closed_bb and (closed_bb["z_ohm"].fillna(0.0) != 0.0).any():
        problems.append("closed bus-bus switches with z_ohm != 0")
    if problems:
        raise ConversionError(
            "power-grid-model backend cannot represent: "
            + "; ".join(problems)
            + ". Use backend='pandapower' for this net."
        )


def _trafo_taps(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Tap data of power-grid-model, mirroring pandapower 3's rules (see module docstring)."""
    n = len(df)
    kind = df["tap_changer_type"].astype(object).where(pd.notna(df["tap_changer_type"]), "")
    if "tap_dependency_table" in df:
        table = df["tap_dependency_table"].fillna(False).astype(bool).to_numpy()
    else:
        table = np.zeros(n, dtype=bool)
    pos = df["tap_pos"].to_numpy(dtype=float)
    neutral = df["tap_neutral"].to_numpy(dtype=float)
    step = df["tap_step_percent"].to_numpy(dtype=float)
    off_neutral = np.isfinite(pos) & (pos != np.nan_to_num(neutral, nan=0.0))
    ratio = (kind.to_numpy() == "Ratio") & ~table & np.isfinite(pos) & np.isfinite(step)
    other = kind.isin(["Symmetrical", "Ideal"]).to_numpy() | table
    if (other & off_neutral).any():
        bad = df.index[other & off_neutral].tolist()
        raise ConversionError(
            f"trafo {bad}: phase-shifting or table-based taps off neutral are not supported by "
            "the power-grid-model backend; use backend='pandapower'"
        )
    if "tap_step_degree" in df:
        deg = df["tap_step_degree"].fillna(0.0).to_numpy(dtype=float)
        if (ratio & off_neutral & (deg != 0.0)).any():
            raise ConversionError("trafo taps with tap_step_degree != 0 are not supported")
    side = df["tap_side"].astype(object).to_numpy()
    if (ratio & ~np.isin(side, ["hv", "lv"])).any():
        raise ConversionError("trafo.tap_side must be 'hv' or 'lv' for ratio tap changers")
    tap_pos = np.where(ratio, pos, 0.0)
    tap_nom = np.where(ratio, np.nan_to_num(neutral, nan=0.0), 0.0)
    tap_min = np.where(ratio, df["tap_min"].to_numpy(dtype=float), 0.0)
    tap_max = np.where(ratio, df["tap_max"].to_numpy(dtype=float), 0.0)
    tap_min = np.minimum(np.nan_to_num(tap_min, nan=0.0), tap_pos)
    tap_max = np.maximum(np.nan_to_num(tap_max, nan=0.0), tap_pos)
    for name, arr in (("tap_pos", tap_pos), ("tap_neutral", tap_nom)):
        if (arr != np.round(arr)).any():
            raise ConversionError(f"trafo.{name} must be integral for power-grid-model")
    vn_tap = np.where(side == "lv", df["vn_lv_kv"].to_numpy(float), df["vn_hv_kv"].to_numpy(float))
    tap_size = np.where(ratio, np.nan_to_num(step) / 100.0 * vn_tap * 1e3, 0.0)
    return {
        "tap_side": np.where(ratio & (side == "lv"), 1, 0).astype(np.int8),
        "tap_pos": tap_pos.astype(np.int8),
        "tap_nom": tap_nom.astype(np.int8),
        "tap_min": tap_min.astype(np.int8),
        "tap_max": tap_max.astype(np.int8),
        "tap_size": tap_size,
    }


def pandapower_to_pgm(net: pandapowerNet) -> PgmModel:
    """Build power-grid-model input from ``net`` (see the module docstring for the models)."""
    from power_grid_model import ComponentType, DatasetType, LoadGenType, WindingType
    from power_grid_model import initialize_array as init

    _check_supported(net)
    ids = _Ids()
    f_hz = float(net.get("f_hz", 50.0))
    bus = net.bus
    bus_pos = {b: i for i, b in enumerate(bus.index)}
    bus_ok = bus["in_service"].astype(bool).to_numpy()

    def node_of(buses: pd.Series) -> np.ndarray:
        return np.array([bus_pos[b] for b in buses], dtype=np.int64)

    node_ids = ids.take(len(bus))
    node = init(DatasetType.input, ComponentType.node, len(bus))
    node["id"] = node_ids
    node["u_rated"] = bus["vn_kv"].to_numpy(float) * 1e3

    sw = net.switch
    open_sw = sw[~sw["closed"].astype(bool)] if len(sw) else sw

    def open_ends(
        et: str, df: pd.DataFrame, from_col: str, to_col: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Booleans: the element is cut off at its from/to bus by an open switch."""
        cut_from = np.zeros(len(df), dtype=bool)
        cut_to = np.zeros(len(df), dtype=bool)
        if len(open_sw):
            pos = {e: i for i, e in enumerate(df.index)}
            for s_bus, element in open_sw.loc[open_sw["et"] == et, ["bus", "element"]].itertuples(
                index=False
            ):
                i = pos.get(element)
                if i is None:
                    continue
                if df[from_col].iloc[i] == s_bus:
                    cut_from[i] = True
                if df[to_col].iloc[i] == s_bus:
                    cut_to[i] = True
        return cut_from, cut_to

    # lines
    line = net.line
    line_ids = ids.take(len(line))
    pgm_line = init(DatasetType.input, ComponentType.line, len(line))
    if len(line):
        fn, tn = node_of(line["from_bus"]), node_of(line["to_bus"])
        cut_f, cut_t = open_ends("l", line, "from_bus", "to_bus")
        ok = line["in_service"].astype(bool).to_numpy()
        length = line["length_km"].to_numpy(float)
        par = line["parallel"].to_numpy(float)
        c_f = line["c_nf_per_km"].to_numpy(float) * 1e-9 * length * par
        g_s = (
            line["g_us_per_km"].fillna(0.0).to_numpy(float) * 1e-6 * length * par
            if "g_us_per_km" in line
            else np.zeros(len(line))
        )
        if ((c_f == 0.0) & (g_s != 0.0)).any():
            raise ConversionError(
                "lines with g_us_per_km != 0 and c_nf_per_km == 0 are not supported"
            )
        pgm_line["id"] = line_ids
        pgm_line["from_node"] = node_ids[fn]
        pgm_line["to_node"] = node_ids[tn]
        pgm_line["from_status"] = ok & ~cut_f & bus_ok[fn] & bus_ok[tn]
        pgm_line["to_status"] = ok & ~cut_t & bus_ok[fn] & bus_ok[tn]
        pgm_line["r1"] = line["r_ohm_per_km"].to_numpy(float) * length / par
        pgm_line["x1"] = line["x_ohm_per_km"].to_numpy(float) * length / par
        pgm_line["c1"] = c_f
        with np.errstate(divide="ignore", invalid="ignore"):
            pgm_line["tan1"] = np.where(c_f > 0.0, g_s / (2.0 * math.pi * f_hz * c_f), 0.0)
        line_rating = line["max_i_ka"].to_numpy(float) * line["df"].to_numpy(float) * par
        pgm_line["i_n"] = line_rating * 1e3
    else:
        line_rating = np.zeros(0)

    # transformers
    trafo = net.trafo
    trafo_ids = ids.take(len(trafo))
    pgm_trafo = init(DatasetType.input, ComponentType.transformer, len(trafo))
    if len(trafo):
        hv, lv = node_of(trafo["hv_bus"]), node_of(trafo["lv_bus"])
        cut_f, cut_t = open_ends("t", trafo, "hv_bus", "lv_bus")
        ok = trafo["in_service"].astype(bool).to_numpy() & bus_ok[hv] & bus_ok[lv]
        par = trafo["parallel"].to_numpy(float)
        sn_va = trafo["sn_mva"].to_numpy(float) * 1e6 * par
        shift = trafo["shift_degree"].fillna(0.0).to_numpy(float)
        clock_f = shift / 30.0
        if (np.abs(clock_f - np.round(clock_f)) > 1e-9).any():
            raise ConversionError(
                "trafo.shift_degree must be a multiple of 30 for power-grid-model"
            )
        clock = np.mod(np.round(clock_f).astype(int), 12)
        odd = clock % 2 == 1
        pgm_trafo["id"] = trafo_ids
        pgm_trafo["from_node"] = node_ids[hv]
        pgm_trafo["to_node"] = node_ids[lv]
        pgm_trafo["from_status"] = ok & ~cut_f
        pgm_trafo["to_status"] = ok & ~cut_t
        pgm_trafo["u1"] = trafo["vn_hv_kv"].to_numpy(float) * 1e3
        pgm_trafo["u2"] = trafo["vn_lv_kv"].to_numpy(float) * 1e3
        pgm_trafo["sn"] = sn_va
        pgm_trafo["uk"] = trafo["vk_percent"].to_numpy(float) / 100.0
        pgm_trafo["pk"] = trafo["vkr_percent"].to_numpy(float) / 100.0 * sn_va
        pgm_trafo["i0"] = trafo["i0_percent"].to_numpy(float) / 100.0
        pgm_trafo["p0"] = trafo["pfe_kw"].to_numpy(float) * 1e3 * par
        pgm_trafo["winding_from"] = np.where(odd, WindingType.delta, WindingType.wye_n)
        pgm_trafo["winding_to"] = WindingType.wye_n
        pgm_trafo["clock"] = clock
        for key, values in _trafo_taps(trafo).items():
            pgm_trafo[key] = values
        trafo_rating = trafo["sn_mva"].to_numpy(float) * par * trafo["df"].to_numpy(float)
    else:
        trafo_rating = np.zeros(0)

    # closed bus-bus switches
    links = sw[(sw["et"] == "b") & sw["closed"].astype(bool)] if len(sw) else sw
    links = links[links["bus"] != links["element"]] if len(links) else links
    pgm_link = init(DatasetType.input, ComponentType.link, len(links))
    if len(links):
        fb, tb = node_of(links["bus"]), node_of(links["element"])
        pgm_link["id"] = ids.take(len(links))
        pgm_link["from_node"] = node_ids[fb]
        pgm_link["to_node"] = node_ids[tb]
        pgm_link["from_status"] = bus_ok[fb] & bus_ok[tb]
        pgm_link["to_status"] = bus_ok[fb] & bus_ok[tb]

    # external grids
    eg = net.ext_grid
    source_ids = ids.take(len(eg))
    source = init(DatasetType.input, ComponentType.source, len(eg))
    if len(eg):
        nb = node_of(eg["bus"])
        source["id"] = source_ids
        source["node"] = node_ids[nb]
        source["status"] = eg["in_service"].astype(bool).to_numpy() & bus_ok[nb]
        source["u_ref"] = eg["vm_pu"].to_numpy(float)
        source["u_ref_angle"] = np.deg2rad(eg["va_degree"].fillna(0.0).to_numpy(float))
        source["sk"] = SOURCE_SK_VA

    # loads (incl. storage, consumption positive) and static generators
    def appliances(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not len(df):
            z = np.zeros(0)
            return z.astype(np.int64), z.astype(bool), z, z
        nb = node_of(df["bus"])
        ok = df["in_service"].astype(bool).to_numpy() & bus_ok[nb]
        p = df["p_mw"].to_numpy(float) * df["scaling"].to_numpy(float) * 1e6
        q = df["q_mvar"].to_numpy(float) * df["scaling"].to_numpy(float) * 1e6
        return nb, ok, p, q

    ld, st, sg = appliances(net.load), appliances(net.storage), appliances(net.sgen)
    load_ids = ids.take(len(net.load))
    storage_ids = ids.take(len(net.storage))
    sym_load = init(DatasetType.input, ComponentType.sym_load, len(load_ids) + len(storage_ids))
    sym_load["id"] = np.concatenate([load_ids, storage_ids])
    sym_load["node"] = node_ids[np.concatenate([ld[0], st[0]])]
    sym_load["status"] = np.concatenate([ld[1], st[1]])
    sym_load["type"] = LoadGenType.const_power
    sym_load["p_specified"] = np.concatenate([ld[2], st[2]])
    sym_load["q_specified"] = np.concatenate([ld[3], st[3]])

    sgen_ids = ids.take(len(net.sgen))
    sym_gen = init(DatasetType.input, ComponentType.sym_gen, len(sgen_ids))
    sym_gen["id"] = sgen_ids
    sym_gen["node"] = node_ids[sg[0]]
    sym_gen["status"] = sg[1]
    sym_gen["type"] = LoadGenType.const_power
    sym_gen["p_specified"] = sg[2]
    sym_gen["q_specified"] = sg[3]

    # shunts: pandapower's p_mw/q_mvar are the consumption at vn_kv, times step
    sh = net.shunt
    pgm_shunt = init(DatasetType.input, ComponentType.shunt, len(sh))
    if len(sh):
        nb = node_of(sh["bus"])
        steps = sh["step"].to_numpy(float) if "step" in sh else np.ones(len(sh))
        vn2 = sh["vn_kv"].to_numpy(float) ** 2 * 1e6  # V^2
        pgm_shunt["id"] = ids.take(len(sh))
        pgm_shunt["node"] = node_ids[nb]
        pgm_shunt["status"] = sh["in_service"].astype(bool).to_numpy() & bus_ok[nb]
        pgm_shunt["g1"] = sh["p_mw"].to_numpy(float) * 1e6 * steps / vn2
        pgm_shunt["b1"] = -sh["q_mvar"].to_numpy(float) * 1e6 * steps / vn2

    input_data = {
        ComponentType.node: node,
        ComponentType.line: pgm_line,
        ComponentType.transformer: pgm_trafo,
        ComponentType.link: pgm_link,
        ComponentType.source: source,
        ComponentType.sym_load: sym_load,
        ComponentType.sym_gen: sym_gen,
        ComponentType.shunt: pgm_shunt,
    }
    # ComponentType is a str enum: its members are the component names PgmModel keys on
    kept: dict[str, np.ndarray] = {k: v for k, v in input_data.items() if len(v)}
    return PgmModel(
        input_data=kept,
        system_frequency=f_hz,
        node_pgm_ids=node_ids,
        line_pgm_ids=line_ids,
        trafo_pgm_ids=trafo_ids,
        source_pgm_ids=source_ids,
        load_pgm_ids=load_ids,
        sgen_pgm_ids=sgen_ids,
        line_rating_ka=line_rating,
        trafo_vn_hv_kv=trafo["vn_hv_kv"].to_numpy(float),
        trafo_vn_lv_kv=trafo["vn_lv_kv"].to_numpy(float),
        trafo_rating_mva=trafo_rating,
    )
