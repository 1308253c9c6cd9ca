"""Grid-constraint multipliers ("operator" duals) and the buildings' effective lambda.

Grid limits (a transformer's or a line's loading, a bus voltage band, a district peak)
become constraints the buildings act on without new policies: each constraint k gets a
multiplier ``mu_k >= 0`` and building i's policy is fed the effective multiplier
``clip(lambda_i + sum_k W_ki mu_k, 0, lambda_max)`` in place of its own lambda_i
(:mod:`agents.consensus.duals`).

Constraints (:class:`GridConstraint`), with ``h_k`` the measured quantity (loading %,
voltage pu, district kW), ``L_k`` its limit and ``s_k > 0`` its scale::

    e_k = (h_k - L_k) / s_k       loading_max, voltage_max, peak_kw_max
    e_k = (L_k - h_k) / s_k       voltage_min

``e_k > 0`` means violated (:func:`normalised_excess`). The scale makes the excesses of
different constraints comparable (e.g. the limit itself for a loading or a peak, the
half-width of the voltage band, 0.05 pu, for a voltage).

Operator update (:class:`OperatorMultipliers`), a projected dual ascent on the
normalised constraint, per constraint step ``alpha_k``::

    mu_k <- clip(mu_k + alpha_k e_k(h_k), 0, mu_max)
    lambda_eff_i = clip(lambda_i + sum_k W_ki mu_k, 0, lambda_max)

A measurement that is not finite (NaN from a failed power flow step) carries no
information about the constraint: that mu_k keeps its value (it is neither raised,
lowered nor turned into NaN).

**Time shift.** The constraint is measured by the power flow *after* the buildings
acted, so the multipliers the buildings see at step t come from ``update`` with the
measurement of step t-1 (at step 0: the initial mu, 0 by default).

**Why the policies need no retraining (the Lagrangian).** The fleet minimises its cost
subject to the district energy limit and the grid limits,
``min sum_i cost_i(g_i)  s.t.  sum_i g_i <= c,  h_k(p) <= L_k``, with ``g_i`` building
i's grid energy and p the buildings' consumption. Its Lagrangian is::

    L = sum_i cost_i(g_i) + lambda (sum_i g_i - c) + sum_k mu_k (h_k(p) - L_k)

With ``h_k`` linearised around the operating point, ``h_k(p) ~ h_k(p0) + sum_i
(dh_k/dp_i) (p_i - p0_i)`` and, per step, ``dL/dg_i = price_i + lambda +
sum_k mu_k dh_k/dp_i``. A building that faces ``lambda_i + sum_k W_ki mu_k`` with
``W_ki`` proportional to ``dh_k/dp_i`` therefore faces the joint problem's marginal
price of consumption: the shipped state-augmented policies, trained to respond to
lambda, respond to the grid constraints too. The factor between ``W_k`` and
``dh_k/dp`` (here ``1 / max_i |dh_k/dp_i|``, so the most concerned building has
``|W_ki| = 1``) and the scale ``s_k`` of the excess are absorbed into mu_k, which is then
in units of lambda.

**Signs of the weights.** ``W_ki > 0`` where more consumption of building i worsens
constraint k (loading of an element that imports power, under-voltage, the peak), so a
positive mu_k raises the building's price and makes it consume less; ``W_ki < 0`` where
more consumption relieves it (over-voltage under PV export: consumption lowers the
voltage), so mu_k lowers the building's price (clipped at 0) and makes it consume more.
With ``vm_pu_per_kw`` (negative under load, :mod:`grid_models.sensitivity`):
``voltage_max: W = vm / max|vm|`` (negative) and ``voltage_min: W = -vm / max|vm|``
(positive); a loading ``W = loading_pp_per_kw / max|.|`` is positive downstream of an
importing element and negative where the element carries reverse flow that consumption
relieves.

**Signs of loading constraints (flow direction).** A loading is a magnitude, ``|S|``:
whether more consumption of a downstream building raises or lowers it depends on the
direction of the flow through the element (forward import, or reverse flow under PV
export, which consumption relieves). Linearised at the measured operating point,
``d loading/d p_i = sign(flow) * |d S/d p_i|``. Each constraint therefore carries a sign
``sign_k`` (+1 initially), which ``update(measured, sign)`` re-sets from the direction of
the flow measured at the previous step (``sign = np.sign(p_flow)`` relative to the
direction the weights were built for, e.g. forward import for
:func:`membership_weights`; a 0 or non-finite entry keeps the previous sign), and the
buildings see::

    lambda_eff_i = clip(lambda_i + sum_k sign_k W_ki mu_k, 0, lambda_max)

The sign changes only the price shift, not mu_k: the excess of a magnitude is violated
whichever way the flow goes.

Peer update (:class:`PeerMultipliers`), with no operator: the buildings of constraint
k's cluster ``C_k`` (default: the buildings with ``W_ki != 0``) each hold ``mu_ki`` and
run the district's consensus dual dynamics (:mod:`agents.consensus.duals`, one
:class:`~agents.consensus.duals.DualDynamics` per constraint on the communication subgraph induced
by C_k, relabelled in ascending building order, ``limit_kwh = 0``, ``lambda_max =
mu_max``), fed with the local residual::

    r_ki = e_k |W_ki| / mean_{j in C_k} |W_kj|        (mean over C_k: e_k)

in place of V1 (so ``delta_i = -r_ki``: an excess raises mu_ki). In mode pi, for
example, ``mu_k <- clip(mu_k + alpha_k (r_k - z_k) - gamma L_k mu_k, 0, mu_max)``
with the integral state ``z_k <- z_k + beta L_k mu_k`` (DualDynamics' own "mu"). Because
the residuals average to e_k and L_k's columns sum to 0, the mean of mu_k over C_k moves
like the operator's mu_k (projected ascent on e_k) as long as no member hits a bound,
while the members reach agreement by the consensus mode (centralized: one shared value
per cluster, exactly the operator's update). Building i then sees ``lambda_i + sum_k
sign_k W_ki mu_ki``; a building outside C_k gets nothing from constraint k. The graph
modes (paper, pi, atc, averaging) need every cluster to be connected in the
communication graph (a feeder topology connects the buildings downstream of an element).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from agents.consensus.duals import _GRAPH_MODES, DualConfig, DualDynamics, mode_problem
from agents.consensus.graphs import check_agent_nodes

if TYPE_CHECKING:  # agents does not import grid_models at run time
    from grid_models.sensitivity import Sensitivities

CONSTRAINT_KINDS = ("loading_max", "voltage_max", "voltage_min", "peak_kw_max")
_MIN_KINDS = ("voltage_min",)  # violated below the limit


def _finite_float(where: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got {value!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{where} must be finite, got {value}")
    return value


@dataclass(frozen=True, eq=False)
class GridConstraint:
    """One grid limit the buildings act on.

    Attributes:
        name: label for reports, e.g. ``"trafo 0 loading"`` or ``"bus 17 voltage max"``.
        kind: one of ``CONSTRAINT_KINDS``.
        limit: the limit, in % (loading), pu (voltage) or kW (peak).
        scale: > 0, normalises the excess (same unit as ``limit``).
        weights: (N,) signed weight per building: > 0 where more consumption of the
            building worsens the constraint, < 0 where it relieves it (module docstring).
    """

    name: str
    kind: str
    limit: float
    scale: float
    weights: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"GridConstraint.name must be a non-empty string, got {self.name!r}")
        label = f"GridConstraint {self.name!r}"
        if self.kind not in CONSTRAINT_KINDS:
            raise ValueError(f"{label}: kind must be one of {', '.join(CONSTRAINT_KINDS)}, "
                             f"got {self.kind!r}")
        limit = _finite_float(f"{label}: limit", self.limit)
        if self.kind in ("voltage_max", "voltage_min") and limit <= 0:
            raise ValueError(f"{label}: limit of a voltage constraint must be > 0 pu, got {limit}")
        scale = _finite_float(f"{label}: scale", self.scale)
        if scale <= 0:
            raise ValueError(f"{label}: scale must be > 0, got {scale}")
        try:
            weights = np.array(self.weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{label}: weights must be numbers, got {self.weights!r}") from None
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"{label}: weights must have shape (N,) with N >= 1, "
                             f"got shape {weights.shape}")
        if not np.isfinite(weights).all():
            raise ValueError(f"{label}: weights must be finite (buildings "
                             f"{np.flatnonzero(~np.isfinite(weights))[:10].tolist()} are not)")
        if not weights.any():
            raise ValueError(f"{label}: weights are all zero, no building acts on this "
                             "constraint")
        weights.setflags(write=False)
        object.__setattr__(self, "limit", limit)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "weights", weights)

    @property
    def n_buildings(self) -> int:
        """Number of buildings N, the length of ``weights``."""
        return int(self.weights.shape[0])


def normalised_excess(constraint: GridConstraint, measured: float) -> float:
    """``(measured - limit) / scale`` (``(limit - measured) / scale`` for voltage_min).

    Positive: the constraint is violated. A non-finite measurement gives NaN.
    """
    measured = float(measured)
    if constraint.kind in _MIN_KINDS:
        return (constraint.limit - measured) / constraint.scale
    return (measured - constraint.limit) / constraint.scale


# -- weights ---------------------------------------------------------------------------


def _unit_max(row: np.ndarray, what: str) -> np.ndarray:
    row = np.asarray(row, dtype=np.float64)
    if not np.isfinite(row).all():
        raise ValueError(f"sensitivities of {what} are not finite")
    peak = float(np.abs(row).max()) if row.size else 0.0
    if peak == 0.0:
        raise ValueError(f"no building moves {what} (all sensitivities are zero)")
    return row / peak


def loading_weights(sens: Sensitivities, element: tuple[str, int]) -> np.ndarray:
    """Weights of a loading_max constraint: ``loading_pp_per_kw[k] / max_i |.|``."""
    k = sens.element_index(element)
    return _unit_max(sens.loading_pp_per_kw[k], f"the loading of {element[0]} {element[1]}")


def voltage_weights(sens: Sensitivities, bus: int, kind: str) -> np.ndarray:
    """Weights of a voltage constraint at ``bus``.

    ``voltage_max``: ``vm_pu_per_kw[b] / max|.|`` (negative under load: consumption lowers
    the voltage and relieves an over-voltage); ``voltage_min``: ``-vm_pu_per_kw[b] /
    max|.|`` (positive: consumption worsens an under-voltage).
    """
    if kind not in ("voltage_max", "voltage_min"):
        raise ValueError(f"kind must be 'voltage_max' or 'voltage_min', got {kind!r}")
    w = _unit_max(sens.vm_pu_per_kw[sens.bus_index(bus)], f"the voltage of bus {bus}")
    return w if kind == "voltage_max" else -w


def peak_weights(n_buildings: int) -> np.ndarray:
    """Weights of a district peak_kw_max constraint: every building's kW counts once."""
    n = int(n_buildings)
    if n < 1:
        raise ValueError(f"n_buildings must be >= 1, got {n_buildings}")
    return np.ones(n)


