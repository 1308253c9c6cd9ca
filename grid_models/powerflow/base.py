"""What both backends share: the prepared net, input checks, background state, non-convergence.

The contract itself (signatures and their documentation) is
:class:`grid_models.powerflow.interface.PowerFlow`; :class:`PowerFlowBase` implements it
once for both backends, and each method marked ``@override`` is documented there.
"""

from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from typing_extensions import override

from grid_models.errors import BackendError, PowerFlowInputError
from grid_models.powerflow.interface import (
    ARRAY_FIELDS,
    SCALAR_FIELDS,
    BatchGridResult,
    GridResult,
    PowerFlow,
    PowerFlowNotConvergedWarning,
)
from grid_models.topology import check_supply

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet

    from grid_models.background import BackgroundProfiles

INJECTION_LOAD_PREFIX = "fleetcosim_injection_bus_"

#: What ``solve``/``solve_batch`` do with non-finite injections or background values:
#: ``"raise"`` a :class:`PowerFlowInputError` (default), or treat the step as
#: ``"unknown"``: a NaN result with ``converged=False`` and a warning (a run goes on and
#: its KPIs count the step as unknown).
NONFINITE_MODES = ("raise", "unknown")


def prepare_net(net: pandapowerNet) -> tuple[pandapowerNet, np.ndarray]:
    """Copy ``net``, fold ``scaling`` into p/q, and add one zero injection load per bus.

    Returns the copy and the indices of its injection loads, in the order of ``net.bus``.
    The feeder's own loads keep their indices (they come first in ``net.load``).
    """
    import pandapower as pp

    prepared = copy.deepcopy(net)
    if "profiles" in prepared:  # SimBench's yearly profiles are not part of the grid
        del prepared["profiles"]
    for table in ("load", "sgen", "storage"):
        df = prepared[table]
        if len(df):
            scaling = df["scaling"].to_numpy(dtype=float)
            df["p_mw"] = df["p_mw"].to_numpy(dtype=float) * scaling
            df["q_mvar"] = df["q_mvar"].to_numpy(dtype=float) * scaling
            df["scaling"] = 1.0
    existing = prepared.load["name"].astype(str).str.startswith(INJECTION_LOAD_PREFIX)
    if existing.any():
        raise PowerFlowInputError(
            f"net.load already holds injection loads ({INJECTION_LOAD_PREFIX}...): pass the "
            "feeder itself, not PowerFlow.net"
        )
    bus_ids = prepared.bus.index.to_numpy()
    names = [f"{INJECTION_LOAD_PREFIX}{b}" for b in bus_ids]
    injection = pp.create_loads(prepared, buses=bus_ids, p_mw=0.0, q_mvar=0.0, name=names)
    return prepared, np.asarray(injection, dtype=np.int64)


