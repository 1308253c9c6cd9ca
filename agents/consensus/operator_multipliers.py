"""The operator's grid multipliers: one projected dual ascent per constraint.

``mu_k <- clip(mu_k + alpha_k e_k(h_k), 0, mu_max)``; building i sees
``lambda_i + sum_k sign_k W_ki mu_k`` (:mod:`agents.consensus.grid_multipliers`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agents.consensus.grid_constraint import GridConstraint
from agents.consensus.grid_multiplier_base import GridMultipliersBase


class OperatorMultipliers(GridMultipliersBase):
    """Multipliers mu (K,) of K grid constraints over N buildings (module docstring).

    Arguments:
        constraints: the K >= 1 constraints, all over the same N buildings, distinct names.
        alpha: step of mu per unit of normalised excess, a scalar or one per constraint,
            finite and >= 0.
        mu_max: upper bound of every mu_k, finite and > 0.
    """

    def __init__(
        self,
        constraints: Sequence[GridConstraint],
        alpha: float | np.ndarray | Sequence[float],
        mu_max: float,
    ) -> None:
        super().__init__(constraints, alpha, mu_max)
        self.reset()

    # --- state ------------------------------------------------------------------------

    def reset(self, mu: np.ndarray | float | None = None) -> np.ndarray:
        """Set mu (default 0), the signs to +1 and the step count to 0; returns mu."""
        self._mu = self._initial_mu(mu)
        self._signs = np.ones(self.n_constraints)
        self._step = 0
        return self.mu

    @property
    def mu(self) -> np.ndarray:
        """The multipliers (K,), a copy."""
        result: np.ndarray = self._mu.copy()
        return result

    @property
    def mu_spread(self) -> np.ndarray:
        """0 (K,): one multiplier per constraint, nothing to agree on."""
        return np.zeros(self.n_constraints)

    def snapshot(self) -> dict[str, np.ndarray]:
        """The state, as named arrays: ``restore(snapshot())`` on an instance built with
        the same constraints, alpha and mu_max continues bit for bit."""
        return {"mu": self._mu.copy(), "step": np.array(self._step, dtype=np.int64),
                "signs": self._signs.copy()}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Set the state saved by :meth:`snapshot`; shape and bounds are checked.

        A snapshot without ``signs`` (saved before signs existed) sets every sign to +1.
        """
        arr = np.array(snap["mu"], dtype=np.float64)
        if arr.shape != (self.n_constraints,):
            raise ValueError(f"grid multiplier snapshot 'mu': shape {arr.shape}, expected "
                             f"({self.n_constraints},)")
        self._check_mu(arr)
        signs = self._signs_from_snapshot(snap)
        self._mu = arr
        self._signs = signs
        self._step = int(snap["step"])

    # --- the step ---------------------------------------------------------------------

    def _ascend(self, e: np.ndarray) -> None:
        """Projected ascent: ``mu <- clip(mu + alpha e, 0, mu_max)``."""
        ok = np.isfinite(e)
        stepped = np.clip(self._mu + self.alpha * np.where(ok, e, 0.0), 0.0, self.mu_max)
        self._mu = np.where(ok, stepped, self._mu)

    def price_shift(self) -> np.ndarray:
        """``sum_k sign_k W_k mu_k`` (N,), what the grid constraints add to each lambda."""
        result: np.ndarray = self._signed_weights().T @ self._mu
        return result
