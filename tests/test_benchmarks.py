"""The benchmark grid runner, the report generator and the speed script, on a tiny dataset."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from benchmarks import run_grid


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_grid_runs_skips_finished_cells_and_reports(tiny_hopper, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    results = tmp_path / "results.jsonl"
    grid = ["benchmarks/run_grid.py", "--algos", "bc", "--datasets", tiny_hopper, "--seeds", "0", "1",
            "--total-steps", "100", "--results", str(results), "--runs-dir", str(tmp_path / "runs"),
            "--checkpoint-every", "50", "--extra", "*:--eval-every=50", "*:--eval-episodes=2", "*:--log-every=50"]
    first = run(grid, env)
    assert first.returncode == 0, first.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert all(r["args"]["checkpoint_every"] == 50 and r["flags"] == ["--eval-every=50", "--eval-episodes=2",
               "--log-every=50"] for r in records)  # the grid's interval reached the scripts, outside the cell key
    assert [(r["algo"], r["seed"], r["total_steps"]) for r in records] == [("bc", 0, 100), ("bc", 1, 100)]
    assert all(len(r["evals"]) == 2 and r["updates_per_s"] > 0 for r in records)
    assert all(r["command"].startswith("python algorithms/bc.py --dataset test/hopper/tiny-v0") for r in records)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert all(r["git_commit"] == head for r in records)  # the commit the cell started from

    second = run(grid, env)  # everything finished: nothing runs again
    assert second.returncode == 0, second.stderr
    assert "0 cells to run (2 already" in second.stdout
    assert len(results.read_text().splitlines()) == 2

    # the same cell with one more flag is another run in its own folder, not the finished one resumed
    variant = run([*grid[:5], "--seeds", "0", *grid[8:], "bc:--top-fraction=0.5"], env)
    assert variant.returncode == 0, variant.stderr
    assert "1 cells to run" in variant.stdout
    extra = json.loads(results.read_text().splitlines()[2])
    assert extra["flags"][-1] == "--top-fraction=0.5" and extra["args"]["top_fraction"] == 0.5
    results.write_text("".join(json.dumps(r) + "\n" for r in records))  # back to the two plain cells

    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n")
    rep = run(["benchmarks/report.py", str(results), "--readme", str(readme)], env)
    assert rep.returncode == 0, rep.stderr
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n")
    assert f"| {tiny_hopper} |" in text and "(n=2)" in text
    assert (tmp_path / "results.md").read_text().startswith("| dataset | bc |")

    # The references the scores used are recorded (tiny_hopper's are -20 and 3000). Pretend the first cell
    # ran under older references: rescore.py brings it back to the dataset's, from its raw returns.
    assert all((r["ref_min_score"], r["ref_max_score"]) == (-20.0, 3000.0) for r in records)
    stale = dict(records[0], ref_min_score=0.0, ref_max_score=1000.0, final_score=-1.0,
                 evals=[dict(e, score=-1.0) for e in records[0]["evals"]])
    results.write_text(json.dumps(stale) + "\n" + json.dumps(records[1]) + "\n")
    res = run(["benchmarks/rescore.py", str(results)], env)
    assert res.returncode == 0, res.stderr
    assert "1 of 2 records rescored" in res.stdout
    fixed, untouched = [json.loads(line) for line in results.read_text().splitlines()]
    assert untouched == records[1]
    assert fixed["final_score"] == 100 * (fixed["final_return"] + 20) / 3020
    assert [e["score"] for e in fixed["evals"]] == [100 * (e["return"] + 20) / 3020 for e in fixed["evals"]]
    assert fixed["rescored_from"] == [{"ref_min_score": 0.0, "ref_max_score": 1000.0}]


def test_a_cell_continued_from_a_checkpoint_is_marked_resumed(tiny_hopper, tmp_path):
    # its wall_time_s covers only the last part, so the record must say so
    cell = run_grid.Cell("bc", tiny_hopper, 0, ["--eval-every=50", "--eval-episodes=2", "--log-every=50"])
    first = run_grid.run_cell(cell, 100, 1, str(tmp_path / "runs"), str(ROOT), checkpoint_every=50)
    assert first["record"]["resumed"] is False
    assert first["record"]["load_avg"] >= 0 and first["record"]["cpu_count"] == os.cpu_count()
    (result,) = (tmp_path / "runs").glob("*/*/result.json")
    written = result.read_text()
    again = run_grid.run_cell(cell, 100, 1, str(tmp_path / "runs"), str(ROOT), checkpoint_every=50)
    assert again["record"]["resumed"] is True and again["record"]["reused_from"] == str(result)
    assert again["record"]["load_avg"] is None  # nothing ran
    # finished: reused as it is, the script not run again, so the record keeps the commit and rate it trained with
    assert result.read_text() == written and (tmp_path / "runs").joinpath(result.parts[-3], "log.txt").read_text() \
        .count("$ ") == 1
    assert {k: again["record"][k] for k in ("final_return", "evals", "updates_per_s", "git_commit")} == \
        {k: first["record"][k] for k in ("final_return", "evals", "updates_per_s", "git_commit")}
    # a run whose result.json was rewritten by an older grid with no updates (rate 0): the rate it logged;
    # and the commit is the run's own, not the one checked out now
    result.write_text(json.dumps(dict(json.loads(written), updates_per_s=0.0, git_commit="feedbeef")))
    metrics = result.parent / "metrics.jsonl"
    logged = [json.loads(line)["updates_per_s"] for line in metrics.read_text().splitlines() if "updates_per_s" in line]
    third = run_grid.run_cell(cell, 100, 1, str(tmp_path / "runs"), str(ROOT), checkpoint_every=50)
    assert third["record"]["updates_per_s"] == logged[-1] > 0 and third["record"]["git_commit"] == "feedbeef"
    assert "updates_per_s_from" in third["record"] and "updates_per_s_from" not in first["record"]
    # continued in the first run's folder, not trained again in a new one
    assert len(list((tmp_path / "runs").glob("*/*/checkpoint.pt"))) == 1


def test_a_cell_samples_the_host_load_while_it_runs(tmp_path, monkeypatch):
    # sampled every `every` seconds and once at the end; the mean of those samples, and the run's exit code
    samples = iter(range(1, 1000))
    monkeypatch.setattr(run_grid.os, "getloadavg", lambda: (float(next(samples)), 0.0, 0.0))
    with open(tmp_path / "log.txt", "w") as out:
        code, load = run_grid.run_and_sample_load([sys.executable, "-c", "import time, sys; time.sleep(0.5); "
                                                   "sys.exit(3)"], tmp_path, dict(os.environ), out, every=0.05)
    taken = next(samples) - 1
    assert code == 3 and taken >= 3 and load == pytest.approx(sum(range(1, taken + 1)) / taken)


def test_a_cell_stopped_after_its_last_checkpoint_runs_again(tiny_hopper, tmp_path):
    # checkpoint at the last step but no result.json after it (killed in between): resumed, result written
    cell = run_grid.Cell("bc", tiny_hopper, 0, ["--eval-every=50", "--eval-episodes=2", "--log-every=50"])
    first = run_grid.run_cell(cell, 100, 1, str(tmp_path / "runs"), str(ROOT), checkpoint_every=50)
    (result,) = (tmp_path / "runs").glob("*/*/result.json")
    result.unlink()
    again = run_grid.run_cell(cell, 100, 1, str(tmp_path / "runs"), str(ROOT), checkpoint_every=50)
    assert result.is_file() and "reused_from" not in again["record"]
    assert again["record"]["final_return"] == first["record"]["final_return"]


def test_finished_result_needs_a_result_written_after_the_last_checkpoint_at_the_last_step(tmp_path):
    checkpoint, result = tmp_path / "checkpoint.pt", tmp_path / "result.json"
    checkpoint.write_bytes(b"x")
    assert run_grid.finished_result(checkpoint, 100) is None  # no result.json: run it
    result.write_text(json.dumps({"steps": 100}))
    os.utime(checkpoint, (1000, 1000))
    os.utime(result, (2000, 2000))
    assert run_grid.finished_result(checkpoint, 100) == result
    assert run_grid.finished_result(checkpoint, 200) is None  # asked for more steps than it ran: continue it
    os.utime(result, (500, 500))  # an older run's result.json, checkpointed again since: not finished
    assert run_grid.finished_result(checkpoint, 100) is None
    result.write_text("{trunc")  # torn write
    os.utime(result, (2000, 2000))
    assert run_grid.finished_result(checkpoint, 100) is None


def test_a_run_with_an_online_phase_is_finished_after_its_online_updates(tmp_path):
    """A fine-tuning cell (--total-steps 100 --online-steps 30 --utd-ratio 2) ends at update 160: finished there,
    not at 100, and not finished before (its offline phase alone is not the whole cell)."""
    checkpoint, result = tmp_path / "checkpoint.pt", tmp_path / "result.json"
    checkpoint.write_bytes(b"x")
    for steps, done in ((160, True), (100, False), (130, False)):
        result.write_text(json.dumps({"steps": steps, "args": {"total_steps": 100, "online_steps": 30,
                                                               "utd_ratio": 2}}))
        os.utime(checkpoint, (1000, 1000))
        os.utime(result, (2000, 2000))
        assert (run_grid.finished_result(checkpoint, 100) == result) is done, steps


def test_grid_rejects_unknown_algorithm(tmp_path):
    out = run(["benchmarks/run_grid.py", "--algos", "nope", "--datasets", "x", "--results", str(tmp_path / "r.jsonl")],
              dict(os.environ))
    assert out.returncode != 0 and "no algorithms/nope.py" in out.stderr


@pytest.mark.parametrize("flag, message", [("--threads=0", "--threads and --jobs must be at least 1"),
                                           ("--jobs=-1", "--threads and --jobs must be at least 1"),
                                           ("--checkpoint-every=0", "--checkpoint-every must be at least 1"),
                                           ("--extra=--eval-every=5", "is not 'algo:--flag=value'")])
def test_grid_rejects_bad_flags(tmp_path, flag, message):
    out = run(["benchmarks/run_grid.py", "--algos", "bc", "--datasets", "x", "--results", str(tmp_path / "r.jsonl"),
               flag], dict(os.environ))
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_speed_script_writes_rates(tmp_path):
    out = tmp_path / "speed.json"
    proc = run(["benchmarks/speed.py", "--algos", "bc", "--steps", "300", "--log-every", "100", "--threads", "1",
                "--out", str(out)], dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["updates_per_s"]["bc"] > 0 and record["device"] == "cpu" and record["threads"] == 1


@pytest.mark.compile
def test_speed_script_measures_eager_and_compiled_side_by_side(tmp_path):
    out = tmp_path / "speed.json"
    proc = run(["benchmarks/speed.py", "--algos", "bc", "--compile", "--repeats", "2", "--steps", "300",
                "--log-every", "100", "--threads", "1", "--max-seconds", "120", "--out", str(out)], dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    samples = record["samples"]["bc"]
    assert len(samples["eager"]) == len(samples["compiled"]) == 2 and record["repeats"] == 2
    assert record["updates_per_s"]["bc"] == float(np.median(samples["eager"]))
    assert record["updates_per_s_compiled"]["bc"] == float(np.median(samples["compiled"])) > 0
    bad = run(["benchmarks/speed.py", "--repeats", "0", "--out", str(out)], dict(os.environ))
    assert bad.returncode != 0 and "--repeats must be at least 1" in bad.stderr and "Traceback" not in bad.stderr


def test_two_grids_sharing_a_results_file_never_train_a_cell_twice(tmp_path, monkeypatch):
    """A second grid started beside a first (to use a freed core) skips the cell the first is running (its folder
    is locked) and the cells the first finished after the second read the results file."""
    cell = run_grid.Cell("bc", "test/hopper/tiny-v0", 0, [])
    cell_dir = tmp_path / "runs" / run_grid.cell_dir_name(cell, 100)
    cell_dir.mkdir(parents=True)
    with open(cell_dir / ".lock", "w") as held:  # the first grid, running this cell
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = run_grid.run_cell(cell, 100, 1, str(tmp_path / "runs"), str(ROOT))
    assert "skipped" in out and "locked" in out["skipped"]
    assert not (cell_dir / "log.txt").exists()  # nothing was started

    # seed 1 appears in the results file after this grid made its cell list: it is not run
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"algo": "bc", "dataset": cell.dataset, "seed": 1, "total_steps": 100,
                                   "flags": []}) + "\n")
    ran = []
    monkeypatch.setattr(run_grid, "run_cell", lambda c, *a, **k: ran.append(c.seed) or {"error": "stub"})
    args = run_grid.Args(algos=["bc"], datasets=[cell.dataset], seeds=[0, 1], total_steps=100,
                         results=str(results), runs_dir=str(tmp_path / "runs"))
    progress = run_grid.Progress(results, 2)
    run_grid.run_local([cell, cell._replace(seed=1)], args, progress)
    assert ran == [0]
    assert [c.seed for c in progress.skipped] == [1] and [c.seed for c in progress.failed] == [0]


def test_reuse_copies_cells_another_results_file_holds_and_trains_the_rest(tmp_path, monkeypatch, capsys):
    """--reuse: a cell recorded by an earlier grid (same key) is copied with its provenance, not trained; a cell
    with other flags or another seed is trained; a cell already in --results is left as it is."""
    def rec(seed, flags=(), score=1.0):
        return {"algo": "bc", "dataset": "test/hopper/tiny-v0", "seed": seed, "total_steps": 100,
                "flags": list(flags), "final_score": score, "evals": []}

    results, earlier = tmp_path / "results.jsonl", tmp_path / "earlier.jsonl"
    results.write_text(json.dumps(rec(0, score=5.0)) + "\n")
    earlier.write_text("".join(json.dumps(r) + "\n" for r in
                               [rec(0, score=9.0), rec(1, score=7.0), rec(2, ["--top-fraction=0.5"])]))
    later = tmp_path / "later.jsonl"  # named second: the first file named wins a cell both hold
    later.write_text(json.dumps(rec(1, score=8.0)) + "\n")
    ran = []
    monkeypatch.setattr(run_grid, "run_cell", lambda c, *a, **k: ran.append(c.seed) or {
        "record": dict(rec(c.seed, score=3.0), updates_per_s=1.0, wall_time_s=1.0, host="here")})
    args = run_grid.Args(algos=["bc"], datasets=["test/hopper/tiny-v0"], seeds=[0, 1, 2], total_steps=100,
                         results=str(results), runs_dir=str(tmp_path / "runs"), reuse=[str(earlier), str(later)],
                         dry_run=True)
    run_grid.main(args)
    assert "1 cells to run (1 already in" in capsys.readouterr().out and ran == []
    assert len(results.read_text().splitlines()) == 1  # a dry run writes nothing

    run_grid.main(dataclasses.replace(args, dry_run=False))
    assert ran == [2]  # seed 2 was recorded with other flags: another cell
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["seed"], r["final_score"], r.get("copied_from")) for r in lines] == \
        [(0, 5.0, None), (1, 7.0, f"{earlier} line 2"), (2, 3.0, None)]
    assert {k: v for k, v in lines[1].items() if k != "copied_from"} == rec(1, score=7.0)  # copied as it was

    for bad, message in ([str(tmp_path / "none.jsonl")], "no such results file"), ([str(results)], "itself"):
        with pytest.raises(SystemExit, match=message):
            run_grid.main(dataclasses.replace(args, reuse=bad))


def test_cells_recorded_with_a_flag_renamed_since_match_the_new_flag(tmp_path):
    # committed results hold cql cells run with `--cql-alpha=10`; the README's command now says
    # `--regularizer-weight=10`: the same cell, found as done (and by --reuse), not trained again
    old = {"algo": "cql", "dataset": "d", "seed": 0, "total_steps": 100, "flags": ["--bc-steps=0", "--cql-alpha=10"],
           "final_score": 1.0, "evals": []}
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(old) + "\n")
    key = run_grid.cell_key("cql", "d", 0, 100, ["--regularizer-weight=10", "--bc-steps=0"])
    assert key in run_grid.keyed_records(results) and key in run_grid.done_keys(results)
    assert run_grid.cell_key("iql", "d", 0, 100, ["--cql-alpha=10"]) != run_grid.cell_key(
        "iql", "d", 0, 100, ["--regularizer-weight=10"])  # renames are per script


def test_build_speed_times_a_build_in_a_private_root(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "build.json"
    proc = run(["benchmarks/suite/build_speed.py", "--n-steps", "3000", "--workers", "1", "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["builds"]
    assert row["id"] == "stitch/hopper/medium-v0" and row["steps"] == 3000
    assert 0 < row["cpu_s"] and 0 < row["wall_s"] < 300
    # both from one wall time: wall_s is rounded to 0.1 s (a 3000-step build takes seconds), the rate to 0.01
    assert abs(row["wall_min_per_1M_steps"] - row["wall_s"] / 60 * 1e6 / 3000) <= 0.05 / 60 * 1e6 / 3000 + 0.005
    assert not (tmp_path / "minari").exists()  # built in its own temporary root, gone afterwards

    bad = run(["benchmarks/suite/build_speed.py", "--ids", "stitch/hopper/nope-v0", "--out", str(out)], env)
    assert bad.returncode != 0 and "nope" in bad.stderr


def test_critic_values_reads_the_q_metric_and_the_datasets_discounted_returns(tiny_hopper, tmp_path):
    from algorithms import awac
    from benchmarks.critic_values import Args as CriticArgs
    from benchmarks.critic_values import discounted_returns, metric_trajectory
    from benchmarks.critic_values import main as critic_values
    from common.data import load_dataset

    # two episodes, [1, 2, 3] and [4, 5]: G = r_t + 0.5 G_(t+1) backwards, restarting at each episode
    g = discounted_returns(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([0, 3]), np.array([3, 2]), 0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 4 + 0.5 * 5, 5])

    runs = tmp_path / "runs"
    awac.train(awac.Args(dataset=tiny_hopper, total_steps=30, eval_every=30, eval_episodes=1, hidden_dim=16,
                         batch_size=16, log_every=5, runs_dir=str(runs), progress=False))
    (run,) = runs.iterdir()
    logged = {json.loads(line)["step"]: json.loads(line)["q_data"]
              for line in (run / "metrics.jsonl").read_text().splitlines() if "q_data" in line}
    assert sorted(logged) == [5, 10, 15, 20, 25, 30]
    traj = metric_trajectory(run / "metrics.jsonl", "q_data", every=10)
    assert list(traj) == ["10", "20", "30"] and traj["20"] == round(logged[20], 2)

    out = tmp_path / "critic.json"
    critic_values(CriticArgs(dataset=tiny_hopper, runs=[str(run)], metric="q_data", every=10, out=str(out)))
    rec = json.loads(out.read_text())
    data = load_dataset(tiny_hopper)
    ref = rec["data"]["0.99"]
    g = discounted_returns(data.rewards, data.episode_starts, data.episode_lengths, 0.99)
    assert ref["mean_discounted_return"] == round(float(g.mean()), 2)
    assert ref["max_discounted_return"] <= ref["max_reward_over_1_minus_gamma"]
    assert rec["runs"][0]["q_data"] == traj and rec["runs"][0]["seed"] == 0

    with pytest.raises(SystemExit, match="logs no 'nope'"):
        critic_values(CriticArgs(dataset=tiny_hopper, runs=[str(run)], metric="nope"))
    # a onestep run logged before q_mean was renamed q_data (and resumed after): both read as q_data
    old = tmp_path / "old_metrics.jsonl"
    old.write_text('{"step": 10, "q_mean": 1.0}\n{"step": 20, "q_data": 2.0}\n')
    assert metric_trajectory(old, "q_data", every=10) == {"10": 1.0, "20": 2.0}
    with pytest.raises(SystemExit, match="has no metrics.jsonl"):
        critic_values(CriticArgs(dataset=tiny_hopper, runs=[str(runs)]))
    with pytest.raises(SystemExit, match="--every must be at least 1"):
        critic_values(CriticArgs(dataset=tiny_hopper, runs=[str(run)], every=0))


def test_coverage_counts_transitions_per_band_and_evaluates_runs(tiny_hopper, tmp_path):
    from algorithms import bc, cql, iql
    from common.checkpoints import save_checkpoint
    from benchmarks.coverage import Args as CoverageArgs
    from benchmarks.coverage import dataset_coverage, transitions_from
    from benchmarks.coverage import main as coverage

    lengths = np.array([250, 50, 120])
    cov = dataset_coverage(lengths, horizon=300)
    assert cov["episodes"] == 3 and cov["steps"] == 420
    # steps 0-99: 100 + 50 + 100; 100-199: 100 + 20; 200-299: 50
    assert cov["transitions_per_band"] == {"0-99": 250, "100-199": 120, "200-299": 50}
    assert transitions_from(lengths, 100) == 150 + 0 + 20 and transitions_from(lengths, 0) == 420

    runs = tmp_path / "runs"
    iql.train(iql.Args(dataset=tiny_hopper, total_steps=20, eval_every=20, eval_episodes=1, hidden_dim=16,
                       batch_size=16, runs_dir=str(runs), progress=False))
    (run,) = runs.iterdir()
    out = tmp_path / "coverage.json"
    coverage(CoverageArgs(dataset=tiny_hopper, runs=[str(run)], episodes=3, out=str(out)))
    rec = json.loads(out.read_text())
    assert rec["data"]["steps"] == sum(rec["data"]["transitions_per_band"].values())
    (r,) = rec["runs"]
    assert r["step"] == 20 and len(r["lengths"]) == len(r["scores"]) == len(r["terminated"]) == 3
    assert all(1 <= n <= 1000 for n in r["lengths"])

    # Each supported kind of policy acts as its script evaluates it: the same episodes (same seeds) score
    # what the run's own final evaluation scored. bc: a normalized-observation actor; cql: a tanh-Gaussian.
    for name, module, extra in (("bc", bc, {}), ("cql", cql, {"bc_steps": 5})):
        result = module.train(module.Args(dataset=tiny_hopper, total_steps=10, eval_every=10, eval_episodes=2,
                                          hidden_dim=16, batch_size=16, runs_dir=str(tmp_path / name),
                                          progress=False, **extra))
        coverage(CoverageArgs(dataset=tiny_hopper, runs=[str(next((tmp_path / name).iterdir()))], episodes=2,
                              out=str(tmp_path / f"{name}.json")))
        (r,) = json.loads((tmp_path / f"{name}.json").read_text())["runs"]
        assert np.mean(r["scores"]) == pytest.approx(result["final_score"], abs=0.01)

    save_checkpoint(tmp_path / "dqn" / "checkpoint.pt", {"algo": "dqn", "args": "{}", "step": 0})
    with pytest.raises(SystemExit, match="holds a run of dqn, and there is no algorithms/dqn.py"):
        coverage(CoverageArgs(dataset=tiny_hopper, runs=[str(tmp_path / "dqn")]))
    save_checkpoint(tmp_path / "old" / "checkpoint.pt", {"algo": "iql", "args": "{}", "step": 0, "evals": "[]",
                                                          "rng": {}})
    with pytest.raises(SystemExit, match="no obs_dim/act_dim"):  # written before checkpoints recorded them
        coverage(CoverageArgs(dataset=tiny_hopper, runs=[str(tmp_path / "old")]))
    with pytest.raises(SystemExit, match="has no checkpoint.pt"):
        coverage(CoverageArgs(dataset=tiny_hopper, runs=[str(tmp_path)]))


@pytest.mark.parametrize("algo, options", [("tt", {"beam_width": 4, "horizon": 2}),
                                           ("tt", {"beam_width": 4, "horizon": 2, "cache": False}),
                                           ("diffuser", {"plan_samples": 2, "diffusion_steps": 2, "horizon": 8})])
def test_plan_speed_times_each_planner_and_writes_its_settings(tmp_path, monkeypatch, algo, options):
    """Every timed step is one call of the script's own planner on all the episodes' states, with the settings
    asked for; the file holds the times and their means."""
    from algorithms import diffuser, tt
    from benchmarks import plan_speed

    planner = {"tt": tt.Planner, "diffuser": diffuser.Planner}[algo]
    calls = []
    original = planner.forward

    def counted(self, x):
        calls.append((len(x), getattr(self, "settings", {}).get("cache"), getattr(self, "samples", None)))
        return original(self, x)
    monkeypatch.setattr(planner, "forward", counted)
    out = tmp_path / "plan.json"
    r = plan_speed.main(plan_speed.Options(algo=algo, steps=3, episodes=2, out=str(out), **options))
    assert len(calls) == 3 and all(n == 2 for n, _, _ in calls)  # one batched plan of the 2 episodes per step
    if algo == "tt":
        assert all(cache is options.get("cache", True) for _, cache, _ in calls)
    else:
        assert all(samples == 2 for _, _, samples in calls)
    assert json.loads(out.read_text()) == r and r["algo"] == algo and r["device"] == "cpu"
    assert len(r["seconds"]) == 3 and all(t > 0 for t in r["seconds"])
    assert r["plan_s_per_step"] == pytest.approx(np.mean(r["seconds"]))
    assert r["plan_s_per_step_after_first"] == pytest.approx(np.mean(r["seconds"][1:]))


def test_plan_speed_refuses_a_device_it_does_not_have(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "benchmarks/plan_speed.py", "--device", "cuda", "--out",
                           str(tmp_path / "plan.json")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: --device cuda: this torch sees no CUDA device"
    assert not (tmp_path / "plan.json").exists()
