"""``study.md``: the study table as Markdown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agents.fleet.kpi_labels import header

#: The columns of ``study.md`` and their formats; headers from ``agents.fleet.kpi_labels``.
MD_FORMATS = [
    ("variant", "{}"),
    ("fraction_of_peak", "{:g}"),
    ("status", "{}"),
    ("cost", "{:,.0f}"),
    ("cost_gap_to_oracle", "{:+.1%}"),
    ("mean_district_grid_kwh", "{:.3f}"),
    ("limit_kwh", "{:.3f}"),
    ("grid_over_limit", "{:.3f}"),
    ("final_backlog_kwh", "{:.1f}"),
    ("final_avg_unmet_kwh", "{:.2f}"),
    ("unmet_slope_ratio", "{:.3f}"),
    ("dropped_kwh", "{:.1f}"),
    ("hours_over_limit", "{:g}"),
    ("lambda_mean_final", "{:.2f}"),
    ("lambda_spread_last10pct", "{:.2f}"),
    ("lambda_spread_last10pct_rel", "{:.1%}"),
    ("agents_at_lambda_max", "{:.0f}"),
    ("double_share_at_lambda_max", "{:.0%}"),
    ("double_share_near_lambda_max", "{:.0%}"),
    ("trafo_overload_hours", "{:g}"),
    ("max_trafo_loading_percent", "{:.1f}"),
    ("line_overload_hours", "{:g}"),
    ("hours_outside_095_105_pu", "{:g}"),
    ("hours_outside_090_110_pu", "{:g}"),
    ("grid_unknown_steps", "{:g}"),
    ("grid_constraint_violation_hours", "{:g}"),
    ("messages_per_step", "{:,.0f}"),
    ("negotiation_iterations_mean", "{:.1f}"),
    ("wall_ms_per_step", "{:,.1f}"),
    ("controller_ms_per_step", "{:,.1f}"),
]
MD_COLUMNS = [(column, header(column), fmt) for column, fmt in MD_FORMATS]


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
