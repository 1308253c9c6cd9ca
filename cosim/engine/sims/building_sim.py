"""FleetSim: a shard of the fleet (buildings plus controller) as one mosaik entity.

One ``step`` runs ``agents.fleet.runner.FleetLoop`` (the fleet engine) for all the
shard's buildings: one forward pass per policy class, exogenous data read from
the built setup, multipliers as arrays from the duals simulator. In-process it
receives the built run; as its own process it builds its slice from the resolved
scenario file: started by the run (mosaik "cmd" mode), or started by hand and listening
for the run (``sharding.mode: connect``, mosaik's "connect" mode; :func:`serve`)::

    cosim shard HOST:PORT
    python -m cosim.engine.sims.building_sim HOST:PORT --remote   # the same, bare

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
import threading
import time
from typing import TYPE_CHECKING, Any

import mosaik_api_v3
import numpy as np
from numpy.typing import NDArray

from agents.fleet.records import VALUE_COLUMNS
from cosim.engine.checkpoint import Checkpoints, shard_component
from cosim.engine.sims.meta import MULTIPLIERS, meta
from grid_models.errors import InputError, RunError

if TYPE_CHECKING:
    from mosaik_api_v3.types import CreateResult, InputData, Meta, OutputData, OutputRequest

    from cosim.scenario.build import Built

RECORD = VALUE_COLUMNS

#: Largest scenario file a shard reads (a resolved scenario is a few kB to a few MB).
MAX_SHARD_SCENARIO_BYTES = 16 * 2**20
ALLOW_REMOTE_BIND = "--allow-remote-bind"
_EXTRA_OPTIONS = [
    f"{ALLOW_REMOTE_BIND}  with --remote: bind a non-loopback address (there is no "
    "authentication; prefer an SSH tunnel)",
]
LOOPBACK_NAMES = frozenset({"localhost"})


class ShardScenarioError(InputError, ValueError):
    """A scenario file a shard cannot use (the message names the path, never content)."""


def load_shard_scenario(path: str | os.PathLike[str]) -> Built:
    """Build a shard's fleet from a resolved scenario file.

    A file that is missing, not a regular file, too large, not a scenario or not
    buildable raises :class:`ShardScenarioError` naming the path and a generic reason:
    a shard may be driven by whoever reaches its port, so no error may carry the
    file's contents (YAML errors quote lines, validation errors quote values and keys).
    """
    from cosim.scenario.build import build
    from cosim.scenario.errors import ScenarioError
    from cosim.scenario.loader import load_scenario

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


def fleet_eid(start: int) -> str:
    """The entity id of the shard whose first building has index ``start``."""
    return f"Fleet-{start:06d}"


def shard_start(full_id: str) -> int:
    """The first building index of a shard from its full entity id (``Sim-0.Fleet-000123``)."""
    return int(full_id.rsplit("Fleet-", 1)[1])


def as_wire(values: NDArray[np.float64], remote: bool) -> NDArray[np.float64] | list[float]:
    """Arrays travel as they are in-process and as lists over mosaik's socket (JSON)."""
    return values.tolist() if remote else values


