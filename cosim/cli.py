"""The `cosim` command line."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grid_models.errors import FleetcosimError, InputError, RunError

if TYPE_CHECKING:  # the command line imports what a command needs when it runs
    from cosim.scenario.build import Built
    from cosim.scenario.model import Scenario


#: Exit status of a command stopped by an :class:`~grid_models.errors.InputError` (the
#: user's input is wrong; also bad arguments) and by a :class:`~grid_models.errors.RunError`
#: (a run failed; also a failed ``compare``/``verify`` check).
EXIT_INPUT = 2
EXIT_RUN = 1


def exit_code(exc: FleetcosimError) -> int:
    """The exit status for ``exc``: the one place that maps the error branches to codes."""
    return EXIT_INPUT if isinstance(exc, InputError) else EXIT_RUN


def _fail(exc: FleetcosimError, lines: Iterable[str] | None = None) -> int:
    """Print ``lines`` (default: the error's message) as ``error:`` lines; its exit code."""
    for line in [str(exc)] if lines is None else lines:
        _error(line)
    return exit_code(exc)


def _demo(args: argparse.Namespace) -> int:
    from cosim.tools.demo import DEMO_SCENARIO

    args.scenario = str(DEMO_SCENARIO)
    args.engine = "mosaik"
    if args.out is None and not args.force:
        from cosim.results.rundir import next_free_dir

        args.out = str(next_free_dir(Path("runs") / "paper_fig1d"))
    code = _run(args)
    if code == 0:
        print("\nThe demo ran the paper's Fig. 1d scenario (scenarios/paper_fig1d.yaml). "
              "Look at the KPI table above,\nreport.html (everything on one page), the "
              "plots in plots/ and kpis.json in the run directory.\nTry: cosim run "
              "scenarios/paper_fig1d.yaml --set duals.mode=independent --out runs/independent")
    return code


#: what ``cosim train`` imports beyond a run: the extra ``train`` (pyproject.toml)
TRAIN_MODULES = ("torch", "stable_baselines3", "gymnasium")


def missing_train_modules() -> list[str]:
    """The modules of the ``train`` extra that this environment lacks."""
    from importlib.util import find_spec

    return [m for m in TRAIN_MODULES if find_spec(m) is None]


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agents.learning.recipe import RecipeError, load_recipe

    missing = missing_train_modules()
    if missing:
        _error(f"cosim train needs the training extra ({', '.join(missing)} not installed): "
               "pip install 'fleetcosim[train]'")
        return EXIT_INPUT

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as exc:
        return _fail(exc)
    classes = args.classes or list(recipe.classes)
    unknown = [c for c in classes if c not in recipe.classes]
    if unknown:
        _error(f"{args.recipe}: classes: unknown class(es) {unknown}; "
               f"the recipe defines {sorted(recipe.classes)}")
        return EXIT_INPUT
    if args.timesteps is not None:
        algo = "sac" if recipe.algorithm == "sac" else "ppo"
        recipe = recipe.model_copy(update={algo: getattr(recipe, algo).model_copy(
            update={"total_timesteps": args.timesteps})})
    from agents.learning.training import total_timesteps, train_class

    out = Path(args.out) if args.out else Path(args.recipe).resolve().parent
    text = Path(args.recipe).read_text()
    for name in classes:
        summary = train_class(recipe, name, out, progress=not args.quiet, recipe_text=text)
        print(f"{name}: trained {total_timesteps(recipe)} steps in {summary['train_s']:.0f} s "
              f"-> {summary['policy']}")
        print(f"  grid kWh/step (nu={summary['response_nu']:g}) "
              f"at lambda={recipe.lambda_range[0]:g}: "
              f"{summary['grid_kwh_at_lambda_min']:.3f}, at lambda={recipe.lambda_range[1]:g}: "
              f"{summary['grid_kwh_at_lambda_max']:.3f} "
              f"(reduction {100 * summary['grid_reduction_lambda']:.1f} %)")
        print(f"  served kWh/step at nu={recipe.nu_range[0]:g}: "
              f"{summary['served_kwh_at_nu_min']:.3f}, at nu={recipe.nu_range[1]:g}: "
              f"{summary['served_kwh_at_nu_max']:.3f}")
        levels = ", ".join(f"{p:g}: {g:.3f}" for p, g in
                           zip(summary["price_levels"], summary["grid_kwh_by_price"], strict=True))
        print(f"  requested grid kWh/step by price input ({levels}); not rising in "
              f"{100 * summary['share_not_rising_with_price']:.1f} % of held-out states")
        if "objective_policy" in summary:
            print(f"  training objective at execution's operating points (discounted return): "
                  f"policy {summary['objective_policy']:.2f}, greedy "
                  f"{summary['objective_greedy']:.2f}, heuristic "
                  f"{summary['objective_heuristic']:.2f}; the policy beats greedy in "
                  f"{100 * summary['policy_beats_greedy']:.0f} % and the heuristic in "
                  f"{100 * summary['policy_beats_heuristic']:.0f} % of episodes")
    return 0


def _scenario_or_exit(args: argparse.Namespace, *,
                      announce_limit: bool = True) -> tuple[Scenario, Built]:
    """Load, override and build a scenario; on error print one line per problem, exit 2.

    ``announce_limit``: print the constraint c and how it was obtained.
    """
    from cosim.engine.run import prepare_scenario
    from cosim.scenario.errors import ScenarioError
    from cosim.scenario.overrides import parse_overrides

    try:
        overrides = parse_overrides(args.set, str(args.scenario))
        sc, built = prepare_scenario(args.scenario, overrides, getattr(args, "steps", None))
    except ScenarioError as exc:
        raise SystemExit(_fail(exc, exc.lines())) from None
    _print_warnings(str(args.scenario), built.warnings)
    if announce_limit:
        print(_limit_text(built))
    return sc, built


def _print_warnings(source: str, warnings: list[tuple[str, str]]) -> None:
    """One ``warning: FILE: field: message`` line per implausible value (stderr); a warning
    never changes the exit code."""
    for path, msg in warnings:
        print(f"warning: {one_line(f'{source}: {path}: {msg}')}", file=sys.stderr)


def _limit_text(built: Built) -> str:
    return f"limit {built.limit_kwh:.3f} kWh per step ({built.limit_basis})"


def _validate(args: argparse.Namespace) -> int:
    sc, built = _scenario_or_exit(args, announce_limit=False)
    grid = built.grid
    feeder = (f"{sc.feeder.source} ({len(grid.powerflow.bus_ids)} buses, backend "
              f"{sc.feeder.backend})") if grid else sc.feeder.source
    print(f"{args.scenario}: valid. {built.n} buildings, {sc.time.steps} steps, feeder "
          f"{feeder}, controller {sc.controller.kind}, duals {sc.duals.mode}, "
          f"{_limit_text(built)}")
    return 0


def _positive_int(text: str) -> int:
    """argparse type of ``--workers``: :func:`cosim.tools.study.execution.parse_workers`
    (exit 2 if bad)."""
    from cosim.tools.study.execution import parse_workers

    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: The signals that stop a run after its current step (a second one stops at once).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_stop_signal(signum: int, _frame: object) -> None:
    """Ctrl-C (SIGINT) or SIGTERM: the run stops after its current step, writes the whole
    steps it holds and says failed with the reason (a second signal stops at once). The
    command exits with 128 + the signal's number."""
    from cosim.results.stop import request_stop

    sig = signal.Signals(signum)
    reason = "interrupted (Ctrl-C)" if sig == signal.SIGINT else f"terminated by signal {sig.name}"
    request_stop(reason, exit_code=128 + int(signum))


def _catch_stop_signals() -> dict[signal.Signals, Any]:
    """Install :func:`_on_stop_signal` for :data:`STOP_SIGNALS`; the handlers it replaced."""
    from cosim.results.stop import clear_stop, stops_at_once

    clear_stop()
    stops_at_once()  # until the engine steps, a signal stops at once
    return {sig: signal.signal(sig, _on_stop_signal) for sig in STOP_SIGNALS}


def _restore_signals(previous: dict[signal.Signals, Any]) -> None:
    from cosim.results.stop import clear_stop

    for sig, handler in previous.items():
        signal.signal(sig, handler)
    clear_stop()


def _run(args: argparse.Namespace) -> int:
    from agents.control.contract import ControllerError
    from cosim.engine.run import execute, resume, run_directory
    from cosim.results.report import summary_table
    from cosim.results.rundir import RunDirError, is_taken, next_free_dir
    from cosim.results.stop import RunStopped
    from cosim.results.writer import RunWriteError
    from cosim.scenario.errors import ScenarioError

    notes: list[str] = []
    if args.resume is not None:
        if args.scenario is not None or args.set or args.steps is not None or args.force:
            print("error: --resume RUN_DIR continues a run with its own scenario.yaml; give "
                  "no scenario, --set, --steps or --force with it", file=sys.stderr)
            return EXIT_INPUT
        out = Path(args.resume)
        print(f"resuming {out}")
    else:
        if args.scenario is None:
            print("error: cosim run: give a scenario file, or --resume RUN_DIR",
                  file=sys.stderr)
            return EXIT_INPUT
        sc, built = _scenario_or_exit(args)
        try:
            out = run_directory(sc, args.out, source=str(args.scenario))
        except RunDirError as exc:
            return _fail(exc)
        if args.out is None and not args.force and is_taken(out):
            # the scenario's own folder holds something (an earlier run): never over it
            free = next_free_dir(out)
            notes.append(f"{out} is not empty (an earlier run?); this run goes to {free} "
                         f"(--force replaces the earlier run, --out names another folder)")
            _print_notes(notes)
            out = free
        print(f"scenario {sc.name}: {built.n} buildings, {sc.time.steps} steps, "
              f"controller {sc.controller.kind}, duals {sc.duals.mode} -> {out}")
    previous = _catch_stop_signals()
    try:
        if args.resume is not None:
            outcome = resume(out, progress=not args.quiet, notes=notes)
            assert outcome.scenario is not None  # cosim.engine.run's outcomes name their scenario
            sc = outcome.scenario
        else:
            outcome = execute(sc, built, out, progress=not args.quiet, force=args.force,
                              engine=args.engine, notes=notes)
    except RunDirError as exc:
        _print_notes(notes)
        return _fail(exc)
    except ScenarioError as exc:  # --resume: the run's scenario.yaml no longer builds
        _print_notes(notes)
        return _fail(exc, exc.lines())
    except RunWriteError as exc:
        _print_notes(notes)
        return _fail(exc, [f"{exc} ({_resume_hint(out)})"])
    except ControllerError as exc:  # the controller broke the contract during the run
        _print_notes(notes)
        print(f"error: {exc}\nthe steps before are kept in {out} (status.json says failed); "
              f"fix the controller, then {_resume_hint(out)}", file=sys.stderr)
        return exit_code(exc)
    except RunError as exc:  # a run that started and failed (e.g. a shard not reachable)
        _print_notes(notes)
        return _fail(exc, [f"{exc} ({_resume_hint(out)})"])
    except OSError as exc:
        _print_notes(notes)
        _error(f"{out}: cannot create the run directory: {exc.strerror or exc}")
        return EXIT_INPUT
    except KeyboardInterrupt as exc:
        _print_notes(notes)
        what = str(exc) or "interrupted"
        print(one_line(f"{what}; whole steps flushed so far are kept in {out}; "
                       f"{_resume_hint(out)}"), file=sys.stderr)
        return exc.exit_code if isinstance(exc, RunStopped) else 130
    finally:
        _restore_signals(previous)
    _print_notes(notes)
    print(summary_table(outcome.kpis))
    print(f"\n{outcome.steps} steps in {outcome.wall_s:.1f} s "
          f"({outcome.steps / max(outcome.wall_s, 1e-9):.0f} steps/s)")
    print(f"run directory: {outcome.run_dir}")
    print(f"  KPIs:  {outcome.run_dir / 'kpis.json'}")
    if sc.output.plots:
        print(f"  plots: {outcome.run_dir / 'plots'}/*.png")
    return 0


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {one_line(note)}", file=sys.stderr)
    notes.clear()


def one_line(text: str) -> str:
    """``text`` with every line break and other control character escaped (``\\n``), so a
    crafted file name cannot start a line of its own (a forged ``error:`` line)."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(text))


def _error(text: str) -> None:
    """Print one ``error:`` line to stderr (:func:`one_line`)."""
    print(f"error: {one_line(text)}", file=sys.stderr)


def _resume_hint(out: Path) -> str:
    """What the run directory ``out`` says after a failure, and how to go on, read from its
    ``status.json`` (never assumed: a full disk may have kept it from being updated)."""
    from cosim.engine.run import SCENARIO_FILE, SETUP_COMPLETE
    from cosim.results.rundir import read_marker

    status = read_marker(out, "run")
    if status is None:
        return (f"no run was recorded in {out} (its marker status.json could not be "
                "written); run the same command again")
    state = status.get("state")
    said = f"status.json says {state}" if state == "failed" else (
        f"status.json could not be updated and still says {state}")
    if status.get("setup", SETUP_COMPLETE) != SETUP_COMPLETE:
        if not (Path(out) / SCENARIO_FILE).is_file():
            return (f"{said} with its set-up unfinished, before scenario.yaml; start it "
                    f"again: cosim run SCENARIO --out {out} --force")
        said += " with its set-up unfinished; --resume starts it again from step 0"
    return f"{said}; continue with: cosim run --resume {out}"


def _study(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cosim.results.rundir import RunDirError, check_output_path
    from cosim.results.stop import RunStopped
    from cosim.results.writer import RunWriteError
    from cosim.scenario.errors import ScenarioError
    from cosim.tools.study.execution import run_study
    from cosim.tools.study.schema import load_study, study_from_args

    out = None
    previous = _catch_stop_signals()
    try:
        if args.sweep or args.variant:  # the target is a scenario file
            study = study_from_args(args.target, args.sweep or [], args.variant or [],
                                    name=Path(args.target).stem)
        else:  # the target is a study file
            study = load_study(args.target)
        if args.engine:
            study.engine = args.engine
        if args.out is not None:
            out = check_output_path(args.out, explicit=True, what="--out")
        else:
            out = Path("runs") / f"study_{study.name}"
            check_output_path(out, explicit=False, what=f"{args.target}: name")
        table = run_study(study, out, steps=args.steps, progress=not args.quiet,
                          force=args.force, workers=args.workers, scheduler=args.scheduler)
    except ScenarioError as exc:
        return _fail(exc, exc.lines())
    except RunDirError as exc:
        return _fail(exc)
    except RunWriteError as exc:
        return _fail(exc, [f"{exc}; run the same command again to continue the study"])
    except KeyboardInterrupt as exc:
        print(f"{str(exc) or 'interrupted'}; the finished runs are kept (study.csv in {out}); "
              "run the same command again to continue the study", file=sys.stderr)
        return exc.exit_code if isinstance(exc, RunStopped) else 130
    finally:
        _restore_signals(previous)
    from cosim.results.html import write_study_report

    try:
        write_study_report(out)
    except OSError as exc:
        _error(f"cannot write {out}/report.html: {exc.strerror or exc}")
        return EXIT_RUN
    print((out / "study.md").read_text())
    figures = [name for name in ("unmet_by_c.png", "lambda_trajectories.png", "grid_vs_c.png",
                                 "grid_hours.png") if (out / name).is_file()]
    print(f"{len(table)} runs -> {out}/" + ", ".join(["study.csv", "study.md", *figures,
                                                      "report.html"]))
    failed = table[table["status"] == "failed"] if "status" in table else table.iloc[:0]
    if len(failed):
        for _, row in failed.iterrows():
            _error(f"run {row['run']} failed: {row.get('note', '')}")
        _error(f"{len(failed)} of {len(table)} runs failed (rows with status 'failed' "
               "in study.csv); the others are complete")
        return EXIT_RUN
    return 0


def _compare(args: argparse.Namespace) -> int:
    from cosim.tools.compare import (
        CompareError,
        compare_runs,
        junit_xml,
        load_tolerance_file,
        merge_options,
        parse_tolerance_options,
    )

    try:
        base = load_tolerance_file(args.tolerances) if args.tolerances else {}
        tol = merge_options(base, parse_tolerance_options(args.atol, "atol"),
                            parse_tolerance_options(args.rtol, "rtol"))
        result = compare_runs(args.run, args.reference, tol, overlap=args.overlap)
    except CompareError as exc:
        return _fail(exc)
    print(result.report(all_checks=args.all))
    if args.junit:
        try:
            Path(args.junit).write_text(junit_xml(result))
        except OSError as exc:
            _error(f"cannot write {args.junit}: {exc.strerror or exc}")
            return EXIT_INPUT
    return 0 if result.ok else EXIT_RUN


def _verify(args: argparse.Namespace) -> int:
    from cosim.results.rundir import RunDirError
    from cosim.tools.verify import verify_run

    steps: int | None
    if args.steps == "all":
        steps = None
    else:
        try:
            steps = int(args.steps)
            if steps < 1:
                raise ValueError
        except ValueError:
            _error(f"--steps {args.steps!r}: give a whole number >= 1 or 'all'")
            return EXIT_INPUT
    try:
        result = verify_run(args.run, steps, every_step=not args.sampled_only)
    except (RunDirError, OSError, ValueError, KeyError) as exc:
        _error(f"{args.run}: cannot verify: {exc}")
        return EXIT_INPUT
    print(result.report())
    return 0 if result.ok else EXIT_RUN


def _shard(args: argparse.Namespace) -> int:
    from cosim.engine.sims.building_sim import serve

    try:
        serve(args.address, allow_remote_bind=args.allow_remote_bind, timeout_s=args.timeout)
    except FleetcosimError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        return 130
    return 0


#: Seconds ``cosim shard`` waits for its run to connect, unless ``--timeout`` says otherwise.
SHARD_WAIT_S = 600

SHARD_HELP = """\
Serve one shard of the fleet to one run whose scenario says sharding.mode: connect and
lists this address in sharding.connect. The shard listens at HOST:PORT until the run
connects (--timeout), builds its slice from the resolved scenario.yaml the run names (read
at that same path on this host: a shared file system, or the file copied there), steps it,
and exits when the run ends. Start one per shard, then the run. mosaik's protocol has no
authentication: listen on loopback and reach a remote shard through an SSH tunnel
(docs/scaling.md)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``cosim`` argument parser: one subcommand per task, each with its options."""
    parser = argparse.ArgumentParser(
        prog="cosim",
        description="Grid-checked distributed control of building fleets.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run scenarios/paper_fig1d.yaml through mosaik")
    demo.add_argument("--out", help="run directory (default: runs/paper_fig1d)")
    demo.add_argument("--steps", type=int, help="override time.steps")
    demo.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a field")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--force", action="store_true",
                      help="replace the earlier demo run in --out (default: a new folder)")
    demo.set_defaults(func=_demo, resume=None)
    for name, func, text in (("run", _run, "run a scenario through mosaik"),
                             ("validate", _validate, "check a scenario without running it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("scenario", nargs="?" if name == "run" else None,
                       help="scenario YAML, or the name of a shipped one "
                            "(paper_fig1d: scenarios/paper_fig1d.yaml)")
        p.add_argument("--set", action="append", metavar="PATH=VALUE",
                       help="override a field, e.g. --set duals.mode=independent (repeatable)")
        p.set_defaults(func=func)
        if name == "run":
            p.add_argument("--out", help="run directory (default: output.directory)")
            p.add_argument("--steps", type=int, help="override time.steps")
            p.add_argument("--force", action="store_true",
                           help="replace an earlier run that cosim made in --out (never "
                                "anything else)")
            p.add_argument("--resume", metavar="RUN_DIR",
                           help="continue an interrupted run from its last checkpoint")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
            p.add_argument("--engine", choices=("mosaik", "plain"), default="mosaik",
                           help="mosaik co-simulation (default) or the plain-loop reference")
        else:
            p.add_argument("--steps", type=int, help="override time.steps")
    study = sub.add_parser("study", help="run a grid of scenario variants, collect KPIs")
    study.add_argument("target", help="a study file (see scenarios/studies/) or a scenario "
                                      "file with --sweep/--variant")
    study.add_argument("--sweep", action="append", metavar="PATH=V1,V2",
                       help="swept field and its values (repeatable; every combination)")
    study.add_argument("--variant", action="append", metavar="NAME:PATH=V[,PATH=V]",
                       help="a variant crossed with the sweep (repeatable)")
    study.add_argument("--out", help="study directory (default: runs/study_<name>)")
    study.add_argument("--steps", type=int, help="override time.steps of every run")
    study.add_argument("--engine", choices=("mosaik", "plain"), help="default: the study's")
    study.add_argument("--force", action="store_true",
                       help="replace runs of this study whose scenario changed (never "
                            "anything cosim did not make)")
    study.add_argument("--quiet", action="store_true", help="no progress bar")
    study.add_argument("--workers", type=_positive_int, metavar="N",
                       help="dask worker processes (default: COSIM_STUDY_WORKERS, else one "
                            "per core; 1 runs the runs here, one after the other)")
    study.add_argument("--scheduler", metavar="ADDRESS",
                       help="use a running dask scheduler (e.g. tcp://host:8786) instead of "
                            "a LocalCluster (default: COSIM_DASK_SCHEDULER); its workers must "
                            "see the study directory and have cosim installed")
    study.set_defaults(func=_study)
    verify = sub.add_parser("verify", help="check a run from its own files (energy balance, "
                                           "power flow, multipliers, KPIs); exit 1 on a failure")
    verify.add_argument("run", help="run directory")
    verify.add_argument("--steps", default="24", metavar="N|all",
                        help="steps whose power flow is also re-solved with pandapower, the "
                             "reference, spread over the run (default 24; 'all'); "
                             "power-grid-model re-solves every step")
    verify.add_argument("--sampled-only", action="store_true",
                        help="re-solve only the pandapower sample (--steps), not every step")
    verify.set_defaults(func=_verify)
    compare = sub.add_parser("compare", help="compare a run with a reference run, table by "
                                             "table and KPI by KPI (exit 1 on a regression)")
    compare.add_argument("run", help="run directory to check")
    compare.add_argument("reference", help="reference run directory (e.g. data/golden/...)")
    compare.add_argument("--atol", action="append", metavar="QUANTITY=NUMBER",
                         help="absolute tolerance, e.g. vm_pu=1e-4 or "
                              "lines.loading_percent=0.01 (repeatable)")
    compare.add_argument("--rtol", action="append", metavar="QUANTITY=NUMBER",
                         help="relative tolerance, e.g. kpi.*=1e-3 (repeatable)")
    compare.add_argument("--tolerances", metavar="FILE",
                         help="YAML/JSON {quantity: {atol, rtol}} (options override it)")
    compare.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    compare.add_argument("--all", action="store_true", help="list passing checks too")
    compare.add_argument("--overlap", action="store_true",
                         help="runs of different lengths: compare the steps both hold "
                              "(kpis.json left out)")
    compare.set_defaults(func=_compare)
    shard = sub.add_parser("shard", help="serve one fleet shard to a run with sharding.mode "
                                         "connect (start one per shard, then the run)",
                           description=SHARD_HELP)
    shard.add_argument("address", metavar="HOST:PORT",
                       help="where to listen, e.g. 127.0.0.1:5678 (loopback only unless "
                            "--allow-remote-bind)")
    shard.add_argument("--allow-remote-bind", action="store_true",
                       help="listen on a non-loopback address (there is no authentication: "
                            "anyone who reaches the port drives the shard; prefer an SSH "
                            "tunnel)")
    shard.add_argument("--timeout", type=_positive_int, default=SHARD_WAIT_S, metavar="S",
                       help=f"seconds to wait for the run to connect (default {SHARD_WAIT_S})")
    shard.set_defaults(func=_shard)
    train = sub.add_parser("train", help="train one policy per demand class from a recipe")
    train.add_argument("recipe", help="recipe YAML (see data/policies/recipe.yaml)")
    train.add_argument("--out", help="output directory (default: the recipe's directory)")
    train.add_argument("--class", dest="classes", action="append",
                       help="train only this class (repeatable)")
    train.add_argument("--timesteps", type=int, help="override ppo.total_timesteps")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return its exit code (2 for bad arguments or scenarios)."""
    try:
        args = build_parser().parse_args(argv)
        _locate_inputs(args)
        return int(args.func(args))
    except SystemExit as exc:  # argparse's usage errors and --help, bad scenarios
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BrokenPipeError:  # the reader went away (cosim verify RUN | head -1): no traceback
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


def _version() -> str:
    from cosim import __version__

    return __version__


def _locate_inputs(args: argparse.Namespace) -> None:
    """Point a scenario or study argument at its file: the user's path, else the shipped
    file of that path or name (:func:`agents.fleet.paths.find_input_file`)."""
    from agents.fleet.paths import STUDIES_DIR, find_input_file

    if getattr(args, "scenario", None) is not None:
        args.scenario = str(find_input_file(args.scenario))
    if getattr(args, "target", None) is not None:
        is_study = not (args.sweep or args.variant)  # else the target is a scenario file
        args.target = str(find_input_file(args.target, STUDIES_DIR) if is_study else
                          find_input_file(args.target))


#: exit status after the output's reader went away (128 + SIGPIPE, as a shell reports it)
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass


if __name__ == "__main__":
    sys.exit(main())
