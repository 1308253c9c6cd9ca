"""The plots a grid engineer looks at first: line-loading duration curves, the worst
buses' voltage against the band, axes fitted to the data with the limits in view, and
the communication graph labelled with building ids and a colour bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosim.engine.run import execute, prepare_scenario
from cosim.results.plots import loading_ylim, voltage_ylim, worst_buses

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LIMIT_ATOL = 1e-12

pytestmark = pytest.mark.cosim


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    sc, built = prepare_scenario(REPO_ROOT / "scenarios" / "lv_semiurb_40.yaml",
                                 [("output.plots", True)], steps=48)
    return execute(sc, built, tmp_path_factory.mktemp("plots") / "run", progress=False,
                   engine="plain").run_dir


@pytest.mark.parametrize("name", ["line_duration.png", "worst_bus_voltage.png",
                                  "trafo_duration.png", "voltage_envelope.png",
                                  "comm_graph.png", "feeder_map.png", "lambda.png"])
def test_the_plots_are_written(run: Path, name: str):
    data = (run / "plots" / name).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_loading_axes_fit_the_data_with_the_limit_in_view():
    # far below the limit: the axis fits the data (the limit is named in a note)
    assert loading_ylim(np.array([[5.0, 9.0]])) == (0.0, pytest.approx(9.0 * 1.15))
    # near it: the limit is in view
    assert loading_ylim(np.array([[10.0, 70.0]])) == (0.0, pytest.approx(110.0))
    assert loading_ylim(np.array([[150.0, np.nan]]))[1] == pytest.approx(157.5)
    assert loading_ylim(np.full((2, 2), np.nan)) == (0.0, pytest.approx(110.0))


def test_voltage_axes_fit_the_data_and_draw_the_bands_near_it():
    (lo, hi), bands = voltage_ylim(np.array([[0.99, 1.01], [np.nan, 1.0]]))
    assert [b[:2] for b in bands] == [(0.95, 1.05)]  # far from 0.90 / 1.10
    assert lo < 0.95 < 1.05 < hi and lo > 0.90 and hi < 1.10
    (lo, hi), bands = voltage_ylim(np.array([[0.915, 1.0]]))
    assert [b[:2] for b in bands] == [(0.95, 1.05), (0.90, 1.10)]
    assert lo < 0.90 and hi > 1.10


def test_worst_buses_pick_the_lowest_and_the_highest():
    vm = np.array([[1.00, 0.97, 1.03], [np.nan, np.nan, np.nan], [1.01, 0.96, 1.04]])
    assert worst_buses(vm) == [(1, "lowest"), (2, "highest")]
    assert worst_buses(np.array([[0.9], [1.1]])) == [(0, "lowest and highest")]
    assert worst_buses(np.full((2, 2), np.nan)) == []


def test_lambda_tracks_give_mean_and_band_per_cluster():
    import pandas as pd

    from cosim.results.report import LambdaTracks

    rng = np.random.default_rng(0)
    names = ["B1", "B2", "B3", "B4", "B5"]
    lam = rng.random((6, 5))
    lam[2, 3] = np.nan  # an agent without a value in one step
    table = pd.DataFrame({"time": np.repeat(np.arange(6), 5), "building": names * 6,
                          "lambda": lam.ravel()})
    tracks = LambdaTracks([["B1", "B2"], ["B3", "B4", "B5"]])
    for t in range(0, 6, 4):  # two pieces of whole steps
        tracks.add(table[(table.time >= t) & (table.time < t + 4)])
    steps, stats = tracks.arrays()
    np.testing.assert_array_equal(steps, np.arange(6))
    for k, cols in enumerate(([0, 1], [2, 3, 4])):
        np.testing.assert_allclose(stats[:, k, 0], np.nanmean(lam[:, cols], axis=1),
                                   rtol=0, atol=LIMIT_ATOL)
        np.testing.assert_array_equal(stats[:, k, 1], np.nanmin(lam[:, cols], axis=1))
        np.testing.assert_array_equal(stats[:, k, 2], np.nanmax(lam[:, cols], axis=1))
    assert tracks.labels == ["B1, B2", "B3, B4, B5"]
    whole = LambdaTracks(None)
    whole.add(table)
    np.testing.assert_array_equal(whole.arrays()[1][:, 0, 2], np.nanmax(lam, axis=1))
    assert whole.labels == ["all agents"]


def test_the_lambda_plot_groups_the_papers_two_clusters():
    from cosim.results.report import lambda_clusters, read_comm_graph

    assert lambda_clusters(read_comm_graph(REPO_ROOT / "data" / "golden" / "paper_fig1d")) == [
        ["B1", "B2", "B3"], ["B4", "B5", "B6", "B7"]]


def _radial_net(geo: bool):
    """ext grid - trafo - bus 1 - bus 2, and bus 1 - bus 3 (a fork)."""
    import pandapower as pp

    net = pp.create_empty_network()
    xy = {0: (0.0, 0.0), 1: (0.0, 1.0), 2: (-1.0, 2.0), 3: (1.0, 2.0)}
    for i in range(4):
        pp.create_bus(net, vn_kv=20.0 if i == 0 else 0.4, index=i,
                      geodata=xy[i] if geo else None)
    pp.create_ext_grid(net, 0)
    pp.create_transformer(net, 0, 1, std_type="0.4 MVA 20/0.4 kV")
    pp.create_line(net, 1, 2, length_km=0.1, std_type="NAYY 4x150 SE")
    pp.create_line(net, 1, 3, length_km=0.1, std_type="NAYY 4x150 SE")
    return net


def test_feeder_map_positions_from_geodata_else_a_tree_layout():
    from cosim.results.feeder_map import bus_positions

    pos, source = bus_positions(_radial_net(geo=True))
    assert source == "geodata" and pos[3] == (1.0, 2.0) and set(pos) == {0, 1, 2, 3}
    pos, source = bus_positions(_radial_net(geo=False))
    assert source == "tree layout"
    # depth from the external grid across; the fork's parent between its two leaves
    assert [pos[b][0] for b in range(4)] == [0.0, 1.0, 2.0, 2.0]
    assert pos[1][1] == pos[0][1] == pytest.approx((pos[2][1] + pos[3][1]) / 2)
    assert pos[2][1] != pos[3][1]


def test_feeder_map_extremes_per_element():
    from cosim.results.feeder_map import element_extremes

    values = np.array([[10.0, np.nan, 0.97], [30.0, np.nan, 0.95]])
    ids = np.array([4, 7, 9])
    assert element_extremes(values, ids, "max")[4] == 30.0
    assert element_extremes(values, ids, "min")[9] == 0.95
    assert np.isnan(element_extremes(values, ids, "max")[7])
    with pytest.raises(ValueError, match="how"):
        element_extremes(values, ids, "mean")


def test_feeder_map_is_drawn_for_a_feeder_without_geodata(tmp_path: Path):
    from cosim.results.feeder_map import draw_feeder_map

    path = draw_feeder_map(_radial_net(geo=False), {0: 120.0, 1: np.nan}, {0: 80.0},
                           {0: 1.0, 1: 0.99, 2: 0.93, 3: 0.97}, tmp_path / "map.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
