"""One power-flow interface over two backends, and its typed results.

A :class:`PowerFlow` is built from a pandapower net by :func:`make_powerflow`. It works on
its own copy of the net in which it adds one load element per bus (the *injection
loads*, named ``fleetcosim_injection_bus_<bus>``): the fleet's net consumption per bus
is written there each step, while the feeder's own loads and static generators stay
in place as the *background* (the feeder's other customers).

Per step::

    pf = make_powerflow(net, backend="power-grid-model")
    pf.set_background(load_p_mw, load_q_mvar, sgen_p_mw)   # optional, persists
    result = pf.solve(p_mw, q_mvar, step=t)                 # arrays in pf.bus_ids order

Many steps at once::

    batch = pf.solve_batch(p_mw_tn, q_mvar_tn, background=profiles)  # (T, n_bus)

Sign conventions are pandapower's: bus injections are net consumption (load positive,
generation negative) in MW / Mvar; ``GridResult.bus_p_mw`` is ``res_bus.p_mw`` (it
includes the external grid at the slack bus); ``ext_grid_p_mw`` is the power the
external grid supplies.

A step that does not converge returns a result whose arrays and scalars are all NaN
and ``converged=False``; a :class:`PowerFlowNotConvergedWarning` names the step and
the injections; the solver's warm-start state is reset and the count
``n_nonconverged`` goes up. The run continues.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, overload, runtime_checkable

import numpy as np

from grid_models.errors import BackendError, format_choices

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray
    from pandapower.auxiliary import pandapowerNet

    from grid_models.background import BackgroundProfiles

BACKENDS = ("pandapower", "power-grid-model")

#: Agreement of the two backends that the tests enforce (pandapower is the reference).
VM_ATOL_PU = 1e-4
LOADING_ATOL_PERCENT = 0.1


class PowerFlowNotConvergedWarning(RuntimeWarning):
    """A power-flow step did not converge; its results are NaN."""


_BUS_FIELDS = ("bus_vm_pu", "bus_va_degree", "bus_p_mw", "bus_q_mvar")
_LINE_FIELDS = ("line_loading_percent", "line_i_ka")
_TRAFO_FIELDS = ("trafo_loading_percent", "trafo_p_hv_mw")
ARRAY_FIELDS = _BUS_FIELDS + _LINE_FIELDS + _TRAFO_FIELDS
SCALAR_FIELDS = ("losses_mw", "ext_grid_p_mw", "ext_grid_q_mvar")


def _frozen(a: ArrayLike) -> NDArray[np.float64]:
    arr = np.array(a, dtype=float)  # always a copy: results never alias solver buffers
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class GridResult:
    """Power-flow result of one step. Arrays follow ``bus_ids``/``line_ids``/``trafo_ids``.

    All arrays and scalars are NaN when ``converged`` is False.
    """

    bus_vm_pu: np.ndarray
    bus_va_degree: np.ndarray
    bus_p_mw: np.ndarray
    bus_q_mvar: np.ndarray
    line_loading_percent: np.ndarray
    line_i_ka: np.ndarray
    trafo_loading_percent: np.ndarray
    trafo_p_hv_mw: np.ndarray
    losses_mw: float
    ext_grid_p_mw: float
    ext_grid_q_mvar: float
    converged: bool
    step: int | None = None

    def __post_init__(self) -> None:
        for name in ARRAY_FIELDS:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for name in SCALAR_FIELDS:
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "converged", bool(self.converged))

    @classmethod
    def nan(cls, n_bus: int, n_line: int, n_trafo: int, step: int | None = None) -> GridResult:
        """The result of a step that did not converge."""
        sizes = {"bus": n_bus, "line": n_line, "trafo": n_trafo}
        # Any: passed by name into fields of mixed types (arrays, floats, bool)
        arrays: dict[str, Any] = {f: np.full(sizes[f.split("_", 1)[0]], np.nan)
                                  for f in ARRAY_FIELDS}
        scalars: dict[str, Any] = dict.fromkeys(SCALAR_FIELDS, np.nan)  # fields by name
        return cls(**arrays, **scalars, converged=False, step=step)


@dataclass(frozen=True, eq=False)
class BatchGridResult:
    """Results of T steps: arrays of shape (T, n_element), scalars of shape (T,)."""

    bus_vm_pu: np.ndarray
    bus_va_degree: np.ndarray
    bus_p_mw: np.ndarray
    bus_q_mvar: np.ndarray
    line_loading_percent: np.ndarray
    line_i_ka: np.ndarray
    trafo_loading_percent: np.ndarray
    trafo_p_hv_mw: np.ndarray
    losses_mw: np.ndarray
    ext_grid_p_mw: np.ndarray
    ext_grid_q_mvar: np.ndarray
    converged: np.ndarray
    steps: np.ndarray

    def __post_init__(self) -> None:
        for name in ARRAY_FIELDS + SCALAR_FIELDS:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for name, dtype in (("converged", bool), ("steps", np.int64)):
            arr = np.array(getattr(self, name), dtype=dtype)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        n = len(self.converged)
        for name in ARRAY_FIELDS + SCALAR_FIELDS + ("steps",):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"BatchGridResult.{name} has {len(getattr(self, name))} rows, converged has {n}"
                )
        # a step that did not converge never carries numbers
        bad = ~self.converged
        if bad.any():
            for name in ARRAY_FIELDS + SCALAR_FIELDS:
                if np.isfinite(getattr(self, name)[bad]).any():
                    raise ValueError(f"BatchGridResult.{name} has values on non-converged steps")

    def __len__(self) -> int:
        return len(self.converged)

    @overload
    def __getitem__(self, t: int) -> GridResult: ...

    @overload
    def __getitem__(self, t: slice) -> BatchGridResult: ...

    def __getitem__(self, t: int | slice) -> GridResult | BatchGridResult:
        """Row ``t`` as the :class:`GridResult` of that step (equal to what a single
        ``solve`` gives, ``step`` included), or a slice of rows as a batch."""
        if isinstance(t, slice):
            fields = [f.name for f in dataclasses.fields(self)]
            return BatchGridResult(**{f: getattr(self, f)[t] for f in fields})
        values = {name: getattr(self, name)[t] for name in ARRAY_FIELDS + SCALAR_FIELDS}
        return GridResult(**values, converged=bool(self.converged[t]), step=int(self.steps[t]))

    def __iter__(self) -> Iterator[GridResult]:
        for t in range(len(self)):
            yield self[t]

    @property
    def n_nonconverged(self) -> int:
        """Number of steps that did not converge."""
        return int((~self.converged).sum())

    @classmethod
    def from_results(cls, results: Sequence[GridResult]) -> BatchGridResult:
        """Stack single-step results (steps without a step index get their position)."""
        if len(results) == 0:
            raise ValueError("cannot stack an empty sequence of GridResult")
        values: dict[str, Any] = {name: np.stack([getattr(r, name) for r in results])
                                  for name in ARRAY_FIELDS}  # fields by name
        values.update(
            {name: np.array([getattr(r, name) for r in results]) for name in SCALAR_FIELDS}
        )
        steps = np.array([i if r.step is None else r.step for i, r in enumerate(results)],
                         dtype=np.int64)  # as __post_init__ makes it
        return cls(**values, converged=np.array([r.converged for r in results]), steps=steps)

    @classmethod
    def concatenate(cls, batches: Sequence[BatchGridResult]) -> BatchGridResult:
        """Join batches along the time axis."""
        if len(batches) == 0:
            raise ValueError("cannot concatenate an empty sequence of BatchGridResult")
        fields = [f.name for f in dataclasses.fields(cls)]
        return cls(**{f: np.concatenate([getattr(b, f) for b in batches]) for f in fields})


@runtime_checkable
class PowerFlow(Protocol):
    """The power-flow contract: what every backend offers, and the only place it is written.

    See the module docstring for the conventions. Both backends inherit the shared
    implementation in :class:`grid_models.powerflow.base.PowerFlowBase`, which subclasses
    this protocol (so mypy checks every signature there against this one).
    """

    @property
    def backend(self) -> str:
        """Name of the backend, one of ``BACKENDS``."""

    bus_ids: np.ndarray
    line_ids: np.ndarray
    trafo_ids: np.ndarray
    load_ids: np.ndarray
    sgen_ids: np.ndarray
    n_nonconverged: int
    nonconverged_steps: list[int | None]

    @property
    def buses(self) -> np.ndarray:
        """Bus indices in the order of the injection arrays (same as ``bus_ids``)."""

    @property
    def net(self) -> pandapowerNet:
        """The backend's pandapower net: the feeder plus the injection loads."""

    def set_background(
        self,
        load_p_mw: np.ndarray | None = None,
        load_q_mvar: np.ndarray | None = None,
        sgen_p_mw: np.ndarray | None = None,
        sgen_q_mvar: np.ndarray | None = None,
    ) -> None:
        """Set the feeder's own loads / static generators (MW, Mvar; order ``load_ids`` /
        ``sgen_ids``) for the following :meth:`solve` calls. ``None`` keeps the current value.

        Until this is called, the feeder's table values (times ``scaling``) apply.
        """

    def solve(
        self, p_mw: np.ndarray, q_mvar: np.ndarray | None = None, *, step: int | None = None
    ) -> GridResult:
        """Solve one step with per-bus net consumption ``p_mw``/``q_mvar`` (MW, Mvar, order
        ``bus_ids``)."""

    def solve_batch(
        self,
        p_mw: np.ndarray,
        q_mvar: np.ndarray | None = None,
        *,
        background: BackgroundProfiles | None = None,
        first_step: int = 0,
    ) -> BatchGridResult:
        """Solve T steps. ``p_mw``/``q_mvar`` have shape (T, n_bus).

        ``background`` gives the feeder's own loads/sgens per step (T rows); without it the
        current background (see :meth:`set_background`) holds for every step. The
        background state of this object is not changed. Steps are numbered from
        ``first_step`` in the result and in warnings.
        """

    def warm_start_state(self) -> dict[str, np.ndarray]:
        """What the next solve starts from, as named arrays (empty: nothing).

        A run that stops and resumes sets it again with :meth:`set_warm_start_state`,
        so that its next power flow starts where the uninterrupted one would.
        """

    def set_warm_start_state(self, state: dict[str, np.ndarray]) -> None:
        """Start the next solve from a saved :meth:`warm_start_state` (a backend without
        one takes only ``{}``)."""


def make_powerflow(net: pandapowerNet, backend: str = "pandapower", **options: Any) -> PowerFlow:
    """Build a power flow over a copy of ``net``.

    Args:
        net: the feeder (not modified).
        backend: ``"pandapower"`` (the reference) or ``"power-grid-model"`` (fast path).
        **options: backend options, see
            :class:`grid_models.powerflow.pandapower_backend.PandapowerPowerFlow` and
            :class:`grid_models.powerflow.pgm_backend.PgmPowerFlow`.
    """
    if backend == "pandapower":
        from grid_models.powerflow.pandapower_backend import PandapowerPowerFlow

        return PandapowerPowerFlow(net, **options)
    if backend == "power-grid-model":
        from grid_models.powerflow.pgm_backend import PgmPowerFlow

        return PgmPowerFlow(net, **options)
    raise BackendError(f"unknown power-flow backend {backend!r}; valid: {format_choices(BACKENDS)}")
