"""benchmarks/finetune_report.py: the fine-tuning table's numbers against hand values, its refusals, its plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import finetune_report  # noqa: E402


def record(algo: str, seed: int, evals: list[tuple[int, int, float]], final: float, successes: list[float | None],
           flags: tuple[str, ...] = ("--online-steps=300",)) -> dict:
    """A run_grid record of a run with 200 offline updates and an online phase; evals (update, env step, score)."""
    return {"algo": algo, "dataset": "test/hopper/tiny-v0", "seed": seed, "total_steps": 200, "flags": list(flags),
            "final_score": final, "git_commit": "abcdef0123",
            "evals": [{"step": s, "env_step": e, "return": 10 * x, "score": x} for s, e, x in evals],
            "online": {"env_steps": 300, "episodes": [{"env_step": 10 * (i + 1), "success": x}
                                                      for i, x in enumerate(successes)]}}


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


CQL_0 = record("cql", 0, [(100, 0, 40.0), (200, 0, 50.0), (300, 100, 20.0), (400, 200, 45.0), (500, 300, 70.0)],
               70.0, [0.2, 0.4])
CQL_1 = record("cql", 1, [(100, 0, 50.0), (200, 0, 60.0), (300, 100, 40.0), (400, 200, 30.0), (500, 300, 80.0)],
               80.0, [0.6, 0.6, 0.9])


def test_online_numbers_against_hand_values():
    o = finetune_report.online_of(CQL_0)
    # offline: the evaluation at update 200 (the switch), not the earlier one; lowest: among env steps > 0 only
    assert (o.offline, o.lowest, o.final, o.env_steps) == (50.0, 20.0, 70.0, 300)
    assert o.regret == pytest.approx(((1 - 0.2) + (1 - 0.4)) / 2)
    assert o.curve == {0: 50.0, 100: 20.0, 200: 45.0, 300: 70.0}
    assert finetune_report.online_of(CQL_1).regret == pytest.approx((0.4 + 0.4 + 0.1) / 3)


def test_table_rows_are_means_and_stds_over_seeds(tmp_path):
    cal = [record("cal_ql", s, [(200, 0, 55.0), (300, 100, 60.0 + s), (500, 300, 75.0)], 75.0, [0.5, None][: 1 + s])
           for s in (0, 1)]
    out = tmp_path / "ft.md"
    finetune_report.main(finetune_report.Args([str(write(tmp_path / "ft.jsonl", [CQL_0, CQL_1, *cal]))],
                                              out=str(out), plots=False))
    rows = {line.split(" | ")[1]: line for line in out.read_text().splitlines()
            if line.startswith("| test/hopper/tiny-v0")}
    # offline 50, 60; lowest 20, 30; dip 30, 30; final 70, 80; regret 70, 30 (x100)
    assert rows["cql"] == ("| test/hopper/tiny-v0 | cql | 300 | 55.0 ± 5.0 (n=2) | 25.0 ± 5.0 (n=2) | "
                           "30.0 ± 0.0 (n=2) | 75.0 ± 5.0 (n=2) | 50.0 ± 20.0 (n=2) |")
    # seed 1 has an episode without a success measure: no regret rather than one over part of the episodes
    assert rows["cal_ql"].endswith("| -5.5 ± 0.5 (n=2) | 75.0 ± 0.0 (n=2) | — |")
    assert "--online-steps" not in out.read_text().split("\n\n")[0]  # the flag every column shares is not a label


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("online"), "has no online phase"),
    (lambda r: r["evals"].pop(1), "has no evaluation at the end of its offline phase (update 200)"),
    (lambda r: r.update(evals=[e for e in r["evals"] if e["env_step"] == 0]), "has no evaluation during its online"),
])
def test_refuses_runs_it_cannot_report_in_one_line(tmp_path, change, message):
    bad = json.loads(json.dumps(CQL_1))
    change(bad)
    results = write(tmp_path / "ft.jsonl", [CQL_0, bad])
    out = subprocess.run([sys.executable, "benchmarks/finetune_report.py", str(results)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: cql on test/hopper/tiny-v0 seed 1 {message}")
    assert not (tmp_path / "ft.md").exists()


def test_plot_is_written_and_linked(tmp_path):
    out = tmp_path / "ft.md"
    finetune_report.main(finetune_report.Args([str(write(tmp_path / "ft.jsonl", [CQL_0, CQL_1]))], out=str(out)))
    png = tmp_path / "ft_plots" / "finetuning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![fine-tuning curves](ft_plots/finetuning_curves.png)" in out.read_text()
