"""Benchmark report: tables, aggregate statistics and plots from results files (benchmarks/pages.py puts the
reports on benchmarks/RESULTS.md).

    python benchmarks/report.py benchmarks/results/hopper_50k.jsonl
    python benchmarks/report.py a.jsonl b.jsonl --out benchmarks/results/all.md     # several files, one report
    python benchmarks/report.py benchmarks/results/hopper_50k.jsonl --no-plots

Input: one or more JSONL files written by benchmarks/run_grid.py, one record per finished run. Output:

1. Tables, one row per dataset and one column per variant: the final normalized score (mean ± std over
   seeds, with the number of seeds), the best evaluation along the way, and an "average over datasets" row.
   A variant is an algorithm with its flags and number of updates: runs that differ in either are never
   averaged together (`sql (--actor-weight=paper)` is its own column). Flags that only change how a run is
   observed (`--eval-every`, `--log-every`, ...: BOOKKEEPING_FLAGS) do not split a column.
2. Aggregates over all runs, after Agarwal et al., "Deep RL at the Edge of the Statistical Precipice"
   (NeurIPS 2021, arXiv:2108.13264): the interquartile mean (IQM) and the mean of the final scores per
   variant, each with a 95% stratified bootstrap confidence interval (seeds are resampled within each
   dataset; a fixed RNG seed makes the report reproducible).
3. Plots (PNG, fixed size and dpi, no timestamps, so they can be committed): learning curves per dataset,
   the IQM intervals, and the performance profile (fraction of runs whose score exceeds tau).

The report goes to `<results>.md` (or `--out`), the plots to the folder `<report stem>_plots/` beside it,
and, with `--readme`, between the README's `<!-- results:start -->` and `<!-- results:end -->` markers
(`--section NAME`: `<!-- NAME:start -->` ... `<!-- NAME:end -->`; plots linked by relative paths).
Nothing in them is typed by hand.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.peers import D3RLPY_ALGOS  # noqa: E402  (stdlib only)
from common.vocabulary import upgrade_flags  # noqa: E402  (stdlib only)

SPEED_START, SPEED_END = "<!-- speed:start -->", "<!-- speed:end -->"
# peer algorithm -> our script it is compared with: d3rlpy's algorithm names are our scripts' names
PEER_OF = D3RLPY_ALGOS
REQUIRED = ("algo", "dataset", "seed", "total_steps", "final_score", "evals")
# Flags that change how a run is observed or where it runs, not what it learns: they do not split a column.
BOOKKEEPING_FLAGS = {"--eval-every", "--eval-episodes", "--log-every", "--checkpoint-every", "--device", "--track",
                     "--no-track", "--progress", "--no-progress", "--runs-dir", "--download", "--no-download"}


# ----------------------------------------------------------------------------------------------------------
# Loading and grouping
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    """A table column: one algorithm with one set of flags and one number of updates."""

    algo: str
    flags: tuple[str, ...]
    total_steps: int

    def label(self, show_steps: bool) -> str:
        """`iql`, `sql (--actor-weight=paper)`, or with show_steps `iql (100,000 updates)`."""
        parts = [" ".join(self.flags)] if self.flags else []
        if show_steps:
            parts.append(f"{self.total_steps:,} updates")
        return f"{self.algo} ({', '.join(parts)})" if parts else self.algo


def variant_of(record: dict) -> Variant:
    """The record's column; flags renamed since it was recorded (`--cql-alpha`) go by their new names."""
    flags = [f for f in upgrade_flags(record["algo"], record.get("flags", []))
             if re.split(r"[= ]", f, maxsplit=1)[0] not in BOOKKEEPING_FLAGS]
    return Variant(record["algo"], tuple(sorted(flags)), int(record["total_steps"]))


