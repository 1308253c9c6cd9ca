"""Bad input fails cleanly: one ``error:`` line naming the file and the field, exit 2.

The table ``CASES`` lists the kinds of bad input. Every case is derived from
``scenarios/paper_fig1d.yaml`` (24 steps) by a mutation of its values
(``mutate``), of its text (``edit``), of the files it points to (policies, data,
made in ``tmp_path`` by ``mutate``) or by extra command-line arguments. The
contract checked for each: exit code 2, no traceback, exactly one line
``error: FILE: field.path: message``, nothing printed on stdout, and nothing
written or deleted (the whole of ``tmp_path``, including a sibling file and
directory made before the run, is unchanged). Most kinds run in-process through
``cosim.cli.main`` (validation fails before anything expensive); the cases marked
``subprocess=True`` also run ``python -m cosim.cli`` to prove the end-to-end
contract. Files that hold several problems are tested on their own below: every
problem is listed.

To add a kind, append a ``Case`` to ``CASES`` (in the section it belongs to, or a
new one: grid/feeder cases, run-directory cases, ...). ``args`` replace nothing:
they are appended to ``run SCENARIO --out TMP/run --quiet``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cosim.cli import main, one_line
from cosim.results.rundir import DirLock
from tests.csv_edit import set_csv_cell

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
POLICY_DIR = REPO_ROOT / "data" / "policies"
DATA_DIR = REPO_ROOT / "data" / "citylearn_2022"
POLICY_FILES = ("normal.json", "normal.safetensors", "double.json", "double.safetensors")
STEPS = 24
ENGINES = ("mosaik", "plain")  # every case runs against both (validation is the same)
SUBPROCESS_TIMEOUT_S = 120
MIN_KINDS = 80
MIN_SUBPROCESS_KINDS = 10

Mutation = Callable[[dict, Path], None]


def _base() -> dict[str, Any]:
    raw = yaml.safe_load(SCENARIO.read_text())
    raw["time"]["steps"] = STEPS
    return raw


# --- mutations of the scenario's values ------------------------------------------------------


def _explicit(i: int, **changes: Any) -> Mutation:
    def mutate(d: dict, _tmp: Path) -> None:
        d["buildings"]["explicit"][i].update(changes)
    return mutate


def _section(name: str, **changes: Any) -> Mutation:
    def mutate(d: dict, _tmp: Path) -> None:
        d.setdefault(name, {}).update(changes)
    return mutate


def _nested(dotted: str, value: Any) -> Mutation:
    """Set ``a.b.c`` (dicts made on the way) to ``value``."""
    def mutate(d: dict, _tmp: Path) -> None:
        *parents, last = dotted.split(".")
        node = d
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return mutate


def _top(**changes: Any) -> Mutation:
    def mutate(d: dict, _tmp: Path) -> None:
        d.update(changes)
    return mutate


def _drop(dotted: str) -> Mutation:
    def mutate(d: dict, _tmp: Path) -> None:
        *parents, last = dotted.split(".")
        node = d
        for key in parents:
            node = node[key]
        node.pop(last)
    return mutate


def _generate(steps: int = STEPS, topology: str | None = None, **generate: Any) -> Mutation:
    """Replace the explicit buildings by ``buildings.generate``."""
    def mutate(d: dict, _tmp: Path) -> None:
        d["buildings"] = {"generate": generate, "backlog_cap_kwh": 24.0}
        d["time"]["steps"] = steps
        if topology is not None:
            d["communication"] = {"topology": topology}
    return mutate


def _both(*mutations: Mutation) -> Mutation:
    def mutate(d: dict, tmp: Path) -> None:
        for m in mutations:
            m(d, tmp)
    return mutate


# --- mutations of the files a scenario points to ---------------------------------------------


def _copy_policies(dest: Path) -> Path:
    dest.mkdir()
    for name in POLICY_FILES:
        shutil.copy2(POLICY_DIR / name, dest / name)
    return dest


def _empty_policy_dir(d: dict, tmp: Path) -> None:
    (tmp / "no_policies").mkdir()
    d["controller"]["policy_dir"] = str(tmp / "no_policies")


def _deleted_policy_file(d: dict, tmp: Path) -> None:
    pol = _copy_policies(tmp / "policies")
    (pol / "double.json").unlink()
    d["controller"]["policy_dir"] = str(pol)


def _tampered_weights(d: dict, tmp: Path) -> None:
    pol = _copy_policies(tmp / "policies")
    weights = bytearray((pol / "normal.safetensors").read_bytes())
    weights[-1] ^= 0x01  # flip one bit of the last weight
    (pol / "normal.safetensors").write_bytes(bytes(weights))
    d["controller"]["policy_dir"] = str(pol)


def _policy_weights(layer: str, value: float) -> Mutation:
    """A consistent policy pair (hash updated) whose tensor ``layer`` holds ``value``."""
    def mutate(d: dict, tmp: Path) -> None:
        from safetensors.numpy import load_file, save_file

        from agents.learning.policy import sha256_file

        pol = _copy_policies(tmp / "policies")
        weights = pol / "normal.safetensors"
        tensors = load_file(str(weights))
        tensors[layer] = tensors[layer].copy()
        tensors[layer].flat[0] = value
        save_file(tensors, str(weights))
        meta_path = pol / "normal.json"
        meta = json.loads(meta_path.read_text())
        meta["weights_sha256"] = sha256_file(weights)
        meta_path.write_text(json.dumps(meta))
        d["controller"]["policy_dir"] = str(pol)
    return mutate


def _policy_json(change: Callable[[dict], None]) -> Mutation:
    def mutate(d: dict, tmp: Path) -> None:
        pol = _copy_policies(tmp / "policies")
        meta_path = pol / "double.json"
        meta = json.loads(meta_path.read_text())
        change(meta)
        meta_path.write_text(json.dumps(meta))
        d["controller"]["policy_dir"] = str(pol)
    return mutate


def _set_scale(name: str, value: float) -> Callable[[dict], None]:
    def change(meta: dict) -> None:
        meta["observation"]["scales"][name] = value
    return change


def _swap_action_bounds(meta: dict) -> None:
    meta["action"]["low"], meta["action"]["high"] = meta["action"]["high"], meta["action"]["low"]


def _data_value(file: str, column: str, row: int, value: str) -> Mutation:
    """A copy of the CityLearn data whose ``file`` has ``value`` in ``column`` at ``row``."""
    def mutate(d: dict, tmp: Path) -> None:
        data = tmp / "citylearn"
        shutil.copytree(DATA_DIR, data)
        set_csv_cell(data / file, column, row, value)
        d["data"] = {"path": str(data)}
    return mutate


# --- mutations of the scenario's text --------------------------------------------------------


def _append(text: str) -> Callable[[str], str]:
    return lambda base: base + text


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(base: str) -> str:
        assert old in base, old
        return base.replace(old, new, 1)
    return edit


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs": ``width ** levels`` strings from about 1.5 KB of YAML."""
    lines = ["  topology: two_clusters", "  params:",
             "    l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for k in range(1, levels):
        lines.append(f"    l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * width) + "]")
    return "communication:\n" + "\n".join(lines) + "\n"


def _many_aliases(count: int = 101) -> str:
    return ("communication:\n  topology: two_clusters\n  params: {split: &s 3}\n"
            "colour: [" + ", ".join(["*s"] * count) + "]\n")


@dataclass
class Case:
    """A bad input: how to make it and the field its error must name."""

    id: str
    field_path: str  # expected in the error line; "" for file-level errors
    mutate: Mutation | None = None  # changes the scenario's values (and files in tmp)
    edit: Callable[[str], str] | None = None  # changes the scenario's YAML text
    text: str | bytes | None = None  # the file's whole content instead of the scenario
    args: list[str] = field(default_factory=list)  # extra CLI arguments
    missing_file: bool = False
    subprocess: bool = False  # also run as `python -m cosim.cli`
    # makes the scenario path in tmp itself (a directory, a FIFO, a crafted name)
    make: Callable[[Path], Path] | None = None
    issue_class: str = ""  # the class of issue 25 the case belongs to (counted in the report)


CASES: list[Case] = [
    # --- schema: keys, types, ranges (the original table) --------------------------------------
    Case("unknown_top_level_key", "colour", _section("colour", shade="red")),
    Case("unknown_nested_key", "duals.kappa", _section("duals", kappa=0.1), subprocess=True),
    Case("wrong_type", "time.steps", _section("time", steps="many")),
    Case("negative_battery_capacity", "buildings.explicit.0.battery.capacity_kwh",
         _explicit(0, battery={"capacity_kwh": -1})),
    Case("non_finite_value", "buildings.explicit.0.demand_scale",
         _explicit(0, demand_scale=float("inf"))),
    Case("unknown_feeder_source", "feeder.source", _section("feeder", source="matpower:case9")),
    Case("unknown_simbench_code", "feeder.source",
         _section("feeder", source="simbench:9-XX-nowhere--0-sw")),
    Case("bus_not_in_feeder", "buildings.explicit.2.bus", _explicit(2, bus=999), subprocess=True),
    Case("unknown_citylearn_profile", "buildings.explicit.1.profile",
         _explicit(1, profile="Building_99")),
    Case("unknown_policy_class", "buildings.explicit.3.policy_class",
         _explicit(3, policy_class="triple")),
    Case("empty_policy_dir", "controller.policy_dir", _empty_policy_dir),
    Case("deleted_policy_file", "buildings.explicit.1.policy_class", _deleted_policy_file),
    Case("tampered_policy_weights", "controller.policy_dir", _tampered_weights),
    Case("more_steps_than_data", "time.steps", _section("time", start=8000, steps=1000)),
    Case("consensus_on_disconnected_graph", "communication.topology",
         _section("communication", topology="random_geometric", params={"radius": 0.01})),
    Case("graph_parameter_of_wrong_type", "communication.params.split",
         _section("communication", params={"split": "half"})),
    Case("malformed_yaml", "", text="name: x\ntime: {start: 0, steps: 24\nfeeder: [\n",
         subprocess=True),
    Case("not_a_mapping", "", text="- name: paper_fig1d\n- time: {steps: 24}\n"),
    Case("missing_required_section", "constraint", _drop("constraint")),
    Case("both_fraction_of_peak_and_limit_kw", "constraint",
         _section("constraint", limit_kw=50.0)),
    Case("unknown_dual_mode", "duals.mode", _section("duals", mode="telepathy")),
    Case("dual_mode_consensus_renamed", "duals.mode", _section("duals", mode="consensus")),
    Case("pi_gamma_above_one", "duals.gamma", _section("duals", mode="pi", gamma=1.5)),
    Case("pi_gamma_not_above_alpha_beta", "duals.gamma",
         _section("duals", mode="pi", alpha=1.0, beta=0.8, gamma=0.5)),
    Case("gamma_negative", "duals.gamma", _section("duals", mode="atc", gamma=-0.1)),
    Case("unknown_topology", "communication.topology",
         _section("communication", topology="hypercube")),
    Case("duplicate_building_ids", "buildings.explicit.1.id", _explicit(1, id="B1")),
    Case("silent_fault_unknown_agent", "communication.faults.silent.0.agent",
         _section("communication", faults={"silent": [{"agent": "B42", "start": 0, "end": 5}]})),
    Case("lambda_max_above_training_range", "duals.lambda_max",
         _section("duals", lambda_max=50.0)),
    Case("more_shards_than_buildings", "sharding.shards", _section("sharding", shards=8)),
    Case("negative_seed", "seed", _top(seed=-1)),
    Case("bad_output_placeholder", "output.directory",
         _section("output", directory="runs/{nmae}")),
    Case("set_override_bad_value", "time.steps", args=["--set", "time.steps=-5"]),
    Case("set_override_bad_path", "buildings.explicit.9",
         args=["--set", "buildings.explicit.9.bus=3"]),
    Case("set_override_not_path_value", "--set", args=["--set", "time.steps"]),
    Case("scenario_file_not_found", "", missing_file=True),
    Case("step_h_not_1", "time.step_h", _section("time", step_h=0.5)),
]

CASES += [
    # --- the YAML itself: duplicate keys, alias bombs, size ------------------------------------
    Case("duplicate_top_level_key", "seed", edit=_append("seed: 3\n"), subprocess=True),
    Case("duplicate_nested_key", "time.steps",
         edit=_replace("  steps: 24\n", "  steps: 24\n  steps: 48\n")),
    Case("duplicate_key_in_list_item", "buildings.explicit.0.bus",
         edit=_replace("    bus: 12\n", "    bus: 12\n    bus: 13\n")),
    Case("alias_bomb_in_params", "", _drop("communication"), edit=_append(_alias_bomb()),
         subprocess=True),
    Case("too_many_aliases", "", _drop("communication"), edit=_append(_many_aliases())),
    Case("recursive_alias", "colour.0", edit=_append("colour: &c [*c]\n")),
    Case("nested_too_deep", "", edit=_append("colour: " + "[" * 40 + "]" * 40 + "\n")),
    Case("file_too_large", "", edit=_append("# " + "x" * (1 << 20) + "\n"), subprocess=True),
    Case("integer_with_5000_digits", "", edit=_append("colour: " + "9" * 5000 + "\n")),
    Case("binary_file", "", text=b"\xff\xfe\x00\x01name: x\n"),
    Case("empty_file", "", text=""),
    Case("tab_indentation", "", text="name: x\ntime:\n\tsteps: 24\n"),
    # --- strict types: nothing is coerced ------------------------------------------------------
    Case("steps_is_bool", "time.steps", _section("time", steps=True), subprocess=True),
    Case("steps_is_fractional", "time.steps", _section("time", steps=24.5)),
    Case("steps_is_integral_float", "time.steps", _section("time", steps=24.0)),
    Case("steps_is_numeric_string", "time.steps", _section("time", steps="24")),
    Case("split_is_fractional", "communication.params.split",
         _section("communication", params={"split": 2.7})),
    Case("split_is_bool", "communication.params.split",
         _section("communication", params={"split": True})),
    Case("seed_is_fractional", "seed", _top(seed=1.5)),
    Case("rounds_is_fractional", "duals.rounds", _section("duals", rounds=3.5)),
    Case("bus_is_float", "buildings.explicit.0.bus", _explicit(0, bus=12.0)),
    Case("export_pv_is_int", "buildings.export_pv", _section("buildings", export_pv=1)),
    Case("plots_is_string", "output.plots", _section("output", plots="no")),
    Case("demand_scale_is_string", "buildings.explicit.1.demand_scale",
         _explicit(1, demand_scale="double")),
    Case("feeder_source_is_number", "feeder.source", _section("feeder", source=42)),
    Case("time_is_not_a_mapping", "time", _top(time=24)),
    Case("explicit_is_a_mapping", "buildings.explicit",
         _section("buildings", explicit={"id": "B1", "profile": "Building_1"})),
    Case("building_is_a_string", "buildings.explicit.0",
         lambda d, _tmp: d["buildings"]["explicit"].__setitem__(0, "B1")),
    Case("battery_is_a_number", "buildings.explicit.0.battery", _explicit(0, battery=5)),
    Case("unknown_battery_key", "buildings.explicit.0.battery.size",
         _explicit(0, battery={"size": 5})),
    Case("class_for_scale_value_is_number", "buildings.class_for_scale.1.0",
         _section("buildings", class_for_scale={"1.0": 7})),
    Case("set_override_bool_steps", "time.steps", args=["--set", "time.steps=true"],
         subprocess=True),
    Case("set_override_recursive_alias", "communication.params.split",
         args=["--set", "communication.params.split=&a [*a]"]),
    # --- communication.params: a few scalar keys ----------------------------------------------
    Case("params_value_is_a_list", "communication.params.split",
         _section("communication", params={"split": [1, 2]})),
    Case("params_value_is_a_mapping", "communication.params.split",
         _section("communication", params={"split": {"a": 1}})),
    Case("params_too_many_keys", "communication.params",
         _section("communication", params={f"k{i}": i for i in range(9)})),
    Case("params_unknown_for_topology", "communication.params.radius",
         _section("communication", params={"radius": 0.5})),
    Case("params_negative_split", "communication.params.split",
         _section("communication", params={"split": -1})),
    Case("params_split_beyond_fleet", "communication.topology",
         _section("communication", params={"split": 9})),
    # --- resource bounds -----------------------------------------------------------------------
    Case("generate_count_ten_million", "buildings.generate.count",
         _generate(count=10_000_000), subprocess=True),
    Case("rounds_one_billion", "duals.rounds", _section("duals", rounds=10**9), subprocess=True),
    Case("v1_window_one_billion", "duals.v1_window", _section("duals", v1_window=10**9)),
    Case("v1_window_beyond_steps", "duals.v1_window", _section("duals", v1_window=STEPS + 1)),
    Case("steps_one_billion", "time.steps", _section("time", steps=10**9)),
    Case("start_one_billion", "time.start", _section("time", start=10**9)),
    Case("flush_every_one_billion", "output.flush_every", _section("output", flush_every=10**9)),
    Case("shards_above_bound", "sharding.shards", _section("sharding", shards=1000)),
    Case("delay_steps_one_billion", "communication.faults.delay_steps",
         _section("communication", faults={"delay_steps": 10**9})),
    Case("silent_list_too_long", "communication.faults.silent",
         _section("communication", faults={"silent": [{"agent": "B1", "start": 0, "end": 1}
                                                      for _ in range(10_001)]})),
    Case("building_steps_above_bound", "buildings.generate.count",
         _generate(steps=8000, topology="ring", count=100_000)),
    Case("complete_graph_too_dense", "communication.topology",
         _generate(topology="complete", count=5000)),
    Case("random_geometric_radius_too_dense", "communication.params",
         _both(_generate(count=5000),
               _section("communication", topology="random_geometric", params={"radius": 2.0}))),
    Case("oracle_too_large", "controller.kind",
         _both(_generate(steps=200, topology="ring", count=2000),
               _section("controller", kind="oracle"))),
    Case("seed_above_bound", "seed", _top(seed=2**40)),
    Case("description_too_long", "description", _top(description="x" * 5000)),
    Case("demand_scale_absurd", "buildings.explicit.0.demand_scale",
         _explicit(0, demand_scale=1e6)),
    Case("generate_profiles_too_many", "buildings.generate.profiles",
         _generate(count=7, profiles=["Building_1"] * 1001)),
    # --- the constraint's horizon --------------------------------------------------------------
    Case("steps_beyond_data_by_cli", "time.steps", args=["--steps", "9000"]),
    Case("steps_zero_by_cli", "time.steps", args=["--steps", "0"]),
    Case("peak_horizon_beyond_data", "constraint.peak_horizon_steps",
         _both(_section("time", start=8000), _section("constraint", peak_horizon_steps=2000))),
    Case("peak_horizon_with_limit_kw", "constraint.peak_horizon_steps",
         _nested("constraint", {"limit_kw": 5.0, "peak_horizon_steps": 100})),
    Case("peak_horizon_zero", "constraint.peak_horizon_steps",
         _section("constraint", peak_horizon_steps=0)),
    # --- building ids --------------------------------------------------------------------------
    Case("id_with_dot", "buildings.explicit.0.id", _explicit(0, id="B.1"), subprocess=True),
    Case("id_with_space", "buildings.explicit.0.id", _explicit(0, id="B 1")),
    Case("id_with_slash", "buildings.explicit.0.id", _explicit(0, id="../B1")),
    Case("id_empty", "buildings.explicit.0.id", _explicit(0, id="")),
    Case("id_too_long", "buildings.explicit.0.id", _explicit(0, id="B" * 65)),
    Case("id_is_a_number", "buildings.explicit.0.id", _explicit(0, id=1)),
    Case("silent_agent_with_dot", "communication.faults.silent.0.agent",
         _section("communication", faults={"silent": [{"agent": "B.1", "start": 0, "end": 5}]})),
    Case("silent_end_before_start", "communication.faults.silent.0.end",
         _section("communication", faults={"silent": [{"agent": "B1", "start": 5, "end": 2}]})),
    Case("policy_class_with_slash", "buildings.explicit.0.policy_class",
         _explicit(0, policy_class="../normal")),
    # --- policies ------------------------------------------------------------------------------
    Case("nan_policy_weight", "controller.policy_dir",
         _policy_weights("layer0.weight", float("nan")), subprocess=True),
    Case("inf_policy_bias", "controller.policy_dir",
         _policy_weights("layer2.bias", float("inf"))),
    Case("zero_observation_scale", "controller.policy_dir",
         _policy_json(_set_scale("demand_kwh", 0.0))),
    Case("negative_observation_scale", "controller.policy_dir",
         _policy_json(_set_scale("price_per_kwh", -0.5))),
    Case("swapped_action_bounds", "controller.policy_dir", _policy_json(_swap_action_bounds)),
    Case("policy_dir_not_found", "controller.policy_dir",
         _section("controller", policy_dir="no/such/dir")),
    # --- data ----------------------------------------------------------------------------------
    Case("negative_price", "data.path",
         _data_value("pricing.csv", "Electricity Pricing [$/kWh]", 10, "-0.2"), subprocess=True),
    Case("infinite_price", "data.path",
         _data_value("pricing.csv", "Electricity Pricing [$/kWh]", 3, "inf")),
    Case("negative_pv_yield", "data.path",
         _data_value("Building_4.csv", "Solar Generation [W/kW]", 100, "-5")),
    Case("absurd_demand", "data.path",
         _data_value("Building_2.csv", "Equipment Electric Power [kWh]", 7, "5000")),
    Case("negative_demand", "data.path",
         _data_value("Building_2.csv", "Equipment Electric Power [kWh]", 7, "-1")),
    Case("data_dir_not_found", "data.path", _section("data", path="no/such/dir")),
    Case("unknown_data_source", "data.source", _section("data", source="citylearn_2099")),
    Case("control_character_in_path", "data.path", _section("data", path="data/\x00x")),
    # --- more schema kinds ---------------------------------------------------------------------
    Case("power_factor_zero", "feeder.power_factor", _section("feeder", power_factor=0)),
    Case("power_factor_above_one", "feeder.power_factor", _section("feeder", power_factor=1.2)),
    Case("fleet_scale_zero", "feeder.fleet_scale", _section("feeder", fleet_scale=0)),
    Case("unknown_backend", "feeder.backend", _section("feeder", backend="matpower")),
    Case("unknown_background_mode", "feeder.background.mode",
         _section("feeder", background={"mode": "random"})),
    Case("drop_probability_above_one", "communication.faults.drop_probability",
         _section("communication", faults={"drop_probability": 1.5})),
    Case("initial_soc_fraction_negative", "buildings.initial_soc_fraction",
         _section("buildings", initial_soc_fraction=-0.1)),
    Case("battery_efficiency_above_one", "buildings.explicit.0.battery.efficiency",
         _explicit(0, battery={"efficiency": 1.1})),
    Case("empty_explicit_list", "buildings.explicit", _section("buildings", explicit=[])),
    Case("empty_profiles_list", "buildings.generate.profiles", _generate(count=7, profiles=[])),
    Case("empty_demand_scales_list", "buildings.generate.demand_scales",
         _generate(count=7, demand_scales=[])),
    Case("generate_buses_one_short", "buildings.generate.buses",
         _generate(count=7, buses=[12, 16, 17, 18, 19, 12])),
    Case("explicit_and_generate", "buildings",
         _section("buildings", generate={"count": 3})),
    Case("unknown_controller_kind", "controller.kind", _section("controller", kind="magic")),
    Case("negative_rule_threshold", "controller.rule_threshold_kwh",
         _section("controller", kind="rule", rule_threshold_kwh=-1)),
    Case("rule_threshold_with_kind_none", "controller.rule_threshold_kwh",
         _section("controller", kind="none", rule_threshold_kwh=1.0)),
    Case("heuristic_threshold_with_kind_rule", "controller.heuristic_price_threshold",
         _section("controller", kind="rule", heuristic_price_threshold=0.3)),
    Case("heuristic_margin_with_kind_policy", "controller.heuristic_backlog_margin",
         _section("controller", heuristic_backlog_margin=0.5)),
    Case("heuristic_threshold_zero", "controller.heuristic_price_threshold",
         _section("controller", kind="heuristic", heuristic_price_threshold=0)),
    Case("heuristic_threshold_infinite", "controller.heuristic_price_threshold",
         _section("controller", kind="heuristic", heuristic_price_threshold=float("inf"))),
    Case("heuristic_margin_zero", "controller.heuristic_backlog_margin",
         _section("controller", kind="heuristic", heuristic_backlog_margin=0)),
    Case("heuristic_margin_above_one", "controller.heuristic_backlog_margin",
         _section("controller", kind="heuristic", heuristic_backlog_margin=1.2)),
    Case("oracle_limit_with_kind_heuristic", "controller.oracle_limit",
         _section("controller", kind="heuristic", oracle_limit="per_step")),
    Case("unknown_oracle_limit", "controller.oracle_limit",
         _section("controller", kind="oracle", oracle_limit="peak")),
    # --- the model-based controllers (dmpc, epos) -----------------------------------------
    Case("dmpc_horizon_with_kind_policy", "controller.dmpc_horizon_h",
         _section("controller", dmpc_horizon_h=12)),
    Case("dmpc_horizon_zero", "controller.dmpc_horizon_h",
         _section("controller", kind="dmpc", dmpc_horizon_h=0)),
    Case("dmpc_unknown_forecast", "controller.dmpc_forecast",
         _section("controller", kind="dmpc", dmpc_forecast="oracle")),
    Case("dmpc_unknown_negotiation", "controller.dmpc_negotiation",
         _section("controller", kind="dmpc", dmpc_negotiation="gossip")),
    Case("dmpc_negative_step", "controller.dmpc_step",
         _section("controller", kind="dmpc", dmpc_step=-0.1)),
    Case("epos_plans_with_kind_dmpc", "controller.epos_plans",
         _section("controller", kind="dmpc", epos_plans=8)),
    Case("epos_no_plans", "controller.epos_plans",
         _section("controller", kind="epos", epos_plans=0)),
    Case("epos_weights_above_one", "controller.epos_beta",
         _section("controller", kind="epos", epos_alpha=0.6, epos_beta=0.6)),
    Case("epos_unknown_overlay", "controller.epos_overlay",
         _section("controller", kind="epos", epos_overlay="ring")),
    Case("dmpc_in_shards", "sharding.shards",
         _both(_section("controller", kind="dmpc"), _section("sharding", shards=2))),
    Case("epos_in_cmd_mode", "sharding.mode",
         _both(_section("controller", kind="epos"), _section("sharding", mode="cmd"))),
    Case("per_step_oracle_infeasible", "constraint",
         _both(_section("controller", kind="oracle", oracle_limit="per_step"),
               _section("constraint", fraction_of_peak=0.05))),
    Case("nu_min_positive", "duals.nu_min", _section("duals", nu_min=1.0)),
    Case("negative_step_size", "duals.alpha", _section("duals", alpha=-0.1)),
    Case("fraction_of_peak_zero", "constraint.fraction_of_peak",
         _section("constraint", fraction_of_peak=0)),
    Case("name_with_slash", "name", _top(name="../escape")),
    Case("name_is_dot_dot", "name", _top(name="..")),
    Case("missing_name", "name", _drop("name")),
    Case("missing_steps", "time.steps", _drop("time.steps")),
    Case("empty_output_directory", "output.directory", _section("output", directory="")),
    Case("unknown_sharding_mode", "sharding.mode", _section("sharding", mode="threads")),
    Case("connect_one_address_for_two_shards", "sharding.connect",
         _section("sharding", shards=2, mode="connect", connect=["127.0.0.1:5001"])),
    Case("connect_addresses_in_cmd_mode", "sharding.connect",
         _section("sharding", shards=1, mode="cmd", connect=["127.0.0.1:5001"])),
    Case("class_for_scale_key_not_a_number", "buildings.class_for_scale.big",
         _section("buildings", class_for_scale={"big": "double"})),
    Case("no_policy_class_for_scale", "buildings.explicit.4.policy_class",
         _explicit(4, demand_scale=3.0)),
]
# --- grid and feeder cases (islanded buildings, ...) -----------------------------------------
# CIGRE LV (the scenario's feeder): line 13 (bus 15 -> 16) alone feeds bus 16, where B3 sits.


def _feeder_file(change: Callable[[Any], None]) -> Mutation:
    """The scenario's feeder (CIGRE LV) changed by ``change``, saved in tmp as its source."""
    def mutate(d: dict, tmp: Path) -> None:
        from grid_models.feeders import load_feeder, save_feeder_json

        net = load_feeder("pandapower:cigre_lv")
        change(net)
        d["feeder"]["source"] = str(save_feeder_json(net, tmp / "feeder.json"))
    return mutate


def _feeder_text(edit: Callable[[str], str]) -> Mutation:
    """The scenario's feeder saved as pandapower JSON in tmp, its text changed by ``edit``."""
    def mutate(d: dict, tmp: Path) -> None:
        from grid_models.feeders import load_feeder, save_feeder_json

        path = save_feeder_json(load_feeder("pandapower:cigre_lv"), tmp / "feeder.json")
        path.write_text(edit(path.read_text()))
        d["feeder"]["source"] = str(path)
    return mutate


def _table(net: Any, table: str, row: int, column: str, value: Any) -> None:
    net[table].loc[row, column] = value


def _drop_ext_grid(net: Any) -> None:
    net.ext_grid.drop(net.ext_grid.index, inplace=True)


def _open_line_switch(net: Any) -> None:
    import pandapower as pp

    pp.create_switch(net, bus=15, element=13, et="l", closed=False)


def _crafted_node(node: str) -> Callable[[str], str]:
    return _replace('"_object": {', '"_object": {"payload": ' + node + ", ")


CASES += [
    Case("building_islanded_by_out_of_service_line", "buildings.explicit.2.bus",
         _feeder_file(lambda net: _table(net, "line", 13, "in_service", False)),
         subprocess=True),
    Case("building_islanded_by_open_switch", "buildings.explicit.2.bus",
         _feeder_file(_open_line_switch)),
    Case("building_behind_out_of_service_bus", "buildings.explicit.2.bus",
         _feeder_file(lambda net: _table(net, "bus", 15, "in_service", False))),
    Case("generated_building_islanded", "buildings.generate.buses",
         _both(_feeder_file(lambda net: _table(net, "line", 13, "in_service", False)),
               _generate(count=7, buses=[12, 16, 17, 18, 19, 12, 19]))),
    Case("ext_grid_out_of_service", "feeder.source",
         _feeder_file(lambda net: _table(net, "ext_grid", 0, "in_service", False))),
    Case("ext_grid_absent", "feeder.source", _feeder_file(_drop_ext_grid), subprocess=True),
    Case("ext_grid_on_out_of_service_bus", "feeder.source",
         _feeder_file(lambda net: _table(net, "bus", 0, "in_service", False))),
    Case("feeder_json_names_module_os", "feeder.source",
         _feeder_text(_crafted_node('{"_module": "os", "_class": "function", '
                                    '"_object": "system"}')), subprocess=True),
    Case("feeder_json_table_reads_a_file", "feeder.source",
         _feeder_text(_crafted_node('{"_module": "pandas", "_class": "DataFrame", '
                                    '"_object": "/etc/hostname.json", "orient": "split"}'))),
    Case("feeder_json_not_json", "feeder.source", _feeder_text(lambda text: "net = {}\n")),
]

# --- issue 25: crashes, wrong numbers reported as fine, messages ---------------------------
# (its data-integrity class: DIR_CASES below and tests/cosim/test_setup_safety.py)


def _schema_attribute(building: str, device: str, key: str, value: Any) -> Mutation:
    """A copy of the CityLearn data whose schema.json has ``value`` at the attribute."""
    def mutate(d: dict, tmp: Path) -> None:
        data = tmp / "citylearn"
        shutil.copytree(DATA_DIR, data)
        schema = json.loads((data / "schema.json").read_text())
        schema["buildings"][building][device]["attributes"][key] = value
        (data / "schema.json").write_text(json.dumps(schema))
        d["data"] = {"path": str(data)}
    return mutate


def _schema_text(text: str) -> Mutation:
    def mutate(d: dict, tmp: Path) -> None:
        data = tmp / "citylearn"
        shutil.copytree(DATA_DIR, data)
        (data / "schema.json").write_text(text)
        d["data"] = {"path": str(data)}
    return mutate


def _node_link_graph(change: Callable[[dict], None]) -> Mutation:
    """A node-link graph file of the scenario's buildings (a chain), changed by ``change``."""
    def mutate(d: dict, tmp: Path) -> None:
        ids = [b["id"] for b in d["buildings"]["explicit"]]
        graph = {"directed": False, "multigraph": False, "graph": {},
                 "nodes": [{"id": i} for i in ids],
                 "edges": [{"source": a, "target": b}
                           for a, b in zip(ids[:-1], ids[1:], strict=True)]}
        change(graph)
        path = tmp / "graph.json"
        path.write_text(json.dumps(graph))
        d["communication"] = {"topology": "file", "graph_file": str(path)}
    return mutate


def _node_link_text(text: str) -> Mutation:
    def mutate(d: dict, tmp: Path) -> None:
        path = tmp / "graph.json"
        path.write_text(text)
        d["communication"] = {"topology": "file", "graph_file": str(path)}
    return mutate


def _nested_policy_metadata(d: dict, tmp: Path) -> None:
    pol = _copy_policies(tmp / "policies")
    meta = (pol / "double.json").read_text()
    depth = 100_000
    (pol / "double.json").write_text(meta.rstrip()[:-1] + ', "deep": ' + "[" * depth
                                     + "]" * depth + "}")
    d["controller"]["policy_dir"] = str(pol)


def _trafo_and_line(net: Any, **values: Any) -> None:
    for key, value in values.items():
        table, column = key.split("__")
        net[table].loc[net[table].index[0], column] = value


def _in_dir(make: Callable[[Path], None], name: str = "scenario.yaml") -> Callable[[Path], Path]:
    def made(tmp: Path) -> Path:
        path = tmp / name
        make(path)
        return path
    return made


def _utf16(path: Path) -> None:
    path.write_bytes(yaml.safe_dump(_base(), sort_keys=False).encode("utf-16"))


def _valid_yaml(path: Path) -> None:
    path.write_text(yaml.safe_dump(_base(), sort_keys=False))


CRASH, WRONG, MESSAGE, INTEGRITY = ("crash", "wrong numbers", "message", "data integrity")

CASES += [
    # crashes (a traceback before)
    Case("schema_battery_efficiency_above_one", "data.path",
         _schema_attribute("Building_1", "electrical_storage", "efficiency", 1.5),
         subprocess=True, issue_class=CRASH),
    Case("schema_battery_efficiency_zero", "data.path",
         _schema_attribute("Building_3", "electrical_storage", "efficiency", 0),
         issue_class=CRASH),
    Case("schema_not_a_mapping", "data.path", _schema_text("[1, 2]"), issue_class=CRASH),
    Case("schema_building_not_a_mapping", "data.path",
         _schema_text('{"buildings": {"Building_1": 3}}'), issue_class=CRASH),
    Case("graph_node_link_edge_to_unknown_node", "communication.graph_file",
         _node_link_graph(lambda g: g["edges"].append({"source": "B1", "target": "B99"})),
         subprocess=True, issue_class=CRASH),
    Case("graph_node_link_id_not_scalar", "communication.graph_file",
         _node_link_graph(lambda g: g["nodes"].append({"id": ["B", 8]})), issue_class=CRASH),
    Case("graph_node_link_edge_end_not_scalar", "communication.graph_file",
         _node_link_graph(lambda g: g["edges"].append({"source": {"x": 1}, "target": "B1"})),
         issue_class=CRASH),
    Case("graph_node_link_nested_too_deep", "communication.graph_file",
         _node_link_text('{"nodes": [], "graph": ' + "[" * 100_000 + "]" * 100_000 + "}"),
         issue_class=CRASH),
    Case("policy_metadata_nested_too_deep", "controller.policy_dir", _nested_policy_metadata,
         issue_class=CRASH),
    # wrong numbers reported as fine before (now refused at validate)
    Case("feeder_negative_line_length", "feeder.source",
         _feeder_file(lambda net: _trafo_and_line(net, line__length_km=-0.1)),
         subprocess=True, issue_class=WRONG),
    Case("feeder_negative_trafo_vk", "feeder.source",
         _feeder_file(lambda net: _trafo_and_line(net, trafo__vk_percent=-4.0)),
         issue_class=WRONG),
    Case("feeder_vkr_above_vk", "feeder.source",
         _feeder_file(lambda net: _trafo_and_line(net, trafo__vkr_percent=40.0)),
         issue_class=WRONG),
    Case("feeder_negative_line_resistance", "feeder.source",
         _feeder_file(lambda net: _trafo_and_line(net, line__r_ohm_per_km=-0.2)),
         issue_class=WRONG),
    Case("feeder_zero_line_impedance", "feeder.source",
         _feeder_file(lambda net: _trafo_and_line(net, line__r_ohm_per_km=0.0,
                                                  line__x_ohm_per_km=0.0)),
         issue_class=WRONG),
    Case("feeder_zero_line_rating", "feeder.source",
         _feeder_file(lambda net: _trafo_and_line(net, line__max_i_ka=0.0)),
         issue_class=WRONG),
    Case("feeder_zero_trafo_rating", "feeder.source",
         _feeder_file(lambda net: _trafo_and_line(net, trafo__sn_mva=0.0)),
         issue_class=WRONG),
    Case("feeder_absurd_line_length", "feeder.source",
         _feeder_file(lambda net: _trafo_and_line(net, line__length_km=1e9)),
         issue_class=WRONG),
    Case("absurd_pv_yield", "data.path",
         _data_value("Building_5.csv", "Solar Generation [W/kW]", 40, "1e15"),
         subprocess=True, issue_class=WRONG),
    Case("absurd_price", "data.path",
         _data_value("pricing.csv", "Electricity Pricing [$/kWh]", 40, "1e12"),
         issue_class=WRONG),
    Case("schema_absurd_pv_size", "data.path",
         _schema_attribute("Building_2", "pv", "nominal_power", 1e12), issue_class=WRONG),
    Case("schema_absurd_battery_capacity", "data.path",
         _schema_attribute("Building_2", "electrical_storage", "capacity", 1e12),
         issue_class=WRONG),
    Case("battery_capacity_absurd", "buildings.explicit.0.battery.capacity_kwh",
         _explicit(0, battery={"capacity_kwh": 1e12}), issue_class=WRONG),
    Case("pv_kw_absurd", "buildings.explicit.0.pv_kw", _explicit(0, pv_kw=1e12),
         issue_class=WRONG),
    # messages
    Case("scenario_is_a_directory", "", make=lambda tmp: (tmp / "scen.yaml").mkdir() or
         tmp / "scen.yaml", issue_class=MESSAGE),
    Case("scenario_is_a_fifo", "", make=lambda tmp: os.mkfifo(tmp / "scen.yaml") or
         tmp / "scen.yaml", subprocess=True, issue_class=MESSAGE),
    Case("scenario_is_utf16", "", make=_in_dir(_utf16), issue_class=MESSAGE),
    Case("scenario_name_with_newline", "seed",
         make=_in_dir(lambda p: p.write_text(yaml.safe_dump({**_base(), "seed": -1})),
                      "x\nerror: forged.yaml"), subprocess=True, issue_class=MESSAGE),
    Case("scenario_name_with_escape_sequence", "seed",
         make=_in_dir(lambda p: p.write_text(yaml.safe_dump({**_base(), "seed": -1})),
                      "x\x1b[2K\rforged.yaml"), issue_class=MESSAGE),
]

# --- run-directory cases (--out ., ...): DIR_CASES at the end of this file -------------------


def _write_case(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / f"{case.id}.yaml"
    if case.make is not None:
        if case.mutate is not None:
            case.mutate(copy.deepcopy(_base()), tmp_path)
        return case.make(tmp_path)
    if case.missing_file:
        return path
    if case.text is not None:
        if isinstance(case.text, bytes):
            path.write_bytes(case.text)
        else:
            path.write_text(case.text)
        return path
    raw = copy.deepcopy(_base())
    if case.mutate is not None:
        case.mutate(raw, tmp_path)
    text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=False)
    if case.edit is not None:
        text = case.edit(text)
    path.write_text(text)
    return path


def _snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path below ``root``: (is a directory, size, modification time)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def _prepare(case: Case, tmp_path: Path) -> tuple[Path, dict[str, tuple[bool, int, int]]]:
    """The case's scenario file, a sibling file and directory, and a snapshot of it all."""
    (tmp_path / "keep.txt").write_text("not cosim's\n")
    (tmp_path / "keep_dir").mkdir()
    (tmp_path / "keep_dir" / "status.json").write_text('{"state": "complete"}\n')
    scenario = _write_case(case, tmp_path)
    return scenario, _snapshot(tmp_path)


def _check_error(returncode: int, stderr: str, scenario: Path, expected_field: str,
                 run_dir: Path) -> None:
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: "), line
    shown = one_line(str(scenario))  # control characters in a name are escaped
    assert shown in line, line
    if expected_field:
        assert f"{shown}: {expected_field}: " in line, line
    assert not run_dir.exists(), "validation must fail before the run directory is made"



def test_there_are_enough_kinds():
    assert len({c.id for c in CASES}) == len(CASES) >= MIN_KINDS
    assert sum(c.subprocess for c in CASES) >= MIN_SUBPROCESS_KINDS


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_scenario_one_line_error_exit_2(case: Case, engine: str, tmp_path: Path, capsys):
    scenario, before = _prepare(case, tmp_path)
    run_dir = tmp_path / "run"
    rc = main(["run", str(scenario), "--out", str(run_dir), "--quiet", "--engine", engine,
               *case.args])
    captured = capsys.readouterr()
    _check_error(rc, captured.err, scenario, case.field_path, run_dir)
    assert captured.out == ""
    assert _snapshot(tmp_path) == before, "nothing may be written or deleted"


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.subprocess],
                         ids=[c.id for c in CASES if c.subprocess])
