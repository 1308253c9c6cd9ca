"""power-grid-model backend: the fast path.

The net is converted once (:mod:`grid_models.powerflow.pgm_convert`); each step only the
``sym_load`` (background loads + injection loads) and ``sym_gen`` P/Q are updated.
:meth:`PgmPowerFlow.solve_batch` runs all T steps as one power-grid-model batch
calculation (``update_data`` of shape (T, n)). Newton-Raphson, symmetric, flat start
every step: there is no warm-start state that a failed step could spoil.

Results are mapped to pandapower's definitions: ``line_i_ka = max(i_from, i_to)``,
``line_loading_percent = i_ka / (max_i_ka * df * parallel)``, transformer loading from
the currents times the rated voltages (pandapower's ``trafo_loading="current"``),
losses = sum of the branch losses, bus P/Q = net consumption at the bus.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from grid_models.powerflow.base import PowerFlowBase
from grid_models.powerflow.interface import BatchGridResult, GridResult
from grid_models.powerflow.pgm_convert import pandapower_to_pgm

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet

#: Components whose results are read. Row-based output of just these is the fastest
#: option measured (columnar output with an attribute list was slower for single steps).
_OUTPUT_COMPONENTS = ("node", "line", "transformer", "source")


class PgmPowerFlow(PowerFlowBase):
    """power-grid-model behind the :class:`~grid_models.powerflow.interface.PowerFlow` interface.

    Args:
        net: the feeder (copied; see :mod:`~grid_models.powerflow.pgm_convert` for what it
            may contain).
        threads: power-grid-model's ``threading`` for batches: -1 sequential (default,
            deterministic timing), 0 all cores, n > 1 that many threads.
        error_tolerance: Newton-Raphson tolerance on the voltage update (pu).
        max_iterations: Newton-Raphson iteration limit.
        nonfinite: ``"raise"`` or ``"unknown"``, see
            :data:`grid_models.powerflow.base.NONFINITE_MODES`.
    """

    backend = "power-grid-model"

    def __init__(
        self,
        net: pandapowerNet,
        *,
        threads: int = -1,
        error_tolerance: float = 1e-8,
        max_iterations: int = 20,
        nonfinite: str = "raise",
    ) -> None:
        from power_grid_model import CalculationMethod, PowerGridModel

        super().__init__(net, nonfinite)
        self.model_data = pandapower_to_pgm(self._net)
        self._model = PowerGridModel(
            self.model_data.input_data, system_frequency=self.model_data.system_frequency
        )
        # Any: keyword options of calculate_power_flow, of mixed types
        self._options: dict[str, Any] = {
            "symmetric": True,
            "calculation_method": CalculationMethod.newton_raphson,
            "error_tolerance": error_tolerance,
            "max_iterations": max_iterations,
            "output_component_types": {
                k for k in _OUTPUT_COMPONENTS if k in self.model_data.input_data
            },
        }
        self.threads = threads
        # sym_load rows: the feeder's loads (incl. injection loads) then storage
        n_load_rows = len(self._net.load) + len(self._net.storage)
        positions = {idx: pos for pos, idx in enumerate(self._net.load.index)}
        self._bg_pos = np.array([positions[i] for i in self.load_ids], dtype=np.int64)
        self._inj_pos = np.array([positions[i] for i in self.injection_load_ids], dtype=np.int64)
        sym_load = self.model_data.input_data.get("sym_load")
        self._load_template_p = (
            np.zeros(n_load_rows) if sym_load is None else sym_load["p_specified"].copy()
        )
        self._load_template_q = (
            np.zeros(n_load_rows) if sym_load is None else sym_load["q_specified"].copy()
        )
        self._n_line, self._n_trafo = len(self.line_ids), len(self.trafo_ids)
        self.last_errors: list[str] = []

    # -- inputs -----------------------------------------------------------------------

    def _update_data(
        self,
        p: np.ndarray,
        q: np.ndarray,
        bg: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> dict[str, dict[str, np.ndarray]]:
        """Columnar update data; p/q are (T, n_bus), the background (T, n_load)/(T, n_sgen)."""
        n_steps = p.shape[0]
        load_p = np.broadcast_to(
            self._load_template_p, (n_steps, len(self._load_template_p))
        ).copy()
        load_q = np.broadcast_to(
            self._load_template_q, (n_steps, len(self._load_template_q))
        ).copy()
        load_p[:, self._bg_pos] = bg[0] * 1e6
        load_q[:, self._bg_pos] = bg[1] * 1e6
        load_p[:, self._inj_pos] = p * 1e6
        load_q[:, self._inj_pos] = q * 1e6
        update: dict[str, dict[str, np.ndarray]] = {}
        if load_p.shape[1]:
            update["sym_load"] = {"p_specified": load_p, "q_specified": load_q}
        if len(self.sgen_ids):
            update["sym_gen"] = {
                "p_specified": np.ascontiguousarray(bg[2] * 1e6),
                "q_specified": np.ascontiguousarray(bg[3] * 1e6),
            }
        return update

    # -- solving ----------------------------------------------------------------------

    def _calculate(
        self, update: dict[str, dict[str, np.ndarray]], n_steps: int
    ) -> tuple[dict[str, Any], np.ndarray, list[str]]:
        """Run a batch; return the output, a converged mask and the error messages.

        The output (Any) is power-grid-model's dataset: structured arrays by component,
        which its declared types give as a union of dense and sparse layouts.
        """
        output = self._model.calculate_power_flow(
            update_data=update,
            threading=self.threads,
            continue_on_batch_error=True,
            **self._options,
        )
        converged = np.ones(n_steps, dtype=bool)
        messages: list[str] = []
        error = self._model.batch_error
        if error is not None:
            _raise_unless_divergence(error.errors, error.error_messages)
            converged[error.failed_scenarios] = False
            messages = list(error.error_messages)
        return output, converged, messages

    def _calculate_one(self, update: dict[str, dict[str, np.ndarray]]) -> dict[str, Any] | None:
        """Write one step into the model and solve it; None when it does not converge.

        Every step rewrites all load and generator P/Q, so the in-place update leaves
        nothing of an earlier step behind.
        """
        # power_grid_model.errors re-exports these from its private _core without __all__
        from power_grid_model.errors import (  # type: ignore[attr-defined]
            IterationDiverge,
            SparseMatrixError,
        )

        self._model.update(
            update_data={k: {a: v[0] for a, v in d.items()} for k, d in update.items()}
        )
        try:
            output = self._model.calculate_power_flow(**self._options)
        except (IterationDiverge, SparseMatrixError) as exc:
            self.last_errors = [str(exc)]
            return None
        self.last_errors = []
        return {k: v[None] for k, v in output.items()}

    def _results(
        self, output: dict[str, Any], converged: np.ndarray, steps: np.ndarray
    ) -> BatchGridResult:
        if not converged.any():
            return BatchGridResult.from_results([self._nan_result(int(s)) for s in steps])
        values = self._values(output, len(converged))
        bad = ~converged
        if bad.any():
            values = {k: np.where(_rows(bad, v), np.nan, v) for k, v in values.items()}
        return BatchGridResult(**values, converged=converged, steps=steps)

    def _values(self, output: dict[str, Any], n_steps: int) -> dict[str, np.ndarray]:
        """pandapower's result quantities from power-grid-model's output, shape (T, ...)."""
        md = self.model_data
        node = output["node"]
        energized = node["energized"].astype(bool)
        vm = np.where(energized, node["u_pu"], np.nan)
        va = np.where(energized, np.rad2deg(node["u_angle"]), np.nan)
        # pgm's node power is an injection; pandapower's res_bus a consumption, 0 if isolated
        bus_p = np.where(energized, -node["p"] / 1e6, 0.0)
        bus_q = np.where(energized, -node["q"] / 1e6, 0.0)
        losses = np.zeros(n_steps)
        if self._n_line:
            line = output["line"]
            # as in pandapower, a de-energised line has no current or loading (NaN), no flow
            i_max = np.maximum(line["i_from"], line["i_to"])
            i_ka = np.where(line["energized"] == 1, i_max / 1e3, np.nan)
            loading = i_ka / md.line_rating_ka * 100.0
            losses += np.sum(line["p_from"] + line["p_to"], axis=1) / 1e6
        else:
            i_ka = loading = np.zeros((n_steps, 0))
        if self._n_trafo:
            tr = output["transformer"]
            s_hv = tr["i_from"] * md.trafo_vn_hv_kv * 1e3
            s_lv = tr["i_to"] * md.trafo_vn_lv_kv * 1e3
            trafo_loading = np.where(
                tr["energized"] == 1,
                np.maximum(s_hv, s_lv) * np.sqrt(3) / (md.trafo_rating_mva * 1e6) * 100.0,
                np.nan,
            )
            trafo_p = tr["p_from"] / 1e6
            losses += np.sum(tr["p_from"] + tr["p_to"], axis=1) / 1e6
        else:
            trafo_loading = trafo_p = np.zeros((n_steps, 0))
        source = output["source"]
        ext_p = np.sum(source["p"], axis=1) / 1e6
        ext_q = np.sum(source["q"], axis=1) / 1e6
        return {
            "bus_vm_pu": vm,
            "bus_va_degree": va,
            "bus_p_mw": bus_p,
            "bus_q_mvar": bus_q,
            "line_loading_percent": loading,
            "line_i_ka": i_ka,
            "trafo_loading_percent": trafo_loading,
            "trafo_p_hv_mw": trafo_p,
            "losses_mw": losses,
            "ext_grid_p_mw": ext_p,
            "ext_grid_q_mvar": ext_q,
        }

    def _solve_step(self, p: np.ndarray, q: np.ndarray, step: int | None) -> GridResult:
        bg = (
            self._bg_load_p[None, :],
            self._bg_load_q[None, :],
            self._bg_sgen_p[None, :],
            self._bg_sgen_q[None, :],
        )
        output = self._calculate_one(self._update_data(p[None, :], q[None, :], bg))
        if output is None:
            return self._nan_result(step)
        values = {k: v[0] for k, v in self._values(output, 1).items()}
        return GridResult(**values, converged=True, step=step)

    def _solve_many(
        self,
        p: np.ndarray,
        q: np.ndarray,
        bg: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        steps: np.ndarray,
        skip: np.ndarray | None = None,
    ) -> BatchGridResult:
        # no warm start: skipped rows (zeros in place of non-finite inputs) are solved and
        # blanked by the caller
        output, converged, messages = self._calculate(self._update_data(p, q, bg), len(p))
        self.last_errors = messages
        return self._results(output, converged, steps)


def _raise_unless_divergence(errors: Sequence[Exception], messages: list[str]) -> None:
    """Failed scenarios are non-convergence only if the solver diverged; else re-raise."""
    # power_grid_model.errors re-exports these from its private _core without __all__
    from power_grid_model.errors import (  # type: ignore[attr-defined]
        IterationDiverge,
        SparseMatrixError,
    )

    for err, msg in zip(errors, messages, strict=False):
        if not isinstance(err, (IterationDiverge, SparseMatrixError)):
            raise RuntimeError(f"power-grid-model batch failed: {msg}") from err


def _rows(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Broadcast a per-step mask against an array of shape (T,) or (T, n)."""
    return mask if values.ndim == 1 else mask[:, None]
