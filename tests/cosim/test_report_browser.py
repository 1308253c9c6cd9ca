"""report.html as an engineer sees it: a run's and a small study's page rendered by
headless Chromium at 1280 px. Every image loads, nothing widens the page past the
window (wide tables scroll in their own box), the run page opens with its verdict and
the study table links each run's report. The screenshots are kept: under
``$COSIM_BROWSER_ARTIFACTS`` when set, else under pytest's tmp_path (printed).

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it);
skipped with the reason when it is missing.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cosim.cli import main
from cosim.results.html import REPORT_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDTH = 1280
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p), None)

pytestmark = [pytest.mark.cosim, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not "
                                 "installed (Debian: apt-get install -y chromium)")]

#: Written into a copy of the page: the measurements, as JSON in <pre id="probe">.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var links = Array.prototype.slice.call(document.querySelectorAll('a[href]'));
  var verdict = document.getElementById('verdict');
  var out = {
    images: imgs.map(function (i) { return [i.alt, i.complete, i.naturalWidth]; }),
    scrollWidth: document.documentElement.scrollWidth,
    scrollHeight: document.documentElement.scrollHeight,
    clientWidth: document.documentElement.clientWidth,
    verdict: verdict ? verdict.innerText : null,
    firstHeading: (document.querySelector('h2') || {}).textContent || null,
    links: links.map(function (a) { return a.getAttribute('href'); })
  };
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args: str) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
           "--virtual-time-budget=5000", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("COSIM_BROWSER_ARTIFACTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def render(page: Path, shots: Path, name: str) -> dict[str, Any]:
    """The probe's measurements of ``page`` at 1280 px, and its screenshots (the first
    screen and the whole page) in ``shots``."""
    probe_page = page.with_name(f".probe_{page.name}")
    text = page.read_text(encoding="utf-8")
    probe_page.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    try:
        dom = _chromium(f"--window-size={WIDTH},900", "--dump-dom", probe_page.as_uri())
    finally:
        probe_page.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"no probe output in the DOM of {page}"
    measured: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    first, whole = shots / f"{name}_first_screen.png", shots / f"{name}_page.png"
    _chromium(f"--window-size={WIDTH},900", f"--screenshot={first}", page.as_uri())
    height = min(16000, max(900, int(measured["scrollHeight"])))
    _chromium(f"--window-size={WIDTH},{height}",
              f"--screenshot={whole}", page.as_uri())
    print(f"screenshots of {page}: {first} {whole}")
    assert first.stat().st_size > 0 and whole.stat().st_size > 0
    return measured


def _check_page(measured: dict[str, Any]) -> None:
    assert measured["images"], "no images"
    for alt, complete, natural_width in measured["images"]:
        assert complete and natural_width > 0, f"image {alt} did not load"
    assert measured["scrollWidth"] <= WIDTH, (
        f"the page is {measured['scrollWidth']} px wide at a {WIDTH} px window")


def test_a_run_report_renders_with_its_verdict_first(tmp_path: Path):
    run = tmp_path / "run"
    assert main(["run", str(REPO_ROOT / "scenarios" / "lv_semiurb_40_grid.yaml"), "--steps",
                 "24", "--engine", "plain", "--quiet", "--out", str(run)]) == 0
    measured = render(run / REPORT_FILE, _artifacts(tmp_path), "run")
    _check_page(measured)
    verdict = measured["verdict"]
    assert verdict and verdict.startswith("Verdict:"), verdict
    for words in ("District limit", "Transformer overload", "Line overload", "Voltage band"):
        assert words in verdict, (words, verdict)
    assert measured["firstHeading"] == "District and grid"


def test_a_study_report_renders_and_links_its_runs(tmp_path: Path):
    out = tmp_path / "study"
    assert main(["study", str(REPO_ROOT / "scenarios" / "paper_fig1d.yaml"), "--steps", "24",
                 "--engine", "plain", "--quiet", "--variant", "pi:duals.mode=pi",
                 "--variant", "none:controller.kind=none", "--out", str(out)]) == 0
    measured = render(out / REPORT_FILE, _artifacts(tmp_path), "study")
    _check_page(measured)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert sorted(measured["links"]) == sorted(f"runs/{r}/{REPORT_FILE}" for r in runs)
    for link in measured["links"]:
        assert (out / link).is_file(), link
