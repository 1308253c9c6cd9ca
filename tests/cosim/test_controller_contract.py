"""Every shipped controller implements the one contract (agents.control.contract), and its checks
name what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.control.contract import (
    Controller,
    ControllerError,
    StatefulController,
    check_controller,
    checked_actions,
    contract_problems,
)
from cosim.engine.run import prepare_scenario

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
NAMES = ["B1", "B2", "B3"]

#: the kinds a scenario names, with the classes they build and whether they keep state
SHIPPED = {
    "policy": ("PolicyLibrary", False), "none": ("NoControl", False),
    "rule": ("RuleBasedPeakShaving", False), "heuristic": ("PriceAwareHeuristic", False),
    "oracle": ("OracleController", True), "dmpc": ("DmpcController", True),
    "epos": ("EposController", True),
}


@pytest.mark.parametrize("kind", sorted(SHIPPED))
def test_every_shipped_controller_implements_the_contract(kind):
    steps = 168 if kind == "oracle" else 24  # the oracle's limit holds on the run's average
    _, built = prepare_scenario(SCENARIO, [("controller", {"kind": kind})], steps)
    controller = built.controller
    cls, stateful = SHIPPED[kind]
    assert type(controller).__name__ == cls
    assert contract_problems(controller) == []
    assert isinstance(controller, Controller)
    assert isinstance(controller, StatefulController) == stateful
    assert controller.name == kind


def test_a_class_without_act_or_with_half_the_state_methods_is_refused():
    class NoAct:
        name = "x"

    class HalfState:
        def act(self, obs):
            return obs

        def restore(self, snap):
            pass

    with pytest.raises(ControllerError, match=r"has no method act\(obs\)"):
        check_controller(NoAct(), "controller=")
    with pytest.raises(ControllerError, match=r"only one of snapshot\(\) and restore"):
        check_controller(HalfState(), "controller=")


@pytest.mark.parametrize(("actions", "message"), [
    (np.ones((3, 3)), r"at step 7: actions must have shape \(N, 2\) = \(3, 2\)"),
    ("go", r"at step 7: actions must be a numeric \(N, 2\)"),
    ([[1, 1], [1, np.inf], [1, 1]], r"building 'B2': u_batt = inf"),
    ([[1, 1], [1, 1], [1.5, 1]], r"building 'B3': u_grid = 1.5; every action must be finite "
                                 r"and in \[0, 1\] \(1 bad value\(s\)\)"),
    ([[-1e-6, 1], [1, 1], [1, 1]], r"building 'B1': u_grid = -1e-06"),
])
def test_bad_actions_are_named(actions, message):
    class Named:
        name = "named"

    with pytest.raises(ControllerError, match="controller 'named' " + message if "step" in
                       message else message):
        checked_actions(actions, NAMES, 7, Named())


def test_actions_within_rounding_of_the_bounds_pass_unchanged():
    actions = np.array([[1 + 1e-12, 0.0], [0.5, -1e-12], [0.0, 1.0]])
    np.testing.assert_array_equal(checked_actions(actions, NAMES, 0, object()), actions)
    # a learner's raw actions (the gym env) need only be finite: the model clips them
    raw = np.array([[1.7, -0.2], [0.5, 0.5], [0.0, 3.0]])
    np.testing.assert_array_equal(checked_actions(raw, NAMES, 0, None, bounded=False), raw)
