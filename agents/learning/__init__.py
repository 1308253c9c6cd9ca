"""Learning: training environments, PPO/SAC training, trained policies, their recipe
and their evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_models.support.lazy_api import lazy_api

if TYPE_CHECKING:
    from agents.learning.env import BuildingEnv
    from agents.learning.evaluation import price_response, response_curves
    from agents.learning.fleet_training import train_fleet_class
    from agents.learning.objective_score import score_policy
    from agents.learning.policy import (
        Policy,
        PolicyFileError,
        PolicyLibrary,
        export_sb3_policy,
        load_policy,
    )
    from agents.learning.recipe import Recipe, RecipeError, load_recipe
    from agents.learning.teacher import best_response, teacher_actions
    from agents.learning.training import train_class
    from agents.learning.training_fleet import MultiplierProcess, TrainingFleet
    from agents.learning.vec_env import FleetVecEnv

_API = {
    "BuildingEnv": "env",
    "price_response": "evaluation",
    "response_curves": "evaluation",
    "train_fleet_class": "fleet_training",
    "score_policy": "objective_score",
    "Policy": "policy",
    "PolicyFileError": "policy",
    "PolicyLibrary": "policy",
    "export_sb3_policy": "policy",
    "load_policy": "policy",
    "Recipe": "recipe",
    "RecipeError": "recipe",
    "load_recipe": "recipe",
    "best_response": "teacher",
    "teacher_actions": "teacher",
    "train_class": "training",
    "MultiplierProcess": "training_fleet",
    "TrainingFleet": "training_fleet",
    "FleetVecEnv": "vec_env",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_api(__name__, _API)
