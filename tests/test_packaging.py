"""fleetcosim installs like a library: the wheel carries the shipped scenarios and data,
a run needs no training dependency, and the packages listed in pyproject.toml are all
of them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from agents.fleet.paths import REPO_ROOT, SHIPPED_ROOT, STUDIES_DIR, find_input_file
from cosim.cli import main

PYPROJECT = REPO_ROOT / "pyproject.toml"


def _listed_packages() -> set[str]:
    text = PYPROJECT.read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M)
    assert block is not None
    return set(re.findall(r'"([\w.]+)"', block.group(1)))


def test_pyproject_lists_every_package() -> None:
    tree = {p.parent.relative_to(REPO_ROOT).as_posix().replace("/", ".")
            for package in ("agents", "cosim", "grid_models")
            for p in (REPO_ROOT / package).rglob("__init__.py")}
    listed = _listed_packages()
    assert {p for p in listed if not p.startswith("cosim._bundled")} == tree


def test_a_shipped_scenario_by_name_or_path_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    shipped = SHIPPED_ROOT / "scenarios" / "paper_fig1d.yaml"
    assert find_input_file("paper_fig1d") == shipped
    assert find_input_file("scenarios/paper_fig1d.yaml") == shipped
    assert find_input_file("paper_reproduction", STUDIES_DIR) == (
        SHIPPED_ROOT / STUDIES_DIR / "paper_reproduction.yaml")
    # the user's own file of the same relative path wins; a missing one is named as given
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "paper_fig1d.yaml").write_text("name: mine\n")
    assert find_input_file("scenarios/paper_fig1d.yaml") == Path("scenarios/paper_fig1d.yaml")
    assert find_input_file("nope") == Path("nope")


def test_validate_a_shipped_scenario_by_name(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "paper_fig1d"]) == 0
    assert "paper_fig1d.yaml: valid" in capsys.readouterr().out


def test_version(capsys) -> None:
    from cosim import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cosim {__version__}"


def test_train_without_the_extra_says_how_to_install_it(monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    assert main(["train", str(REPO_ROOT / "data" / "policies" / "recipe.yaml")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'fleetcosim[train]'" in err and "torch" in err
    assert len(err.strip().splitlines()) == 1


#: what the wheel is built from (the rest of the checkout stays behind)
_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "agents", "cosim", "grid_models",
            "scenarios", "data/README.md", "data/citylearn_2022", "data/policies")
_NO_INDEX = ("Could not find a version", "NewConnectionError", "Network is unreachable",
             "Temporary failure in name resolution", "No matching distribution")


def _sh(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_demo(tmp_path: Path) -> None:
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # build from a copy of the sources, so no stale build/ of the checkout gets in
    src = tmp_path / "src"
    for name in _SOURCES:
        s = REPO_ROOT / name
        if s.is_dir():
            shutil.copytree(s, src / name, ignore=shutil.ignore_patterns(
                "__pycache__", "candidates", "*_checkpoints"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, src / name)
    wheels = tmp_path / "wheels"
    # the build backend of this interpreter where it has one (no download), else isolated
    isolation = ["--no-build-isolation"] if _has("setuptools") and _has("wheel") else []
    built = _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                 "-w", str(wheels), str(src)], tmp_path, env)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("fleetcosim-*.whl")
    wheel_mb = wheel.stat().st_size / 1e6
    assert wheel_mb < 10, f"the wheel is {wheel_mb:.1f} MB"

    venv_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    py = str(venv_dir / "bin" / "python")
    installed = _sh([py, "-m", "pip", "install", "-q", "-c",
                     str(REPO_ROOT / "constraints.txt"), str(wheel)], tmp_path, env)
    if installed.returncode != 0 and any(m in installed.stderr for m in _NO_INDEX):
        pytest.skip(f"pip cannot reach a package index: {installed.stderr.strip()[-300:]}")
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = _sh([py, "-c", "import importlib.util as u, cosim; "
                 "print(cosim.__file__); "
                 "print([m for m in ('torch', 'stable_baselines3', 'gymnasium', 'pettingzoo') "
                 "if u.find_spec(m)])"], work, env)
    assert probe.returncode == 0, probe.stderr
    where, training = probe.stdout.splitlines()
    assert str(venv_dir) in where  # the installed copy, not the checkout
    assert training == "[]"  # no training dependency came with a plain install

    cosim = str(venv_dir / "bin" / "cosim")
    version = _sh([cosim, "--version"], work, env)
    assert version.returncode == 0 and version.stdout.startswith("cosim 0."), version

    demo = _sh([cosim, "demo", "--steps", "24", "--quiet"], work, env)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert (work / "runs" / "paper_fig1d" / "kpis.json").is_file()

    by_name = _sh([cosim, "run", "paper_fig1d", "--steps", "24", "--quiet", "--out", "r2",
                   "--set", "output.plots=false"], work, env)
    assert by_name.returncode == 0, by_name.stderr[-3000:]
    assert (work / "r2" / "kpis.json").is_file()

    train = _sh([cosim, "train", "recipe.yaml"], work, env)
    assert train.returncode == 2 and "pip install 'fleetcosim[train]'" in train.stderr
    print(f"\nwheel {wheel.name}: {wheel_mb:.2f} MB; test {time.perf_counter() - started:.0f} s")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
