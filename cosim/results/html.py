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
.scroll{overflow-x:auto;max-width:100%}.scroll table{margin:0.5em 0}
.verdict{font-size:16px;padding:0.6em 0.9em;border-left:6px solid #888;background:#f7f7f7}
.verdict.ok{border-color:#2e7d32}.verdict.bad{border-color:#c62828}
.verdict ul{margin:0.3em 0 0 1.2em;padding:0}
details{margin:0.5em 0}summary{cursor:pointer;color:#444}
"""

#: The plots shown right under the verdict (the grid's state), in this order; the
#: others follow the KPI tables.
GRID_PLOTS = ("district_grid", "trafo_duration", "line_duration", "voltage_envelope",
              "worst_bus_voltage", "feeder_map", "grid_constraints")


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


def _folded(key: str, value: Any) -> bool:
    """A KPI that is zero only because nothing was unknown (``*_unknown_steps``,
    ``nonconverged_steps``): folded away under the KPI table."""
    return (key.endswith("unknown_steps") or key == "nonconverged_steps") and value == 0


def _kpi_rows(section: str, values: dict[str, Any], units: dict[str, str]) -> list[str]:
    rows = []
    for key, value in values.items():
        rows.append(f"<tr><td>{_esc(section)}</td><td>{_esc(key)}</td>"
                    f'<td class="num">{_esc(_value(value))}</td>'
                    f"<td>{_esc(units.get(key, ''))}</td>"
                    f"<td>{_esc(KPI_EXPLANATIONS.get(key, ''))}</td></tr>")
    return rows


def _scroll(table_html: str) -> str:
    """A table in its own horizontally scrolling box (wide tables never widen the page)."""
    return f'<div class="scroll">{table_html}</div>'


def _hours(grid: dict[str, Any], key: str) -> str:
    value = grid.get(key)
    if value is None:
        return "unknown"
    unknown = grid.get(f"{key}_unknown_steps") or 0
    text = f"{value:g} h"
    return f"at least {text} ({unknown:g} steps unknown)" if unknown else text


def verdict_html(kpis: dict[str, Any]) -> str:
    """The report's first lines: whether the district limit held (and in how many steps
    it did not), the transformer and line overload hours, and whether the voltage band
    held, from ``kpis.json``."""
    fleet, grid = kpis.get("fleet", {}), kpis.get("grid", {})
    items, bad = [], False
    over, steps = fleet.get("steps_over_limit"), fleet.get("steps")
    limit = kpis.get("limit_kwh")
    limit_text = f"District limit c = {limit:.2f} kWh per step" if isinstance(
        limit, (int, float)) else "District limit"
    if over is None:
        items.append(f"{limit_text}: unknown")
    elif over == 0:
        items.append(f"{limit_text} held in all {steps:g} steps")
    else:
        bad = True
        items.append(f"{limit_text} NOT held: over it in {over:g} of {steps:g} steps")
    if grid:
        trafo, line = grid.get("trafo_overload_hours"), grid.get("line_overload_hours")
        bad = bad or bool(trafo) or bool(line)
        peak_t, peak_l = grid.get("max_trafo_loading_percent"), grid.get(
            "max_line_loading_percent")
        items.append(f"Transformer overload: {_hours(grid, 'trafo_overload_hours')}"
                     + (f" (peak loading {peak_t:.1f} %)" if peak_t is not None else ""))
        items.append(f"Line overload: {_hours(grid, 'line_overload_hours')}"
                     + (f" (peak loading {peak_l:.1f} %)" if peak_l is not None else ""))
        outside = grid.get("hours_outside_095_105_pu")
        low, high = grid.get("min_vm_pu"), grid.get("max_vm_pu")
        span = (f" (voltages {low:.3f} to {high:.3f} pu)"
                if low is not None and high is not None else "")
        if outside is None:
            items.append(f"Voltage band 0.95-1.05 pu: unknown{span}")
        elif outside == 0 and not grid.get("hours_outside_095_105_pu_unknown_steps"):
            items.append(f"Voltage band 0.95-1.05 pu held{span}")
        else:
            bad = bad or bool(outside)
            items.append("Voltage band 0.95-1.05 pu "
                         + ("NOT held: outside it " if outside else "held in the known "
                            "steps: outside it ")
                         + f"{_hours(grid, 'hours_outside_095_105_pu')}{span}")
    else:
        items.append("No grid in this run: no transformer, line or voltage verdict")
    head = "Verdict: limits violated" if bad else "Verdict: all limits held"
    return (f'<div id="verdict" class="verdict {"bad" if bad else "ok"}"><strong>'
            f'{_esc(head)}</strong><ul>'
            + "".join(f"<li>{_esc(i)}</li>" for i in items) + "</ul></div>")


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
    plots = sorted((run / "plots").glob("*.png")) if (run / "plots").is_dir() else []
    grid_plots = sorted((p for p in plots if p.stem in GRID_PLOTS),
                        key=lambda p: GRID_PLOTS.index(p.stem))
    other_plots = sorted((p for p in plots if p.stem not in GRID_PLOTS),
                         key=lambda p: (p.stem == "comm_graph", p.stem))  # the graph last
    body = [f"<h1>Run {_esc(scenario.get('name', run.name))}</h1>", verdict_html(kpis),
            f"<p>{_esc(scenario.get('description', ''))}</p>"]
    if grid_plots:
        body.append("<h2>District and grid</h2>")
        body += [_image(p) for p in grid_plots]
    body.append("<h2>Scenario</h2><table>")
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
    head = ("<table><tr><th>section</th><th>KPI</th><th>value</th><th>unit</th>"
            "<th>what it says</th></tr>")
    body.append("</table><h2>KPIs</h2><div class=\"scroll\">" + head)
    units = kpis.get("units", {})
    sections = [("fleet", kpis.get("fleet", {}), units.get("fleet", {})),
                ("grid", kpis.get("grid", {}), units.get("grid", {}))]
    totals = kpis.get("grid_constraint_totals")
    if totals:
        sections.append(("constraints", totals, {"grid_constraint_violation_hours": "h"}))
    folded: list[str] = []
    for section, values, section_units in sections:
        shown = {k: v for k, v in values.items() if not _folded(k, v)}
        body += _kpi_rows(section, shown, section_units)
        folded += _kpi_rows(section, {k: v for k, v in values.items() if k not in shown},
                            section_units)
    body.append("</table></div>")
    if folded:
        body.append(f"<details><summary>{len(folded)} more KPIs, zero because no step was "
                    "unknown or failed to converge</summary><div class=\"scroll\">" + head
                    + "".join(folded) + "</table></div></details>")
    per = kpis.get("grid_constraints")
    if per:
        from cosim.results.constraint_report import constraint_table_md

        body.append("<h2>Grid constraints</h2>")
        body.append(_scroll(_md_table_html(constraint_table_md(per))))
    body.append("<h2>Fleet plots</h2>" if grid_plots else "<h2>Plots</h2>")
    body += [_image(p) for p in other_plots] or ["<p class='muted'>no plots (output.plots: "
                                                 "false)</p>"]
    return _page(f"cosim run {scenario.get('name', run.name)}", body)


def _md_table_html(markdown: str, links: list[str] | None = None) -> str:
    """A Markdown pipe table (as ``constraint_table_md`` writes it) as an HTML table."""
    lines = [ln for ln in markdown.strip().splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return f"<pre>{_esc(markdown)}</pre>"

    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")]

    first = "<th>report</th>" if links is not None else ""
    out = ["<table><tr>" + first
           + "".join(f"<th>{_esc(c)}</th>" for c in cells(lines[0])) + "</tr>"]
    for i, line in enumerate(lines[2:]):
        link = ""
        if links is not None:
            href = links[i] if i < len(links) else ""
            link = (f'<td><a href="{_esc(href)}">report</a></td>' if href else
                    "<td class='muted'>none</td>")
        out.append("<tr>" + link + "".join(f"<td>{_esc(c)}</td>" for c in cells(line))
                   + "</tr>")
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
    links = [_run_report_link(out, row) for _, row in table.iterrows()]
    body.append(_scroll(_md_table_html(md.read_text(), links) if md.is_file() else
                        table.to_html(index=False, escape=True)))
    body.append("<h2>Figures</h2>")
    body += [_image(p) for p in sorted(out.glob("*.png"))]
    return _page(f"cosim study {marker.get('name', out.name)}", body)


def _run_report_link(out: Path, row: pd.Series) -> str:
    """The relative link to a study row's run report (``runs/<id>/report.html``), ""
    when that run has none (a failed run)."""
    run_dir = row.get("run_dir")
    rel = (str(run_dir) if isinstance(run_dir, str) and run_dir
           else f"runs/{row.get('run', '')}")
    rel = rel.replace("\\", "/").strip("/")
    return f"{rel}/{REPORT_FILE}" if (out / rel / REPORT_FILE).is_file() else ""


def write_study_report(out: str | Path) -> Path:
    """Write the study folder's HTML report into it and return its path."""
    path = Path(out) / REPORT_FILE
    path.write_text(study_report_html(out), encoding="utf-8")
    return path
