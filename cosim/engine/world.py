"""The mosaik World of a scenario (docs/architecture.md).

    FleetSim.Fleet (one per shard) --grid_kwh, r2_kwh (arrays)------> ConsensusSim.Duals
    ConsensusSim.Duals --lambda, mu, nu, lambda_eff (time-shifted)--> FleetSim.Fleet
    FleetSim.Fleet --p_kw (array)-----------------------------------> GridSim.Grid
    GridSim.Grid --constraint_measured, constraint_sign (grid constraints)--> ConsensusSim.Duals
    ConsensusSim.Duals --constraints (grid constraints)--------------> Collector.Monitor
    FleetSim.Fleet --record (arrays)--, GridSim.Grid --result-------> Collector.Monitor
                                                                       -> run directory

Entities are fleet-level and carry numpy arrays (lists between processes): one
``Fleet`` entity per shard, not one per building, so mosaik routes a handful of
connections per step whatever the fleet's size. Exogenous data are read inside
the fleet simulator and the feeder's background inside the grid simulator. The
shards run in-process, each in its own process started by mosaik's "cmd" mode on
loopback, or each in a process already listening at its ``sharding.connect`` address
(mosaik's "connect" mode: ``cosim shard HOST:PORT``, maybe on another host).
Third-party simulators attach to one building through a ``FleetSim.Building`` entity
(``run_world(extend=...)``, ``Handles.building``).

With ``controller.kind: remote`` the fleet is one ``ControlledFleetSim.Fleet`` in a group
with the user's controller process (``ControllerSim.Controller``, mosaik "cmd" or
"connect"): ``observation`` to it and ``actions`` back in the same step (a weak
connection), watched by :class:`AnswerWatchdog` (docs/controllers.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mosaik
import numpy as np

from agents.control.contract import ControllerError
from cosim.engine.sims.meta import CONSTRAINT_FLOWS, MULTIPLIERS
from cosim.results.writer import RunWriter
from cosim.scenario.build import Built
from grid_models.errors import RunError

if TYPE_CHECKING:
    from cosim.scenario.fleet import ShardingConfig

SIM_MODULES = {
    "FleetSim": "cosim.engine.sims.building_sim:FleetSim",
    "ConsensusSim": "cosim.engine.sims.consensus_sim:ConsensusSim",
    "GridSim": "cosim.engine.sims.grid_sim:GridSim",
    "Collector": "cosim.engine.sims.collector:Collector",
}


def _quiet_logging() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def shard_command(executable: str = sys.executable) -> str:
    """The "cmd" of a FleetSim shard process, for mosaik's CmdStarter.

    ``-I`` (isolated mode) keeps the working directory (and PYTHON* variables and the
    user's site-packages) off the shard's ``sys.path``: a shard imports only the
    installed project, never an ``agents/`` or ``cosim/`` lying in the directory the
    run was started from. The interpreter path is shell-quoted (the starter is told to
    split POSIX-style, see :data:`SHARD_STARTER`) and its ``%`` escaped for mosaik's
    ``%(addr)s`` substitution, so paths with spaces work.
    """
    exe = shlex.quote(executable).replace("%", "%%")
    return f"{exe} -I -m cosim.engine.sims.building_sim %(addr)s"


#: mosaik 3.6's CmdStarter splits the command with ``shlex.split(cmd, posix=...)`` and
#: defaults to ``posix = (os.name == "nt")``, i.e. non-POSIX splitting on Linux, which
#: keeps quotes inside the arguments; ask for POSIX splitting where it applies.
SHARD_STARTER = {"posix": sys.platform != "win32"}

#: Seconds a cmd- or connect-mode shard has to answer mosaik's ``init`` call (mosaik's
#: default: 10).
#: A shard builds its slice from the resolved scenario inside ``init``: a few seconds at
#: 10,000 homes, over 10 s at 100,000 on a busy machine (scenarios/hv_mv_100000.yaml).
SHARD_INIT_S = 300.0


def shard_starters(sharding: ShardingConfig) -> dict[str, dict[str, Any]]:
    """mosaik's sim_config entries of the shard processes: one "cmd" entry for every
    cmd-mode shard, one "connect" entry per connect-mode shard
    (:func:`connected_shard_name`); none in-process."""
    if sharding.mode == "cmd":
        return {"FleetShard": {"cmd": shard_command(), **SHARD_STARTER}}
    if sharding.mode == "connect":
        assert sharding.connect is not None  # ShardingConfig: one address per shard
        return {connected_shard_name(i): {"connect": address}
                for i, address in enumerate(sharding.connect)}
    return {}


class WatchedConnect:
    """mosaik's "connect" starter for one shard, keeping what :class:`ShardWatch` needs to
    tell a connection the shard closed mid-run from one closed at the run's end.

    mosaik (3.6 with mosaik_api_v3 3.0) never answers a call sent after the other end
    closed the connection, so a shard process that dies between two steps would hang the
    run for ever; the watch fails it instead. Made into a mosaik ``Starter`` by
    :func:`_as_mosaik_starter` (mosaik is imported only when a World is built).
    """

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.address, self.host, self.port = address, host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.stopping = False

    def closed_by_shard(self) -> bool:
        """The shard closed its connection (an end of stream, or a reset when it ended with
        a request unread) while mosaik had not told it to stop."""
        reader = self.reader
        return reader is not None and not self.stopping and \
            (reader.at_eof() or reader.exception() is not None)


def _as_mosaik_starter(watched: WatchedConnect) -> Any:
    """A mosaik ``ConnectStarter`` that connects as mosaik does and records the stream and
    mosaik's ``stop`` of the shard in ``watched``."""
    from mosaik.exceptions import SimulationError
    from mosaik.proxies import RemoteProxy
    from mosaik.starters import ConnectStarter
    from mosaik_api_v3.connection import Channel, EndOfRequests

    class ResetAwareChannel(Channel):
        """mosaik_api_v3's Channel ends its calls in flight on an end of stream only; a reset
        (a process killed with a request unread) left them waiting for ever."""

        async def _receive_forever(self) -> None:
            try:
                await super()._receive_forever()  # type: ignore[no-untyped-call]
            except ConnectionError:
                eof = asyncio.IncompleteReadError(b"", None)
                for future in self._outgoing_request_futures.values():
                    if not future.done():
                        future.set_exception(eof)
                self._incoming_requests.put_nowait(EndOfRequests())

    class StopRecordingProxy(RemoteProxy):
        async def stop(self) -> None:
            watched.stopping = True
            try:
                await super().stop()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the shard has gone already: nothing left to stop

    class Starter(ConnectStarter):
        async def start(self, sim_id: str, mosaik_remote: Any, mosaik_config: Any) -> Any:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except (ConnectionError, OSError):  # mosaik's own message and type
                raise SimulationError(f'Simulator "{sim_id}" could not be started: Could '
                                      f'not connect to "{self.host}:{self.port}"') from None
            watched.reader = reader
            return StopRecordingProxy(ResetAwareChannel(reader, writer, name=sim_id),
                                      mosaik_remote)

    return Starter(watched.host, watched.port)


class RunWatch(ABC):
    """A thread that polls every ``POLL_S`` seconds whether the run must fail
    (:meth:`failed`, for a subclass) and then cancels the World's run (:func:`_cancel_all`)
    from outside its event loop, which may be waiting on a process that will never answer."""

    POLL_S = 0.2

    def __init__(self, world: mosaik.World, name: str) -> None:
        self.world = world
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @abstractmethod
    def failed(self) -> bool:
        """Whether the run must fail now (the subclass records why)."""

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            if self.failed():
                loop = self.world.loop
                loop.call_soon_threadsafe(_cancel_all, loop)
                return


class ShardWatch(RunWatch):
    """Fails a run whose connect-mode shard closed its connection mid-run (its process
    ended, its host went down cleanly), as :class:`AnswerWatchdog` does for a remote
    controller."""

    def __init__(self, world: mosaik.World, shards: list[WatchedConnect]) -> None:
        super().__init__(world, "shard-watch")
        self.shards = shards
        self.lost: int | None = None  # the index of the shard that closed its connection

    def closed(self) -> int | None:
        """The index of a shard that has closed its connection (the first), or None."""
        return next((i for i, shard in enumerate(self.shards) if shard.closed_by_shard()),
                    None)

    def failed(self) -> bool:
        """A shard has closed its connection (recorded in ``lost``)."""
        lost = self.closed()
        if lost is not None:
            self.lost = lost
        return lost is not None

    def failure(self, steps_done: int) -> str | None:
        """The message of a run that failed because a shard closed its connection (the
        watch stopped it, or mosaik saw it first), else None."""
        if self.lost is None:
            self.lost = self.closed()
        if self.lost is None:
            return None
        return (f"sharding.connect: shard {self.lost}'s process at "
                f"{self.shards[self.lost].address!r} closed its connection during the run "
                f"(after {steps_done} steps were written; did it end, or its host?); its own "
                "output says why")


def connected_shard_name(i: int) -> str:
    """The sim_config name of the ``i``-th connect-mode shard (mosaik's sim id: name-0)."""
    return f"FleetShard{i}"


class ShardConnectError(RunError, RuntimeError):
    """A connect-mode shard could not be reached or set up (the message names
    ``sharding.connect``, the shard and its address)."""


def start_connected_shard(world: mosaik.World, i: int, address: str, scenario_path: str,
                          ckpt: dict[str, Any]) -> Any:
    """Connect to the ``i``-th shard process listening at ``address`` and have it build its
    slice from ``scenario_path`` (read on the shard's host, at the same path).

    The scenario file and the run directory (checkpoints, decisions) go as absolute paths:
    the shard's working directory is its own. Raises :class:`ShardConnectError` when
    nothing listens there, or the shard closed its connection or did not answer during
    ``init`` (mosaik reports those with ``SystemExit``).
    """
    scenario_path = os.path.abspath(scenario_path)
    ckpt = {**ckpt, "run_dir": os.path.abspath(ckpt["run_dir"])}
    try:
        return world.start(connected_shard_name(i), scenario_path=scenario_path, **ckpt)
    except (Exception, SystemExit) as exc:  # mosaik's SimulationError, ScenarioError, exits
        raise ShardConnectError(shard_connect_failure(i, address, scenario_path, exc)) from exc


def shard_connect_failure(i: int, address: str, scenario_path: str,
                          exc: BaseException) -> str:
    """The message of a connect-mode shard that could not be reached or set up."""
    from mosaik.exceptions import SimulationError

    what = str(exc) or type(exc).__name__
    where = f"sharding.connect: shard {i}'s process at {address!r}"
    if isinstance(exc, SimulationError):  # mosaik's ConnectStarter: the connection failed
        return (f"{where} could not be reached (nothing listens there?): start it with "
                f"`cosim shard {address}` on its host (through an SSH tunnel when it is "
                "remote) before the run")
    return (f"{where} failed while it was set up ({what}); its own output says why (it "
            f"reads the resolved scenario at {scenario_path!r} on its host: the same path "
            "must hold that file there)")


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous (start, count) of each shard."""
    parts = np.array_split(np.arange(n), shards)
    return [(int(p[0]), len(p)) for p in parts if len(p)]


def run_world(built: Built, writer: RunWriter, *, scenario_path: Path | None = None,
              progress: bool = True, start_step: int = 0,
              extend: Callable[[Handles], None] | None = None,
              extra_sims: dict[str, dict[str, Any]] | None = None,
              grid_solve: str = "per_step") -> None:
    """Build the World, run the steps from ``start_step`` to the end, shut it down.

    mosaik's time 0 is the run's step ``start_step``: after ``--resume`` every
    simulator adds it to mosaik's time and starts from the state saved with
    that checkpoint in the run directory. ``grid_solve``: "batch" (power flows solved
    together up to each flush; only when nothing reads the grid within the run) or
    "per_step". ``extend`` may add simulators of its own
    and connect them (e.g. to one building: ``handles.building("B3")``); their mosaik
    sim_config entries come in ``extra_sims``.
    """
    sc = built.scenario
    _quiet_logging()
    sim_config: dict[str, Any] = {name: {"python": path} for name, path in SIM_MODULES.items()}
    clash = sorted(set(extra_sims or {}) & set(sim_config))
    if clash:
        raise ValueError(f"extra simulators may not reuse the names {clash}")
    sim_config.update(extra_sims or {})
    remote = remote_starter(built) if sc.controller.kind == "remote" else None
    if remote is not None:
        sim_config.update({"ControlledFleetSim": {"python": CONTROLLED_FLEET},
                           "RemoteController": remote})
    shard_processes = sc.sharding.mode in ("cmd", "connect")
    if shard_processes and scenario_path is None:
        raise ValueError(f"{sc.sharding.mode}-mode shards need the resolved scenario file")
    watched: list[WatchedConnect] = []  # connect-mode shards: their connections watched
    for name, entry in shard_starters(sc.sharding).items():
        if "connect" in entry:
            watched.append(WatchedConnect(entry["connect"]))
            sim_config[name] = _as_mosaik_starter(watched[-1])
        else:
            sim_config[name] = entry
    mosaik_config: dict[str, Any] = {"start_timeout": SHARD_INIT_S} if shard_processes else {}
    world = mosaik.World(sim_config, mosaik_config=mosaik_config,  # type: ignore[arg-type]
                         time_resolution=3600.0 * sc.time.step_h,
                         skip_greetings=True, configure_logging=False, cache=False)
    watchdog = None
    shard_watch = ShardWatch(world, watched) if watched else None
    try:
        ckpt = {"run_dir": str(writer.run_dir), "start_step": int(start_step),
                "checkpoint_every": int(writer.flush_every)}
        if shard_watch is not None:
            shard_watch.start()
        if remote is not None:
            assert sc.controller.remote_timeout_s is not None  # filled in for kind remote
            watchdog = AnswerWatchdog(world, sc.controller.remote_timeout_s)
            watchdog.start()
        try:
            handles = _wire(world, built, writer, shard_processes, scenario_path, ckpt,
                            grid_solve, watchdog)
            if extend is not None:
                extend(handles)
            world.run(until=sc.time.steps - start_step, print_progress=progress,
                      lazy_stepping=False)
            if watchdog is not None and watchdog.watch.waited_s() > 0:
                raise NoAnswer("it gave no answer and mosaik ended the run (the controller "
                               "raised or closed its connection; its own output says why)")
        except BaseException as exc:
            # stopped mid-step (Ctrl-C, SIGTERM, an error): mosaik's simulator tasks are
            # still pending; cancel them, or asyncio prints "Task was destroyed but it is
            # pending!" for each when the loop is closed (with a remote controller or
            # connected shards only the step processes: their connections' own tasks end
            # when World.shutdown stops them, which tells a connected shard to exit)
            if remote is not None or sc.sharding.mode == "connect":
                _end_step_processes(world)
            else:
                _cancel_pending(world.loop)
            if remote is not None and not isinstance(exc, (ControllerError, KeyboardInterrupt)):
                raise remote_failure(sc, exc, watchdog) from exc
            lost = None if shard_watch is None or isinstance(exc, ShardConnectError) else \
                shard_watch.failure(writer.steps_done)
            if lost is not None:
                raise ShardConnectError(lost) from exc
            raise
    finally:
        if watchdog is not None:
            watchdog.stop()
        if shard_watch is not None:
            shard_watch.stop()
        # idempotent: run() already shut down after a normal end; mosaik leaves
        # World.shutdown unannotated
        world.shutdown()  # type: ignore[no-untyped-call]


def _end_step_processes(world: mosaik.World) -> None:
    """After a failed run: end mosaik's per-simulator step processes that the failure left
    pending (else asyncio reports each as "Task was destroyed but it is pending")."""
    if world.loop.is_closed():  # mosaik ended the run itself and closed its loop
        return
    pending = [t for t in asyncio.all_tasks(world.loop)
               if t.get_name().startswith("Runner for") and not t.done()]
    for task in pending:
        task.cancel()
    if pending and not world.loop.is_running():
        world.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


CONTROLLED_FLEET = "cosim.engine.sims.controlled_fleet:ControlledFleetSim"
#: Seconds a started controller process has at least to connect (an interpreter and its
#: imports take a few seconds); ``controller.remote_timeout_s`` when that is longer.
REMOTE_START_S = 60.0


def remote_starter(built: Built) -> Any:
    """mosaik's starter of the controller process (``controller.remote_cmd``: "cmd" in the
    project directory, at least :data:`REMOTE_START_S` to connect; ``remote_connect``:
    "connect")."""
    from mosaik.starters import CmdStarter, ConnectStarter

    from agents.fleet.paths import REPO_ROOT

    ctl = built.scenario.controller
    if ctl.remote_connect is not None:
        return ConnectStarter.from_addr_string(ctl.remote_connect)
    assert ctl.remote_cmd is not None  # ControllerConfig: one of the two for kind remote
    assert ctl.remote_timeout_s is not None  # filled in for kind remote
    return CmdStarter(ctl.remote_cmd, cwd=str(REPO_ROOT), posix=SHARD_STARTER["posix"],
                      connect_timeout=max(ctl.remote_timeout_s, REMOTE_START_S))


class AnswerWatchdog(RunWatch):
    """Fails a run whose remote controller does not answer within ``timeout_s``: cancels
    the World's run once the fleet has waited that long."""

    POLL_S = 0.05

    def __init__(self, world: mosaik.World, timeout_s: float) -> None:
        from cosim.engine.sims.controlled_fleet import AnswerWatch

        super().__init__(world, "answer-watchdog")
        self.timeout_s = timeout_s
        self.watch = AnswerWatch()
        self.timed_out_step: int | None = None
        self.setup_timed_out = False
        self._setup_since: float | None = None

    def setting_up(self, on: bool) -> None:
        """The controller process is being started, connected and set up (``on``), or done.

        Set-up may take :data:`REMOTE_START_S` (or the timeout when longer)."""
        self._setup_since = time.monotonic() if on else None

    def failed(self) -> bool:
        """Set-up or an answer has taken too long (recorded in ``setup_timed_out`` or
        ``timed_out_step``)."""
        since = self._setup_since
        if since is not None and time.monotonic() - since > max(self.timeout_s,
                                                                 REMOTE_START_S):
            self.setup_timed_out = True
        elif self.watch.waited_s() > self.timeout_s:
            self.timed_out_step = self.watch.step
        else:
            return False
        return True


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the World's run (its task, which cancels the simulators' step processes), and
    leave the connections' tasks to ``World.shutdown`` (which stops the processes)."""
    tasks = asyncio.all_tasks(loop)
    runs = [t for t in tasks if getattr(t.get_coro(), "__qualname__", "") in WORLD_CALLS]
    for task in runs or tasks:
        task.cancel()