def weights_from_sensitivities(
    sens: Sensitivities,
    kind: str,
    *,
    element: tuple[str, int] | None = None,
    bus: int | None = None,
) -> np.ndarray:
    """Weights (N,) of a constraint of ``kind`` from linearised sensitivities.

    ``loading_max`` needs ``element`` (e.g. ``("trafo", 0)``), the voltage kinds need
    ``bus``; ``peak_kw_max`` gives ones. The most concerned building has ``|w| = 1``.
    """
    if kind == "loading_max":
        if element is None:
            raise ValueError("kind 'loading_max' needs element=(table, index)")
        return loading_weights(sens, element)
    if kind in ("voltage_max", "voltage_min"):
        if bus is None:
            raise ValueError(f"kind {kind!r} needs bus=")
        return voltage_weights(sens, bus, kind)
    if kind == "peak_kw_max":
        return peak_weights(sens.n_buildings)
    raise ValueError(f"kind must be one of {', '.join(CONSTRAINT_KINDS)}, got {kind!r}")


def membership_weights(mask: np.ndarray | Sequence[bool], sign: float = 1.0) -> np.ndarray:
    """Topology-only weights: ``sign`` for the buildings in ``mask`` (downstream), 0 else.

    ``mask`` as from :func:`grid_models.sensitivity.membership`; ``sign = -1`` for a
    voltage_max constraint (consumption relieves it).
    """
    m = np.asarray(mask)
    if m.ndim != 1 or m.dtype.kind not in "bui":
        raise ValueError(f"mask must be a 1-D boolean array, got dtype {m.dtype}, shape {m.shape}")
    if sign not in (1.0, -1.0):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    return np.where(m.astype(bool), float(sign), 0.0)


