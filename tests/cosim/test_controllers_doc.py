"""Every example of docs/controllers.md runs as written: the Python blocks are executed
(a block headed by a file path is written there), the YAML blocks are scenario
``controller`` sections that validate (and, for a class, build), the ``cosim run`` line
runs, and the abridged remote controller matches examples/remote_controller.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from cosim.cli import main
from cosim.engine.run import prepare_scenario
from cosim.results.readers import read_status
from cosim.scenario.loader import load_scenario

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "controllers.md"
SCENARIO = REPO_ROOT / "scenarios" / "paper_fig1d.yaml"
DOC_DIR = "/tmp/bench_doc"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture()
def doc_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.syspath_prepend(str(tmp_path / "mine"))
    yield tmp_path
    import sys

    sys.modules.pop("half", None)


def _here(text: str, where: Path) -> str:
    return text.replace(DOC_DIR, str(where))


def test_the_python_examples_run(doc_dir, capsys):
    blocks = _blocks("python")
    assert len(blocks) == 4
    ran = 0
    for block in blocks:
        code = _here(block, doc_dir)
        first = code.splitlines()[0]
        if "(abridged)" in first:
            example = (REPO_ROOT / first.split()[1]).read_text()
            for line in code.splitlines()[1:]:
                assert line.split("#")[0].strip() in example, line
            continue
        if first.startswith("# /"):
            path = Path(first[2:].strip())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)
            continue
        exec(compile(code, str(DOC), "exec"), {"__name__": "doc_example"})
        ran += 1
    assert ran == 2
    printed = capsys.readouterr().out.split()
    assert len(printed) == 4 and all(float(x) == float(x) for x in printed)


def test_the_yaml_sections_validate(doc_dir):
    (doc_dir / "mine").mkdir()
    for block in _blocks("python"):
        code = _here(block, doc_dir)
        if code.startswith("# /"):
            Path(code.splitlines()[0][2:].strip()).write_text(code)
    sections = [yaml.safe_load(_here(b, doc_dir)) for b in _blocks("yaml")]
    assert [s["controller"]["kind"] for s in sections] == ["python", "remote"]
    _, built = prepare_scenario(SCENARIO, [("controller", sections[0]["controller"])], 24)
    assert built.controller.name == "half" and built.controller.share == 0.4
    sc = load_scenario(SCENARIO, [("controller", sections[1]["controller"])], 24)
    assert sc.controller.remote_timeout_s == 30


def test_the_cosim_run_line_runs(doc_dir):
    (doc_dir / "mine").mkdir()
    for block in _blocks("python"):
        code = _here(block, doc_dir)
        if code.startswith("# /"):
            Path(code.splitlines()[0][2:].strip()).write_text(code)
    lines = [b for b in _blocks("text") if b.startswith("cosim run")]
    assert len(lines) == 1
    argv = shlex.split(_here(lines[0].replace("\\\n", " "), doc_dir))[1:]
    out = doc_dir / "run"
    assert main([*argv, "--out", str(out), "--quiet", "--set", "output.plots=false"]) == 0
    assert read_status(out)["state"] == "complete"