#: The World's calls the watchdog cancels (what the main thread waits on).
WORLD_CALLS = ("AsyncWorld.run", "AsyncWorld.start", "AsyncModelMock.create")


class NoAnswer(RunError, RuntimeError):
    """The World ended while the fleet still waited for the remote controller's answer."""


def remote_failure(sc: Any, exc: BaseException, watchdog: AnswerWatchdog | None) -> ControllerError:
    """The error of a run whose remote controller timed out, failed or could not be reached."""
    ctl = sc.controller
    how = f"remote_cmd {ctl.remote_cmd!r}" if ctl.remote_cmd else \
        f"remote_connect {ctl.remote_connect!r}"
    if watchdog is not None and watchdog.setup_timed_out:
        return ControllerError(f"controller.remote_timeout_s: the remote controller ({how}) was "
                               "not connected and set up within "
                               f"{max(watchdog.timeout_s, REMOTE_START_S):g} s; the run was "
                               "stopped")
    if watchdog is not None and watchdog.timed_out_step is not None:
        return ControllerError(f"controller.remote_timeout_s: the remote controller ({how}) did "
                               f"not answer step {watchdog.timed_out_step} within "
                               f"{watchdog.timeout_s:g} s; the run was stopped")
    step = watchdog.watch.step if watchdog is not None else None
    where = f"at step {step}" if step is not None else "before the first step"
    what = str(exc) if isinstance(exc, NoAnswer) else f"{type(exc).__name__}: {exc}"
    return ControllerError(f"the remote controller ({how}) failed {where}: {what}")


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still pending on ``loop`` (not running) and let them finish."""
    if loop.is_closed() or loop.is_running():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


@dataclass
class Handles:
    """The World's entities, for a caller that adds its own simulators (``extend=``)."""

    world: mosaik.World
    fleet_sims: list[tuple[int, int, Any]]  # (first index, count, FleetSim model factory)
    names: list[str]

    def building(self, building_id: str) -> Any:
        """A ``Building`` entity of the shard that holds ``building_id``: connect a
        third-party simulator to its ``extra_demand_kwh`` input or read its outputs."""
        if building_id not in self.names:
            raise ValueError(f"unknown building {building_id!r}")
        i = self.names.index(building_id)
        for start, count, sim in self.fleet_sims:
            if start <= i < start + count:
                return sim.Building.create(1, building=building_id)[0]
        raise ValueError(f"building {building_id!r} is in no shard")