def load_results(paths: list[Path]) -> list[dict]:
    """Every record of every file, checked: required fields, finite scores, no run twice, one reference per dataset."""
    records, seen, refs = [], {}, {}
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"error: no results file {path}")
        lines = path.read_text().splitlines()
        if not any(line.strip() for line in lines):
            raise SystemExit(f"error: {path} holds no results")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {where} is not JSON ({e.msg})") from None
            missing = [k for k in REQUIRED if k not in rec]
            if missing:
                raise SystemExit(f"error: {where} lacks {', '.join(missing)} (not a run_grid.py record?)")
            numbers = [rec["final_score"], *(e.get(k) for e in rec["evals"] for k in ("step", "score"))]
            if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
                raise SystemExit(f"error: {where} has a final score, evaluation step or score that is not a finite "
                                 "number")
            key = (variant_of(rec), rec["dataset"], rec["seed"])
            if key in seen:
                raise SystemExit(f"error: {rec['algo']} on {rec['dataset']} seed {rec['seed']} "
                                 f"({rec['total_steps']} steps) is in the results twice: {seen[key]} and {where}")
            seen[key] = where
            ref = (rec.get("ref_min_score"), rec.get("ref_max_score"))
            if None not in ref:
                old = refs.setdefault(rec["dataset"], (ref, where))
                if old[0] != ref:
                    raise SystemExit(f"error: {rec['dataset']} is scored with reference scores {old[0]} in {old[1]} "
                                     f"but {ref} in {where}; run benchmarks/rescore.py on the older file")
            records.append(rec)
    return records


@dataclasses.dataclass
class Results:
    """Records grouped into table cells; variants and datasets in order of first appearance."""

    records: list[dict]
    variants: list[Variant]
    datasets: list[str]
    cells: dict[tuple[Variant, str], list[dict]]
    labels: dict[Variant, str]
    behaviour: dict[str, dict] | None = None  # dataset -> benchmarks/behaviour.py's entry (the data's own score)


def side_by_side(variants: list[Variant]) -> list[Variant]:
    """Order of first appearance, except that a peer library's column (d3rlpy_iql, ...) comes right after the
    last of our columns of the same algorithm, so each pair reads side by side."""
    ours = [v for v in variants if v.algo not in PEER_OF]
    placed: list[Variant] = []
    for i, v in enumerate(ours):
        placed.append(v)
        if all(w.algo != v.algo for w in ours[i + 1:]):
            placed += [p for p in variants if PEER_OF.get(p.algo) == v.algo]
    return placed + [v for v in variants if v not in placed]


def group(records: list[dict]) -> Results:
    cells: dict[tuple[Variant, str], list[dict]] = defaultdict(list)
    for rec in records:
        cells[(variant_of(rec), rec["dataset"])].append(rec)
    for runs in cells.values():
        runs.sort(key=lambda r: r["seed"])
    variants = side_by_side(list(dict.fromkeys(v for v, _ in cells)))
    datasets = list(dict.fromkeys(d for _, d in cells))
    show_steps = len({v.total_steps for v in variants}) > 1
    return Results(records, variants, datasets, dict(cells), {v: v.label(show_steps) for v in variants})


LATE_FRACTION = 0.2


def late_score(record: dict) -> float:
    """Mean of the evaluations in the last 20% of training (step >= 0.8 x total steps, the final one included):
    less at the mercy of one noisy evaluation than the final score, and not optimistic like the best."""
    first = (1 - LATE_FRACTION) * record["total_steps"]
    late = [e["score"] for e in record["evals"] if e["step"] >= first]
    return float(np.mean(late)) if late else float(record["final_score"])


def best_score(record: dict) -> float:
    """The best evaluation along the way (optimistic: it picks the maximum of several noisy evaluations)."""
    return max([record["final_score"], *(e["score"] for e in record["evals"])])


