"""Upper bounds on everything a scenario file can make the testbed allocate or loop over.

Every bound is checked when the scenario is validated, before any array, graph,
feeder or run directory is made (the README's "Scenario fields" lists them). The
YAML bounds (``grid_models.support.safe_yaml``, the same for every YAML file) are
checked while the file is parsed, before any value is built.
"""

from __future__ import annotations

import agents.fleet.data as _data

# --- the scenario file and its YAML ------------------------------------------------------
MAX_SCENARIO_FILE_BYTES = 1 << 20  # 1 MiB
#: a run's resolved scenario.yaml spells every default out (~180 bytes per explicit
#: building); readers of it (shards, resume) pass this as load_scenario(max_bytes=...)
MAX_RESOLVED_SCENARIO_BYTES = 16 << 20
MAX_REPORTED_ERRORS = 100  # problems printed for one file; a last line counts the rest

# --- sizes ---------------------------------------------------------------------------------
MAX_BUILDINGS = 100_000  # buildings.generate.count, buildings.explicit, generate.buses
MAX_LIST_ITEMS = 1_000  # generate.profiles, generate.demand_scales, class_for_scale
MAX_TIME_STEPS = 87_600  # time.start and time.steps (ten years of hours); also <= data hours
#: buildings x steps; a year of 10,000 homes is 87.6 M (one float64 (T, N) array: 700 MB)
MAX_BUILDING_STEPS = 100_000_000
MAX_ORACLE_BUILDING_STEPS = 250_000  # buildings x time.steps for controller.kind oracle (LP)
MAX_DUAL_ROUNDS = 1_000  # duals.rounds (averaging exchanges per step)
MAX_PLAN_HORIZON_STEPS = 168  # controller.dmpc_horizon_h (steps a building plans ahead)
MAX_NEGOTIATION_ITERATIONS = 1_000  # controller.dmpc_iterations, epos_iterations
MAX_DMPC_THREADS = 256  # controller.dmpc_threads
MAX_EPOS_PLANS = 256  # controller.epos_plans (candidate day plans per building)
MAX_V1_WINDOW = 8_760  # duals.v1_window (steps), also <= time.steps
MAX_FLUSH_EVERY = 8_760  # output.flush_every (steps buffered in memory)
MAX_SHARDS = 64  # sharding.shards
MAX_HOST_PORT_CHARS = 260  # sharding.connect: a host name (at most 253) and a port
MAX_PORT = 65535  # sharding.connect
MAX_REMOTE_TIMEOUT_S = 3_600.0  # controller.remote_timeout_s (s a remote controller may take)
MAX_DELAY_STEPS = 8_760  # communication.faults.delay_steps
MAX_SILENT_INTERVALS = 10_000  # communication.faults.silent
MAX_GRAPH_EDGES = 5_000_000  # communication graph edges (complete, two_clusters, ...)
MAX_SEED = 2**32 - 1

# --- free-form values ----------------------------------------------------------------------
MAX_PARAMS = 8  # keys of communication.params
MAX_TEXT_CHARS = 4_096  # any string field (paths, sources, description)
MAX_ID_CHARS = 64  # building ids, policy classes, scenario name
ID_PATTERN = rf"^[A-Za-z0-9_-]{{1,{MAX_ID_CHARS}}}$"
ID_RULE = f"letters, digits, '_' and '-' only, 1 to {MAX_ID_CHARS} characters"

# --- magnitudes ----------------------------------------------------------------------------
# the data's own plausibility bounds (agents.fleet.data) apply to the scenario's overrides too:
#: battery.capacity_kwh of one building; battery.power_kw and pv_kw of one building
MAX_BATTERY_CAPACITY_KWH = _data.MAX_BATTERY_CAPACITY_KWH
MAX_POWER_KW = _data.MAX_POWER_KW
MAX_DEMAND_SCALE = 1_000.0
MAX_FLEET_SCALE = 1_000_000.0
#: grid_constraints.period_steps: multipliers per constraint (one per phase of the period)
MAX_GRID_PERIOD_STEPS = 168
#: communication.graph_file: largest graph file read
MAX_GRAPH_FILE_BYTES = 64 * 2**20