def test_bad_scenario_end_to_end(case: Case, tmp_path: Path):
    scenario, before = _prepare(case, tmp_path)
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cosim.cli", "run", str(scenario), "--out", str(run_dir),
         "--quiet", *case.args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
    )
    _check_error(proc.returncode, proc.stderr, scenario, case.field_path, run_dir)
    assert proc.stdout == ""
    assert _snapshot(tmp_path) == before, "nothing may be written or deleted"


def test_validate_accepts_the_paper_scenario(capsys):
    assert main(["validate", str(SCENARIO)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert f"{SCENARIO}: valid. 7 buildings, 3000 steps" in captured.out


def test_validate_rejects_a_bad_scenario(tmp_path: Path, capsys):
    case = next(c for c in CASES if c.id == "bus_not_in_feeder")
    scenario = _write_case(case, tmp_path)
    rc = main(["validate", str(scenario)])
    captured = capsys.readouterr()
    _check_error(rc, captured.err, scenario, case.field_path, tmp_path / "run")


def test_run_directory_that_cannot_be_made(tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "run"
    rc = main(["run", str(SCENARIO), "--steps", str(STEPS), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: {out}: cannot create the run directory"), lines[0]


# --- files with several problems: every one is listed ------------------------------------------


def _errors_of(argv: list[str], capsys) -> list[str]:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2, captured
    assert "Traceback" not in captured.err and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    return lines


def _fields(lines: list[str], scenario: Path) -> list[str]:
    prefix = f"error: {scenario}: "
    assert all(line.startswith(prefix) for line in lines), lines
    return [line.removeprefix(prefix).split(": ", 1)[0] for line in lines]


def test_every_schema_error_is_listed(tmp_path: Path, capsys):
    raw = _base()
    raw["seed"] = -1
    raw["colour"] = "red"
    raw["time"]["steps"] = True
    raw["buildings"]["explicit"][2]["id"] = "B.3"
    raw["buildings"]["explicit"][5]["battery"] = {"efficiency": 2.0}
    raw["duals"].update(rounds=10**9, kappa=1)
    raw["communication"]["params"] = {"split": 2.7}
    raw["constraint"]["limit_kw"] = 3.0
    scenario = tmp_path / "many.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    fields = _fields(_errors_of(["validate", str(scenario)], capsys), scenario)
    assert sorted(fields) == sorted([
        "seed", "colour", "time.steps", "buildings.explicit.2.id",
        "buildings.explicit.5.battery.efficiency", "duals.rounds", "duals.kappa",
        "communication.params.split", "constraint"])


@pytest.mark.parametrize("duals,message", [
    ({"mode": "consensus"}, "duals.mode: 'consensus' was renamed 'paper' (the paper's literal "
                            "eqs. 10-11, unstable); the stable default is 'pi'"),
    ({"mode": "pi", "alpha": 0.1, "beta": 0.1, "gamma": 1.5},
     "duals.gamma: mode 'pi' is stable only for alpha*beta < gamma <= 1, got gamma=1.5 with "
     "alpha*beta=0.01"),
])
def test_dual_mode_errors_explain_themselves(duals, message, tmp_path: Path, capsys):
    raw = _base()
    raw["duals"].update(duals)
    scenario = tmp_path / "duals.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    lines = _errors_of(["validate", str(scenario)], capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {scenario}: {message}"), lines


def test_every_semantic_error_is_listed(tmp_path: Path, capsys):
    raw = _base()
    raw["buildings"]["explicit"][2]["profile"] = "Building_99"
    raw["buildings"]["explicit"][3]["bus"] = 999
    raw["buildings"]["explicit"][6]["policy_class"] = "triple"
    raw["communication"]["faults"] = {"silent": [{"agent": "B9", "start": 0, "end": 3},
                                                 {"agent": "B10", "start": 0, "end": 3}]}
    raw["duals"]["lambda_max"] = 50.0
    scenario = tmp_path / "semantic.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    fields = _fields(_errors_of(["validate", str(scenario)], capsys), scenario)
    assert fields == [
        "buildings.explicit.2.profile", "buildings.explicit.6.policy_class",
        "buildings.explicit.3.bus", "communication.faults.silent.0.agent",
        "communication.faults.silent.1.agent"]


def test_data_and_policy_errors_are_listed_together(tmp_path: Path, capsys):
    raw = _base()
    _data_value("pricing.csv", "Electricity Pricing [$/kWh]", 10, "-0.2")(raw, tmp_path)
    _policy_json(_swap_action_bounds)(raw, tmp_path)
    raw["time"]["step_h"] = 0.5
    scenario = tmp_path / "files.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    fields = _fields(_errors_of(["validate", str(scenario)], capsys), scenario)
    assert fields == ["data.path", "controller.policy_dir"]


def test_duplicate_keys_and_schema_errors_together(tmp_path: Path, capsys):
    text = yaml.safe_dump(_base(), sort_keys=False)
    text = text.replace("  steps: 24\n", "  steps: 24\n  steps: 24.5\n", 1)
    text += "seed: 1\ncolour: red\n"
    scenario = tmp_path / "dup.yaml"
    scenario.write_text(text)
    lines = _errors_of(["validate", str(scenario)], capsys)
    assert _fields(lines, scenario) == ["seed", "time.steps", "time.steps", "colour"]
    assert "duplicate key 'steps' at line" in lines[1] and "first at line" in lines[1]
    assert "got 24.5" in lines[2]


def test_errors_beyond_the_cap_are_counted(tmp_path: Path, capsys):
    from cosim.scenario.limits import MAX_REPORTED_ERRORS

    raw = _base()
    raw["colours"] = None
    raw["buildings"]["explicit"] = [{"id": f"B.{i}", "profile": "Building_1"}
                                    for i in range(MAX_REPORTED_ERRORS + 5)]
    scenario = tmp_path / "lots.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    lines = _errors_of(["validate", str(scenario)], capsys)
    assert len(lines) == MAX_REPORTED_ERRORS + 1
    assert lines[-1] == f"error: {scenario}: 6 more problem(s) not shown"


def test_alias_bomb_is_refused_quickly_and_small(tmp_path: Path, capsys):
    import resource
    import time

    text = yaml.safe_dump({k: v for k, v in _base().items() if k != "communication"},
                          sort_keys=False) + _alias_bomb()
    scenario = tmp_path / "bomb.yaml"
    scenario.write_text(text)
    assert len(text.encode()) < 4096
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    lines = _errors_of(["validate", str(scenario)], capsys)
    assert time.perf_counter() - t0 < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb < 100_000
    assert len(lines) == 1 and "aliases are expanded" in lines[0]


def test_a_valid_scenario_may_use_anchors_and_merge_keys(tmp_path: Path, capsys):
    raw = _base()
    raw.pop("buildings")
    text = yaml.safe_dump(raw, sort_keys=False) + (
        "buildings:\n"
        "  backlog_cap_kwh: 24.0\n"
        "  explicit:\n"
        "    - &home {id: B1, profile: Building_1, bus: 12}\n"
        "    - {<<: *home, id: B2, profile: Building_2, demand_scale: 2.0}\n"
        "    - {<<: *home, id: B3, profile: Building_3, bus: 16}\n"
        "    - {<<: *home, id: B4, profile: Building_4, bus: 17}\n"
        "    - {<<: *home, id: B5, profile: Building_5, bus: 18}\n"
        "    - {<<: *home, id: B6, profile: Building_6, demand_scale: 2.0, bus: 19}\n"
        "    - {<<: *home, id: B7, profile: Building_7, bus: 19}\n")
    scenario = tmp_path / "anchors.yaml"
    scenario.write_text(text)
    assert main(["validate", str(scenario)]) == 0, capsys.readouterr().err
    assert "valid. 7 buildings" in capsys.readouterr().out


def test_policy_nan_error_names_the_file(tmp_path: Path, capsys):
    raw = _base()
    _policy_weights("layer0.weight", float("nan"))(raw, tmp_path)
    scenario = tmp_path / "nan.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    (line,) = _errors_of(["validate", str(scenario)], capsys)
    assert "normal.safetensors" in line and "layer0.weight" in line and "non-finite" in line


def test_data_error_names_file_column_and_row(tmp_path: Path, capsys):
    raw = _base()
    _data_value("Building_4.csv", "Solar Generation [W/kW]", 100, "-5")(raw, tmp_path)
    scenario = tmp_path / "pv.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    (line,) = _errors_of(["validate", str(scenario)], capsys)
    assert "Building_4.csv" in line and "'Solar Generation [W/kW]'" in line
    assert "data row 101" in line


def test_shipped_data_pass_the_range_checks():
    from agents.fleet.data import load_citylearn

    data = load_citylearn(DATA_DIR)
    assert data.price_per_kwh.min() >= 0
    assert all(np.all(b.solar_w_per_kw >= 0) for b in data.buildings.values())


# --- run and study directories: refused before anything is written or deleted --------------


@dataclass
class DirCase:
    """A bad output place or resume target: the CLI arguments and what the line must say.

    ``setup`` prepares the working directory (``work``, the current directory during
    the case) and returns the arguments after ``cosim``.
    """

    id: str
    expect: str  # in the one error line
    setup: Callable[[Path, Path], list[str]]
    subprocess: bool = False
    issue_class: str = ""  # the class of issue 25 the case belongs to (counted in the report)


def _run_args(scenario: Path, *extra: str) -> list[str]:
    return ["run", str(scenario), "--quiet", "--engine", "plain", *extra]


def _fake_run(path: Path, state: str) -> None:
    """A run directory as cosim marks it (format and a 32-hex run id)."""
    path.mkdir()
    (path / "status.json").write_text(json.dumps({
        "format": "fleetcosim-run/1", "run_id": "0" * 32, "state": state}))
    (path / "buildings.parquet").write_bytes(b"not read")


def _lock(path: Path, pid: int) -> None:
    """A ``.lock`` file naming ``pid`` that no process holds (a dead run's: simply taken)."""
    path.mkdir(exist_ok=True)
    (path / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                            "started_unix": 0}))


_HELD: list[DirLock] = []  # locks this test process holds (a live run's)


def _live_lock(path: Path) -> None:
    path.mkdir(exist_ok=True)
    _HELD.append(DirLock.acquire(path))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _escaping_scenario(work: Path) -> Path:
    raw = _base()
    raw["output"] = {"directory": "../../escaped"}
    path = work / "escaping.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _study_file(work: Path, **fields: Any) -> Path:
    path = work / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "scenario": str(SCENARIO), **fields}))
    return path


