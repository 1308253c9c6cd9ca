"""BuildingAgentSim: building dynamics plus controller for many buildings at once.

One ``step`` stacks the inputs of all its entities, asks the controller once
(one forward pass per policy class) and steps the fleet with
``agents.building.step_fleet``. In-process it receives the built run; started
as its own process (mosaik "cmd" mode, a shard of the fleet) it builds the
fleet from the resolved scenario file::

    python -m cosim.sims.building_sim HOST:PORT --remote

mosaik's protocol has no authentication: whoever reaches the port drives the
shard, including which scenario file it reads. So a remote shard binds loopback
only unless ``--allow-remote-bind`` is given (reach it through an SSH tunnel, see
the README), and a scenario file it cannot use is reported by its path and a
generic reason, never with its contents (:func:`load_shard_scenario`).
"""

from __future__ import annotations

import ipaddress
import os
import stat
import sys
from typing import Any

import mosaik_api_v3
import numpy as np

from agents.building import FleetState, step_fleet
from agents.observation import fleet_observation
from cosim.sims.checkpoints import Checkpoints
from cosim.sims.meta import BUILDING_RESULTS, EXOGENOUS, MULTIPLIERS, meta

RECORD = BUILDING_RESULTS + MULTIPLIERS

#: Largest scenario file a shard reads (a resolved scenario is a few kB to a few MB).
MAX_SHARD_SCENARIO_BYTES = 16 * 2**20
ALLOW_REMOTE_BIND = "--allow-remote-bind"
_EXTRA_OPTIONS = [
    f"{ALLOW_REMOTE_BIND}  with --remote: bind a non-loopback address (there is no "
    "authentication; prefer an SSH tunnel)",
]
LOOPBACK_NAMES = frozenset({"localhost"})


class ShardScenarioError(ValueError):
    """A scenario file a shard cannot use (the message names the path, never content)."""


def load_shard_scenario(path: str | os.PathLike[str]) -> Any:
    """Build a shard's fleet from a resolved scenario file.

    A file that is missing, not a regular file, too large, not a scenario or not
    buildable raises :class:`ShardScenarioError` naming the path and a generic reason:
    a shard may be driven by whoever reaches its port, so no error may carry the
    file's contents (YAML errors quote lines, validation errors quote values and keys).
    """
    from cosim.build import build
    from cosim.scenario import ScenarioError, load_scenario

    where = f"cannot use scenario file {os.fspath(path)!r}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ShardScenarioError(f"{where}: not found") from None
    except OSError:
        raise ShardScenarioError(f"{where}: cannot be accessed") from None
    if not stat.S_ISREG(info.st_mode):
        raise ShardScenarioError(f"{where}: not a regular file") from None
    if info.st_size > MAX_SHARD_SCENARIO_BYTES:
        raise ShardScenarioError(f"{where}: larger than "
                                 f"{MAX_SHARD_SCENARIO_BYTES // 2**20} MiB") from None
    try:
        scenario = load_scenario(path, max_bytes=MAX_SHARD_SCENARIO_BYTES)
    except ScenarioError as exc:
        problems = len(getattr(exc, "errors", ())) or 1
        raise ShardScenarioError(f"{where}: not a valid scenario file ({problems} problem(s); "
                                 "run `cosim validate` on it where it lies)") from None
    except Exception:  # any failure, reported without its message
        raise ShardScenarioError(f"{where}: cannot be read as a scenario file") from None
    try:
        return build(scenario, os.fspath(path), with_grid=False)
    except Exception:  # data or policy problems, reported without details
        raise ShardScenarioError(f"{where}: the scenario does not build here (data, policies "
                                 "or limits; run `cosim validate` on it where it lies)") from None


def bind_refusal(address: str, remote: bool, allow_remote_bind: bool) -> str | None:
    """Why a shard must not start with these arguments (None: it may).

    Only a ``--remote`` shard binds (listens); it may bind a loopback address
    (127.0.0.0/8, ::1, ``localhost``) unless ``allow_remote_bind`` is set.
    """
    if not remote or allow_remote_bind:
        return None
    host = address.rsplit(":", 1)[0].strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (f"refusing to bind {address}: it is not a loopback address and mosaik's protocol "
            "has no authentication (anyone who reaches the port controls this shard). Bind "
            f"127.0.0.1 and use an SSH tunnel, or pass {ALLOW_REMOTE_BIND} to accept the risk")


def _single(values: dict[str, Any]) -> float:
    if len(values) != 1:
        raise ValueError(f"expected one source per input, got {list(values)}")
    return float(next(iter(values.values())))


class BuildingAgentSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(meta("BuildingAgentSim"))
        self.eids: list[str] = []
        self.index: list[int] = []

    def init(self, sid: str, time_resolution: float = 1.0, built: Any = None,
             scenario_path: str | None = None, run_dir: str | None = None,
             start_step: int = 0, checkpoint_every: int = 0) -> dict:
        if built is None:
            if scenario_path is None:
                raise ValueError("BuildingAgentSim needs built= or scenario_path=")
            built = load_shard_scenario(scenario_path)
        self.built = built
        self.outputs: dict[str, dict[str, float]] = {}
        self.checkpoints = Checkpoints(run_dir, start_step, checkpoint_every,
                                       built.scenario.time.steps)
        return self.meta

    def create(self, num: int, model: str, index: int = 0) -> list[dict]:
        start = int(index)
        out = []
        for i in range(start, start + num):
            eid = self.built.names[i]
            self.eids.append(eid)
            self.index.append(i)
            out.append({"eid": eid, "type": model})
        return out

    def setup_done(self) -> None:
        from cosim.build import controller_for

        idx = np.asarray(self.index)
        self.params = self.built.setup.params.select(idx)
        self.controller = controller_for(self.built, idx)
        self.state = FleetState.initial(self.params, self.built.setup.initial_soc_fraction)
        self.dt_h = self.built.setup.dt_h
        self.component = f"agents-{self.index[0]:06d}"  # one state file per shard
        if self.checkpoints.start_step:
            self._restore(self.checkpoints.load(self.component))

    def _snapshot(self) -> dict[str, np.ndarray]:
        snap = {"backlog_kwh": self.state.backlog_kwh.copy(), "soc_kwh": self.state.soc_kwh.copy()}
        if hasattr(self.controller, "snapshot"):
            snap.update({f"controller_{k}": v for k, v in self.controller.snapshot().items()})
        return snap

    def _restore(self, snap: dict[str, np.ndarray]) -> None:
        backlog = np.array(snap["backlog_kwh"], dtype=np.float64)
        if backlog.shape != (len(self.eids),):
            raise ValueError(f"{self.component}: saved state of {backlog.shape[0]} buildings, "
                             f"this shard has {len(self.eids)}")
        self.state = FleetState(backlog, np.array(snap["soc_kwh"], dtype=np.float64))
        if hasattr(self.controller, "restore"):
            self.controller.restore({k.removeprefix("controller_"): v for k, v in snap.items()
                                     if k.startswith("controller_")})

    def _column(self, inputs: dict, attr: str) -> np.ndarray:
        values = []
        for e in self.eids:
            given = inputs[e]
            if attr in given:
                values.append(_single(given[attr]))
            else:  # the bundled 'exogenous' dict of ProfileSim
                values.append(float(next(iter(given["exogenous"].values()))[attr]))
        return np.array(values)

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        cols = {a: self._column(inputs, a) for a in EXOGENOUS + ("lambda", "mu", "nu")}
        hour = cols["hour_of_day"][0]
        obs = fleet_observation(self.params, self.state, cols["base_demand_kwh"],
                                cols["solar_w_per_kw"], cols["price_per_kwh"], hour,
                                cols["lambda"], cols["nu"], self.dt_h)
        act = np.asarray(self.controller.act(obs), dtype=np.float64)
        self.state, r = step_fleet(self.params, self.state, cols["base_demand_kwh"],
                                   cols["solar_w_per_kw"], cols["price_per_kwh"],
                                   act[:, 0], act[:, 1], self.dt_h)
        values = {name: getattr(r, name if name != "price" else "price_per_kwh")
                  for name in BUILDING_RESULTS}
        values["r2_kwh"] = r.served_kwh - r.demand_kwh
        values["p_kw"] = r.net_load_kw(self.dt_h)
        values["lambda"], values["mu"], values["nu"] = cols["lambda"], cols["mu"], cols["nu"]
        self.outputs = {e: {k: float(v[j]) for k, v in values.items()}
                        for j, e in enumerate(self.eids)}
        for out in self.outputs.values():
            out["record"] = {k: out[k] for k in RECORD}
        self.checkpoints.after_step(time, self.component, self._snapshot)
        return time + 1

    def get_data(self, outputs: dict) -> dict:
        return {eid: {a: self.outputs[eid][a] for a in attrs} for eid, attrs in outputs.items()}

    def configure(self, args: dict) -> None:
        """Command-line arguments (parsed by mosaik_api_v3), checked before any bind."""
        refusal = bind_refusal(str(args.get("HOST:PORT", "")), bool(args.get("--remote")),
                               bool(args.get(ALLOW_REMOTE_BIND)))
        if refusal:
            print(f"error: {refusal}", file=sys.stderr)
            raise SystemExit(2)
        if args.get("--remote") and args.get(ALLOW_REMOTE_BIND):
            print(f"warning: binding {args.get('HOST:PORT')} with no authentication: anyone "
                  "who reaches this port can drive this shard and name files for it to read",
                  file=sys.stderr)


def main() -> int:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    return mosaik_api_v3.start_simulation(BuildingAgentSim(), "fleetcosim BuildingAgentSim",
                                          extra_options=_EXTRA_OPTIONS, configure_logging=False)


if __name__ == "__main__":
    sys.exit(main())