class FleetSim(mosaik_api_v3.Simulator):
    """A shard of the fleet as one mosaik entity that moves arrays (``Fleet``).

    Steps ``agents.fleet.runner.FleetLoop`` (the one fleet engine) for its buildings, with
    the exogenous data read inside and the multipliers from the duals simulator.
    ``Building`` entities expose single buildings to third-party simulators.
    """

    def __init__(self) -> None:
        # mosaik_api_v3 leaves Simulator.__init__ unannotated
        super().__init__(meta("FleetSim"))  # type: ignore[no-untyped-call]
        self.start = -1
        self.count = 0
        self.attached: dict[str, int] = {}  # Building entity id -> position in the shard

    # mosaik passes a simulator's own parameters as keywords; its base class declares them
    # as **sim_params (and **model_params in create), which a simulator names instead
    def init(self, sid: str, time_resolution: float = 1.0,  # type: ignore[override]
             built: Built | None = None, scenario_path: str | None = None,
             run_dir: str | None = None, start_step: int = 0,
             checkpoint_every: int = 0) -> Meta:
        """Take the built run (in-process) or build it from ``scenario_path`` (a shard process).

        Raises ``ValueError`` when neither is given.
        """
        self.remote = built is None  # a cmd-mode or connected shard: lists on the wire
        if built is None:
            if scenario_path is None:
                raise ValueError("FleetSim needs built= or scenario_path=")
            built = load_shard_scenario(scenario_path)
        self.built = built
        self.checkpoints = Checkpoints(run_dir, start_step, checkpoint_every,
                                       built.scenario.time.steps)
        self.values: dict[str, NDArray[np.float64]] = {}
        return self.meta

    def create(self, num: int, model: str,  # type: ignore[override]
               index: int = 0, count: int | None = None,
               building: str | None = None) -> list[CreateResult]:
        """Create the shard's ``Fleet`` entity, or a ``Building`` entity for one of its buildings.

        ``index`` and ``count`` place the shard in the fleet (count None: to the end).
        Raises ``ValueError`` for a second ``Fleet``, a ``Building`` before the ``Fleet`` or
        a building not in this shard.
        """
        if model == "Building":
            if self.start < 0:
                raise ValueError("create the shard's Fleet entity before its Buildings")
            names = self.built.names[self.start:self.start + self.count]
            if building not in names:
                raise ValueError(f"building {building!r} is not in this shard "
                                 f"({names[0]}..{names[-1]})")
            assert building is not None  # it is one of the names
            self.attached[building] = names.index(building)
            return [{"eid": building, "type": model}]
        if num != 1 or self.start >= 0:
            raise ValueError("a FleetSim holds one Fleet entity (one shard)")
        self.start = int(index)
        self.count = int(count) if count is not None else self.built.n - self.start
        return [{"eid": fleet_eid(self.start), "type": model}]

    def setup_done(self) -> None:
        """Build the shard's fleet loop and restore its checkpoint when resuming.

        The whole fleet's shard runs ``built.controller`` itself (the object the plain
        engine runs, also one given from Python); see ``cosim.scenario.build.shard_controller``.
        """
        from agents.fleet.runner import FleetLoop
        from cosim.scenario.build import shard_controller

        idx = np.arange(self.start, self.start + self.count)
        self.loop = FleetLoop(self.built.setup.select(idx), shard_controller(self.built, idx),
                              duals=None)
        self.component = shard_component(self.start)  # one state file per shard
        start = self.checkpoints.start_step
        if start:
            self.loop.restore(self.checkpoints.load(self.component))
        self.loop.t = start

    def step(self, time: int, inputs: InputData, max_advance: int) -> int | None:
        """Step the shard's buildings with the step's multipliers and extra demand (kWh).

        Extra demand arrives on ``Building`` entities; the shard's state is saved at checkpoints.
        """
        multipliers, extra = self._inputs(inputs)
        self._step_fleet(time, multipliers, extra)
        return time + 1

    def _inputs(self, inputs: InputData) -> tuple[tuple[NDArray[np.float64], ...],
                                                  NDArray[np.float64] | None]:
        """The step's multipliers (this shard's part) and extra demand per building (kWh)."""
        fleet = inputs.get(fleet_eid(self.start), {})
        part = slice(self.start, self.start + self.count)
        multipliers = tuple(np.asarray(next(iter(fleet[m].values())), dtype=np.float64)[part]
                            for m in MULTIPLIERS)
        extra = None
        for eid, attrs in inputs.items():
            if eid in self.attached and "extra_demand_kwh" in attrs:
                if extra is None:
                    extra = np.zeros(self.count)
                extra[self.attached[eid]] += sum(float(v) for v in
                                                 attrs["extra_demand_kwh"].values())
        return multipliers, extra

    def _step_fleet(self, time: int, multipliers: tuple[NDArray[np.float64], ...],
                    extra: NDArray[np.float64] | None) -> None:
        """One step of the fleet engine, then the checkpoint of its run step."""
        self.values = self.loop.step(multipliers, extra)
        run_step = self.checkpoints.start_step + time
        self.checkpoints.after_step(run_step, self.component, self.loop.snapshot)

    def finalize(self) -> None:
        """At the run's end: write what a planning controller decided (``decisions/``)."""
        from cosim.results.decisions import write_decisions

        loop = getattr(self, "loop", None)
        if loop is not None and self.checkpoints.run_dir is not None \
                and loop.t >= self.built.setup.n_steps:
            write_decisions(self.checkpoints.run_dir, loop.controller)

    def get_data(self, outputs: OutputRequest) -> OutputData:
        """The step's values: one float per ``Building`` attribute, arrays per ``Fleet`` one.

        The ``record`` attribute carries every record column and the shard's first index;
        arrays go as lists over a socket.
        """
        data: dict[str, dict[str, Any]] = {}  # Any: mosaik's OutputData values
        for eid, attrs in outputs.items():
            if eid in self.attached:
                j = self.attached[eid]
                data[eid] = {a: float(self.values[a][j]) for a in attrs}
                continue
            out: dict[str, Any] = {}
            for a in attrs:
                if a == "record":
                    out[a] = {"index": self.start,
                              **{c: as_wire(self.values[c], self.remote) for c in RECORD}}
                else:
                    out[a] = as_wire(self.values[a], self.remote)
            data[eid] = out
        return data

    def configure(self, args: dict[str, Any]) -> None:  # Any: docopt's parsed arguments
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