def _made_run(path: Path, scenario: Path) -> None:
    """A real run of 4 steps (its output kept from the case's), marked failed as if it had
    been stopped, so that --resume would continue it."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(_run_args(scenario, "--out", str(path), "--steps", "4",
                              "--set", "output.plots=false")) == 0
    status = json.loads((path / "status.json").read_text())
    (path / "status.json").write_text(json.dumps({**status, "state": "failed"}))


def _edited_run(work: Path, scenario: Path) -> list[str]:
    run = work / "edited"
    _made_run(run, scenario)
    stored = run / "scenario.yaml"
    stored.write_text(stored.read_text().replace("alpha: 0.05", "alpha: 0.06"))
    return ["run", "--resume", str(run), "--quiet"]


def _set_up_stopped(work: Path, *, marker: bool) -> Path:
    """A run folder whose set-up was stopped: before scenario.yaml (``marker``), or before
    the marker itself (only the lock of a dead process is left)."""
    path = work / "stopped"
    path.mkdir()
    if marker:
        from cosim.results.provenance import code_fingerprint

        (path / "status.json").write_text(json.dumps({
            "format": "fleetcosim-run/1", "run_id": "1" * 32, "state": "failed",
            "setup": "started", "code": code_fingerprint()}))
    else:
        _lock(path, _dead_pid())
    return path


DIR_CASES: list[DirCase] = [
    DirCase("out_empty", "--out: an empty path", lambda w, s: _run_args(s, "--out", ""),
            subprocess=True),
    DirCase("out_dot", "is the working directory", lambda w, s: _run_args(s, "--out", ".")),
    DirCase("out_working_directory_absolute", "is the working directory",
            lambda w, s: _run_args(s, "--out", str(w), "--force")),
    DirCase("out_parent", "one of its parents", lambda w, s: _run_args(s, "--out", "..")),
    DirCase("out_root", "the file system's root", lambda w, s: _run_args(s, "--out", "/"),
            subprocess=True),
    DirCase("out_home", "is the home directory",
            lambda w, s: _run_args(s, "--out", os.environ["HOME"], "--force")),
    DirCase("out_is_a_file", "exists and is not a directory",
            lambda w, s: _run_args(s, "--out", str(w / "keep.txt"))),
    DirCase("out_user_folder_with_status_json", "not a run directory made by cosim",
            lambda w, s: _run_args(s, "--out", str(w / "keep_dir")), subprocess=True),
    DirCase("out_user_folder_with_status_json_force", "not a run directory made by cosim",
            lambda w, s: _run_args(s, "--out", str(w / "keep_dir"), "--force")),
    DirCase("out_earlier_run_without_force", "pass --force to replace it",
            lambda w, s: (_fake_run(w / "old", "complete"),
                          _run_args(s, "--out", str(w / "old")))[1]),
    DirCase("out_live_lock", "another cosim run is using this directory",
            lambda w, s: (_live_lock(w / "busy"),
                          _run_args(s, "--out", str(w / "busy"), "--force"))[1]),
    DirCase("scenario_output_directory_escapes", "output.directory: '../../escaped' leaves",
            lambda w, s: ["run", str(_escaping_scenario(w)), "--quiet"], subprocess=True),
    DirCase("resume_complete_run", "complete; nothing to resume",
            lambda w, s: (_fake_run(w / "done", "complete"),
                          ["run", "--resume", str(w / "done")])[1]),
    DirCase("resume_user_folder", "not a run directory made by cosim",
            lambda w, s: ["run", "--resume", str(w / "keep_dir")]),
    DirCase("resume_with_a_scenario", "give no scenario",
            lambda w, s: ["run", str(s), "--resume", str(w / "keep_dir")]),
    DirCase("study_variant_name_with_dotdot", "variants.../x",
            lambda w, s: ["study", str(s), "--quiet", "--variant", "../x:duals.mode=pi"]),
    DirCase("study_file_variant_name_absolute", "variants./abs",
            lambda w, s: ["study", str(_study_file(w, variants={"/abs": {}})), "--quiet"]),
    DirCase("study_into_a_user_folder", "is not a study directory made by cosim",
            lambda w, s: ["study", str(s), "--quiet", "--out", str(w / "keep_dir"),
                          "--variant", "base:duals.mode=pi", "--force"]),
    DirCase("study_name_with_a_slash", "name",
            lambda w, s: ["study", str(_study_file(w, name="../../x")), "--quiet"]),
    # issue 25
    DirCase("resume_with_an_edited_scenario", "the resolved scenario (the run's scenario.yaml)",
            _edited_run, subprocess=True, issue_class=INTEGRITY),
    DirCase("resume_set_up_stopped_before_scenario", "before scenario.yaml was written",
            lambda w, s: ["run", "--resume", str(_set_up_stopped(w, marker=True))],
            issue_class=INTEGRITY),
    DirCase("resume_set_up_stopped_before_marker", "before its marker status.json was written",
            lambda w, s: ["run", "--resume", str(_set_up_stopped(w, marker=False))],
            issue_class=INTEGRITY),
    # (the stale-lock cases, out_stale_lock, out_empty_lock and
    # out_set_up_stopped_without_force, went with the O_EXCL lock file: a kernel lock
    # (filelock) dies with its holder, and a dead run's .lock file is simply taken)
    DirCase("study_unreachable_scheduler", "--scheduler: cannot reach the dask scheduler",
            lambda w, s: ["study", str(s), "--quiet", "--variant", "a:duals.mode=pi",
                          "--out", str(w / "st"), "--scheduler", "tcp://127.0.0.1:1"],
            subprocess=True, issue_class=CRASH),
    DirCase("study_unreachable_scheduler_from_environment",
            "COSIM_DASK_SCHEDULER: 'nowhere' is not a scheduler address",
            lambda w, s: (os.environ.__setitem__("COSIM_DASK_SCHEDULER", "nowhere"),
                          ["study", str(s), "--quiet", "--variant", "a:duals.mode=pi",
                           "--out", str(w / "st")])[1], issue_class=CRASH),
    DirCase("out_name_with_newline", "x\\nerror: forged",
            lambda w, s: ["run", "--resume", str(w / "x\nerror: forged")],
            issue_class=MESSAGE),
]


def _dir_case(case: DirCase, tmp_path: Path, monkeypatch) -> tuple[Path, list[str], dict]:
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path.parent / f"{tmp_path.name}_mpl"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("COSIM_DASK_SCHEDULER", "")  # restored after the case (which may set it)
    (work / "keep.txt").write_text("not cosim's\n")
    (work / "keep_dir").mkdir()
    (work / "keep_dir" / "status.json").write_text('{"state": "complete"}\n')
    scenario = work / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(_base(), sort_keys=False))
    args = case.setup(work, scenario)
    return work, args, _snapshot(tmp_path)


def _check_dir_error(rc: int, err: str, expect: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expect in lines[0], lines[0]


def _with_engine(args: list[str], engine: str) -> list[str]:
    """``args`` of a run or study (not a resume) with ``--engine engine``."""
    if args[0] not in ("run", "study") or "--resume" in args:
        return args
    out = list(args)
    if "--engine" in out:
        k = out.index("--engine")
        del out[k:k + 2]
    return [*out, "--engine", engine]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", DIR_CASES, ids=[c.id for c in DIR_CASES])
def test_bad_output_place_one_line_error_exit_2(case: DirCase, engine: str, tmp_path: Path,
                                                monkeypatch, capsys):
    _, args, before = _dir_case(case, tmp_path, monkeypatch)
    rc = main(_with_engine(args, engine))
    captured = capsys.readouterr()
    _check_dir_error(rc, captured.err, case.expect)
    assert _snapshot(tmp_path) == before, "nothing may be written or deleted"


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in DIR_CASES if c.subprocess],
                         ids=[c.id for c in DIR_CASES if c.subprocess])
def test_bad_output_place_end_to_end(case: DirCase, tmp_path: Path, monkeypatch):
    work, args, before = _dir_case(case, tmp_path, monkeypatch)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "cosim.cli", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    _check_dir_error(proc.returncode, proc.stderr, case.expect)
    assert _snapshot(tmp_path) == before, "nothing may be written or deleted"


def test_there_are_enough_kinds_in_all():
    kinds = [c.id for c in CASES] + [c.id for c in DIR_CASES]
    assert len(set(kinds)) == len(kinds) >= MIN_KINDS
    assert sum(c.subprocess for c in CASES) + sum(c.subprocess for c in DIR_CASES) \
        >= MIN_SUBPROCESS_KINDS