# ----------------------------------------------------------------------------------------------------------
# Statistics (after rliable; implemented with numpy)
# ----------------------------------------------------------------------------------------------------------


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean along the last axis: the mean of the middle 50% of the sorted scores.

    Like rliable (scipy.stats.trim_mean(..., 0.25)), floor(n / 4) scores are cut from each end.
    """
    scores = np.sort(np.asarray(scores, dtype=float), axis=-1)
    n = scores.shape[-1]
    cut = n // 4
    return scores[..., cut:n - cut].mean(axis=-1)


def mean(scores: np.ndarray) -> np.ndarray:
    return np.asarray(scores, dtype=float).mean(axis=-1)


def stratified_bootstrap(groups: list[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """`reps` resamples of all runs, shape [reps, total runs]: each group (one dataset's seeds) is resampled
    with replacement within itself, so a resample keeps every dataset's number of runs and never moves a run
    from one dataset to another. Column block i holds group i's resampled runs."""
    blocks = [g[rng.integers(0, len(g), size=(reps, len(g)))] for g in map(np.asarray, groups)]
    return np.concatenate(blocks, axis=1)


def bootstrap_ci(groups: list[np.ndarray], statistic: Callable[[np.ndarray], np.ndarray], reps: int = 2000,
                 seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """(point estimate, lower, upper): the statistic over all runs and its percentile bootstrap interval."""
    point = float(statistic(np.concatenate([np.asarray(g, dtype=float) for g in groups])))
    stats = statistic(stratified_bootstrap(groups, reps, np.random.default_rng(seed)))
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return point, float(lo), float(hi)


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs whose score is greater than tau, for each tau (along the last axis of `scores`)."""
    scores = np.asarray(scores, dtype=float)
    return np.stack([(scores > t).mean(axis=-1) for t in taus], axis=-1)


def final_scores_by_dataset(res: Results, variant: Variant) -> list[np.ndarray]:
    """The variant's final scores, one array of seeds per dataset it ran on (the bootstrap's strata)."""
    return [np.array([r["final_score"] for r in res.cells[(variant, d)]]) for d in res.datasets
            if (variant, d) in res.cells]


def tau_grid(res: Results) -> np.ndarray:
    scores = [r["final_score"] for r in res.records]
    return np.linspace(min(0.0, math.floor(min(scores))), max(100.0, math.ceil(max(scores))), 201)


# ----------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------


def fmt(values: list[float]) -> str:
    """Mean ± std; one value alone has no spread to show (not ± 0.0)."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def average_cell(res: Results, variant: Variant, score: Callable[[dict], float]) -> str:
    """Average over datasets: each seed's scores averaged over the datasets, then mean ± std over seeds.
    Blank (—) when the variant misses a dataset; the mean of the per-dataset means when seeds differ."""
    runs = [res.cells.get((variant, d)) for d in res.datasets]
    if not all(runs):
        return "—"
    seeds = [[r["seed"] for r in rs] for rs in runs]
    if all(s == seeds[0] for s in seeds):
        per_seed = np.mean([[score(r) for r in rs] for rs in runs], axis=0)
        return f"{fmt(list(per_seed))} (n={len(per_seed)})"
    return f"{np.mean([np.mean([score(r) for r in rs]) for rs in runs]):.1f} (seeds differ)"


def behaviour_columns(res: Results) -> list[str]:
    """The behaviour's columns: the data's own score, and the logging policy acting greedily where known."""
    if res.behaviour is None:
        return []
    greedy = any((res.behaviour.get(d) or {}).get("greedy_score") is not None for d in res.datasets)
    return ["behaviour (data)"] + (["behaviour, greedy"] if greedy else [])


def behaviour_cells(res: Results, dataset: str, columns: list[str]) -> list[str]:
    entry = (res.behaviour or {}).get(dataset) or {}
    cells = ["—" if entry.get("score_mean") is None else f"{entry['score_mean']:.1f} ± {entry['score_std']:.1f}"]
    greedy = entry.get("greedy_score")
    cells.append("—" if greedy is None else f"{greedy:.1f}")
    return cells[:len(columns)]


def behaviour_averages(res: Results, columns: list[str]) -> list[str]:
    data = [(res.behaviour or {}).get(d, {}).get("score_mean") for d in res.datasets]
    return (["—" if None in data else f"{np.mean(data):.1f}"] + ["—"])[:len(columns)]


def score_table(res: Results, score: Callable[[dict], float]) -> list[str]:
    first = behaviour_columns(res)
    header = ["| dataset | " + " | ".join(first + [res.labels[v] for v in res.variants]) + " |",
              "|---|" + "---|" * (len(first) + len(res.variants))]
    rows = []
    for d in res.datasets:
        cells = [f"{fmt([score(r) for r in rs])} (n={len(rs)})" if (rs := res.cells.get((v, d))) else "—"
                 for v in res.variants]
        rows.append(f"| {d} | " + " | ".join(behaviour_cells(res, d, first) + cells) + " |")
    if len(res.datasets) > 1:
        rows.append("| **average over datasets** | " + " | ".join(
            behaviour_averages(res, first) + [average_cell(res, v, score) for v in res.variants]) + " |")
    return header + rows


def load_behaviour(path: Path, datasets: list[str]) -> dict[str, dict]:
    """benchmarks/behaviour.py's file, checked: JSON, one entry per dataset of the tables."""
    if not path.is_file():
        raise SystemExit(f"error: no behaviour file {path} (write it with benchmarks/behaviour.py)")
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not JSON ({e.msg})") from None
    missing = [d for d in datasets if d not in table]
    if missing:
        raise SystemExit(f"error: {path} has no entry for {', '.join(missing)} (add it: python benchmarks/behaviour.py "
                         f"{' '.join(missing)} --out {path})")
    return table


def aggregate_table(res: Results, reps: int, seed: int) -> list[str]:
    lines = ["| algorithm | datasets | runs | IQM [95% CI] | mean [95% CI] |", "|---|---:|---:|---|---|"]
    for v in res.variants:
        groups = final_scores_by_dataset(res, v)
        cells = []
        for statistic in (iqm, mean):
            point, lo, hi = bootstrap_ci(groups, statistic, reps, seed)
            cells.append(f"{point:.1f} [{lo:.1f}, {hi:.1f}]")
        lines.append(f"| {res.labels[v]} | {len(groups)}/{len(res.datasets)} | {sum(map(len, groups))} | "
                     + " | ".join(cells) + " |")
    return lines


def counts(values: list) -> str:
    """'2' or '1–3' (a range when cells differ)."""
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def report_markdown(res: Results, plots: dict[str, Path], base: Path, command: str, sources: list[str],
                    reps: int, seed: int) -> str:
    """The whole report; plot links relative to the folder `base` the text will live in."""
    seeds = counts([len(rs) for rs in res.cells.values()])
    steps = counts([v.total_steps for v in res.variants])
    episodes = sorted({r.get("args", {}).get("eval_episodes") for r in res.records} - {None})
    episodes_text = f"{'/'.join(map(str, episodes))} deterministic episodes" if episodes else "deterministic episodes"
    lines = score_table(res, lambda r: r["final_score"])
    lines += ["", f"Final normalized score × 100 (D4RL-style: 0 random, 100 expert) after {steps} updates, "
              f"mean ± std over n seeds ({seeds} per cell); each evaluation averages {episodes_text}."
              + (" The average row averages each seed's scores over the datasets (— where a column misses a "
                 "dataset)." if len(res.datasets) > 1 else "")
              + (" Behaviour (data): the data's own score, the normalized mean return of the dataset's episodes "
                 "± std over its episodes (benchmarks/behaviour.py); the same in every table."
                 if res.behaviour is not None else "")
              + (" Behaviour, greedy: the policy that logged a single-policy level, acting without its exploration "
                 "noise as the scripts' evaluations act (its manifest's 100-episode evaluation)."
                 if len(behaviour_columns(res)) > 1 else ""),
              "", f"Mean of each run's evaluations over the last {LATE_FRACTION:.0%} of its updates (the final one "
              "included; less noisy than the single final evaluation), mean ± std over seeds:", ""]
    lines += score_table(res, late_score)
    lines += ["", "Best evaluation along the way (mean ± std over seeds of each run's highest evaluation; optimistic, "
              "since it picks the maximum of several noisy evaluations):", ""]
    lines += score_table(res, best_score)
    lines += ["", f"Aggregate over each algorithm's runs (Agarwal et al., NeurIPS 2021): interquartile mean (IQM) and "
              f"mean of the final normalized scores, with 95% stratified bootstrap confidence intervals ({reps:,} "
              f"resamples of the seeds within each dataset, RNG seed {seed}). Compare rows only over the same "
              "datasets.", ""]
    lines += aggregate_table(res, reps, seed)
    if plots:
        lines += ["", " ".join(f"![{name}]({Path(os.path.relpath(p, base)).as_posix()})" for name, p in plots.items()),
                  "", "Learning curves: mean over seeds, band from the lowest to the highest seed. Performance "
                  "profile: fraction of runs whose final score exceeds τ, with a 95% bootstrap band."]
    # evaluation included for every column: peer records keep that rate in updates_per_s_with_eval
    ups = {res.labels[v]: np.mean([r.get("updates_per_s_with_eval", r["updates_per_s"]) for d in res.datasets
                                   for r in res.cells.get((v, d), []) if r.get("updates_per_s")] or [np.nan])
           for v in res.variants}
    commits = list(dict.fromkeys(str(r["git_commit"])[:7] for r in res.records if r.get("git_commit")))
    threads = counts([r.get("threads", 1) for r in res.records])
    # records from before the grid sampled the host's load have none
    loads = [r["load_avg"] / r["cpu_count"] for r in res.records
             if r.get("load_avg") is not None and r.get("cpu_count")]
    load = "" if not loads else (f"; the host's mean load per core while they trained, over the {len(loads)} of "
                                 f"{len(res.records)} runs that recorded it: {min(loads):.2f} to {max(loads):.2f}, "
                                 "above 1 meaning they shared the cores with other work")
    lines += ["", f"Updates/s during these runs (evaluation included, {threads} torch "
              f"thread{'' if threads == '1' else 's'} per run{load}): "
              + ", ".join(f"{a} {u:.0f}" for a, u in ups.items() if np.isfinite(u)) + "."
              + dynamics_line(res) + planning_line(res),
              f"Runs at git commit {', '.join(commits) or 'unknown'}; each run's command is in its record's "
              "`command` field.",
              "", f"Generated by `{command}` from {', '.join(f'`{s}`' for s in sources)}."]
    return "\n".join(lines)


def dynamics_line(res: Results) -> str:
    """For model-based runs (their result holds `dynamics`: the model's training as recorded with it), the minutes
    and epochs that training took per variant and dataset, mean over seeds; '' when no run has one."""
    parts = []
    for v in res.variants:
        for d in res.datasets:
            infos = [r["dynamics"] for r in res.cells.get((v, d), []) if isinstance(r.get("dynamics"), dict)
                     and r["dynamics"].get("seconds") is not None]
            if infos:
                parts.append(f"{res.labels[v]} on {d} {np.mean([i['seconds'] for i in infos]) / 60:.1f} min, "
                             f"{np.mean([i.get('epochs', np.nan) for i in infos]):.0f} epochs")
    return "" if not parts else (" Dynamics-model training per run (before the agent's first update; "
                                 "mean over seeds): " + "; ".join(parts) + ".")


def planning_line(res: Results) -> str:
    """For planners (their result holds `plan_s_per_step`, seconds per environment step of their evaluations; one
    batched call plans all of an evaluation's running episodes), the mean per variant and dataset, with the device
    it ran on; '' when no run has one."""
    parts = []
    for v in res.variants:
        for d in res.datasets:
            runs = [r for r in res.cells.get((v, d), []) if r.get("plan_s_per_step") is not None]
            if runs:
                devices = ", ".join(dict.fromkeys(str(r.get("plan_device") or r.get("device") or "?") for r in runs))
                parts.append(f"{res.labels[v]} on {d} {np.mean([r['plan_s_per_step'] for r in runs]):.2f} s "
                             f"({devices})")
    return "" if not parts else (" Planning time per environment step during the evaluations (all of an "
                                 "evaluation's episodes planned in one call; mean over seeds): "
                                 + "; ".join(parts) + ".")


def speed_table(path: Path) -> str:
    if not path.is_file():
        raise SystemExit(f"error: no speed file {path}")
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not JSON ({e.msg})") from None
    missing = [k for k in ("updates_per_s", "device_name", "device", "threads", "command", "torch") if k not in rec]
    if missing:
        raise SystemExit(f"error: {path} lacks {', '.join(missing)} (not written by benchmarks/speed.py?)")
    algos = list(rec["updates_per_s"])
    source = f"from `{path}`, made by `{rec['command']}` (torch {rec['torch']})."
    compiled = rec.get("updates_per_s_compiled")
    if compiled is None:
        return "\n".join([
            "| device | " + " | ".join(algos) + " |", "|---|" + "---:|" * len(algos),
            f"| {rec['device_name']} ({rec['device']}, {rec['threads']} threads) | "
            + " | ".join(f"{rec['updates_per_s'][a]:.1f}" for a in algos) + " |", "",
            f"Updates per second at default sizes, {source}"])
    eager = rec["updates_per_s"]
    rows = [f"| {a} | {eager[a]:.1f} | {compiled[a]:.1f} | {compiled[a] / eager[a]:.2f}x |"
            for a in algos if a in compiled]
    return "\n".join([
        "| algorithm | eager, updates/s | `--compile`, updates/s | compiled / eager |", "|---|---:|---:|---:|", *rows,
        "", f"Updates per second at default sizes on {rec['device_name']} ({rec['device']}, {rec['threads']} threads), "
        f"each script eager and with `--compile` in the same run, {source}"])


# ----------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------


def save_png(fig, path: Path) -> None:
    """Write atomically with fixed dpi and no metadata (no version, no date), so reruns give the same bytes."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


CHAR_IN = 0.08  # width of a character of the plots' 10-point labels, in inches (a little more than DejaVu's mean)


def longest_label_in(res: Results) -> float:
    """Width in inches of the longest variant label (a label carries the variant's flags, so it can be long)."""
    return CHAR_IN * max(len(res.labels[v]) for v in res.variants)


def legend_layout(labels: list[str], width_in: float) -> tuple[int, int]:
    """(columns, rows) of a legend of `labels` across a figure `width_in` inches wide: up to 4 columns, as
    many as fit when each is as wide as the longest entry (its line handle included), at least 1."""
    entry_in = CHAR_IN * max(map(len, labels)) + 0.8
    cols = max(1, min(4, len(labels), int(width_in // entry_in)))
    return cols, math.ceil(len(labels) / cols)


def plot_learning_curves(res: Results, path: Path, colors: dict[Variant, str]) -> None:
    """One panel per dataset: normalized score against updates, mean over seeds and the min–max band."""
    import matplotlib.pyplot as plt

    ncols = min(3, len(res.datasets))
    nrows = math.ceil(len(res.datasets) / ncols)
    # a label as long as a variant's flags may need the full width for one legend column, and rows below
    width = max(4.2 * ncols, longest_label_in(res) + 1.0)
    legend_cols, legend_rows = legend_layout([res.labels[v] for v in res.variants], width)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.2 * nrows + 0.3 + 0.25 * legend_rows), squeeze=False,
                             layout="constrained")
    for ax, d in zip(axes.flat, res.datasets):
        for v in res.variants:
            runs = res.cells.get((v, d))
            if not runs:
                continue
            evals = [{e["step"]: e["score"] for e in r["evals"]} for r in runs]
            steps = sorted(set.intersection(*(set(e) for e in evals)))  # steps every seed evaluated
            curves = np.array([[e[s] for s in steps] for e in evals])
            ax.plot(steps, curves.mean(0), color=colors[v], label=res.labels[v])
            ax.fill_between(steps, curves.min(0), curves.max(0), color=colors[v], alpha=0.2, linewidth=0)
        ax.set(title=d, xlabel="updates", ylabel="normalized score")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x else "0")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(res.datasets):]:
        ax.set_axis_off()
    legend = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}  # every variant
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=legend_cols, frameon=False)
    save_png(fig, path)