#: How often a shard process checks that the run that started it is still alive, s.
PARENT_CHECK_S = 1.0


def exit_when_orphaned(parent_pid: int, check_s: float = PARENT_CHECK_S) -> threading.Thread:
    """Exit this process once its parent is gone (a run killed with SIGKILL cannot stop
    the shard processes it started; without this they would wait on their socket for
    ever). A daemon thread polls ``os.getppid()``; the parent's death re-parents us.
    Only for shards the run started ("cmd"); a ``--remote`` shard outlives its shell."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(check_s)
        os._exit(3)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


class ShardServeError(InputError, ValueError):
    """``cosim shard`` was given an address it cannot or must not listen at."""


class ShardWaitError(RunError, RuntimeError):
    """``cosim shard``: no run connected within its ``--timeout``."""


def listen_address(address: str, allow_remote_bind: bool) -> tuple[str, int]:
    """The host and port of ``HOST:PORT`` to listen at (:func:`bind_refusal` applies).

    Raises :class:`ShardServeError` for a malformed address, a port outside 1..65535 or a
    non-loopback host without ``allow_remote_bind``.
    """
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ShardServeError(f"{address!r}: give HOST:PORT, e.g. 127.0.0.1:5678 (a port in "
                              "1..65535)")
    refusal = bind_refusal(address, remote=True, allow_remote_bind=allow_remote_bind)
    if refusal:
        raise ShardServeError(refusal)
    return host.strip("[]"), int(port)


def serve(address: str, *, timeout_s: float, allow_remote_bind: bool = False) -> None:
    """Listen at ``address`` for one run (``sharding.mode: connect``), serve it a shard, and
    return when the run ends (mosaik's ``stop``, or its connection closed).

    The run tells the shard which resolved scenario file to read (at that path on this
    host) and which slice of the fleet it holds. Raises :class:`ShardServeError` for an
    address it cannot listen at, :class:`ShardScenarioError` for a scenario file it cannot
    use, and :class:`ShardWaitError` when no run connected within ``timeout_s``.
    """
    import asyncio

    from loguru import logger

    host, port = listen_address(address, allow_remote_bind)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if allow_remote_bind and bind_refusal(address, True, False) is not None:
        print(f"warning: binding {address} with no authentication: anyone who reaches this "
              "port can drive this shard and name files for it to read", file=sys.stderr)
    asyncio.run(_serve_one_run(FleetSim(), address, host, port, timeout_s))


#: The line a listening shard prints to stderr once it accepts connections (a start script
#: may wait for it; a probe connection would be taken for the run's).
LISTENING = "shard: listening at"


async def _serve_one_run(sim: FleetSim, address: str, host: str, port: int,
                         timeout_s: float) -> None:
    """mosaik_api_v3's ``run_as_server``, with its failures told apart (binding, waiting)
    and :data:`LISTENING` printed once it listens."""
    import asyncio

    from mosaik_api_v3.connection import Channel

    runs: asyncio.Queue[Channel] = asyncio.Queue()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        runs.put_nowait(Channel(reader, writer))

    try:
        server = await asyncio.start_server(connected, host, port)
    except OSError as exc:  # in use, or not an address of this host
        raise ShardServeError(f"cannot listen at {address}: "
                              f"{exc.strerror or exc}") from None
    print(f"{LISTENING} {address} for one run with sharding.mode connect (waiting up to "
          f"{timeout_s:g} s); it exits when that run ends", file=sys.stderr, flush=True)
    try:
        channel = await asyncio.wait_for(runs.get(), timeout_s)
    except asyncio.TimeoutError:
        raise ShardWaitError(f"no run connected to {address} within {timeout_s:g} s (start "
                             "the run with sharding.mode connect, or give a longer "
                             "--timeout)") from None
    finally:
        server.close()
    try:
        await mosaik_api_v3.run_simulator(channel, sim, api_compliant=True)
    except ConnectionError:  # the run went away mid-call: nothing more to serve
        pass
    finally:
        await channel.close()  # type: ignore[no-untyped-call]  # mosaik_api_v3 leaves it unannotated


def main() -> int:
    """Serve a FleetSim shard over mosaik's socket; the exit code of the simulation."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if not {"-r", "--remote"} & set(sys.argv[1:]):  # cmd mode: the run started us
        exit_when_orphaned(os.getppid())
    return mosaik_api_v3.start_simulation(FleetSim(), "fleetcosim FleetSim",
                                          extra_options=_EXTRA_OPTIONS, configure_logging=False)


if __name__ == "__main__":
    sys.exit(main())
