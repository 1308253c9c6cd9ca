"""Grid constraints on the feeder side: what each one measures, and whom it concerns.

A grid constraint (a transformer's or a line's loading, a bus voltage band, the fleet's
peak) is described by a :class:`ConstraintSpec`. Two questions are answered here, with
no mosaik and no policy in sight:

* **What does the power flow say about it?** :class:`ConstraintProbe` reads one step's
  :class:`~grid_models.powerflow.interface.GridResult` (and the fleet's net load) and returns, per
  constraint, the measured quantity (loading %, voltage pu, kW) and the sign of the
  buildings' influence on it at that operating point.
* **Which buildings does it concern, and how much?** :func:`constraint_weights` turns
  the linearised sensitivities (:mod:`grid_models.sensitivity`) or the downstream
  membership into one weight per building, the largest of magnitude 1.

Measured quantities (``h``):

* ``loading_max`` of ``("trafo", i)`` / ``("line", i)``: the element's
  ``loading_percent``;
* ``voltage_max`` / ``voltage_min`` over a set of buses: the largest / smallest
  ``vm_pu`` of those buses (NaN if any of them is NaN in a converged step is ignored;
  a step without a finite voltage gives NaN);
* ``peak_kw_max``: the fleet's net load as the feeder sees it,
  ``fleet_scale * sum_i p_kw_i`` (kW).

Signs. A loading is a magnitude: a downstream building's extra consumption raises it
when the element carries power towards its downstream side (import) and lowers it under
reverse flow (PV export beyond the local demand). The probe takes the direction from
the step's power flow: ``sign = +1`` when the downstream buses' net consumption
``sum_{b downstream} p_mw_b`` is >= -1e-9 MW (solver noise) and ``-1`` otherwise.
Since the buildings' influence on a loading is ``d loading / d p_i = sign * |d loading /
d p_i|``, loading weights are magnitudes and the sign re-signs them every step. Elements without a
downstream side (on a loop of a meshed feeder) keep ``sign = +1``. Voltage and peak
weights carry their own sign (consumption lowers the voltage: ``voltage_max`` weights
are negative, ``voltage_min`` and peak weights positive); their probe sign is +1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from grid_models.errors import GridModelError
from grid_models.powerflow.interface import GridResult
from grid_models.sensitivity import ElementKey, Sensitivities

SPEC_KINDS = ("loading_max", "voltage_max", "voltage_min", "peak_kw_max")
#: Below these a finite-difference sensitivity is the solver's noise (power-grid-model
#: leaves ~1e-11 pp/kW on an element no building feeds), not an influence: such a
#: constraint concerns no building.
MIN_LOADING_PP_PER_KW = 1e-6
MIN_VM_PU_PER_KW = 1e-10
#: A downstream net consumption above -this (MW) counts as forward flow: the solver
#: leaves ~1e-16 MW on buses without load, which must not flip a sign.
FLOW_SIGN_ATOL_MW = 1e-9
WEIGHT_MODES = ("sensitivity", "membership")
#: Scale of a voltage excess: half the width of the 0.95-1.05 pu planning band.
VOLTAGE_SCALE_PU = 0.05


@dataclass(frozen=True)
class ConstraintSpec:
    """One grid constraint, on the feeder's terms.

    Attributes:
        name: label, unique within a run (e.g. ``"line 12 loading"``).
        kind: one of :data:`SPEC_KINDS`.
        limit: % (loading), pu (voltage) or kW (peak).
        element: ``("trafo", idx)`` or ``("line", idx)`` for ``loading_max``, else None.
        buses: the buses of a voltage constraint (empty otherwise).
    """

    name: str
    kind: str
    limit: float
    element: ElementKey | None = None
    buses: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in SPEC_KINDS:
            raise GridModelError(f"constraint {self.name!r}: kind must be one of "
                                 f"{', '.join(SPEC_KINDS)}, got {self.kind!r}")
        if not np.isfinite(self.limit) or self.limit <= 0:
            raise GridModelError(f"constraint {self.name!r}: limit must be finite and > 0, "
                                 f"got {self.limit!r}")
        if (self.kind == "loading_max") != (self.element is not None):
            raise GridModelError(f"constraint {self.name!r}: an element is given exactly "
                                 "for a loading constraint")
        if self.kind in ("voltage_max", "voltage_min") and not self.buses:
            raise GridModelError(f"constraint {self.name!r}: a voltage constraint needs buses")

    @property
    def scale(self) -> float:
        """Normalises the excess: the limit (loading, peak) or 0.05 pu (voltage)."""
        return VOLTAGE_SCALE_PU if self.kind in ("voltage_max", "voltage_min") else self.limit

    def describe(self) -> dict[str, object]:
        """Plain values for the run directory's ``grid_constraints.json``."""
        out: dict[str, object] = {"name": self.name, "kind": self.kind, "limit": self.limit,
                                  "scale": self.scale}
        if self.element is not None:
            out["element"] = {"table": self.element[0], "index": self.element[1]}
        if self.buses:
            out["buses"] = list(self.buses)
        return out


