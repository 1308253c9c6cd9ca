"""report.html: one self-contained file per run and per study that parses, explains every
KPI with its unit, and embeds every plot (no file it points to outside itself)."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cosim.cli import main
from cosim.results.html import KPI_EXPLANATIONS, REPORT_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}

pytestmark = pytest.mark.cosim


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data):
        if self.open and self.open[-1] == "td":
            self.cells.append(data)


def _parse(path: Path) -> _Collect:
    parser = _Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == [], f"unclosed tags {parser.open}"
    return parser


def _embedded_pngs(parser: _Collect) -> list[bytes]:
    out = []
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def test_a_run_report_embeds_every_plot_and_explains_every_kpi(tmp_path: Path):
    run = tmp_path / "run"
    assert main(["run", str(REPO_ROOT / "scenarios" / "lv_semiurb_40_grid.yaml"), "--steps",
                 "24", "--engine", "plain", "--quiet", "--out", str(run)]) == 0
    parsed = _parse(run / REPORT_FILE)
    pngs = _embedded_pngs(parsed)
    plots = sorted((run / "plots").glob("*.png"))
    assert len(pngs) == len(plots) >= 7
    assert sorted(pngs) == sorted(p.read_bytes() for p in plots)
    assert all(p.startswith(PNG_SIGNATURE) for p in pngs)
    kpis = json.loads((run / "kpis.json").read_text())
    for key in [*kpis["fleet"], *kpis["grid"]]:
        assert key in parsed.cells and key in KPI_EXPLANATIONS, key
        assert KPI_EXPLANATIONS[key] in parsed.cells
    assert "trafo 0 loading" in parsed.cells  # the grid constraints' table
    assert "feeder_map.png" in {p.name for p in plots}
    # lv_semiurb_40 starts at data row 0: 31 July 23:00 (agents.fleet.calendar), 24 steps
    assert any(c.startswith("2016-07-31 23:00 to 2016-08-01 22:00") for c in parsed.cells)


def test_a_study_report_embeds_its_figures(tmp_path: Path):
    out = tmp_path / "study"
    assert main(["study", str(REPO_ROOT / "scenarios" / "paper_fig1d.yaml"), "--steps", "24",
                 "--engine", "plain", "--quiet", "--variant", "pi:duals.mode=pi",
                 "--variant", "none:controller.kind=none", "--out", str(out)]) == 0
    parsed = _parse(out / REPORT_FILE)
    figures = sorted(out.glob("*.png"))
    assert figures and len(_embedded_pngs(parsed)) == len(figures)
    assert "pi" in parsed.cells and "none" in parsed.cells
    for run in (out / "runs").iterdir():
        assert (run / REPORT_FILE).is_file()