# -- shared by both modes --------------------------------------------------------------


def _check_alpha(label: str, alpha: float | np.ndarray | Sequence[float], k: int) -> np.ndarray:
    try:
        a = np.array(np.broadcast_to(np.asarray(alpha, dtype=np.float64), (k,)))
    except (TypeError, ValueError):
        raise ValueError(f"{label}.alpha must be a number or {k} numbers, got {alpha!r}") from None
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"{label}.alpha must be finite and >= 0, got {alpha!r}")
    return a


def _check_signs(where: str, signs: np.ndarray | Sequence[float], k: int) -> np.ndarray:
    """``signs`` as a float array (K,) whose entries are +1, -1, 0 or not finite."""
    try:
        arr = np.array(signs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be {k} numbers (+1 or -1), got {signs!r}") from None
    if arr.shape != (k,):
        raise ValueError(f"{where} must have shape ({k},), got {arr.shape}")
    finite = np.isfinite(arr)
    bad = finite & (arr != 1.0) & (arr != -1.0) & (arr != 0.0)
    if bad.any():
        raise ValueError(f"{where} entries must be +1 or -1 (0 or NaN: keep the previous "
                         f"sign), got {arr[bad][:10].tolist()} at constraints "
                         f"{np.flatnonzero(bad)[:10].tolist()}")
    return arr


class _GridMultipliers(ABC):
    """What both modes share: the constraints, alpha, mu_max, signs, excess, prices and
    the update's frame (:meth:`update`); a mode supplies its ascent step and its price."""

    _step: int  # updates since the last reset (set by each mode's reset)

    def __init__(
        self,
        constraints: Sequence[GridConstraint],
        alpha: float | np.ndarray | Sequence[float],
        mu_max: float,
    ) -> None:
        label = type(self).__name__
        constraints = tuple(constraints)
        if not constraints:
            raise ValueError(f"{label}.constraints must hold at least one constraint")
        for c in constraints:
            if not isinstance(c, GridConstraint):
                raise TypeError(f"{label}.constraints must be GridConstraint, got "
                                f"{type(c).__name__}")
        names = [c.name for c in constraints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{label}.constraints: duplicate names {dup}")
        sizes = {c.n_buildings for c in constraints}
        if len(sizes) != 1:
            raise ValueError(f"{label}.constraints: weights over different numbers "
                             f"of buildings {sorted(sizes)}")
        self.constraints = constraints
        self.n_constraints = len(constraints)
        self.n_buildings = sizes.pop()
        self.alpha = _check_alpha(label, alpha, self.n_constraints)
        mu_max = _finite_float(f"{label}.mu_max", mu_max)
        if mu_max <= 0:
            raise ValueError(f"{label}.mu_max must be > 0, got {mu_max}")
        self.mu_max = mu_max
        self.names = tuple(names)
        self.weights = np.stack([c.weights for c in constraints])  # (K, N)
        self.weights.setflags(write=False)
        self._limit = np.array([c.limit for c in constraints])
        self._scale = np.array([c.scale for c in constraints])
        self._min_kind = np.array([c.kind in _MIN_KINDS for c in constraints])
        self._signs = np.ones(self.n_constraints)

    # --- signs ------------------------------------------------------------------------

    @property
    def signs(self) -> np.ndarray:
        """The sign (K,) of each constraint's weights, +1 or -1 (a copy; module docstring)."""
        result: np.ndarray = self._signs.copy()
        return result

    def _new_signs(self, sign: np.ndarray | Sequence[float] | None) -> np.ndarray:
        """The signs after ``update(..., sign)``: non-finite or 0 entries keep the old one."""
        if sign is None:
            result: np.ndarray = self._signs.copy()
            return result
        arr = _check_signs("sign", sign, self.n_constraints)
        keep = ~np.isfinite(arr) | (arr == 0.0)
        return np.where(keep, self._signs, arr)

    def _signs_from_snapshot(self, snap: dict[str, np.ndarray]) -> np.ndarray:
        """The snapshot's signs (all +1 for a snapshot saved before signs existed)."""
        if "signs" not in snap:
            return np.ones(self.n_constraints)
        arr = _check_signs("grid multiplier snapshot 'signs'", snap["signs"], self.n_constraints)
        if not np.isin(arr, (1.0, -1.0)).all():
            raise ValueError(f"grid multiplier snapshot 'signs' must be +1 or -1, got {arr}")
        return arr

    def _signed_weights(self) -> np.ndarray:
        """``sign_k W_k`` (K, N)."""
        result: np.ndarray = self._signs[:, None] * self.weights
        return result

    # --- measurements and prices --------------------------------------------------------

    def excess(self, measured: np.ndarray | Sequence[float]) -> np.ndarray:
        """Normalised excess e (K,) of the measured quantities (NaN where not finite)."""
        h = np.asarray(measured, dtype=np.float64)
        if h.shape != (self.n_constraints,):
            raise ValueError(f"measured must have shape ({self.n_constraints},), got {h.shape}")
        h = np.where(np.isfinite(h), h, np.nan)
        result: np.ndarray = (np.where(self._min_kind, self._limit - h, h - self._limit)
                              / self._scale)
        return result

    @abstractmethod
    def price_shift(self) -> np.ndarray:
        """What the grid constraints add to each building's lambda, (N,)."""

    @property
    @abstractmethod
    def mu(self) -> np.ndarray:
        """The multipliers (K,) (peer mode: the mean over each cluster)."""

    @abstractmethod
    def _ascend(self, e: np.ndarray) -> None:
        """Move the multipliers by one step on the normalised excess ``e`` (K,); a
        non-finite ``e[k]`` leaves constraint k's multipliers unchanged."""

    @property
    def step(self) -> int:
        """Number of updates since the last reset."""
        result: int = self._step
        return result

    def update(
        self,
        measured: np.ndarray | Sequence[float],
        sign: np.ndarray | Sequence[float] | None = None,
    ) -> np.ndarray:
        """One step from the quantities measured at the previous step; returns the new mu.

        ``measured[k]``: constraint k's quantity (loading %, voltage pu, kW). A
        non-finite entry leaves that constraint's multipliers unchanged. ``sign`` (K,):
        the direction of each constraint's flow, +1 or -1, re-signing its weights from
        now on (None: keep every sign; 0 or non-finite: keep that one). Nothing changes
        when an argument is refused.
        """
        e = self.excess(measured)
        signs = self._new_signs(sign)
        self._ascend(e)
        self._signs = signs
        self._step += 1
        return self.mu

    def effective_lambda(self, lam: np.ndarray | float, lambda_max: float,
                         lambda_min: float = 0.0) -> np.ndarray:
        """``clip(lam + price_shift(), lambda_min, lambda_max)`` (N,), the multiplier the
        policies see (``lambda_min <= 0``; below 0 the grid asks for consumption)."""
        lam_max = _finite_float("lambda_max", lambda_max)
        if lam_max <= 0:
            raise ValueError(f"lambda_max must be > 0, got {lam_max}")
        lam_min = _finite_float("lambda_min", lambda_min)
        if lam_min > 0:
            raise ValueError(f"lambda_min must be <= 0, got {lam_min}")
        lam = np.asarray(lam, dtype=np.float64)
        if lam.shape not in ((), (self.n_buildings,)):
            raise ValueError(f"lam must be a number or have shape ({self.n_buildings},), "
                             f"got {lam.shape}")
        if not np.isfinite(lam).all():
            raise ValueError("lam must be finite")
        result: np.ndarray = np.clip(lam + self.price_shift(), lam_min, lam_max)
        return result

    def _initial_mu(self, mu: np.ndarray | float | None) -> np.ndarray:
        """``mu`` of :meth:`reset` as (K,) (default 0), checked against [0, mu_max]."""
        value = 0.0 if mu is None else mu
        try:
            arr = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64),
                                           (self.n_constraints,)))
        except (TypeError, ValueError):
            raise ValueError(f"mu must be a number or {self.n_constraints} numbers, "
                             f"got {mu!r}") from None
        self._check_mu(arr)
        return arr

    def _check_mu(self, arr: np.ndarray) -> None:
        if not np.isfinite(arr).all() or (arr < 0).any() or (arr > self.mu_max).any():
            raise ValueError(f"mu must be finite and lie in [0, {self.mu_max}], got {arr}")


