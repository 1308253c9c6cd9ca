"""Background loads: the feeder's other customers, per load/static generator and step.

Three modes:

* ``"simbench"``: SimBench's own yearly 15-min profiles of the grid
  (``simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)``), for
  the requested window of steps; steps longer than 15 min are the mean of their
  quarter-hours (energy-preserving).
* ``"nominal"``: the table values (``p_mw * scaling``) at every step.
* ``"off"``: zero; only the fleet loads the feeder.

Values are the effective MW/Mvar drawn (pandapower's ``scaling`` folded in), times
``scale`` for loads and ``sgen_scale`` for static generators. Static generators' Q is
the table value (SimBench has no Q profiles for them); storage and gen are left out.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from grid_models.errors import BackgroundError, format_choices

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet

    from grid_models.powerflow.interface import PowerFlow

BACKGROUND_MODES = ("simbench", "nominal", "off")
SIMBENCH_STEP_H = 0.25


@dataclass(frozen=True, eq=False)
class BackgroundProfiles:
    """Background P/Q per step: loads (T, n_load) in ``load_ids`` order, sgens (T, n_sgen)."""

    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    sgen_p_mw: np.ndarray
    sgen_q_mvar: np.ndarray
    load_ids: np.ndarray
    sgen_ids: np.ndarray
    dt_h: float
    start: int
    mode: str

    def __post_init__(self) -> None:
        for name in ("load_p_mw", "load_q_mvar", "sgen_p_mw", "sgen_q_mvar"):
            arr = np.array(getattr(self, name), dtype=float)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        result: int = self.load_p_mw.shape[0]
        return result

    @property
    def n_steps(self) -> int:
        """Number of steps, as ``len()``."""
        return len(self)

    def window(self, start: int, stop: int) -> BackgroundProfiles:
        """Steps ``start:stop`` of this profile (positions, not absolute step numbers)."""
        if not 0 <= start < stop <= len(self):
            raise BackgroundError(f"window {start}:{stop} outside 0:{len(self)}")
        return BackgroundProfiles(
            self.load_p_mw[start:stop],
            self.load_q_mvar[start:stop],
            self.sgen_p_mw[start:stop],
            self.sgen_q_mvar[start:stop],
            self.load_ids,
            self.sgen_ids,
            self.dt_h,
            self.start + start,
            self.mode,
        )

    def apply(self, pf: PowerFlow, t: int) -> None:
        """Set step ``t`` (position in this profile) as ``pf``'s background."""
        pf.set_background(
            self.load_p_mw[t], self.load_q_mvar[t], self.sgen_p_mw[t], self.sgen_q_mvar[t]
        )

    def total_p_mw(self) -> np.ndarray:
        """Net background consumption per step (loads minus static generators), MW."""
        result: np.ndarray = self.load_p_mw.sum(axis=1) - self.sgen_p_mw.sum(axis=1)
        return result


