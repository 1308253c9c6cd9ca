"""Every shell command of README.md and docs/inputs.md runs as written.

The ```bash and ```sh blocks of each page are run in order, one ``bash`` process per
block (``set -euo pipefail``: any failing command fails the block), in a fresh folder
that looks like a checkout after ``make demo``: a link to each top-level entry of the
project, and ``.venv`` linked to the environment running the tests. ``PYTHONPATH`` names
this checkout, so its code is what runs. ``docs/inputs.md`` writes its files to
``/tmp/byo`` as it says. The test makes that folder itself, with a marker file, and
removes it afterwards; a ``/tmp/byo`` without the marker is someone's own folder, which
the test never deletes: it fails and says so instead.

A command that cannot run in a test is skipped only when it is listed in ``EXCLUDED``
with its reason; ``test_exclusions_are_listed_and_current`` fails for a listed command
no page has any more.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/inputs.md")
#: the commands (a whole line, comment stripped) no test runs, with the reason
EXCLUDED: dict[str, str] = {
    "make demo": "creates .venv and installs the project (minutes, network); "
                 "the demo's run itself is tests/cosim/test_demo.py's business",
    "make test": "runs lint, types, the docs build and this very test suite",
}
_BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.S | re.M)
_SCRATCH = Path("/tmp/byo")  # docs/inputs.md's own folder
_MARKER = ".made_by_test_doc_commands"  # in _SCRATCH: the test made it, the test may remove it


def _clear_scratch() -> None:
    """Remove :data:`_SCRATCH` when this test made it (its marker is there)."""
    if (_SCRATCH / _MARKER).is_file():
        shutil.rmtree(_SCRATCH)


def _make_scratch() -> None:
    """A fresh, marked :data:`_SCRATCH`; a folder of that name the test did not make is
    left alone and fails the test."""
    _clear_scratch()
    if _SCRATCH.exists() or _SCRATCH.is_symlink():
        pytest.fail(f"{_SCRATCH} exists and was not made by this test; docs/inputs.md's "
                    "examples write there: move it away to run this test")
    _SCRATCH.mkdir()
    (_SCRATCH / _MARKER).touch()
TIMEOUT_S = 900


def shell_blocks(page: str) -> list[str]:
    """The page's shell blocks, in order, with the excluded command lines left out."""
    blocks = []
    for block in _BLOCK.findall((REPO_ROOT / page).read_text(encoding="utf-8")):
        kept = [line for line in block.splitlines()
                if line.split("#")[0].strip() not in EXCLUDED]
        if any(line.strip() and not line.lstrip().startswith("#") for line in kept):
            blocks.append("\n".join(kept) + "\n")
    return blocks


def _checkout_like(folder: Path) -> None:
    for entry in REPO_ROOT.iterdir():
        if entry.name not in (".git", ".venv", "runs", ".site") and \
                not entry.name.endswith("_cache"):
            (folder / entry.name).symlink_to(entry)
    (folder / ".venv").symlink_to(Path(sys.prefix))


def test_exclusions_are_listed_and_current() -> None:
    text = "".join(block for page in PAGES
                   for block in _BLOCK.findall((REPO_ROOT / page).read_text()))
    lines = {line.split("#")[0].strip() for line in text.splitlines()}
    assert set(EXCLUDED) <= lines, f"no page has: {set(EXCLUDED) - lines}"
    assert all(reason for reason in EXCLUDED.values())
    assert all(shell_blocks(page) for page in PAGES)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_shell_command_runs_as_written(page: str, tmp_path: Path) -> None:
    if not (Path(sys.prefix) / "bin" / "cosim").exists():
        pytest.skip("the environment has no cosim script (project not installed)")
    _checkout_like(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_MKDOCS_2_WARNING": "1"}
    _make_scratch()
    try:
        for i, block in enumerate(shell_blocks(page)):
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                                  env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
            assert done.returncode == 0, (
                f"{page}, shell block {i + 1} failed ({done.returncode}):\n{block}\n"
                f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    finally:
        _clear_scratch()


def test_a_users_own_scratch_folder_is_never_removed(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """A folder at the examples' path that the test did not make survives, and the test
    fails instead of running over it."""
    own = tmp_path / "byo"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    monkeypatch.setattr(sys.modules[__name__], "_SCRATCH", own)
    with pytest.raises(pytest.fail.Exception, match="not made by this test"):
        _make_scratch()
    _clear_scratch()
    assert (own / "notes.txt").read_text() == "mine"
