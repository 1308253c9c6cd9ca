"""One error root: every error fleetcosim raises on purpose is an input or a run error,
and keeps the built-in base that existing ``except ValueError`` code relies on."""

import pytest

from agents.consensus.graphs import GraphError
from agents.control.contract import ControllerError
from agents.control.oracle import OracleInfeasible
from agents.fleet.data import DataError
from agents.learning.policy import PolicyFileError
from agents.learning.recipe import RecipeError
from cosim.engine.sims.building_sim import ShardScenarioError
from cosim.engine.user_controller import UserControllerError
from cosim.engine.world import NoAnswer
from cosim.results.rundir import RunDirError
from cosim.results.writer import RunWriteError
from cosim.scenario.errors import ScenarioError, ScenarioInfeasible
from cosim.tools.compare import CompareError
from grid_models.errors import (
    BackendError,
    FeederFileError,
    FleetcosimError,
    GridModelError,
    InputError,
    IslandedBusError,
    PowerFlowInputError,
    RunError,
)
from grid_models.physics import FeederPhysicsError
from grid_models.support.safe_yaml import YamlProblems

INPUT = [GridModelError, FeederFileError, FeederPhysicsError, IslandedBusError, BackendError,
         PowerFlowInputError, GraphError, OracleInfeasible, DataError, PolicyFileError,
         RecipeError, ShardScenarioError, RunDirError, YamlProblems,
         ScenarioError, ScenarioInfeasible, CompareError]
RUN = [ControllerError, UserControllerError, NoAnswer, RunWriteError]


@pytest.mark.parametrize("cls", INPUT + RUN, ids=lambda c: c.__name__)
def test_every_error_has_the_one_root(cls):
    assert issubclass(cls, FleetcosimError)


@pytest.mark.parametrize("cls", INPUT, ids=lambda c: c.__name__)
def test_input_errors_stay_value_errors(cls):
    assert issubclass(cls, InputError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("cls", RUN, ids=lambda c: c.__name__)
def test_run_errors_keep_their_builtin_base(cls):
    assert issubclass(cls, RunError) and not issubclass(cls, InputError)
    assert issubclass(cls, ValueError if issubclass(cls, ControllerError) else RuntimeError)

