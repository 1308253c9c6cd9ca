"""One self-contained ``report.html`` per run and per study.

Everything is inside the file: the scenario summary, the KPI table with a one-line
explanation and the unit of each KPI, the grid constraints' KPIs when there are some,
and every PNG of the run's ``plots/`` (or the study's figures) embedded as base64
``data:`` URIs, so the file can be mailed or archived alone. Text from the run's files
is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.fleet.kpi_labels import KPI_LABELS

REPORT_FILE = "report.html"

#: One line per KPI (docs/equations.md, "KPIs"), from the one label table
#: (``agents.fleet.kpi_labels``); units come from kpis.json.
KPI_EXPLANATIONS: dict[str, str] = {name: label.explanation for name, label in KPI_LABELS.items()
                                    if label.explanation}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:14px;text-align:left}th{background:#f2f2f2}td.num{text-align:right}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}h2{margin-top:1.5em}
.muted{color:#666;font-size:13px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.1f}"
    if isinstance(value, list):
        shown = ", ".join(_value(v) for v in value[:10])
        return f"[{shown}{', ...' if len(value) > 10 else ''}]"
    return str(value)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_esc(path.stem)}" src="data:image/png;base64,{data}">'
            f'<figcaption class="muted">{_esc(path.name)}</figcaption></figure>')


def _kpi_rows(section: str, values: dict[str, Any], units: dict[str, str]) -> list[str]:
    rows = []
    for key, value in values.items():
        rows.append(f"<tr><td>{_esc(section)}</td><td>{_esc(key)}</td>"
                    f'<td class="num">{_esc(_value(value))}</td>'
                    f"<td>{_esc(units.get(key, ''))}</td>"
                    f"<td>{_esc(KPI_EXPLANATIONS.get(key, ''))}</td></tr>")
    return rows


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def _period(time: dict[str, Any]) -> str:
    """First and last step's datetime on the data's calendar (docs/results_contract.md)."""
    from agents.fleet.calendar import row_datetimes

    start, steps = time.get("start"), time.get("steps")
    if not (isinstance(start, int) and isinstance(steps, int) and start >= 0 and steps >= 1):
        return "unknown"
    first, last = row_datetimes(start, np.array([0, steps - 1]))
    return (f"{str(first)[:16].replace('T', ' ')} to {str(last)[:16].replace('T', ' ')} "
            "(start of each hour, nominal year)")


def run_report_html(run_dir: str | Path) -> str:
    """The HTML of a finished run's report (reads kpis.json, scenario.yaml, plots/)."""
    from cosim.scenario.loader import load_run_scenario

    run = Path(run_dir)
    kpis = json.loads((run / "kpis.json").read_text())
    scenario = load_run_scenario(run).model_dump(mode="json")
    status = json.loads((run / "status.json").read_text())
    body = [f"<h1>Run {_esc(scenario.get('name', run.name))}</h1>",
            f"<p>{_esc(scenario.get('description', ''))}</p>", "<h2>Scenario</h2><table>"]
    sc = scenario
    summary = [
        ("buildings", kpis.get("fleet", {}).get("n_buildings")),
        ("steps", f"{sc.get('time', {}).get('steps')} of {sc.get('time', {}).get('step_h')} h "
                  f"from data row {sc.get('time', {}).get('start')}"),
        ("period", _period(sc.get("time") or {})),
        ("feeder", f"{sc.get('feeder', {}).get('source')} "
                   f"({sc.get('feeder', {}).get('backend')})"),
        ("controller", (sc.get("controller") or {}).get("kind")),
        ("duals", ", ".join(f"{k} {v}" for k, v in (sc.get("duals") or {}).items())),
        ("communication", (sc.get("communication") or {}).get("topology")),
        ("grid constraints", "none" if not sc.get("grid_constraints") else
         f"{sc['grid_constraints'].get('mode')} mode"),
        ("limit c", f"{kpis.get('limit_kwh', 0):.3f} kWh per step"),
        ("engine", status.get("engine")), ("seed", sc.get("seed")),
        ("run id", status.get("run_id")),
    ]
    body += [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in summary]
    body.append("</table><h2>KPIs</h2><table><tr><th>section</th><th>KPI</th>"
                "<th>value</th><th>unit</th><th>what it says</th></tr>")
    units = kpis.get("units", {})
    body += _kpi_rows("fleet", kpis.get("fleet", {}), units.get("fleet", {}))
    body += _kpi_rows("grid", kpis.get("grid", {}), units.get("grid", {}))
    totals = kpis.get("grid_constraint_totals")
    if totals:
        body += _kpi_rows("constraints", totals, {"grid_constraint_violation_hours": "h"})
    body.append("</table>")
    per = kpis.get("grid_constraints")
    if per:
        from cosim.results.constraint_report import constraint_table_md

        body.append("<h2>Grid constraints</h2>")
        body.append(_md_table_html(constraint_table_md(per)))
    plots = sorted((run / "plots").glob("*.png")) if (run / "plots").is_dir() else []
    body.append("<h2>Plots</h2>")
    body += [_image(p) for p in plots] or ["<p class='muted'>no plots (output.plots: "
                                           "false)</p>"]
    return _page(f"cosim run {scenario.get('name', run.name)}", body)


def _md_table_html(markdown: str) -> str:
    """A Markdown pipe table (as ``constraint_table_md`` writes it) as an HTML table."""
    lines = [ln for ln in markdown.strip().splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return f"<pre>{_esc(markdown)}</pre>"

    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")]

    out = ["<table><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in cells(lines[0])) + "</tr>"]
    for line in lines[2:]:
        out.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells(line)) + "</tr>")
    return "".join(out) + "</table>"


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into the run directory; returns its path."""
    path = Path(run_dir) / REPORT_FILE
    path.write_text(run_report_html(run_dir), encoding="utf-8")
    return path


def study_report_html(out: str | Path) -> str:
    """The HTML of a study folder's report (study.csv, study.md's columns, figures)."""
    out = Path(out)
    marker = json.loads((out / "study.json").read_text())
    table = pd.read_csv(out / "study.csv")
    body = [f"<h1>Study {_esc(marker.get('name', out.name))}</h1>",
            f"<p class='muted'>scenario {_esc(marker.get('scenario', ''))}; "
            f"{len(table)} runs; each run's own report.html is in runs/&lt;run&gt;/</p>",
            "<h2>Results</h2>"]
    md = out / "study.md"
    body.append(_md_table_html(md.read_text()) if md.is_file() else
                table.to_html(index=False, escape=True))
    body.append("<h2>Figures</h2>")
    body += [_image(p) for p in sorted(out.glob("*.png"))]
    return _page(f"cosim study {marker.get('name', out.name)}", body)


def write_study_report(out: str | Path) -> Path:
    """Write the study folder's HTML report into it and return its path."""
    path = Path(out) / REPORT_FILE
    path.write_text(study_report_html(out), encoding="utf-8")
    return path