class PowerFlowBase(PowerFlow, ABC):
    """The :class:`PowerFlow` contract implemented once: shared state, input checks and
    non-convergence reports; backends implement ``_solve_step`` and ``_solve_many``."""

    backend: ClassVar[str] = ""

    def __init__(self, net: pandapowerNet, nonfinite: str = "raise") -> None:
        if nonfinite not in NONFINITE_MODES:
            raise BackendError(f"nonfinite must be one of {', '.join(NONFINITE_MODES)}, "
                               f"got {nonfinite!r}")
        check_supply(net)  # no slack: nothing to solve, say so now rather than every step
        self.nonfinite = nonfinite
        self._net, self.injection_load_ids = prepare_net(net)
        is_injection = self._net.load.index.isin(self.injection_load_ids)
        self.bus_ids = self._net.bus.index.to_numpy()
        self.line_ids = self._net.line.index.to_numpy()
        self.trafo_ids = self._net.trafo.index.to_numpy()
        self.load_ids = self._net.load.index[~is_injection].to_numpy()
        self.sgen_ids = self._net.sgen.index.to_numpy()
        self._bg_load_p = self._net.load.loc[self.load_ids, "p_mw"].to_numpy(dtype=float)
        self._bg_load_q = self._net.load.loc[self.load_ids, "q_mvar"].to_numpy(dtype=float)
        self._bg_sgen_p = self._net.sgen["p_mw"].to_numpy(dtype=float)
        self._bg_sgen_q = self._net.sgen["q_mvar"].to_numpy(dtype=float)
        self._load_in_service = self._net.load.loc[self.load_ids, "in_service"].to_numpy(bool)
        self._sgen_in_service = self._net.sgen["in_service"].to_numpy(bool)
        self.n_nonconverged = 0
        self.nonconverged_steps: list[int | None] = []

    # -- public API -------------------------------------------------------------------

    @property
    @override
    def buses(self) -> np.ndarray:
        result: np.ndarray = self.bus_ids
        return result

    @property
    @override
    def net(self) -> pandapowerNet:
        return self._net

    @override
    def set_background(
        self,
        load_p_mw: np.ndarray | None = None,
        load_q_mvar: np.ndarray | None = None,
        sgen_p_mw: np.ndarray | None = None,
        sgen_q_mvar: np.ndarray | None = None,
    ) -> None:
        lenient = self.nonfinite == "unknown"
        if load_p_mw is not None:
            self._bg_load_p = self._vector(load_p_mw, len(self.load_ids), "load_p_mw", lenient)
        if load_q_mvar is not None:
            self._bg_load_q = self._vector(load_q_mvar, len(self.load_ids), "load_q_mvar", lenient)
        if sgen_p_mw is not None:
            self._bg_sgen_p = self._vector(sgen_p_mw, len(self.sgen_ids), "sgen_p_mw", lenient)
        if sgen_q_mvar is not None:
            self._bg_sgen_q = self._vector(sgen_q_mvar, len(self.sgen_ids), "sgen_q_mvar",
                                           lenient)

    @override
    def solve(
        self, p_mw: np.ndarray, q_mvar: np.ndarray | None = None, *, step: int | None = None
    ) -> GridResult:
        lenient = self.nonfinite == "unknown"
        p = self._vector(p_mw, len(self.bus_ids), "p_mw", lenient)
        q = (
            np.zeros_like(p)
            if q_mvar is None
            else self._vector(q_mvar, len(self.bus_ids), "q_mvar", lenient)
        )
        bg = (self._bg_load_p, self._bg_load_q, self._bg_sgen_p, self._bg_sgen_q)
        bad_input = _nonfinite_inputs(p, q, bg)
        if bad_input:
            self._report_unknown(step, bad_input)
            return self._nan_result(step)
        result = self._solve_step(p, q, step)
        if result.converged and not finite_result(result):
            self.reset()
            self._report_unknown(step, "the solver reported convergence with non-finite results")
            return self._nan_result(step)
        if not result.converged:
            self._report_nonconverged(step, p, q, self._bg_load_p, self._bg_sgen_p)
        return result

    def reset(self) -> None:
        """Drop any warm-start state (backends with one override this)."""
        return None

    @override
    def warm_start_state(self) -> dict[str, np.ndarray]:
        return {}

    @override
    def set_warm_start_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no warm-start state; got "
                             f"{sorted(state)}")

    @override
    def solve_batch(
        self,
        p_mw: np.ndarray,
        q_mvar: np.ndarray | None = None,
        *,
        background: BackgroundProfiles | None = None,
        first_step: int = 0,
    ) -> BatchGridResult:
        lenient = self.nonfinite == "unknown"
        p = self._matrix(p_mw, "p_mw", lenient)
        q = np.zeros_like(p) if q_mvar is None else self._matrix(q_mvar, "q_mvar", lenient)
        if q.shape != p.shape:
            raise PowerFlowInputError(f"q_mvar has shape {q.shape}, p_mw has {p.shape}")
        n_steps = p.shape[0]
        if background is None:
            bg = (
                np.broadcast_to(self._bg_load_p, (n_steps, len(self.load_ids))),
                np.broadcast_to(self._bg_load_q, (n_steps, len(self.load_ids))),
                np.broadcast_to(self._bg_sgen_p, (n_steps, len(self.sgen_ids))),
                np.broadcast_to(self._bg_sgen_q, (n_steps, len(self.sgen_ids))),
            )
        else:
            bg = self._background_arrays(background, n_steps, lenient)
        steps = np.arange(first_step, first_step + n_steps)
        bad_rows = ~np.isfinite(p).all(axis=1) | ~np.isfinite(q).all(axis=1)
        for arr in bg:
            if arr.shape[1]:
                bad_rows |= ~np.isfinite(arr).all(axis=1)
        if bad_rows.any():  # solve the others on zeros in their place, then blank them
            p, q = np.where(bad_rows[:, None], 0.0, p), np.where(bad_rows[:, None], 0.0, q)
            b0, b1, b2, b3 = (np.where(bad_rows[:, None], 0.0, a) if a.shape[1] else a
                              for a in bg)
            bg = (b0, b1, b2, b3)
        batch = self._solve_many(p, q, bg, steps, skip=bad_rows)
        implausible = batch.converged & ~_finite_rows(batch)
        unknown = bad_rows | implausible
        if unknown.any():
            batch = _blank_rows(batch, unknown)
        for t in np.flatnonzero(~batch.converged):
            if bad_rows[t]:
                self._report_unknown(int(steps[t]), "non-finite injections or background")
            elif implausible[t]:
                self._report_unknown(int(steps[t]),
                                     "the solver reported convergence with non-finite results")
            else:
                self._report_nonconverged(int(steps[t]), p[t], q[t], bg[0][t], bg[2][t])
        return batch

    # -- for backends -----------------------------------------------------------------

    @abstractmethod
    def _solve_step(self, p: np.ndarray, q: np.ndarray, step: int | None) -> GridResult:
        """Solve one step; return ``GridResult.nan`` (and reset warm starts) on failure."""

    @abstractmethod
    def _solve_many(
        self,
        p: np.ndarray,
        q: np.ndarray,
        bg: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        steps: np.ndarray,
        skip: np.ndarray | None = None,
    ) -> BatchGridResult:
        """Solve T steps; non-converged rows are NaN with ``converged`` False.

        ``skip`` (T,) marks rows with non-finite inputs (zeros in their place): their
        results are discarded, and a backend with a warm start must not let them touch it
        (as :meth:`solve` never solves such a step). A row that converges with non-finite
        results must reset the warm start, as :meth:`solve` does.
        """

    def _nan_result(self, step: int | None) -> GridResult:
        return GridResult.nan(len(self.bus_ids), len(self.line_ids), len(self.trafo_ids), step)

    # -- helpers ----------------------------------------------------------------------

    def _vector(self, values: np.ndarray, n: int, name: str,
                lenient: bool = False) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        if arr.shape != (n,):
            raise PowerFlowInputError(f"{name} must have shape ({n},), got {arr.shape}")
        if not lenient and not np.isfinite(arr).all():
            where = np.flatnonzero(~np.isfinite(arr))[:10].tolist()
            raise PowerFlowInputError(f"{name} holds non-finite values at positions {where}")
        return arr

    def _matrix(self, values: np.ndarray, name: str, lenient: bool = False) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != len(self.bus_ids) or arr.shape[0] == 0:
            raise PowerFlowInputError(
                f"{name} must have shape (T, {len(self.bus_ids)}) with T >= 1, got {arr.shape}"
            )
        if not lenient and not np.isfinite(arr).all():
            raise PowerFlowInputError(f"{name} holds non-finite values")
        return arr

    def _background_arrays(
        self, background: BackgroundProfiles, n_steps: int, lenient: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        checks = (
            ("load_p_mw", len(self.load_ids)),
            ("load_q_mvar", len(self.load_ids)),
            ("sgen_p_mw", len(self.sgen_ids)),
            ("sgen_q_mvar", len(self.sgen_ids)),
        )
        out = []
        for name, n in checks:
            arr = np.asarray(getattr(background, name), dtype=float)
            if arr.shape != (n_steps, n):
                raise PowerFlowInputError(
                    f"background.{name} must have shape ({n_steps}, {n}), got {arr.shape}"
                )
            if not lenient and not np.isfinite(arr).all():
                raise PowerFlowInputError(f"background.{name} holds non-finite values")
            out.append(arr)
        if not np.array_equal(np.asarray(background.load_ids), self.load_ids) or not np.array_equal(
            np.asarray(background.sgen_ids), self.sgen_ids
        ):
            raise PowerFlowInputError(
                "background profiles were built for another feeder (load_ids/sgen_ids differ)"
            )
        return out[0], out[1], out[2], out[3]

    def _report_nonconverged(
        self,
        step: int | None,
        p: np.ndarray,
        q: np.ndarray,
        bg_load_p: np.ndarray,
        bg_sgen_p: np.ndarray,
    ) -> None:
        self.n_nonconverged += 1
        self.nonconverged_steps.append(step)
        load_p = float(np.sum(bg_load_p[self._load_in_service]))
        sgen_p = float(np.sum(bg_sgen_p[self._sgen_in_service]))
        largest = np.argsort(-np.abs(p), kind="stable")[:3]
        top = "; ".join(f"bus {self.bus_ids[i]} p={p[i]:.6g} MW q={q[i]:.6g} Mvar" for i in largest)
        warnings.warn(
            f"power flow did not converge (backend={self.backend}, step={step}): "
            f"bus injections P={p.sum():.6g} MW Q={q.sum():.6g} Mvar, background loads "
            f"P={load_p:.6g} MW, static generators P={sgen_p:.6g} MW; largest bus injections: "
            f"{top}. Results of this step are NaN; the solver state was reset "
            f"({self.n_nonconverged} non-converged step(s) so far).",
            PowerFlowNotConvergedWarning,
            stacklevel=3,
        )

    def _report_unknown(self, step: int | None, why: str) -> None:
        self.n_nonconverged += 1
        self.nonconverged_steps.append(step)
        warnings.warn(
            f"power flow result unknown (backend={self.backend}, step={step}): {why}. "
            f"Results of this step are NaN with converged=False "
            f"({self.n_nonconverged} non-converged or unknown step(s) so far).",
            PowerFlowNotConvergedWarning,
            stacklevel=3,
        )


_SCALARS_ALWAYS_FINITE = ("losses_mw", "ext_grid_p_mw", "ext_grid_q_mvar")


def finite_result(result: GridResult) -> bool:
    """Does a converged step carry numbers where a solved step always has them?

    Losses and external-grid power finite, at least one bus voltage, no infinite value
    (NaN alone is how pandapower marks de-energised elements).
    """
    if not all(np.isfinite(getattr(result, name)) for name in _SCALARS_ALWAYS_FINITE):
        return False
    vm = result.bus_vm_pu
    if len(vm) and not np.isfinite(vm).any():
        return False
    arrays = (vm, result.line_loading_percent, result.trafo_loading_percent,
              result.bus_p_mw, result.line_i_ka, result.trafo_p_hv_mw)
    return not any(np.isinf(a).any() for a in arrays)


def _finite_rows(batch: BatchGridResult) -> np.ndarray:
    ok = np.ones(len(batch), dtype=bool)
    for name in _SCALARS_ALWAYS_FINITE:
        ok &= np.isfinite(getattr(batch, name))
    vm = batch.bus_vm_pu
    if vm.shape[1]:
        ok &= np.isfinite(vm).any(axis=1)
    for a in (vm, batch.line_loading_percent, batch.trafo_loading_percent, batch.bus_p_mw,
              batch.line_i_ka, batch.trafo_p_hv_mw):
        if a.shape[1]:
            ok &= ~np.isinf(a).any(axis=1)
    return ok


def _blank_rows(batch: BatchGridResult, rows: np.ndarray) -> BatchGridResult:
    """``batch`` with ``rows`` all NaN and ``converged`` False."""
    values = {}
    for name in ARRAY_FIELDS + SCALAR_FIELDS:
        arr = np.array(getattr(batch, name), dtype=float)
        arr[rows] = np.nan
        values[name] = arr
    return BatchGridResult(**values, converged=batch.converged & ~rows, steps=batch.steps)


def _nonfinite_inputs(
    p: np.ndarray, q: np.ndarray, bg: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
) -> str:
    """"" when every input is finite, else a short description of the first offenders."""
    parts = []
    for name, arr in (("p_mw", p), ("q_mvar", q), ("background load_p_mw", bg[0]),
                      ("background load_q_mvar", bg[1]), ("background sgen_p_mw", bg[2]),
                      ("background sgen_q_mvar", bg[3])):
        where = np.flatnonzero(~np.isfinite(arr))
        if len(where):
            parts.append(f"{name} non-finite at positions {where[:10].tolist()}")
    return "; ".join(parts)