def plot_iqm(res: Results, path: Path, colors: dict[Variant, str], reps: int, seed: int) -> None:
    """One row per variant: the IQM of its final scores and the 95% stratified bootstrap interval."""
    import matplotlib.pyplot as plt

    # room for the longest variant label on the left and a 4-inch axis beside it
    width = max(6.4, longest_label_in(res) + 4.5)
    fig, ax = plt.subplots(figsize=(width, 1.2 + 0.45 * len(res.variants)), layout="constrained")
    for i, v in enumerate(res.variants):
        point, lo, hi = bootstrap_ci(final_scores_by_dataset(res, v), iqm, reps, seed)
        ax.errorbar(point, i, xerr=[[point - lo], [hi - point]], fmt="o", color=colors[v], capsize=4, linewidth=2)
    ax.set_yticks(range(len(res.variants)), [res.labels[v] for v in res.variants])
    ax.set_ylim(len(res.variants) - 0.5, -0.5)
    ax.set_xlabel("IQM of final normalized score (95% stratified bootstrap CI)")
    ax.grid(axis="x", alpha=0.3)
    save_png(fig, path)


def plot_performance_profile(res: Results, path: Path, colors: dict[Variant, str], reps: int, seed: int) -> None:
    """Fraction of runs with final score > tau against tau, with a 95% stratified bootstrap band."""
    import matplotlib.pyplot as plt

    taus = tau_grid(res)
    width = max(6.4, longest_label_in(res) + 1.0)
    legend_cols, legend_rows = legend_layout([res.labels[v] for v in res.variants], width)
    fig, ax = plt.subplots(figsize=(width, 3.6 + 0.25 * legend_rows), layout="constrained")
    for v in res.variants:
        groups = final_scores_by_dataset(res, v)
        ax.plot(taus, performance_profile(np.concatenate(groups), taus), color=colors[v], label=res.labels[v])
        boot = performance_profile(stratified_bootstrap(groups, reps, np.random.default_rng(seed)), taus)
        ax.fill_between(taus, *np.percentile(boot, [2.5, 97.5], axis=0), color=colors[v], alpha=0.2, linewidth=0)
    ax.set(xlabel="normalized score τ", ylabel="fraction of runs with score > τ", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=legend_cols, frameon=False)  # below: the curves fill the axes
    save_png(fig, path)


