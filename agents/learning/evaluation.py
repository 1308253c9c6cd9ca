"""How a trained policy responds to its multipliers, on held-out data.

The class's buildings run as a fleet over the held-out window with the
multipliers held fixed: sweeps over lambda at several fixed nu (grid energy
should fall as lambda rises) and a sweep over nu at lambda = 0 (served energy
should rise with nu).

Under the Lagrangian of docs/equations.md a kWh bought from the grid earns
``nu - lambda - price``: at nu = 0 nothing rewards serving demand, so a
well-trained policy buys (almost) nothing whatever lambda is. The lambda-response
that coordination relies on is visible where serving pays, nu > 0; the headline
figure uses ``RESPONSE_NU`` and the sweeps at the other nu are reported beside it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agents.fleet.building import FleetParams
from agents.fleet.data import CityLearnData
from agents.fleet.runner import NO_BUS, FleetLoop, FleetSetup

if TYPE_CHECKING:
    from agents.control.rules import Controller
    from agents.learning.policy import Policy

RESPONSE_NU = 10.0  # nu of the headline lambda-response (mid of the positive range)
LAMBDA_SWEEP_NUS = (0.0, 5.0, 10.0, 20.0)


@dataclass(frozen=True)
class ResponseCurves:
    """Mean grid energy against lambda at fixed nu, and served energy against nu at lambda = 0."""

    lambdas: np.ndarray
    sweep_nus: np.ndarray  # the fixed nu of each lambda sweep
    grid_kwh_vs_lambda: np.ndarray  # (len(sweep_nus), len(lambdas)) mean grid kWh/building/step
    nus: np.ndarray
    served_kwh_vs_nu: np.ndarray  # mean served energy per building per step, lambda = 0
    demand_kwh: float  # mean new demand per building per step over the window

    def grid_at(self, nu: float) -> np.ndarray:
        """Grid energy over the lambda sweep at the fixed ``nu``, kWh per building and step.

        Raises:
            IndexError: if ``nu`` is not one of ``sweep_nus``.
        """
        row: np.ndarray = self.grid_kwh_vs_lambda[
            int(np.flatnonzero(np.isclose(self.sweep_nus, nu))[0])]
        return row

    def summary(self) -> dict[str, float]:
        """Headline numbers: grid and served energy at the ends of the sweeps, and mean demand."""
        out: dict[str, float] = {}
        for nu in self.sweep_nus:
            g = self.grid_at(nu)
            out[f"grid_kwh_nu{nu:g}_lambda_min"] = float(g[0])
            out[f"grid_kwh_nu{nu:g}_lambda_max"] = float(g[-1])
        g = self.grid_at(RESPONSE_NU)
        g0, g_max = g[0], g[-1]
        return {
            "response_nu": RESPONSE_NU,
            "grid_kwh_at_lambda_min": float(g0),
            "grid_kwh_at_lambda_max": float(g_max),
            "grid_reduction_lambda": float(1.0 - g_max / g0) if g0 > 0 else float("nan"),
            **out,
            "served_kwh_at_nu_min": float(self.served_kwh_vs_nu[0]),
            "served_kwh_at_nu_max": float(self.served_kwh_vs_nu[-1]),
            "mean_demand_kwh": self.demand_kwh,
        }


def _window_setup(data: CityLearnData, buildings: Sequence[str], demand_scale: float,
                  start: int, steps: int, backlog_cap_kwh: float) -> FleetSetup:
    """The class's buildings over ``steps`` hours from ``start``, batteries half full."""
    params = FleetParams.from_buildings([data.building(b) for b in buildings],
                                        demand_scale=demand_scale,
                                        backlog_cap_kwh=backlog_cap_kwh)
    demand, solar, price = data.window(list(buildings), start, steps)
    return FleetSetup(list(buildings), params, np.asarray(NO_BUS), demand, solar, price,
                      start_hour=start,
                      dt_h=data.hours_per_step, initial_soc_fraction=0.5,
                      price_outlook_per_kwh=data.price_outlook(start, steps))


def fixed_multiplier_run(
    controller: Controller, data: CityLearnData, buildings: Sequence[str], demand_scale: float,
    start: int, steps: int, backlog_cap_kwh: float, lam: float, nu: float,
) -> dict[str, float]:
    """Mean grid, served and demand energy per building per step with fixed multipliers."""
    setup = _window_setup(data, buildings, demand_scale, start, steps, backlog_cap_kwh)
    loop = FleetLoop(setup, controller, None)  # the fleet engine, multipliers held fixed
    grid = served = new = 0.0
    for _ in range(steps):
        v = loop.step((lam, 0.0, nu))
        grid += v["grid_kwh"].mean()
        served += (v["grid_kwh"] + v["battery_kwh"]).mean()
        new += v["demand_kwh"].mean()
    return {"grid_kwh": grid / steps, "served_kwh": served / steps, "demand_kwh": new / steps}