def constraint_weights(spec: ConstraintSpec, n_buildings: int, *,
                       sens: Sensitivities | None = None,
                       downstream_mask: np.ndarray | None = None,
                       mode: str = "sensitivity") -> np.ndarray:
    """Weights (N,) of ``spec``: who is concerned, how much (module docstring).

    ``mode="sensitivity"``: loading ``|d loading / d p_i| / max``; voltage
    ``max_b |d vm_b / d p_i| / max`` over the spec's buses, negative for voltage_max.
    ``mode="membership"`` (loading only; voltage and peak always use the first rule):
    1 for the buildings downstream of the element (``downstream_mask``), 0 elsewhere.
    Peak: ones. Raises GridModelError when no building moves the constraint.
    """
    if mode not in WEIGHT_MODES:
        raise GridModelError(f"weights mode must be one of {', '.join(WEIGHT_MODES)}, "
                             f"got {mode!r}")
    if spec.kind == "peak_kw_max":
        return np.ones(int(n_buildings))
    if spec.kind == "loading_max" and mode == "membership":
        if downstream_mask is None:
            raise GridModelError(f"constraint {spec.name!r}: membership weights need the "
                                 "downstream mask")
        row = np.asarray(downstream_mask, dtype=np.float64)
    else:
        if sens is None:
            raise GridModelError(f"constraint {spec.name!r}: sensitivity weights need the "
                                 "linearised sensitivities")
        if spec.kind == "loading_max":
            assert spec.element is not None
            row = np.abs(sens.loading_pp_per_kw[sens.element_index(spec.element)])
        else:
            rows = [np.abs(sens.vm_pu_per_kw[sens.bus_index(b)]) for b in spec.buses]
            row = np.max(rows, axis=0)
    if row.shape != (int(n_buildings),) or not np.isfinite(row).all():
        raise GridModelError(f"constraint {spec.name!r}: weights of shape {row.shape}, "
                             f"expected ({n_buildings},) finite values")
    peak = float(np.abs(row).max())
    floor = 0.0
    if mode == "sensitivity" or spec.kind != "loading_max":
        floor = MIN_LOADING_PP_PER_KW if spec.kind == "loading_max" else MIN_VM_PU_PER_KW
    if peak <= floor:
        raise GridModelError(f"constraint {spec.name!r}: no building moves it (no building "
                             "downstream or all sensitivities zero)")
    row = row / peak
    return -row if spec.kind == "voltage_max" else row


class ConstraintProbe:
    """Reads each constraint's measured quantity and sign from a step's power flow.

    Arguments:
        specs: the constraints.
        bus_ids, line_ids, trafo_ids: the order of the GridResult's arrays.
        downstream: downstream buses per element (:func:`grid_models.sensitivity.
            downstream_buses`); an element missing or empty there keeps sign +1.
        fleet_scale: factor on the buildings' power (the peak's kW as the feeder sees it).
    """

    def __init__(self, specs: Sequence[ConstraintSpec], bus_ids: np.ndarray,
                 line_ids: np.ndarray, trafo_ids: np.ndarray,
                 downstream: Mapping[ElementKey, np.ndarray], fleet_scale: float = 1.0) -> None:
        self.specs = tuple(specs)
        self.bus_pos = bus_pos = {int(b): i for i, b in enumerate(np.asarray(bus_ids))}
        pos = {"line": {int(x): i for i, x in enumerate(np.asarray(line_ids))},
               "trafo": {int(x): i for i, x in enumerate(np.asarray(trafo_ids))}}
        #: per constraint: (table, column in the result's arrays) of its element, or None
        self.element_pos: list[tuple[str, int] | None] = []
        #: per constraint: result columns of the element's downstream buses
        self.downstream_pos: list[np.ndarray] = []
        #: per constraint: result columns of its buses (voltage)
        self.bus_cols: list[np.ndarray] = []
        for spec in self.specs:
            if spec.element is not None:
                table, idx = spec.element
                if idx not in pos[table]:
                    raise GridModelError(f"constraint {spec.name!r}: {table} {idx} is not in "
                                         "the power flow's results")
                self.element_pos.append((table, pos[table][idx]))
                down = np.asarray(downstream.get(spec.element, ()), dtype=np.int64)
                cols = [bus_pos[int(b)] for b in down if int(b) in bus_pos]
                self.downstream_pos.append(np.array(cols, dtype=np.int64))
            else:
                self.element_pos.append(None)
                self.downstream_pos.append(np.zeros(0, dtype=np.int64))
            missing = [b for b in spec.buses if int(b) not in bus_pos]
            if missing:
                raise GridModelError(f"constraint {spec.name!r}: buses {missing[:10]} are not "
                                     "in the power flow's results")
            self.bus_cols.append(np.array([bus_pos[int(b)] for b in spec.buses], dtype=np.int64))
        self.fleet_scale = float(fleet_scale)

    @property
    def n_constraints(self) -> int:
        """Number of constraints K."""
        return len(self.specs)

    def measure(self, result: GridResult, p_kw: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """(measured (K,), sign (K,)) of one step; NaN where the power flow says nothing."""
        k = self.n_constraints
        measured = np.full(k, np.nan)
        sign = np.ones(k)
        p_kw = np.asarray(p_kw, dtype=np.float64)
        for j, spec in enumerate(self.specs):
            if spec.kind == "peak_kw_max":
                total = float(p_kw.sum()) * self.fleet_scale
                measured[j] = total if np.isfinite(total) else np.nan
            elif spec.kind == "loading_max":
                element = self.element_pos[j]
                assert element is not None  # ConstraintSpec: loading_max always names one
                table, col = element
                values = result.trafo_loading_percent if table == "trafo" else \
                    result.line_loading_percent
                measured[j] = values[col]
                down = self.downstream_pos[j]
                if down.size:
                    flow = float(np.sum(result.bus_p_mw[down]))
                    if np.isfinite(flow):
                        sign[j] = 1.0 if flow >= -FLOW_SIGN_ATOL_MW else -1.0
            else:
                vm = result.bus_vm_pu[self.bus_cols[j]]
                vm = vm[np.isfinite(vm)]
                if vm.size:
                    measured[j] = vm.max() if spec.kind == "voltage_max" else vm.min()
        return measured, sign