def write_plots(res: Results, folder: Path, reps: int, seed: int) -> dict[str, Path]:
    """All plots into `folder`; returns {alt text: path}."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps

    folder.mkdir(parents=True, exist_ok=True)
    palette = colormaps["tab10"].colors
    colors = {v: palette[i % len(palette)] for i, v in enumerate(res.variants)}
    plots = {"learning curves": folder / "learning_curves.png", "IQM with 95% CI": folder / "iqm.png",
             "performance profile": folder / "performance_profile.png"}
    plot_learning_curves(res, plots["learning curves"], colors)
    plot_iqm(res, plots["IQM with 95% CI"], colors, reps, seed)
    plot_performance_profile(res, plots["performance profile"], colors, reps, seed)
    for p in plots.values():
        print(f"wrote {p}", flush=True)
    return plots


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Args:
    results: tyro.conf.Positional[list[str]]
    """One or more results JSONL files written by benchmarks/run_grid.py."""
    out: str | None = None
    """Report file (markdown); plots go to `<stem>_plots/` beside it. Default: the results file with `.md`
    (required with several results files)."""
    readme: str | None = None
    """README to update between the results markers."""
    algos: list[str] = dataclasses.field(default_factory=list)
    """Only these algorithms' records (e.g. `--algos iql d3rlpy_iql`); default: every record."""
    section: str = "results"
    """Which README markers: `<!-- SECTION:start -->` ... `<!-- SECTION:end -->` (one README may hold
    several reports, e.g. `--section results-200k`)."""
    behaviour: str | None = None
    """A file written by benchmarks/behaviour.py: the data's own score as each table's first column."""
    speed: str | None = None
    """A speed file written by benchmarks/speed.py, shown between the README's speed markers."""
    plots: bool = True
    """Write the PNG plots (--no-plots skips them and their links)."""
    bootstrap_reps: int = 2000
    """Bootstrap resamples for the confidence intervals."""
    bootstrap_seed: int = 0
    """RNG seed of the bootstrap (fixed, so the report is reproducible)."""