# -- the operator's multipliers --------------------------------------------------------


class OperatorMultipliers(_GridMultipliers):
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


# -- the buildings' own multipliers (peer mode) ----------------------------------------


def _cluster_masks(
    clusters: Sequence[np.ndarray | Sequence[bool]] | None,
    constraints: Sequence[GridConstraint],
) -> np.ndarray:
    """The clusters (K, N) as booleans, checked (default: the non-zero weights)."""
    k, n = len(constraints), constraints[0].n_buildings
    if clusters is None:
        return np.stack([c.weights != 0 for c in constraints])
    clusters = list(clusters)
    if len(clusters) != k:
        raise ValueError(f"PeerMultipliers.clusters must hold one mask per constraint ({k}), "
                         f"got {len(clusters)}")
    masks = []
    for c, mask in zip(constraints, clusters, strict=True):
        m = np.asarray(mask)
        where = f"PeerMultipliers.clusters[{c.name!r}]"
        if m.shape != (n,) or m.dtype.kind not in "bui":
            raise ValueError(f"{where} must be a boolean mask of shape ({n},), got dtype "
                             f"{m.dtype}, shape {m.shape}")
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"{where} must hold only True/False (or 1/0)")
        m = m.astype(bool)
        if not m.any():
            raise ValueError(f"{where} is empty: no building holds this constraint's multiplier")
        if not (c.weights[m] != 0).any():
            raise ValueError(f"{where}: every building of the cluster has weight 0, none acts "
                             "on the constraint")
        masks.append(m)
    return np.stack(masks)


