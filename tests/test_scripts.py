"""What every script in algorithms/ must do alike: document every flag, and fail on bad input with one clear
line. Each test runs for every script, so a new algorithm is covered by adding its file."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro

from benchmarks import all_scripts, training_scripts
from common.checkpoints import CheckpointError, save_checkpoint
from common.config import ArgumentError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = all_scripts()
# The off-policy evaluators (benchmarks.EVALUATORS) train no policy of their own, so they have no run folder, resume
# or --runs-dir; the flag and bad-input tests cover them, the run-folder tests do not.
TRAINERS = training_scripts()


def script_module(algo: str):
    return importlib.import_module(f"algorithms.{algo}")


def field_docstrings(script: Path) -> dict[str, str]:
    """The string literal right after each field of the `Args` dataclass."""
    tree = ast.parse(script.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Args"]
    docs = {}
    for a, b in zip(cls.body, cls.body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = b.value.value
    return docs


def test_every_script_is_found():
    assert {"bc", "td3_bc", "iql", "cql"} <= set(SCRIPTS)


@pytest.mark.parametrize("algo", SCRIPTS)
def test_help_lists_every_field_with_its_docstring(algo, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    module = script_module(algo)
    with pytest.raises(SystemExit) as e:
        tyro.cli(module.Args, args=["--help"])  # what `python algorithms/<algo>.py --help` prints
    assert e.value.code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    docs = field_docstrings(ROOT / "algorithms" / f"{algo}.py")
    for field in dataclasses.fields(module.Args):
        flag = "--" + field.name.replace("_", "-")
        assert re.search(re.escape(flag) + r"\b", text), f"{flag} missing from --help"
        assert field.name in docs, f"Args.{field.name} has no docstring"
        assert " ".join(docs[field.name].split()) in text, f"the docstring of {flag} is missing from --help"


@pytest.mark.parametrize("algo", SCRIPTS)
def test_cli_bad_flag_is_one_line_without_traceback(algo, minari_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(minari_root)}
    proc = subprocess.run([sys.executable, str(ROOT / "algorithms" / f"{algo}.py"), "--batch-size", "-1",
                           "--dataset", "test/none-v0"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: --batch-size must be a positive integer, got -1"
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("algo", TRAINERS)
def test_cuda_on_a_cpu_machine_names_the_flag(algo, tmp_path):
    module = script_module(algo)
    with pytest.raises(ArgumentError, match="--device 'cuda'"):
        module.train(module.Args(dataset="test/none-v0", device="cuda", runs_dir=str(tmp_path), progress=False))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("algo", TRAINERS)
def test_resume_missing_folder(algo, tmp_path):
    module = script_module(algo)
    missing = tmp_path / "runs" / f"{algo}__gone"
    with pytest.raises(CheckpointError) as e:
        module.train(module.Args(resume=str(missing), progress=False))
    assert str(missing / "checkpoint.pt") in str(e.value)
    assert not missing.exists()


@pytest.mark.parametrize("algo", TRAINERS)
def test_resume_corrupt_checkpoint_is_left_as_it_was(algo, tmp_path):
    module = script_module(algo)
    run_dir = tmp_path / "runs" / f"{algo}__broken"
    run_dir.mkdir(parents=True)
    garbage = np.random.default_rng(0).bytes(4096)
    (run_dir / "checkpoint.pt").write_bytes(garbage)
    with pytest.raises(CheckpointError) as e:
        module.train(module.Args(resume=str(run_dir), progress=False))
    assert str(run_dir / "checkpoint.pt") in str(e.value)
    assert (run_dir / "checkpoint.pt").read_bytes() == garbage
    assert [p.name for p in run_dir.iterdir()] == ["checkpoint.pt"]  # nothing else written


@pytest.mark.parametrize("algo", TRAINERS)
def test_resume_from_another_algorithms_or_foreign_checkpoint(algo, tmp_path):
    module = script_module(algo)
    other_algo = "bc" if algo != "bc" else "iql"
    other = tmp_path / "runs" / f"{other_algo}__run"
    save_checkpoint(other / "checkpoint.pt", {"algo": other_algo, "args": "{}", "step": 1, "evals": "[]", "rng": {}})
    with pytest.raises(CheckpointError, match=f"belongs to {other_algo}, not {algo}"):
        module.train(module.Args(resume=str(other), progress=False))
    foreign = tmp_path / "runs" / "foreign"
    save_checkpoint(foreign / "checkpoint.pt", {"weights": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=f"not a Stitch {algo} checkpoint"):
        module.train(module.Args(resume=str(foreign), progress=False))


SARSA_SCRIPTS = [a for a in SCRIPTS if "def sarsa_rows(" in (ROOT / "algorithms" / f"{a}.py").read_text()]


@pytest.mark.parametrize("algo", SARSA_SCRIPTS)
def test_sarsa_rows_pair_each_transition_with_the_next_dataset_action(algo):
    """Scripts whose backup uses the dataset's next action (onestep, crr) each carry their own sarsa_rows."""
    # episodes: rows 0-2 (ends by termination), rows 3-4 (cut by a time limit), rows 5-8 (cut at the end of logging)
    starts, lengths = np.array([0, 3, 5]), np.array([3, 2, 4])
    terminals = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    rows, next_rows = script_module(algo).sarsa_rows(starts, lengths, terminals)
    # every row but the last of an episode bootstraps from a' = the action of the next row; the terminal
    # row 2 needs no a' (kept, pointing at itself); rows 4 and 8 have no a' in the data (dropped)
    assert rows.tolist() == [0, 1, 2, 3, 5, 6, 7]
    assert next_rows.tolist() == [1, 2, 2, 4, 4, 6, 7, 8, 8]
    assert all(next_rows[r] == r + 1 for r in rows if terminals[r] == 0)  # never across an episode boundary


def test_sarsa_scripts_are_found():
    assert {"onestep", "crr"} <= set(SARSA_SCRIPTS)
