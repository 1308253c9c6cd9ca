"""`cosim demo` (what `make demo` runs): the paper's Fig. 1d scenario through mosaik.

Seven CityLearn homes in two weakly connected clusters on the CIGRE LV feeder,
state-augmented PPO policies, consensus on lambda, an AC power flow every step.
"""

from __future__ import annotations

from agents.fleet.paths import SCENARIOS_DIR, SHIPPED_ROOT

#: the shipped scenario (the checkout's, or the copy an installed wheel carries)
DEMO_SCENARIO = SHIPPED_ROOT / SCENARIOS_DIR / "paper_fig1d.yaml"