def _wire(world: mosaik.World, built: Built, writer: RunWriter, shard_processes: bool,
          scenario_path: Path | None, ckpt: dict[str, Any], grid_solve: str,
          watchdog: AnswerWatchdog | None = None) -> Handles:
    start_step = ckpt["start_step"]
    duals = world.start("ConsensusSim", built=built, lists=shard_processes,
                        **ckpt).Duals.create(1)[0]
    # only a shard built without the feeder lacks the duals (cosim.scenario.build.Built)
    assert built.duals is not None
    multipliers = built.duals.state  # restored by ConsensusSim's init on --resume
    lam_eff = multipliers.lam if built.grid_constraints is None else \
        built.grid_constraints.effective_lambda(multipliers.lam)
    initial = {"lambda": multipliers.lam, "mu": multipliers.mu, "nu": multipliers.nu,
               "lambda_eff": lam_eff}
    initial = {k: v.tolist() if shard_processes else v for k, v in initial.items()}
    collector = world.start("Collector", writer=writer, names=built.names,
                            start_step=start_step).Monitor.create(1)[0]
    grid = None
    if built.grid is not None:
        grid = world.start("GridSim", built=built, grid_solve=grid_solve,
                           batch_every=writer.flush_every, **ckpt).Grid.create(1)[0]
        world.connect(grid, collector, "result")
        if built.grid_constraints is not None:
            # same step: the grid solves after the fleet, the duals after the grid; the
            # duals -> fleet connection below is time-shifted, which closes the loop
            world.connect(grid, duals, *CONSTRAINT_FLOWS)
            world.connect(duals, collector, "constraints")
    handles = Handles(world, [], built.names)
    if watchdog is not None:
        _wire_remote(world, built, duals, collector, grid, initial, ckpt, handles, watchdog)
        return handles
    sharding = built.scenario.sharding
    for i, (start, count) in enumerate(shard_bounds(built.n, sharding.shards)):
        if sharding.mode == "connect":
            assert sharding.connect is not None  # ShardingConfig: one address per shard
            sim = start_connected_shard(world, i, sharding.connect[i], str(scenario_path), ckpt)
        elif shard_processes:
            sim = world.start("FleetShard", scenario_path=str(scenario_path), **ckpt)
        else:
            sim = world.start("FleetSim", built=built, **ckpt)
        fleet = sim.Fleet.create(1, index=start, count=count)[0]
        handles.fleet_sims.append((start, count, sim))
        world.connect(fleet, duals, "grid_kwh", "r2_kwh")
        world.connect(duals, fleet, *MULTIPLIERS, time_shifted=True, initial_data=initial)
        world.connect(fleet, collector, "record")
        if grid is not None:
            world.connect(fleet, grid, "p_kw")
    return handles