def background_profiles(
    net: pandapowerNet,
    n_steps: int,
    *,
    start: int = 0,
    dt_h: float = SIMBENCH_STEP_H,
    mode: str = "simbench",
    scale: float = 1.0,
    sgen_scale: float = 1.0,
) -> BackgroundProfiles:
    """Background P/Q for ``n_steps`` steps of ``dt_h`` hours from step ``start``.

    Args:
        net: the feeder; ``mode="simbench"`` needs ``net.profiles`` (a SimBench grid from
            :func:`grid_models.feeders.load_feeder`).
        n_steps: number of steps T.
        start: first step, counted in steps of ``dt_h`` from the profiles' start (1 Jan).
        dt_h: step length in hours, a multiple of 0.25 for ``"simbench"``.
        mode: one of :data:`BACKGROUND_MODES`.
        scale: factor on the loads' P and Q.
        sgen_scale: factor on the static generators' P and Q.
    """
    if mode not in BACKGROUND_MODES:
        raise BackgroundError(
            f"unknown background mode {mode!r}; valid: {format_choices(BACKGROUND_MODES)}"
        )
    if not (isinstance(n_steps, (int, np.integer)) and n_steps >= 1):
        raise BackgroundError(f"n_steps must be a positive integer, got {n_steps!r}")
    if not (isinstance(start, (int, np.integer)) and start >= 0):
        raise BackgroundError(f"start must be a non-negative integer, got {start!r}")
    if not (dt_h > 0 and math.isfinite(dt_h)):
        raise BackgroundError(f"dt_h must be positive, got {dt_h!r}")
    for name, value in (("scale", scale), ("sgen_scale", sgen_scale)):
        if not (math.isfinite(value) and value >= 0):
            raise BackgroundError(f"{name} must be finite and >= 0, got {value!r}")

    load, sgen = net.load, net.sgen
    n_load, n_sgen = len(load), len(sgen)
    load_scaling = load["scaling"].to_numpy(float) if n_load else np.zeros(0)
    sgen_scaling = sgen["scaling"].to_numpy(float) if n_sgen else np.zeros(0)
    sgen_q = np.broadcast_to(sgen["q_mvar"].to_numpy(float) * sgen_scaling, (n_steps, n_sgen))

    if mode == "off":
        lp = lq = np.zeros((n_steps, n_load))
        sp = sq = np.zeros((n_steps, n_sgen))
    elif mode == "nominal":
        lp = np.broadcast_to(load["p_mw"].to_numpy(float) * load_scaling, (n_steps, n_load))
        lq = np.broadcast_to(load["q_mvar"].to_numpy(float) * load_scaling, (n_steps, n_load))
        sp = np.broadcast_to(sgen["p_mw"].to_numpy(float) * sgen_scaling, (n_steps, n_sgen))
        sq = sgen_q
    else:
        lp, lq, sp = _simbench_window(net, n_steps, start, dt_h)
        lp, lq, sp = lp * load_scaling, lq * load_scaling, sp * sgen_scaling
        sq = sgen_q
    return BackgroundProfiles(
        load_p_mw=lp * scale,
        load_q_mvar=lq * scale,
        sgen_p_mw=sp * sgen_scale,
        sgen_q_mvar=sq * sgen_scale,
        load_ids=load.index.to_numpy(),
        sgen_ids=sgen.index.to_numpy(),
        dt_h=float(dt_h),
        start=int(start),
        mode=mode,
    )


def _simbench_window(
    net: pandapowerNet, n_steps: int, start: int, dt_h: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    profiles = net.get("profiles") if hasattr(net, "get") else None
    if not isinstance(profiles, dict) or "load" not in profiles:
        raise BackgroundError(
            "background mode 'simbench' needs SimBench profiles (net.profiles); load the feeder "
            "with load_feeder('simbench:<code>') or use mode 'nominal' or 'off'"
        )
    ratio = dt_h / SIMBENCH_STEP_H
    per_step = round(ratio)
    if per_step < 1 or abs(ratio - per_step) > 1e-9:
        raise BackgroundError(
            f"dt_h must be a multiple of {SIMBENCH_STEP_H} h for SimBench profiles, got {dt_h}"
        )
    n_rows = len(profiles["load"])
    first, last = start * per_step, (start + n_steps) * per_step
    if last > n_rows:
        raise BackgroundError(
            f"steps {start}..{start + n_steps - 1} of {dt_h} h need quarter-hours up to {last}, "
            f"the SimBench profiles hold {n_rows} ({n_rows // per_step} steps of {dt_h} h)"
        )
    import simbench

    window = copy.copy(net)  # shallow: only the profiles entry is replaced
    window["profiles"] = {
        key: frame.iloc[first:last] if len(frame) else frame for key, frame in profiles.items()
    }
    absolute = simbench.get_absolute_values(window, profiles_instead_of_study_cases=True)

    def block_mean(key: tuple[str, str], n_cols: int) -> np.ndarray:
        frame = absolute.get(key)
        if frame is None or n_cols == 0:
            return np.zeros((n_steps, n_cols))
        values = frame.to_numpy(dtype=float)
        result: np.ndarray = values.reshape(n_steps, per_step, n_cols).mean(axis=1)
        return result

    return (
        block_mean(("load", "p_mw"), len(net.load)),
        block_mean(("load", "q_mvar"), len(net.load)),
        block_mean(("sgen", "p_mw"), len(net.sgen)),
    )
