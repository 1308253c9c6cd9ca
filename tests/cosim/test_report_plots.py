"""The plots a grid engineer looks at first: line-loading duration curves, the worst
buses' voltage against the band, axes fitted to the data with the limits in view, and
the communication graph labelled with building ids and a colour bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosim.report import loading_ylim, voltage_ylim, worst_buses
from cosim.run import execute, prepare_scenario

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
                                  "comm_graph.png"])
def test_the_plots_are_written(run: Path, name: str):
    data = (run / "plots" / name).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_loading_axes_fit_the_data_with_the_limit_in_view():
    assert loading_ylim(np.array([[10.0, 20.0]])) == (0.0, pytest.approx(110.0))
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