def _cluster_graph(graph: nx.Graph[int] | None, members: np.ndarray) -> nx.Graph[int]:
    """The subgraph of ``graph`` induced by ``members``, relabelled 0..n_k-1 in order."""
    sub: nx.Graph[int] = nx.Graph()
    sub.add_nodes_from(range(members.size))
    if graph is not None:
        index = {int(b): i for i, b in enumerate(members)}
        sub.add_edges_from((index[u], index[v]) for u, v in graph.subgraph(index).edges()
                           if u != v)
    return sub


class PeerMultipliers(_GridMultipliers):
    """Multipliers of K grid constraints held by the buildings themselves (module docstring).

    Building i of constraint k's cluster C_k holds its own ``mu_ki``; the members agree
    by the district's consensus dynamics (:class:`agents.consensus.duals.DualDynamics`, one per
    constraint, over the communication subgraph of the cluster). Same interface as
    :class:`OperatorMultipliers`; ``mu`` is the mean over each cluster.

    Arguments:
        constraints, alpha, mu_max: as :class:`OperatorMultipliers`.
        graph: the communication graph over buildings ``0..N-1``; may be None for the
            modes that send no messages (independent, centralized).
        mode: the consensus mode, one of :data:`agents.consensus.duals.DUAL_MODES`.
        beta, gamma, rounds: as :class:`agents.consensus.duals.DualConfig` (``alpha_k beta < gamma
            <= 1`` in mode pi).
        clusters: K boolean masks (N,), the buildings holding each constraint's
            multiplier; default: the buildings whose weight is non-zero. A cluster may
            hold buildings of weight 0 (relays), not only such buildings.
        seed: constraint k's dynamics get ``seed + k`` (used by message faults only).
    """

    def __init__(
        self,
        constraints: Sequence[GridConstraint],
        alpha: float | np.ndarray | Sequence[float],
        mu_max: float,
        graph: nx.Graph[int] | None,
        *,
        mode: str = "pi",
        beta: float = 10.0,
        gamma: float = 0.9,
        rounds: int = 3,
        clusters: Sequence[np.ndarray | Sequence[bool]] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(constraints, alpha, mu_max)
        problem = mode_problem(mode)
        if problem:
            raise ValueError(f"PeerMultipliers.mode: {problem}")
        graph_mode = mode in _GRAPH_MODES
        if graph is None and graph_mode:
            raise ValueError(f"PeerMultipliers: mode {mode!r} exchanges messages and needs "
                             "the communication graph")
        if graph is not None:
            n = check_agent_nodes(graph)
            if n != self.n_buildings:
                raise ValueError(f"PeerMultipliers.graph has {n} agents, the constraints "
                                 f"{self.n_buildings} buildings")
        self.mode = mode
        self.clusters = _cluster_masks(clusters, self.constraints)
        self.clusters.setflags(write=False)
        self._members = tuple(np.flatnonzero(m) for m in self.clusters)
        # r_ki = e_k |W_ki| / mean_{j in C_k} |W_kj|
        self._residual_share = tuple(
            np.abs(w[m]) / np.abs(w[m]).mean() for w, m in zip(self.weights, self._members,
                                                               strict=True))
        self._dynamics = tuple(
            self._cluster_dynamics(k, graph, mode, beta, gamma, rounds, seed + k)
            for k in range(self.n_constraints))
        self.reset()

    def _cluster_dynamics(
        self, k: int, graph: nx.Graph[int] | None, mode: str, beta: float, gamma: float,
        rounds: int, seed: int,
    ) -> DualDynamics:
        name = self.names[k]
        sub = _cluster_graph(graph, self._members[k])
        if mode in _GRAPH_MODES and not nx.is_connected(sub):
            raise ValueError(
                f"the buildings concerned by constraint {name!r} are not connected in the "
                f"communication graph ({nx.number_connected_components(sub)} components); "
                "use communication.topology: feeder or the operator mode")
        try:
            config = DualConfig(mode=mode, alpha=float(self.alpha[k]), beta=beta, gamma=gamma,
                                eta=0.0, rounds=rounds, lambda_max=self.mu_max, v1_window=1)
        except ValueError as exc:
            raise ValueError(f"PeerMultipliers, constraint {name!r}: {exc}") from None
        return DualDynamics(config, sub, limit_kwh=0.0, seed=seed)

    # --- state ------------------------------------------------------------------------

    def reset(self, mu: np.ndarray | float | None = None) -> np.ndarray:
        """Every member's mu_k to ``mu[k]`` (default 0), the signs to +1 and the step
        count to 0; returns mu."""
        value = self._initial_mu(mu)
        for dyn, v in zip(self._dynamics, value, strict=True):
            dyn.reset(lam=float(v))
        self._signs = np.ones(self.n_constraints)
        self._step = 0
        return self.mu

    @property
    def mu_per_building(self) -> np.ndarray:
        """Each building's multiplier of each constraint (K, N), 0 outside a cluster."""
        out = np.zeros((self.n_constraints, self.n_buildings))
        for k, (dyn, members) in enumerate(zip(self._dynamics, self._members, strict=True)):
            out[k, members] = dyn.state.lam
        return out

    @property
    def mu(self) -> np.ndarray:
        """The mean (K,) of mu_k over each constraint's cluster."""
        return np.array([dyn.state.lam.mean() for dyn in self._dynamics])

    @property
    def mu_spread(self) -> np.ndarray:
        """max - min (K,) of mu_k over each cluster (0: the members agree)."""
        return np.array([np.ptp(dyn.state.lam) for dyn in self._dynamics])

    def snapshot(self) -> dict[str, np.ndarray]:
        """The state, as named arrays (``cluster{k}_*``: constraint k's dynamics):
        ``restore(snapshot())`` on an instance built with the same arguments continues
        bit for bit."""
        snap = {"step": np.array(self._step, dtype=np.int64), "signs": self._signs.copy()}
        for k, dyn in enumerate(self._dynamics):
            snap.update({f"cluster{k}_{key}": v for key, v in dyn.snapshot().items()})
        return snap

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Set the state saved by :meth:`snapshot`; shapes and bounds are checked, and
        nothing changes when a check fails.

        A snapshot without ``signs`` (saved before signs existed) sets every sign to +1.
        """
        signs = self._signs_from_snapshot(snap)
        parts = []
        for k, members in enumerate(self._members):
            prefix = f"cluster{k}_"
            part = {key.removeprefix(prefix): v for key, v in snap.items()
                    if key.startswith(prefix)}
            if not part:
                raise ValueError(f"grid multiplier snapshot: no state of constraint "
                                 f"{self.names[k]!r} ({prefix}*); is it an operator snapshot?")
            lam = np.asarray(part.get("lam", np.zeros(0)), dtype=np.float64)
            if lam.shape != (members.size,):
                raise ValueError(f"grid multiplier snapshot '{prefix}lam': shape {lam.shape}, "
                                 f"expected ({members.size},)")
            self._check_mu(lam)
            parts.append(part)
        before = [dyn.snapshot() for dyn in self._dynamics]
        try:
            for dyn, part in zip(self._dynamics, parts, strict=True):
                dyn.restore(part)
        except (KeyError, ValueError) as exc:
            for dyn, old in zip(self._dynamics, before, strict=True):
                dyn.restore(old)
            raise ValueError(f"grid multiplier snapshot: {exc}") from None
        self._signs = signs
        self._step = int(snap["step"])

    # --- the step ---------------------------------------------------------------------

    def _ascend(self, e: np.ndarray) -> None:
        """One consensus step per constraint (module docstring); :meth:`update` returns
        the new mean mu (K,)."""
        for e_k, dyn, share in zip(e, self._dynamics, self._residual_share, strict=True):
            if np.isfinite(e_k):
                dyn.update(e_k * share, np.zeros(share.size))

    def price_shift(self) -> np.ndarray:
        """``sum_k sign_k W_ki mu_ki`` (N,), what the grid constraints add to each lambda
        (0 for a building outside every cluster)."""
        result: np.ndarray = (self._signed_weights() * self.mu_per_building).sum(axis=0)
        return result


# -- choosing the mode -----------------------------------------------------------------

GRID_MULTIPLIER_MODES = ("operator", "peer")


def make_grid_multipliers(
    mode: str,
    constraints: Sequence[GridConstraint],
    alpha: float | np.ndarray | Sequence[float],
    mu_max: float,
    *,
    graph: nx.Graph[int] | None = None,
    consensus_mode: str = "pi",
    beta: float = 10.0,
    gamma: float = 0.9,
    rounds: int = 3,
    clusters: Sequence[np.ndarray | Sequence[bool]] | None = None,
    seed: int = 0,
) -> OperatorMultipliers | PeerMultipliers:
    """:class:`OperatorMultipliers` (mode "operator"; the keyword arguments are unused)
    or :class:`PeerMultipliers` (mode "peer", ``consensus_mode`` its ``mode``)."""
    if mode == "operator":
        return OperatorMultipliers(constraints, alpha, mu_max)
    if mode == "peer":
        return PeerMultipliers(constraints, alpha, mu_max, graph, mode=consensus_mode,
                               beta=beta, gamma=gamma, rounds=rounds, clusters=clusters,
                               seed=seed)
    raise ValueError(f"grid multiplier mode must be one of {', '.join(GRID_MULTIPLIER_MODES)}, "
                     f"got {mode!r}")
