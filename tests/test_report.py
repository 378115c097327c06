"""benchmarks/report.py: the statistics by hand, tables and variants from small synthetic results, plots, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from benchmarks.report import (PEER_OF, Args, Variant, bootstrap_ci, iqm, main, performance_profile, side_by_side,
                               stratified_bootstrap, variant_of)


def record(algo: str, dataset: str, seed: int, final: float, best: float | None = None, steps: int = 100,
           flags: tuple[str, ...] = (), **extra) -> dict:
    """A run_grid.py-shaped record: two evaluations, the first scoring `best` (default: the final score)."""
    first = final if best is None else best
    return {"algo": algo, "dataset": dataset, "seed": seed, "total_steps": steps, "flags": list(flags),
            "final_score": final, "final_return": final * 10,
            "evals": [{"step": steps // 2, "return": first * 10, "score": first},
                      {"step": steps, "return": final * 10, "score": final}],
            "updates_per_s": 100.0, "wall_time_s": 1.0, "threads": 1, "git_commit": "0123456789abcdef",
            "command": f"python algorithms/{algo}.py --dataset {dataset} --seed {seed}",
            "ref_min_score": 0.0, "ref_max_score": 1000.0, "args": {"eval_episodes": 10}, **extra}


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def report(tmp_path, records, **kwargs) -> str:
    """Run the report without plots on `records`; returns the markdown it wrote."""
    results = write_jsonl(tmp_path / "results.jsonl", records)
    main(Args(results=[results], plots=False, bootstrap_reps=200, **kwargs))
    return (tmp_path / "results.md").read_text()


# --- statistics --------------------------------------------------------------------------------------------


def test_iqm_by_hand():
    # sorted: -50 1 | 2 5 6 7 | 8 100: the middle four average to 5, the outliers do not count
    assert iqm(np.array([8, 1, 7, 2, 100, -50, 5, 6])) == pytest.approx(5.0)
    # n = 5: floor(5 / 4) = 1 cut from each end (as scipy.stats.trim_mean(x, 0.25) and rliable do)
    assert iqm(np.array([4, 100, 1, 3, 2])) == pytest.approx(3.0)
    # along the last axis, one value per row
    np.testing.assert_allclose(iqm(np.array([[1, 2, 3, 4], [10, 20, 30, 1000]])), [2.5, 25.0])


def test_bootstrap_ci_contains_point_is_reproducible_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(1)
    few = [rng.normal(50, 10, size=3) for _ in range(3)]
    many = [rng.normal(50, 10, size=30) for _ in range(3)]
    point, lo, hi = bootstrap_ci(few, iqm, reps=2000, seed=0)
    assert lo < point < hi
    assert point == pytest.approx(iqm(np.concatenate(few)))
    assert bootstrap_ci(few, iqm, reps=2000, seed=0) == (point, lo, hi)  # same seed, same interval
    assert bootstrap_ci(few, iqm, reps=2000, seed=1) != (point, lo, hi)
    _, lo_many, hi_many = bootstrap_ci(many, iqm, reps=2000, seed=0)
    assert hi_many - lo_many < 0.6 * (hi - lo)


def test_stratified_bootstrap_never_moves_a_run_across_datasets():
    groups = [np.array([0.0, 1.0, 2.0]), np.array([100.0, 101.0]), np.array([1000.0])]
    samples = stratified_bootstrap(groups, reps=500, rng=np.random.default_rng(0))
    assert samples.shape == (500, 6)
    assert set(np.unique(samples[:, :3])) == {0.0, 1.0, 2.0}  # each dataset's columns hold only its own runs
    assert set(np.unique(samples[:, 3:5])) == {100.0, 101.0}
    assert (samples[:, 5] == 1000.0).all()
    assert len({tuple(row) for row in samples[:, :3]}) > 5  # and they are resampled, not copied
    # a single dataset with a single seed has nothing to resample: a zero-width interval
    assert bootstrap_ci([np.array([7.0])], iqm, reps=50) == (7.0, 7.0, 7.0)


def test_performance_profile_by_hand():
    scores = np.array([10.0, 20.0, 30.0, 40.0])
    np.testing.assert_allclose(performance_profile(scores, np.array([0, 15, 30, 50])), [1.0, 0.75, 0.25, 0.0])
    # along the last axis: one profile per bootstrap resample
    np.testing.assert_allclose(performance_profile(np.array([[1.0, 3.0], [3.0, 3.0]]), np.array([2.0])),
                               [[0.5], [1.0]])


# --- variants and tables -----------------------------------------------------------------------------------


def test_variant_labels_split_by_flags_and_steps_but_not_bookkeeping():
    plain = variant_of(record("iql", "d", 0, 1.0, flags=("--eval-every=50", "--log-every", "--eval-episodes=2")))
    assert plain == Variant("iql", (), 100) and plain.label(show_steps=False) == "iql"
    sql = variant_of(record("sql", "d", 0, 1.0, flags=("--eval-every=50", "--tau=0.9", "--actor-weight=paper")))
    assert sql.label(show_steps=False) == "sql (--actor-weight=paper --tau=0.9)"
    assert Variant("iql", (), 100_000).label(show_steps=True) == "iql (100,000 updates)"
    assert sql.label(show_steps=True) == "sql (--actor-weight=paper --tau=0.9, 100 updates)"


def test_flags_recorded_before_a_rename_count_by_their_new_names():
    # committed results hold `--cql-alpha=10`, renamed `--regularizer-weight`: one column, under today's flag
    old = variant_of(record("cql", "d", 0, 1.0, flags=("--bc-steps=0", "--cql-alpha=10")))
    new = variant_of(record("cql", "d", 1, 1.0, flags=("--regularizer-weight=10", "--bc-steps=0")))
    assert old == new and old.label(show_steps=False) == "cql (--bc-steps=0 --regularizer-weight=10)"
    assert variant_of(record("d3rlpy_cql", "d", 0, 1.0, flags=("--cql-alpha=10",))).flags == ("--cql-alpha=10",)


def test_tables_from_synthetic_results(tmp_path):
    records = [record("bc", "A", 0, 10.0, best=15.0), record("bc", "A", 1, 30.0),
               record("bc", "B", 0, 50.0), record("bc", "B", 1, 70.0, best=90.0),
               record("sql", "A", 0, 40.0, flags=("--actor-weight=paper", "--eval-every=50")),
               record("sql", "A", 1, 40.0, flags=("--actor-weight=paper",))]
    text = report(tmp_path, records)
    lines = text.splitlines()
    assert lines[0] == "| dataset | bc | sql (--actor-weight=paper) |"
    assert "| A | 20.0 ± 10.0 (n=2) | 40.0 ± 0.0 (n=2) |" in lines
    assert "| B | 60.0 ± 10.0 (n=2) | — |" in lines
    # per seed over datasets: (10 + 50) / 2 = 30 and (30 + 70) / 2 = 50; sql misses B, so no average
    assert "| **average over datasets** | 40.0 ± 10.0 (n=2) | — |" in lines
    best = lines[lines.index("| A | 20.0 ± 10.0 (n=2) | 40.0 ± 0.0 (n=2) |") + 1:]
    assert "| A | 22.5 ± 7.5 (n=2) | 40.0 ± 0.0 (n=2) |" in best  # best of seed 0 on A is 15
    assert "| B | 70.0 ± 20.0 (n=2) | — |" in best  # best of seed 1 on B is 90
    # IQM of bc's four runs 10 30 50 70 is the mean of 30 and 50
    assert any(line.startswith("| bc | 2/2 | 4 | 40.0 [") for line in lines)
    assert any(line.startswith("| sql (--actor-weight=paper) | 1/2 | 2 | 40.0 [40.0, 40.0] |") for line in lines)
    assert "after 100 updates" in text and "(2 per cell)" in text and "10 deterministic episodes" in text
    assert f"python benchmarks/report.py {tmp_path / 'results.jsonl'} --bootstrap-reps 200 --no-plots" in text


def test_runs_with_different_steps_are_separate_columns(tmp_path):
    records = [record("iql", "A", 0, 10.0, steps=100), record("iql", "A", 1, 20.0, steps=100),
               record("iql", "A", 0, 80.0, steps=200)]
    lines = report(tmp_path, records).splitlines()
    assert lines[0] == "| dataset | iql (100 updates) | iql (200 updates) |"
    assert "| A | 15.0 ± 5.0 (n=2) | 80.0 (n=1) |" in lines  # one seed: no spread to show


def test_several_files_with_plots_and_readme(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [record("bc", "A", s, 10.0 + s) for s in range(3)])
    second = write_jsonl(tmp_path / "b.jsonl", [record("iql", "A", s, 30.0 + s) for s in range(3)]
                         + [record("iql", "B", s, 60.0 + s) for s in range(3)])
    docs = tmp_path / "docs"
    docs.mkdir()
    readme = docs / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n")
    out = tmp_path / "out" / "all.md"
    out.parent.mkdir()
    args = Args(results=[first, second], out=str(out), readme=str(readme), bootstrap_reps=100)
    main(args)
    plots = tmp_path / "out" / "all_plots"
    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == ["iqm.png", "learning_curves.png", "performance_profile.png"]
    first_bytes = {p: (plots / p).read_bytes() for p in pngs}
    assert all(b.startswith(b"\x89PNG\r\n\x1a\n") and len(b) > 5000 for b in first_bytes.values())
    with Image.open(plots / "iqm.png") as image:
        assert image.text == {}  # no text chunks: no software version, no date
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n")
    assert "](../out/all_plots/learning_curves.png)" in text  # relative to the README
    assert "](all_plots/iqm.png)" in out.read_text()  # relative to the report
    assert "| A | 11.0 ± 0.8 (n=3) | 31.0 ± 0.8 (n=3) |" in text
    main(args)  # the plots are byte-for-byte reproducible (no dates or versions in them)
    assert {p: (plots / p).read_bytes() for p in pngs} == first_bytes


def test_long_variant_labels_stay_inside_the_plots(tmp_path, monkeypatch):
    # a variant's label carries its flags and can be longer than a figure is wide: every legend entry, tick
    # label and axis label must still lie inside the saved image (they were cut off at the figure's edges)
    from benchmarks import report as report_module

    figures = {}
    monkeypatch.setattr(report_module, "save_png", lambda fig, path: figures.__setitem__(path.name, fig))
    long = ("--bc-steps=0", "--init=torch", "--regularizer-weight=10", "--target-action=mean",
            "--update-order=critic-first")
    records = [record("cql", d, s, 10.0 + s, flags=flags) for d in ("A", "B") for s in range(2)
               for flags in ((), long, long[:2], long[:3])] + [record("bc", "A", 0, 5.0)]
    main(Args(results=[write_jsonl(tmp_path / "r.jsonl", records)], out=str(tmp_path / "r.md"), bootstrap_reps=50))
    assert sorted(figures) == ["iqm.png", "learning_curves.png", "performance_profile.png"]
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        texts = [t for legend in fig.legends for t in legend.get_texts()]
        for ax in fig.axes:
            texts += [ax.xaxis.label, ax.yaxis.label]
            for axis in (ax.xaxis, ax.yaxis):  # the tick labels drawn: those inside the axis' limits
                lo, hi = sorted(axis.get_view_interval())
                texts += [t for t, at in zip(axis.get_ticklabels(), axis.get_ticklocs()) if lo <= at <= hi]
        assert any(" ".join(long) in t.get_text() for t in texts), name  # the long label is drawn somewhere
        for t in texts:
            if t.get_text() and t.get_visible():
                box = t.get_window_extent(renderer)
                assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y0 >= 0, (name, t.get_text())


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "line 1 is not JSON"),
    ([json.dumps({"algo": "bc"})], "lacks dataset, seed, total_steps, final_score, evals"),
    ([json.dumps(record("bc", "A", 0, float("nan")))], "not a finite number"),
    ([json.dumps(record("bc", "A", 0, 1.0))] * 2, "bc on A seed 0 (100 steps) is in the results twice"),
    ([json.dumps(record("bc", "A", 0, 1.0)), json.dumps(record("iql", "A", 0, 1.0, ref_max_score=2000.0))],
     "A is scored with reference scores"),
    ([], "holds no results"),
])
def test_bad_results_fail_with_one_line(tmp_path, lines, message):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(SystemExit, match="error: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        main(Args(results=[str(path)], plots=False))
    assert not (tmp_path / "r.md").exists()


def test_bad_arguments_fail_with_one_line(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [record("bc", "A", 0, 1.0)])
    with pytest.raises(SystemExit, match="error: no results file"):
        main(Args(results=[str(tmp_path / "missing.jsonl")]))
    with pytest.raises(SystemExit, match="error: several results files: name the report file with --out"):
        main(Args(results=[path, path]))
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="error: .* has no <!-- results:start -->"):
        main(Args(results=[path], readme=str(readme), plots=False))
    assert readme.read_text() == "no markers\n" and not (tmp_path / "r.md").exists()


def test_command_line_with_speed_file(tmp_path):
    """Today's CLI: results file, --readme and --speed fill both README blocks."""
    results = write_jsonl(tmp_path / "r.jsonl", [record("bc", "A", 0, 1.0)])
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"updates_per_s": {"bc": 427.7}, "device": "cpu", "device_name": "AMD EPYC",
                                 "threads": 2, "torch": "2.13.0+cpu", "command": "python benchmarks/speed.py"}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\n<!-- speed:start -->\nold\n<!-- speed:end -->\n")
    proc = subprocess.run([sys.executable, "benchmarks/report.py", results, "--readme", str(readme), "--speed",
                           str(speed), "--no-plots"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = readme.read_text()
    assert "| A | 1.0 (n=1) |" in text and "| AMD EPYC (cpu, 2 threads) | 427.7 |" in text and "old" not in text
    # a speed file of `speed.py --compile`: one row per algorithm, eager and compiled side by side
    speed.write_text(json.dumps({"updates_per_s": {"bc": 400.0, "iql": 100.0}, "updates_per_s_compiled": {
        "bc": 500.0, "iql": 90.0}, "device": "cpu", "device_name": "AMD EPYC", "threads": 2, "torch": "2.13.0+cpu",
        "command": "python benchmarks/speed.py --compile"}))
    main(Args(results=[results], readme=str(readme), speed=str(speed), plots=False))
    text = readme.read_text()
    assert "| bc | 400.0 | 500.0 | 1.25x |\n| iql | 100.0 | 90.0 | 0.90x |" in text and "427.7" not in text
    speed.write_text("{}")
    with pytest.raises(SystemExit, match="error: .* lacks updates_per_s"):
        main(Args(results=[results], readme=str(readme), speed=str(speed), plots=False))
    with pytest.raises(SystemExit, match="error: --speed fills the README's speed markers: give --readme too"):
        main(Args(results=[results], speed=str(speed), plots=False))


def test_two_reports_in_one_readme_by_section(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [record("bc", "A", 0, 1.0)])
    second = write_jsonl(tmp_path / "b.jsonl", [record("iql", "B", 0, 7.0)])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\n<!-- results:end -->\nmiddle\n"
                      "<!-- long:start -->\nold\n<!-- long:end -->\n")
    main(Args(results=[first], readme=str(readme), plots=False))
    main(Args(results=[second], readme=str(readme), section="long", plots=False))
    head, tail = readme.read_text().split("middle")
    assert "| A | 1.0 (n=1) |" in head and "| B |" not in head
    assert "| B | 7.0 (n=1) |" in tail and "old" not in tail and "--section long" in tail
    with pytest.raises(SystemExit, match="error: .* has no <!-- other:start -->"):
        main(Args(results=[second], readme=str(readme), section="other", plots=False))


def test_updates_per_s_line_skips_records_without_a_rate(tmp_path):
    # a reused finished cell whose run logged no rate records None: it must not enter the mean (nor break it)
    text = report(tmp_path, [record("bc", "A", 0, 1.0, updates_per_s=60.0),
                             record("bc", "A", 1, 2.0, updates_per_s=None),
                             record("iql", "A", 0, 3.0, updates_per_s=0)])
    assert "evaluation included, 1 torch thread per run): bc 60." in text and "iql" not in text.split("Updates/s")[1]


def test_updates_per_s_line_gives_the_host_load_the_runs_recorded(tmp_path):
    # a cell that shared the cores runs slower: the report says so from the records' load, per core
    text = report(tmp_path, [record("bc", "A", 0, 1.0, load_avg=3.0, cpu_count=2),
                             record("bc", "A", 1, 2.0, load_avg=1.0, cpu_count=2),
                             record("bc", "A", 2, 2.0)])  # an older record, from before the grid sampled the load
    assert "over the 2 of 3 runs that recorded it: 0.50 to 1.50, above 1 meaning" in text.split("Updates/s")[1]
    assert "load" not in report(tmp_path, [record("bc", "A", 0, 1.0)]).split("Updates/s")[1]


def test_model_based_runs_report_their_dynamics_training(tmp_path):
    text = report(tmp_path, [record("mopo", "A", 0, 1.0, dynamics={"seconds": 120.0, "epochs": 40}),
                             record("mopo", "A", 1, 2.0, dynamics={"seconds": 240.0, "epochs": 50}),
                             record("mopo", "B", 0, 2.0, dynamics={"seconds": 30.0, "epochs": 7}),
                             record("bc", "A", 0, 3.0)])
    assert ("Dynamics-model training per run (before the agent's first update; mean over seeds): "
            "mopo on A 3.0 min, 45 epochs; mopo on B 0.5 min, 7 epochs.") in text
    assert "Dynamics-model" not in report(tmp_path, [record("bc", "A", 0, 1.0)])


def test_planners_report_their_planning_time(tmp_path):
    text = report(tmp_path, [record("tt", "A", 0, 1.0, plan_s_per_step=0.2, device="cpu"),
                             record("tt", "A", 1, 2.0, plan_s_per_step=0.4, device="cpu"),
                             record("diffuser", "A", 0, 2.0, plan_s_per_step=3.0, plan_device="cuda"),
                             record("diffuser", "A", 1, 2.0, plan_s_per_step=None, plan_device="cuda"),
                             record("bc", "A", 0, 3.0)])
    assert ("Planning time per environment step during the evaluations (all of an evaluation's episodes planned in "
            "one call; mean over seeds): tt on A 0.30 s (cpu); diffuser on A 3.00 s (cuda).") in text
    assert "Planning time" not in report(tmp_path, [record("bc", "A", 0, 1.0)])


def test_late_score_averages_the_last_fifth_of_training(tmp_path):
    from benchmarks.report import late_score

    rec = record("iql", "A", 0, 30.0, steps=100)
    rec["evals"] = [{"step": s, "return": 0.0, "score": sc} for s, sc in [(20, 5.0), (70, 90.0), (80, 60.0),
                                                                         (90, 10.0), (100, 30.0)]]
    assert late_score(rec) == pytest.approx((60 + 10 + 30) / 3)  # steps 80, 90, 100; 70 is before 0.8 x 100
    final, late, best = report(tmp_path, [rec]).split("| dataset |")[1:4]
    assert "| A | 30.0 (n=1) |" in final and "| A | 33.3 (n=1) |" in late and "| A | 90.0 (n=1)" in best


def test_peer_columns_sit_beside_ours():
    assert PEER_OF["d3rlpy_td3_bc"] == "td3_bc" and all((ROOT / "algorithms" / f"{a}.py").is_file()
                                                        for a in PEER_OF.values())  # each peer has our script
    v = {name: Variant(name, (), 100) for name in ("d3rlpy_bc", "bc", "td3_bc", "iql", "d3rlpy_td3_bc", "d3rlpy_iql",
                                                   "d3rlpy_cql", "awr")}
    cql = Variant("cql", ("--bc-steps=10",), 100)
    order = side_by_side([v["d3rlpy_bc"], v["bc"], v["td3_bc"], v["iql"], v["d3rlpy_td3_bc"], v["d3rlpy_iql"],
                          v["d3rlpy_cql"], cql, v["awr"]])
    assert [w.algo for w in order] == ["bc", "d3rlpy_bc", "td3_bc", "d3rlpy_td3_bc", "iql", "d3rlpy_iql", "cql",
                                       "d3rlpy_cql", "awr"]
    # a peer without our algorithm in the table keeps its place at the end; no peers: order unchanged
    assert [w.algo for w in side_by_side([v["d3rlpy_iql"], v["bc"]])] == ["bc", "d3rlpy_iql"]
    assert side_by_side([v["awr"], v["bc"]]) == [v["awr"], v["bc"]]


def test_algos_selects_columns_and_names_a_missing_one(tmp_path):
    records = [record("bc", "A", 0, 1.0), record("iql", "A", 0, 2.0), record("iql", "A", 0, 3.0, flags=("--x=1",)),
               record("d3rlpy_iql", "A", 0, 4.0)]
    text = report(tmp_path, records, algos=["iql", "d3rlpy_iql"])
    assert text.splitlines()[0] == "| dataset | iql | iql (--x=1) | d3rlpy_iql |"
    assert "| A | 2.0 (n=1) | 3.0 (n=1) | 4.0 (n=1) |" in text and "--algos iql d3rlpy_iql" in text
    missing = "error: --algos cql: no such algorithm in .* \\(it has bc, d3rlpy_iql, iql\\)"
    with pytest.raises(SystemExit, match=missing):
        report(tmp_path, records, algos=["iql", "cql"])


def test_behaviour_column_from_the_data(tmp_path, tiny_cartpole):
    """benchmarks/behaviour.py scores the data's episodes by hand; report.py shows it first in every table."""
    from benchmarks.behaviour import Args as BehaviourArgs
    from benchmarks.behaviour import behaviour_entry, episode_returns, greedy_score
    from benchmarks.behaviour import main as behaviour_main
    from common.data import load_dataset

    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=np.float32)
    assert episode_returns(rewards, np.array([0, 2, 5]), np.array([2, 3, 1])).tolist() == [3.0, 12.0, 6.0]
    data = load_dataset(tiny_cartpole, discrete=True)
    entry = behaviour_entry(tiny_cartpole)
    returns = [data.rewards[s:s + n].sum() for s, n in zip(data.episode_starts, data.episode_lengths)]
    assert entry["episodes"] == len(returns) and entry["return_mean"] == pytest.approx(np.mean(returns))
    lo, hi = data.ref_min_score, data.ref_max_score
    assert entry["score_mean"] == pytest.approx(100 * (np.mean(returns) - lo) / (hi - lo))

    out = tmp_path / "behaviour.json"
    out.write_text(json.dumps({"B": {"score_mean": 7.0, "score_std": 1.0}}))
    behaviour_main(BehaviourArgs(datasets=[tiny_cartpole], out=str(out)))
    table = json.loads(out.read_text())
    assert table["B"] == {"score_mean": 7.0, "score_std": 1.0} and tiny_cartpole in table  # merged, not replaced
    assert table[tiny_cartpole]["greedy_score"] is None  # not a stitch level
    manifest = json.loads((ROOT / "benchmarks/suite/policies/acrobot/manifest.json").read_text())
    greedy = manifest["medium"]["deterministic"]["mean"]
    assert greedy_score("stitch/acrobot/medium-v0", -500.0, -90.0) == pytest.approx(100 * (greedy + 500) / 410)
    assert greedy_score("stitch/acrobot/medium-replay-v0", -500.0, -90.0) is None  # a mixture of snapshots

    table["A"] = {"score_mean": 3.0, "score_std": 0.5}
    out.write_text(json.dumps(table))
    records = [record("bc", "A", 0, 10.0), record("bc", "B", 0, 20.0)]
    text = report(tmp_path, records, behaviour=str(out))
    assert text.splitlines()[0] == "| dataset | behaviour (data) | bc |"
    assert text.count("| A | 3.0 ± 0.5 | 10.0 (n=1) |") == 3 and "| **average over datasets** | 5.0 |" in text
    assert f"--behaviour {out}" in text
    # the greedy column appears where an entry knows the logging policy's greedy score
    table["A"]["greedy_score"] = 9.0
    out.write_text(json.dumps(table))
    text = report(tmp_path, records, behaviour=str(out))
    assert text.splitlines()[0] == "| dataset | behaviour (data) | behaviour, greedy | bc |"
    assert "| A | 3.0 ± 0.5 | 9.0 | 10.0 (n=1) |" in text and "| B | 7.0 ± 1.0 | — | 20.0 (n=1) |" in text
    with pytest.raises(SystemExit, match="has no entry for C"):
        report(tmp_path, records + [record("bc", "C", 0, 1.0)], behaviour=str(out))
