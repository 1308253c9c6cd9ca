"""``study.md``: the study table as Markdown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MD_COLUMNS = [
    ("variant", "variant", "{}"), ("fraction_of_peak", "c", "{:g}"), ("status", "status", "{}"),
    ("cost", "cost $", "{:,.0f}"), ("cost_gap_to_oracle", "gap to oracle", "{:+.1%}"),
    ("mean_district_grid_kwh", "grid kWh/step", "{:.3f}"), ("limit_kwh", "c kWh/step", "{:.3f}"),
    ("grid_over_limit", "grid/c", "{:.3f}"), ("final_backlog_kwh", "final backlog kWh", "{:.1f}"),
    ("final_avg_unmet_kwh", "cum. avg unmet kWh", "{:.2f}"),
    ("unmet_slope_ratio", "unmet slope last/first", "{:.3f}"),
    ("dropped_kwh", "dropped kWh", "{:.1f}"), ("hours_over_limit", "h over c", "{:g}"),
    ("lambda_mean_final", "mean lambda", "{:.2f}"),
    ("lambda_spread_last10pct", "lambda spread, last 10 %", "{:.2f}"),
    ("lambda_spread_last10pct_rel", "spread / lambda_max", "{:.1%}"),
    ("agents_at_lambda_max", "at lambda_max", "{:.0f}"),
    ("double_share_at_lambda_max", "double agents' time at lambda_max", "{:.0%}"),
    ("double_share_near_lambda_max", "... >= 0.9 lambda_max", "{:.0%}"),
    ("trafo_overload_hours", "trafo >100 % h", "{:g}"),
    ("max_trafo_loading_percent", "max trafo %", "{:.1f}"),
    ("line_overload_hours", "line >100 % h", "{:g}"),
    ("hours_outside_095_105_pu", "V outside 0.95-1.05 h", "{:g}"),
    ("hours_outside_090_110_pu", "V outside 0.90-1.10 h", "{:g}"),
    ("grid_unknown_steps", "unknown grid steps (hours are lower bounds)", "{:g}"),
    ("grid_constraint_violation_hours", "grid constraint violated h", "{:g}"),
    ("messages_per_step", "messages/step", "{:,.0f}"),
    ("negotiation_iterations_mean", "negotiation iterations", "{:.1f}"),
    ("wall_ms_per_step", "wall ms/step", "{:,.1f}"),
    ("controller_ms_per_step", "controller ms/step", "{:,.1f}"),
]


def markdown_table(table: pd.DataFrame) -> str:
    """The study table as Markdown: the columns of ``MD_COLUMNS`` it has, formatted."""
    df = table.rename(columns=lambda c: c.rsplit(".", 1)[-1])
    cols = [(c, h, f) for c, h, f in MD_COLUMNS if c in df]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |",
             "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c, _, fmt in cols:
            v = row[c]
            if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
                cells.append("")
            else:
                try:
                    cells.append(fmt.format(v))
                except (ValueError, TypeError):
                    cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