@dataclass(frozen=True)
class PriceResponse:
    """Grid energy a policy asks for in the same states at different price inputs.

    ``states`` are the observations met on held-out data while the policy runs
    with fixed multipliers ``(lambda, nu)`` of a grid; only the price input then
    changes. ``grid_kwh[k, s]`` is ``u_grid * (demand + backlog)`` at ``prices[k]``.
    """

    prices: np.ndarray
    grid_kwh: np.ndarray  # (len(prices), n_states)
    multipliers: np.ndarray  # (n_states, 2): lambda, nu of each state

    def mean_grid_kwh(self) -> np.ndarray:
        """Mean requested grid energy over the states at each price, kWh, shape (len(prices),)."""
        result: np.ndarray = self.grid_kwh.mean(axis=1)
        return result

    def share_not_rising(self, atol_kwh: float) -> float:
        """Share of states whose request at the highest price is at most that at the lowest."""
        return float((self.grid_kwh[-1] <= self.grid_kwh[0] + atol_kwh).mean())


PRICE_ATOL_KWH = 1e-3  # a request this much higher at a higher price counts as "not rising"
PRICE_LEVELS = (0.21, 0.3, 0.4, 0.54)  # $/kWh: the data's off-peak level to its highest peak
PRICE_STATE_LAMBDAS = (0.0, 1.0, 3.0, 6.0)
PRICE_STATE_NUS = (1.0, 3.0, 6.0, 10.0)


def price_response(
    policy: Policy, data: CityLearnData, buildings: Sequence[str], demand_scale: float,
    start: int, steps: int, backlog_cap_kwh: float,
    prices: Sequence[float] = PRICE_LEVELS, lambdas: Sequence[float] = PRICE_STATE_LAMBDAS,
    nus: Sequence[float] = PRICE_STATE_NUS,
) -> PriceResponse:
    """The policy's requested grid energy against its price input alone (see PriceResponse)."""
    setup = _window_setup(data, buildings, demand_scale, start, steps, backlog_cap_kwh)
    grids, mults = [], []
    for lam in lambdas:
        for nu in nus:
            loop = FleetLoop(setup, policy, None)
            for _ in range(steps):
                obs = loop.observe((lam, 0.0, nu))
                to_serve = obs.demand_kwh + obs.backlog_kwh
                rows = [policy.act(replace(obs, price_per_kwh=np.full(setup.n, p)))[:, 0]
                        * to_serve for p in prices]
                grids.append(np.stack(rows))
                mults.append(np.tile([lam, nu], (setup.n, 1)))
                loop.step((lam, 0.0, nu))
    return PriceResponse(np.asarray(prices, dtype=float), np.concatenate(grids, axis=1),
                         np.concatenate(mults))


def response_curves(
    controller: Controller, data: CityLearnData, buildings: Sequence[str], demand_scale: float,
    start: int, steps: int, backlog_cap_kwh: float,
    lambda_range: tuple[float, float], nu_range: tuple[float, float], points: int = 7,
) -> ResponseCurves:
    """Fleet runs of ``controller`` with fixed multipliers over lambda and nu sweeps.

    Lambda takes ``points`` values of ``lambda_range`` at each nu of ``LAMBDA_SWEEP_NUS`` and
    ``RESPONSE_NU``; nu takes ``points`` values of ``nu_range`` at lambda = 0.
    """
    lambdas = np.linspace(lambda_range[0], lambda_range[1], points)
    nus = np.linspace(nu_range[0], nu_range[1], points)
    def run(lam: float, nu: float) -> dict[str, float]:
        return fixed_multiplier_run(controller, data, buildings, demand_scale, start, steps,
                                    backlog_cap_kwh, lam, nu)

    sweep_nus = np.array(sorted({*LAMBDA_SWEEP_NUS, RESPONSE_NU}))
    grid = np.array([[run(lam, nu)["grid_kwh"] for lam in lambdas] for nu in sweep_nus])
    by_nu = [run(0.0, nu) for nu in nus]
    return ResponseCurves(
        lambdas, sweep_nus, grid, nus, np.array([r["served_kwh"] for r in by_nu]),
        float(by_nu[0]["demand_kwh"]),
    )


