"""communication.topology: file — a communication graph from the user's file (node-link
JSON or an edge list), checked for matching ids and connectivity, errors naming the file
and the field."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cosim.engine.run import execute, prepare_scenario
from cosim.results.readers import read_table
from cosim.scenario.build import build
from cosim.scenario.errors import ScenarioError
from cosim.scenario.loader import load_scenario

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
IDS = [f"B{i}" for i in range(1, 8)]
STEPS = 24

pytestmark = pytest.mark.cosim


def _file_overrides(path: Path) -> list[tuple[str, object]]:
    return [("communication.topology", "file"), ("communication.graph_file", str(path)),
            ("output.plots", False)]


def test_a_runs_own_comm_graph_reproduces_the_run(tmp_path: Path):
    sc, built = prepare_scenario(SCENARIO, [("output.plots", False)], steps=STEPS)
    first = execute(sc, built, tmp_path / "first", progress=False, engine="plain").run_dir
    sc, built = prepare_scenario(SCENARIO, _file_overrides(first / "comm_graph.json"),
                                 steps=STEPS)
    again = execute(sc, built, tmp_path / "again", progress=False, engine="plain").run_dir
    pd.testing.assert_frame_equal(read_table(again, "buildings"),
                                  read_table(first, "buildings"), check_exact=True)


def test_an_edge_list_builds_the_graph(tmp_path: Path):
    edges = tmp_path / "ring.txt"
    edges.write_text("# a ring\n" + "\n".join(f"{a} {b}" for a, b in
                                             zip(IDS, IDS[1:] + IDS[:1], strict=True)) + "\n")
    sc = load_scenario(SCENARIO, _file_overrides(edges), steps=STEPS)
    graph = build(sc, str(SCENARIO), with_grid=False).graph
    assert sorted(dict(graph.degree).values()) == [2] * 7
    assert graph.has_edge(0, 6)


@pytest.mark.parametrize(("text", "words"), [
    ("B1 B2\nB2 B9\n", "unknown building ids ['B9']"),
    ("B1 B2\nB2 B3\n", "4 building(s) of the scenario are not in the graph"),
    ("B1 B2 B3\n", "line 1: expected two building ids"),
    ("B1 B1\n" + "\n".join(f"{a} {b}" for a, b in zip(IDS, IDS[1:], strict=False)),
     "self-loop at B1"),
    ("B1 B2\nB2 B3\nB3 B4\nB5 B6\nB6 B7\n", "disconnected (2 components)"),
])
def test_bad_graph_files_are_errors_that_name_the_field(text: str, words: str,
                                                        tmp_path: Path):
    path = tmp_path / "g.txt"
    path.write_text(text)
    sc = load_scenario(SCENARIO, _file_overrides(path), steps=STEPS)
    with pytest.raises(ScenarioError) as info:
        build(sc, str(SCENARIO), with_grid=False)
    assert any(f == "communication.graph_file" and words in m and str(path) in m
               for f, m in info.value.errors), info.value.errors


@pytest.mark.parametrize("overrides", [
    [("communication.graph_file", "g.txt")],  # a file without topology: file
    [("communication.topology", "file")],  # topology file without a file
])
def test_graph_file_goes_with_topology_file(overrides):
    with pytest.raises(ScenarioError) as info:
        load_scenario(SCENARIO, overrides)
    assert any(f == "communication.graph_file" for f, _ in info.value.errors)


def test_a_missing_file_is_named(tmp_path: Path):
    sc = load_scenario(SCENARIO, _file_overrides(tmp_path / "nowhere.json"), steps=STEPS)
    with pytest.raises(ScenarioError, match="nowhere.json: cannot read the graph file"):
        build(sc, str(SCENARIO), with_grid=False)