def _wire_remote(world: mosaik.World, built: Built, duals: Any, collector: Any, grid: Any,
                 initial: dict[str, Any], ckpt: dict[str, Any], handles: Handles,
                 watchdog: AnswerWatchdog) -> None:
    """The fleet and its controller process in a group (a same-time loop), then as a shard."""
    from agents.control.contract import ControllerContext
    from cosim.engine.remote_controller import encode_context

    setup = built.setup
    context = ControllerContext(names=tuple(built.names), params=setup.params, dt_h=setup.dt_h,
                                n_steps=setup.n_steps, limit_kwh=built.limit_kwh,
                                seed=built.scenario.seed)
    with world.group():
        sim = world.start("ControlledFleetSim", built=built, watch=watchdog.watch, **ckpt)
        fleet = sim.Fleet.create(1, index=0, count=built.n)[0]
        watchdog.setting_up(True)
        controller = world.start("RemoteController",
                                 context=encode_context(context)).Controller.create(1)[0]
        watchdog.setting_up(False)
    world.connect(fleet, controller, "observation")
    world.connect(controller, fleet, "actions", weak=True)
    handles.fleet_sims.append((0, built.n, sim))
    world.connect(fleet, duals, "grid_kwh", "r2_kwh")
    world.connect(duals, fleet, *MULTIPLIERS, time_shifted=True, initial_data=initial)
    world.connect(fleet, collector, "record")
    if grid is not None:
        world.connect(fleet, grid, "p_kw")
