"""algorithms/iql.py: losses against hand-computed values, expectile behaviour, smoke run, bad flags, CLI."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro

from algorithms import iql
from common.checkpoints import CheckpointError, load_checkpoint
from common.config import ArgumentError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "algorithms" / "iql.py"


def cli(*flags: str, minari_root: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    if minari_root is not None:
        env["MINARI_DATASETS_PATH"] = str(minari_root)
    return subprocess.run([sys.executable, str(SCRIPT), *flags], check=False, capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_expectile_loss():
    diff = torch.tensor([2.0, -1.0, 0.5, 0.0])
    # tau = 0.7: u > 0 weighs tau, u <= 0 weighs 1 - tau
    # [0.7 * 2^2, 0.3 * (-1)^2, 0.7 * 0.5^2, 0.3 * 0^2] = [2.8, 0.3, 0.175, 0.0]
    torch.testing.assert_close(iql.expectile_loss(diff, 0.7), torch.tensor([2.8, 0.3, 0.175, 0.0]))
    # tau = 0.5 is half the squared error: [2.0, 0.5, 0.125, 0.0]
    torch.testing.assert_close(iql.expectile_loss(diff, 0.5), torch.tensor([2.0, 0.5, 0.125, 0.0]))


def test_value_loss():
    v = torch.tensor([1.0, 2.0], requires_grad=True)
    q_min = torch.tensor([3.0, 1.0])
    # u = q_min - v = [2, -1]; tau = 0.9: [0.9 * 4, 0.1 * 1] = [3.6, 0.1]; mean = 1.85
    loss = iql.value_loss(v, q_min, 0.9)
    torch.testing.assert_close(loss, torch.tensor(1.85))
    loss.backward()
    # d/dv of mean(w u^2) with u = q - v: -2 w u / B = [-2 * 0.9 * 2 / 2, -2 * 0.1 * (-1) / 2] = [-1.8, 0.1]
    torch.testing.assert_close(v.grad, torch.tensor([-1.8, 0.1]))


def test_q_loss():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)  # [n=2 members, B=2]
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    next_v = torch.tensor([2.0, 5.0], requires_grad=True)
    # gamma = 0.5: target = r + gamma (1 - d) V(s') = [1 + 0.5 * 1 * 2, 0 + 0.5 * 0 * 5] = [2, 0]
    # member 1: mean((1 - 2)^2, (2 - 0)^2) = mean(1, 4) = 2.5; member 2: mean((0 - 2)^2, (1 - 0)^2) = 2.5
    # sum over members = 5.0
    loss = iql.q_loss(q, rew, done, next_v, 0.5)
    torch.testing.assert_close(loss, torch.tensor(5.0))
    loss.backward()
    # d/dq = 2 (q - target) / B = [[-1, 2], [-2, 1]]; the target is a constant: no gradient into V(s')
    torch.testing.assert_close(q.grad, torch.tensor([[-1.0, 2.0], [-2.0, 1.0]]))
    assert next_v.grad is None


def test_actor_loss():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    adv = torch.tensor([0.0, 1.0, -math.log(2.0)], requires_grad=True)
    # beta = 2, max_weight = 5: weights = [exp(0), min(exp(2), 5), exp(-2 ln 2)] = [1, 5, 0.25]
    # loss = -mean(w log pi) = -(1 * -1 + 5 * -2 + 0.25 * -0.5) / 3 = 11.125 / 3
    loss = iql.actor_loss(log_prob, adv, beta=2.0, max_weight=5.0)
    torch.testing.assert_close(loss, torch.tensor(11.125 / 3))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, -5.0, -0.25]) / 3)
    assert adv.grad is None  # advantages are weights, not a path for gradients into Q or V
    # beta = 0 is behaviour cloning: every weight is 1, loss = -mean(log pi) = 3.5 / 3
    torch.testing.assert_close(iql.actor_loss(log_prob, adv, 0.0, 100.0), torch.tensor(3.5 / 3))


def test_gaussian_policy_log_prob_and_action():
    torch.manual_seed(0)
    policy = iql.GaussianPolicy(obs_dim=4, act_dim=2, hidden=8)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 3.0]))  # 3.0 is clipped to log_std_max = 2
    obs, act = torch.randn(5, 4), torch.rand(5, 2) * 2 - 1
    mean = torch.tanh(policy.mu(obs))
    expected = torch.distributions.Normal(mean, torch.tensor([-0.5, 2.0]).exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), expected)
    torch.testing.assert_close(policy.act(obs), mean)  # evaluation uses the mean action


@pytest.mark.parametrize("tau, expected", [
    # Q samples {0, 1, 2, 3, 10} (mean 3.2). The tau-expectile m solves
    #   tau * sum_{q > m} (q - m) = (1 - tau) * sum_{q < m} (m - q)
    # tau = 0.9, m in (3, 10): 0.9 (10 - m) = 0.1 (4m - 6)             -> m = 9.6 / 1.3 = 7.3846
    (0.9, 9.6 / 1.3),
    # tau = 0.5 is the mean                                            -> m = 3.2
    (0.5, 3.2),
    # tau = 0.1, m in (1, 2): 0.1 ((2 - m) + (3 - m) + (10 - m)) = 0.9 ((m - 0) + (m - 1)) -> m = 2.4 / 2.1 = 1.1429
    (0.1, 2.4 / 2.1),
])
def test_expectile_moves_v_toward_the_max_or_min_of_q(tau, expected):
    q_samples = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    v = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.05)
    for _ in range(600):
        loss = iql.value_loss(v.expand(5), q_samples, tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert v.item() == pytest.approx(expected, abs=0.05)
    if tau > 0.5:
        assert v.item() > q_samples.mean() + 3  # toward the max
    elif tau < 0.5:
        assert v.item() < q_samples.mean() - 2  # toward the min


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = iql.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                    checkpoint_every=100, runs_dir=str(tmp_path / "runs"), progress=False)
    result = iql.train(args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("iql__test-hopper-tiny-v0__s0__")

    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["final_score"] == result["final_score"] and math.isfinite(saved["final_score"])
    assert saved["steps"] == 200 and [e["step"] for e in saved["evals"]] == [100, 200]

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss/q" in r]
    assert [r["step"] for r in losses] == [50, 100, 150, 200]
    for r in losses:
        for key in ("loss/value", "loss/actor", "loss/q", "adv_mean"):
            assert math.isfinite(r[key]), (key, r)
    assert [r["step"] for r in records if "eval/score" in r] == [100, 200]

    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["step"] == 200
    assert all(torch.isfinite(t).all() for name in ("q", "value", "policy") for t in ckpt[name].values())
    assert json.loads((run_dir / "args.json").read_text()) == dataclasses.asdict(args)

    # resuming a finished run trains no further and reports the same result
    again = iql.train(iql.Args(resume=str(run_dir), progress=False))
    assert again["steps"] == 200 and again["final_score"] == result["final_score"]
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 200


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("expectile", 0.0, "--expectile"), ("expectile", 1.5, "--expectile"),
    ("expectile", 1.0, "--expectile"), ("beta", -0.1, "--beta"), ("max_weight", 0.0, "--max-weight"),
    ("hidden_dim", 0, "--hidden-dim"), ("total_steps", 0, "--total-steps"), ("gamma", 1.0, "--gamma"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    args = dataclasses.replace(iql.Args(dataset="test/none-v0", runs_dir=str(tmp_path), progress=False),
                               **{field: value})
    with pytest.raises(ArgumentError) as e:
        iql.train(args)  # fails at start: before the (missing) dataset is even looked up
    assert str(e.value).startswith(flag + " ")
    assert list(tmp_path.iterdir()) == []  # no run folder for a run that never started


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_cpu_machine(tmp_path):
    with pytest.raises(ArgumentError, match="--device 'cuda'"):
        iql.train(iql.Args(dataset="test/none-v0", device="cuda", runs_dir=str(tmp_path), progress=False))


def test_cli_bad_flag_is_one_line_without_traceback(minari_root):
    proc = cli("--batch-size", "-1", "--dataset", "test/none-v0", minari_root=minari_root)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: --batch-size must be a positive integer, got -1"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_help_lists_every_field(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        tyro.cli(iql.Args, args=["--help"])  # what `python algorithms/iql.py --help` prints
    assert e.value.code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", capsys.readouterr().out).split())
    docs = field_docstrings(SCRIPT)
    for field in dataclasses.fields(iql.Args):
        flag = "--" + field.name.replace("_", "-")
        assert re.search(re.escape(flag) + r"\b", text), f"{flag} missing from --help"
        assert field.name in docs, f"Args.{field.name} has no docstring"
        assert " ".join(docs[field.name].split()) in text, f"the docstring of {flag} is missing from --help"
    assert "--no-progress" in text


def field_docstrings(script: Path) -> dict[str, str]:
    """The string literal right after each field of the `Args` dataclass."""
    tree = ast.parse(script.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Args"]
    docs = {}
    for a, b in zip(cls.body, cls.body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = b.value.value
    return docs


def test_resume_missing_folder(tmp_path):
    missing = tmp_path / "runs" / "iql__gone"
    with pytest.raises(CheckpointError) as e:
        iql.train(iql.Args(resume=str(missing), progress=False))
    assert str(missing / "checkpoint.pt") in str(e.value)
    assert not missing.exists()


def test_resume_corrupt_checkpoint_is_left_as_it_was(tmp_path):
    run_dir = tmp_path / "runs" / "iql__broken"
    run_dir.mkdir(parents=True)
    garbage = np.random.default_rng(0).bytes(4096)
    (run_dir / "checkpoint.pt").write_bytes(garbage)
    with pytest.raises(CheckpointError) as e:
        iql.train(iql.Args(resume=str(run_dir), progress=False))
    assert str(run_dir / "checkpoint.pt") in str(e.value)
    assert (run_dir / "checkpoint.pt").read_bytes() == garbage
    assert [p.name for p in run_dir.iterdir()] == ["checkpoint.pt"]  # nothing else written


def test_resume_from_another_algorithms_or_foreign_checkpoint(tmp_path):
    from common.checkpoints import save_checkpoint

    other = tmp_path / "runs" / "bc__run"
    save_checkpoint(other / "checkpoint.pt", {"algo": "bc", "args": "{}", "step": 1, "evals": "[]", "rng": {}})
    with pytest.raises(CheckpointError, match="belongs to bc, not iql"):
        iql.train(iql.Args(resume=str(other), progress=False))
    foreign = tmp_path / "runs" / "foreign"
    save_checkpoint(foreign / "checkpoint.pt", {"weights": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="not a Stitch iql checkpoint"):
        iql.train(iql.Args(resume=str(foreign), progress=False))
