"""Every YAML file the testbed reads (scenario, study, recipe, tolerance file, a run's stored
scenario) goes through the one bounded reader (grid_models.support.safe_yaml) and its own
schema: a duplicate key or an alias bomb is refused in each, and the message names the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.learning.recipe import RecipeError, load_recipe
from cosim.scenario.errors import ScenarioError
from cosim.scenario.loader import load_run_scenario, load_scenario
from cosim.tools.compare import CompareError, load_tolerance_file
from cosim.tools.study.schema import load_study

REPO_ROOT = Path(__file__).resolve().parents[2]
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def _load_study(path: Path) -> object:
    return load_study(path)


LOADERS = {
    "scenario": (load_scenario, ScenarioError),
    "study": (_load_study, ScenarioError),
    "recipe": (load_recipe, RecipeError),
    "tolerances": (load_tolerance_file, CompareError),
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_duplicate_key_is_refused_in_every_yaml_file(kind: str, tmp_path: Path) -> None:
    load, error = LOADERS[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text("name: a\nname: b\n")
    with pytest.raises(error, match="duplicate") as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_an_alias_bomb_is_refused_in_every_yaml_file(kind: str, tmp_path: Path) -> None:
    load, error = LOADERS[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(BOMB)
    with pytest.raises(error, match="alias|values once aliases"):
        load(path)


def test_a_study_engine_is_checked_by_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(f"name: s\nscenario: {REPO_ROOT / 'scenarios' / 'paper_fig1d.yaml'}\n"
                    "engine: warp\n")
    with pytest.raises(ScenarioError, match="engine"):
        load_study(path)


def test_a_stored_scenario_is_read_by_the_schema(tmp_path: Path) -> None:
    """A run's scenario.yaml with a field the schema does not know is an error naming it,
    not a dict that verify or the report would read wrongly."""
    run = tmp_path / "run"
    run.mkdir()
    text = (REPO_ROOT / "scenarios" / "paper_fig1d.yaml").read_text()
    (run / "scenario.yaml").write_text(text)
    assert load_run_scenario(run).name
    (run / "scenario.yaml").write_text(text + "surprise: 1\n")
    with pytest.raises(ScenarioError, match="surprise"):
        load_run_scenario(run)