def command_line(args: Args) -> str:
    """The command that regenerates this report, as the README quotes it."""
    parts = ["python", "benchmarks/report.py", *args.results]
    if args.algos:
        parts += ["--algos", *args.algos]
    for flag, value, default in [("--out", args.out, None), ("--readme", args.readme, None),
                                 ("--section", args.section, "results"), ("--behaviour", args.behaviour, None),
                                 ("--speed", args.speed, None),
                                 ("--bootstrap-reps", args.bootstrap_reps, 2000),
                                 ("--bootstrap-seed", args.bootstrap_seed, 0)]:
        if value != default:
            parts += [flag, str(value)]
    return shlex.join(parts + ([] if args.plots else ["--no-plots"]))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def replace_between(content: str, start: str, end: str, text: str, where: str) -> str:
    if start not in content or end not in content:
        raise SystemExit(f"error: {where} has no {start} ... {end} markers")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{text}\n{end}{tail}"


def main(args: Args) -> None:
    # Check every input before writing anything.
    if not args.results:
        raise SystemExit("error: no results file given (usage: python benchmarks/report.py RESULTS.jsonl ...)")
    if args.bootstrap_reps < 1:
        raise SystemExit(f"error: --bootstrap-reps must be at least 1, got {args.bootstrap_reps}")
    if args.speed and not args.readme:
        raise SystemExit("error: --speed fills the README's speed markers: give --readme too")
    if len(args.results) > 1 and args.out is None:
        raise SystemExit("error: several results files: name the report file with --out")
    out = Path(args.out) if args.out else Path(args.results[0]).with_suffix(".md")
    records = load_results([Path(p) for p in args.results])
    if args.algos:
        missing = sorted(set(args.algos) - {r["algo"] for r in records})
        if missing:
            raise SystemExit(f"error: --algos {' '.join(missing)}: no such algorithm in {', '.join(args.results)} "
                             f"(it has {', '.join(sorted({r['algo'] for r in records}))})")
        records = [r for r in records if r["algo"] in args.algos]
    res = group(records)
    if args.behaviour:
        res.behaviour = load_behaviour(Path(args.behaviour), res.datasets)
    readme = Path(args.readme) if args.readme else None
    if readme:
        if not readme.is_file():
            raise SystemExit(f"error: no README {readme}")
        start, end = f"<!-- {args.section}:start -->", f"<!-- {args.section}:end -->"
        content = replace_between(readme.read_text(), start, end, "", str(readme))  # checks the markers
        if args.speed:
            content = replace_between(content, SPEED_START, SPEED_END, speed_table(Path(args.speed)), str(readme))
    print(f"{len(res.records)} runs: {len(res.variants)} variants x {len(res.datasets)} datasets", flush=True)

    plots = write_plots(res, out.parent / f"{out.stem}_plots", args.bootstrap_reps, args.bootstrap_seed) \
        if args.plots else {}
    common = dict(res=res, plots=plots, command=command_line(args), sources=args.results, reps=args.bootstrap_reps,
                  seed=args.bootstrap_seed)
    text = report_markdown(base=out.parent, **common)
    write_atomic(out, text + "\n")
    print(text)
    print(f"wrote {out}", flush=True)
    if readme:  # the same report, with plot links relative to the README
        write_atomic(readme, replace_between(content, start, end, report_markdown(base=readme.parent, **common),
                                             str(readme)))
        print(f"updated {readme}", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
