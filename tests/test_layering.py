"""common/ is below everything: it imports nothing from benchmarks/ or algorithms/, and a script copied with
common/ into another project (no benchmarks/) trains, and says clearly what it cannot do there."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, make_dataset

ABOVE_COMMON = ("benchmarks", "algorithms")


def imported_modules(tree: ast.AST) -> list[str]:
    """Every module a file imports: import statements, and importlib.import_module / __import__ of a string."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            names.append(node.args[0].value)
    return names


def test_common_imports_nothing_from_benchmarks_or_algorithms():
    files = sorted((ROOT / "common").glob("**/*.py"))
    assert ROOT / "common" / "data.py" in files
    for path in files:
        for name in imported_modules(ast.parse(path.read_text(), str(path))):
            assert not name.startswith("."), f"{path.relative_to(ROOT)}: relative import {name!r}"
            assert name.split(".")[0] not in ABOVE_COMMON, f"{path.relative_to(ROOT)} imports {name}"


def test_the_check_sees_every_kind_of_import():
    source = ("import benchmarks.suite\nfrom algorithms import iql\nimport importlib\n"
              "importlib.import_module('benchmarks.suite.build')\n__import__('algorithms.bc')\n")
    assert [n.split(".")[0] for n in imported_modules(ast.parse(source))] == [
        "benchmarks", "algorithms", "importlib", "benchmarks", "algorithms"]


@pytest.fixture
def copied_project(tmp_path):
    """algorithms/bc.py and common/ copied into a project of their own, without Stitch's benchmarks/."""
    project = tmp_path / "project"
    (project / "algorithms").mkdir(parents=True)
    shutil.copy(ROOT / "algorithms" / "bc.py", project / "algorithms" / "bc.py")
    shutil.copytree(ROOT / "common", project / "common", ignore=shutil.ignore_patterns("__pycache__"))
    return project


def run_copy(project, minari_root, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(minari_root),
           "PYTHONPATH": "", "WANDB_MODE": "offline"}  # nothing of the Stitch checkout on the path
    return subprocess.run([sys.executable, "algorithms/bc.py", *flags], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_copied_script_trains_on_a_local_dataset(copied_project, minari_root, tmp_path):
    make_dataset("test/hopper/tiny-v0", episodes=4, max_steps=60)
    runs = tmp_path / "runs"
    proc = run_copy(copied_project, minari_root, "--dataset", "test/hopper/tiny-v0", "--total-steps", "50",
                    "--eval-every", "50", "--eval-episodes", "1", "--log-every", "25", "--checkpoint-every", "50",
                    "--no-progress", "--batch-size", "32", "--hidden-dim", "32", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = runs.iterdir()
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "result.json").is_file()
    assert not (copied_project / "benchmarks").exists()


def test_a_copied_script_says_where_stitch_ids_come_from(copied_project, minari_root, tmp_path):
    proc = run_copy(copied_project, minari_root, "--dataset", "stitch/hopper/medium-v0", "--runs-dir",
                    str(tmp_path / "runs"), "--no-progress")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: dataset 'stitch/hopper/medium-v0' is not in the local Minari root")
    for part in ("Stitch's benchmarks/suite", "python benchmarks/suite/build.py stitch/hopper/medium-v0",
                 "MINARI_DATASETS_PATH"):
        assert part in lines[0]
    assert not list(minari_root.iterdir())  # nothing built, no lock file left