def write_report(out_dir: Path, class_name: str, curves: ResponseCurves,
                 prices: PriceResponse | None = None) -> Path:
    """``<class>_response.csv`` and ``<class>_report.png`` (curve + responses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out_dir / f"{class_name}_response.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sweep", "lambda", "nu", "grid_kwh_per_step", "served_kwh_per_step"])
        for nu, row in zip(curves.sweep_nus, curves.grid_kwh_vs_lambda, strict=True):
            for lam, g in zip(curves.lambdas, row, strict=True):
                w.writerow(["lambda", f"{lam:.4g}", f"{nu:.4g}", f"{g:.6g}", ""])
        for nu, s in zip(curves.nus, curves.served_kwh_vs_nu, strict=True):
            w.writerow(["nu", 0, f"{nu:.4g}", "", f"{s:.6g}"])
    if prices is not None:
        with open(out_dir / f"{class_name}_price_response.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["lambda", "nu", "price_per_kwh", "states", "grid_kwh_per_step"])
            for lam, nu in np.unique(prices.multipliers, axis=0):
                rows = (prices.multipliers[:, 0] == lam) & (prices.multipliers[:, 1] == nu)
                for p, g in zip(prices.prices, prices.grid_kwh[:, rows].mean(axis=1),
                                strict=True):
                    w.writerow([f"{lam:.4g}", f"{nu:.4g}", f"{p:.4g}", int(rows.sum()),
                                f"{g:.6g}"])

    fig, axes = plt.subplots(1, 4 if prices is not None else 3,
                             figsize=(20 if prices is not None else 15, 4))
    curve_csv = out_dir / f"{class_name}_learning_curve.csv"
    if curve_csv.is_file():
        rows = np.loadtxt(curve_csv, delimiter=",", skiprows=1, usecols=(0, 2), ndmin=2)
        if rows.size:
            window = max(1, min(200, rows.shape[0] // 20))
            smooth = np.convolve(rows[:, 1], np.ones(window) / window, mode="valid")
            axes[0].plot(rows[:, 0], rows[:, 1], ".", ms=1, alpha=0.2, color="grey")
            axes[0].plot(rows[window - 1:, 0], smooth, color="C0",
                         label=f"moving mean ({window} episodes)")
            axes[0].legend()
    axes[0].set(title=f"{class_name}: learning curve", xlabel="timesteps",
                ylabel="episode return (Lagrangian)")
    for nu, row in zip(curves.sweep_nus, curves.grid_kwh_vs_lambda, strict=True):
        axes[1].plot(curves.lambdas, row, "o-", label=f"nu = {nu:g}")
    axes[1].axhline(curves.demand_kwh, ls="--", color="grey", label="mean new demand")
    axes[1].set(title="lambda-response (held-out hours)", xlabel="lambda",
                ylabel="grid energy [kWh/step/building]")
    axes[1].legend()
    axes[2].plot(curves.nus, curves.served_kwh_vs_nu, "o-", color="C2")
    axes[2].axhline(curves.demand_kwh, ls="--", color="grey", label="mean new demand")
    axes[2].set(title="nu-response (lambda = 0, held-out hours)", xlabel="nu",
                ylabel="served energy [kWh/step/building]")
    axes[2].legend()
    if prices is not None:
        for nu in np.unique(prices.multipliers[:, 1]):
            rows = (prices.multipliers[:, 0] == 0.0) & (prices.multipliers[:, 1] == nu)
            if rows.any():
                axes[3].plot(prices.prices, prices.grid_kwh[:, rows].mean(axis=1), "o-",
                             label=f"lambda = 0, nu = {nu:g}")
        axes[3].plot(prices.prices, prices.mean_grid_kwh(), "k--", lw=2, label="all states")
        axes[3].set(title="price-response (same held-out states, price input only)",
                    xlabel="price [$/kWh]", ylabel="requested grid energy [kWh/step/building]")
        axes[3].legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / f"{class_name}_report.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evolving_nu_grid_kwh(policy: Policy, data: CityLearnData, buildings: Sequence[str],
                         demand_scale: float, lam: float, train_hours: tuple[int, int],
                         backlog_cap_kwh: float, lanes: int = 64, steps: int = 168,
                         seed: int = 5) -> float:
    """Mean grid energy per building and step with lambda held at ``lam`` and nu following
    its dual update with eta = 1 (nu equals the backlog, as at execution), over ``lanes``
    week-long episodes that avoid ``train_hours`` (``(start, steps)``: held-out hours)."""
    from agents.learning.tariffs import MultiplierDraw, TariffDraw
    from agents.learning.training_fleet import MultiplierProcess, TrainingFleet

    process = MultiplierProcess(MultiplierDraw(lam, lam), MultiplierDraw(0.0, 0.0),
                                lambda_low=0.0, negative_share=0.0, reversion=0.0, noise=0.0,
                                fixed_share=0.0)
    fleet = TrainingFleet(data, list(buildings), demand_scale, lanes, steps, process,
                          TariffDraw(), (0.0, max(lam, 1e-9)), (-1e6, 1e6), backlog_cap_kwh,
                          heldout=train_hours, seed=seed, scale_by_multipliers=False,
                          obs_names=policy.obs_names)
    grid = 0.0
    for _ in range(steps):
        _, _, infos = fleet.step(policy.act(fleet.observation()))
        grid += sum(info["grid_kwh"] for info in infos)
    return grid / (steps * lanes)
