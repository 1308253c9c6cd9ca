"""The shipped policies (data/policies) respond to their multipliers on held-out data.

Held-out data: the recipe's `heldout` week, never touched in training. See
agents/evaluation.py for why the lambda-response is measured at nu = RESPONSE_NU
(at nu = 0 the Lagrangian gives no reason to buy from the grid at any lambda).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.data import REPO_ROOT, load_citylearn
from agents.evaluation import RESPONSE_NU, fixed_multiplier_run
from agents.policy import load_policy
from agents.recipe import load_recipe

POLICY_DIR = REPO_ROOT / "data" / "policies"
MIN_GRID_REDUCTION = 0.30  # issue: at least 30 % less grid energy at lambda_max
NUS = (-20.0, -10.0, 0.0, 10.0, 20.0)
SERVED_ATOL_KWH = 1e-3  # per building per step; a flat stretch may wobble by this much
MIN_SERVED_RISE_KWH = 0.5  # nu_min -> nu_max must raise served energy by at least this


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(POLICY_DIR / "recipe.yaml")


@pytest.mark.parametrize("name", ["normal", "double"])
def test_shipped_policy_loads_and_matches_recipe(name: str, recipe):
    policy = load_policy(POLICY_DIR / f"{name}.json")
    assert policy.metadata["recipe"] == recipe.model_dump(mode="json")
    assert policy.metadata["demand_scale"] == recipe.classes[name].demand_scale
    for suffix in ("_learning_curve.csv", "_report.png", "_response.csv"):
        assert (POLICY_DIR / f"{name}{suffix}").is_file()


def _run(name: str, recipe, lam: float, nu: float) -> dict[str, float]:
    data = load_citylearn()
    cfg = recipe.classes[name]
    return fixed_multiplier_run(load_policy(Path(POLICY_DIR / f"{name}.json")), data,
                                cfg.buildings or data.names, cfg.demand_scale,
                                recipe.heldout.start, recipe.heldout.steps,
                                recipe.backlog_cap_kwh, lam, nu)


@pytest.mark.parametrize("name", ["normal", "double"])
def test_more_lambda_less_grid_energy(name: str, recipe):
    lo, hi = recipe.lambda_range
    g_lo = _run(name, recipe, lo, RESPONSE_NU)["grid_kwh"]
    g_hi = _run(name, recipe, hi, RESPONSE_NU)["grid_kwh"]
    assert g_lo > 0
    assert g_hi <= (1.0 - MIN_GRID_REDUCTION) * g_lo, (g_lo, g_hi)


@pytest.mark.parametrize("name", ["normal", "double"])
def test_more_nu_more_served_energy(name: str, recipe):
    served = np.array([_run(name, recipe, 0.0, nu)["served_kwh"] for nu in NUS])
    assert (np.diff(served) >= -SERVED_ATOL_KWH).all(), served
    assert served[-1] - served[0] >= MIN_SERVED_RISE_KWH * recipe.classes[name].demand_scale, served
