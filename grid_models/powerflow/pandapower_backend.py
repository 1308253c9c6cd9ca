"""pandapower backend: the reference AC power flow (Newton-Raphson, ``runpp``).

``tuned=True`` (default) warm-starts each step from the previous one
(``init="results"``) and reuses pandapower's internal bus-branch model, updating only
the bus P/Q (``recycle={"bus_pq": True, "trafo": False, "gen": False}``, the keys
pandapower 3.5 knows). That is valid because this backend only ever changes load and
static-generator P/Q between steps. ``tuned=False`` calls ``runpp`` with its defaults.
After a step that does not converge, the warm start and the recycled model are
dropped, and the next step starts again from ``init="auto"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from grid_models.errors import BackendError
from grid_models.powerflow.base import PowerFlowBase, finite_result
from grid_models.powerflow.interface import BatchGridResult, GridResult

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet

#: The recycle keys of pandapower 3.5's ``runpp``; only bus P/Q change between our steps.
RECYCLE = {"bus_pq": True, "trafo": False, "gen": False}
#: Numerical failures inside ``runpp`` that mean "no solution for this step" (besides
#: pandapower's own ``LoadflowNotConverged``): the step is NaN, the run goes on.
NUMERICAL_FAILURES: tuple[type[BaseException], ...] = (
    np.linalg.LinAlgError,
    FloatingPointError,
    ZeroDivisionError,
)


class PandapowerPowerFlow(PowerFlowBase):
    """pandapower ``runpp`` behind the :class:`~grid_models.powerflow.interface.PowerFlow`
    interface.

    Args:
        net: the feeder (copied).
        tuned: warm start + recycle (see the module docstring); False: ``runpp`` defaults.
        trafo_model: pandapower's transformer model, ``"t"`` (pandapower's default) or ``"pi"``.
        nonfinite: ``"raise"`` or ``"unknown"``, see
            :data:`grid_models.powerflow.base.NONFINITE_MODES`.
        **runpp_options: further keyword arguments for ``pandapower.runpp``
            (e.g. ``max_iteration``, ``tolerance_mva``).
    """

    backend = "pandapower"

    def __init__(
        self,
        net: pandapowerNet,
        *,
        tuned: bool = True,
        trafo_model: str = "t",
        nonfinite: str = "raise",
        **runpp_options: Any,
    ) -> None:
        if trafo_model not in ("t", "pi"):
            raise BackendError(f"trafo_model must be 't' or 'pi', got {trafo_model!r}")
        super().__init__(net, nonfinite)
        self.tuned = tuned
        self._runpp_options = {"trafo_model": trafo_model, **runpp_options}
        self._warm = False
        is_injection = self._net.load.index.isin(self.injection_load_ids)
        # positions in net.load of the background loads and of the injection loads
        self._load_pos = np.flatnonzero(~is_injection)
        inj_pos = {idx: pos for pos, idx in enumerate(self._net.load.index)}
        self._inj_pos = np.array([inj_pos[i] for i in self.injection_load_ids], dtype=np.int64)
        self._load_p = self._net.load["p_mw"].to_numpy(dtype=float).copy()
        self._load_q = self._net.load["q_mvar"].to_numpy(dtype=float).copy()

    def reset(self) -> None:
        """Drop the warm start and the recycled internal model (next step starts afresh)."""
        self._warm = False
        self._net["_ppc"] = None

    def warm_start_state(self) -> dict[str, np.ndarray]:
        """The bus results the next ``init="results"`` step starts from (every column)."""
        if not (self.tuned and self._warm):
            return {}
        res = self._net.res_bus
        return {f"res_bus_{c}": res[c].to_numpy(dtype=float).copy() for c in res.columns}

    def set_warm_start_state(self, state: dict[str, np.ndarray]) -> None:
        """Start the next step from saved bus results (equal, bit for bit, to never stopping)."""
        import pandas as pd

        self.reset()
        if not state:
            return
        cols = {k.removeprefix("res_bus_"): np.asarray(v, dtype=float) for k, v in state.items()}
        n = len(self._net.bus.index)
        if any(v.shape != (n,) for v in cols.values()):
            raise ValueError(f"warm-start state is not for this feeder's {n} buses")
        self._net.res_bus = pd.DataFrame(cols, index=self._net.bus.index)
        self._warm = True

    def _write_inputs(
        self,
        p: np.ndarray,
        q: np.ndarray,
        bg: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        self._load_p[self._load_pos] = bg[0]
        self._load_q[self._load_pos] = bg[1]
        self._load_p[self._inj_pos] = p
        self._load_q[self._inj_pos] = q
        net = self._net
        net.load["p_mw"] = self._load_p
        net.load["q_mvar"] = self._load_q
        if len(self.sgen_ids):
            net.sgen["p_mw"] = bg[2]
            net.sgen["q_mvar"] = bg[3]

    def _run(self) -> bool:
        import pandapower as pp
        from pandapower.powerflow import LoadflowNotConverged

        try:
            if not self.tuned:
                pp.runpp(self._net, **self._runpp_options)
            elif self._warm:
                pp.runpp(self._net, init="results", recycle=dict(RECYCLE), **self._runpp_options)
            else:
                pp.runpp(self._net, init="auto", recycle=dict(RECYCLE), **self._runpp_options)
        except NUMERICAL_FAILURES + (LoadflowNotConverged,):
            self.reset()
            return False
        converged = bool(self._net["converged"])
        if not converged:
            self.reset()
        else:
            self._warm = True
        return converged

    def _read(self, step: int | None) -> GridResult:
        net = self._net
        return GridResult(
            bus_vm_pu=net.res_bus["vm_pu"].to_numpy(),
            bus_va_degree=net.res_bus["va_degree"].to_numpy(),
            bus_p_mw=net.res_bus["p_mw"].to_numpy(),
            bus_q_mvar=net.res_bus["q_mvar"].to_numpy(),
            line_loading_percent=net.res_line["loading_percent"].to_numpy(),
            line_i_ka=net.res_line["i_ka"].to_numpy(),
            trafo_loading_percent=net.res_trafo["loading_percent"].to_numpy(),
            trafo_p_hv_mw=net.res_trafo["p_hv_mw"].to_numpy(),
            losses_mw=float(net.res_line["pl_mw"].sum() + net.res_trafo["pl_mw"].sum()),
            ext_grid_p_mw=float(net.res_ext_grid["p_mw"].sum()),
            ext_grid_q_mvar=float(net.res_ext_grid["q_mvar"].sum()),
            converged=True,
            step=step,
        )

    def _solve_step(self, p: np.ndarray, q: np.ndarray, step: int | None) -> GridResult:
        bg = (self._bg_load_p, self._bg_load_q, self._bg_sgen_p, self._bg_sgen_q)
        self._write_inputs(p, q, bg)
        if not self._run():
            return self._nan_result(step)
        return self._read(step)

    def _solve_many(
        self,
        p: np.ndarray,
        q: np.ndarray,
        bg: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        steps: np.ndarray,
        skip: np.ndarray | None = None,
    ) -> BatchGridResult:
        # the same sequence of warm-started runpp calls as solve() step by step
        results = []
        for t, step in enumerate(steps):
            step = int(step)
            if skip is not None and skip[t]:  # solve() never runs such a step
                results.append(self._nan_result(step))
                continue
            self._write_inputs(p[t], q[t], (bg[0][t], bg[1][t], bg[2][t], bg[3][t]))
            if not self._run():
                results.append(self._nan_result(step))
                continue
            result = self._read(step)
            if not finite_result(result):  # solve_batch blanks and reports it
                self.reset()
            results.append(result)
        return BatchGridResult.from_results(results)
