"""Offline-to-online fine-tuning report: what the online phase did to each algorithm's score.

    python benchmarks/finetune_report.py benchmarks/results/finetune.jsonl
    python benchmarks/finetune_report.py benchmarks/results/finetune.jsonl --out X.md --no-plots

Input: results files written by benchmarks/run_grid.py whose runs have an online phase (`--online-steps N`, e.g.
`--extra '*:--online-steps=20000'`); the evaluation interval must divide the offline updates, so that one evaluation
falls at the switch. Output, per dataset and algorithm (mean ± std over seeds):

- offline: the normalized score of the evaluation at the end of the offline phase (environment step 0);
- lowest online: the lowest evaluation during fine-tuning, and the dip, offline minus lowest (positive: the
  policy got worse than it started; Cal-QL's point is that CQL dips at the switch and Cal-QL does not);
- after fine-tuning: the final evaluation;
- regret: CORL's cumulative regret, the mean over the online phase's finished training episodes of 1 - success
  (common/online.py says what success is on dense tasks), as the run recorded them;

and one plot per dataset of the normalized score against environment steps (mean over seeds, min–max band),
starting from the offline score at step 0. The report goes to `<results>.md` (or `--out`), the plot to
`<report stem>_plots/finetuning_curves.png`. Nothing in them is typed by hand.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import (Results, Variant, fmt, group, legend_layout, load_results, save_png,  # noqa: E402
                               write_atomic)


@dataclasses.dataclass(frozen=True)
class Online:
    """One run's fine-tuning numbers."""

    offline: float
    lowest: float
    final: float
    regret: float | None
    env_steps: int
    curve: dict[int, float]  # environment step -> normalized score, from the switch (0) on


def online_of(rec: dict) -> Online:
    """The fine-tuning numbers of one record; SystemExit naming the run when it has no online phase or no
    evaluation at the switch."""
    name = f"{rec['algo']} on {rec['dataset']} seed {rec['seed']}"
    online = rec.get("online")
    if not isinstance(online, dict) or not online.get("env_steps"):
        raise SystemExit(f"error: {name} has no online phase (run it with --online-steps N)")
    at_switch = [e for e in rec["evals"] if e.get("env_step", 0) == 0 and e["step"] == rec["total_steps"]]
    if not at_switch:
        raise SystemExit(f"error: {name} has no evaluation at the end of its offline phase (update "
                         f"{rec['total_steps']}): its --eval-every must divide --total-steps")
    after = [e for e in rec["evals"] if e.get("env_step", 0) > 0]
    if not after:
        raise SystemExit(f"error: {name} has no evaluation during its online phase (--eval-every too long)")
    success = [ep.get("success") for ep in online.get("episodes", [])]
    regret = None if not success or any(s is None for s in success) else float(np.mean([1.0 - s for s in success]))
    curve = {0: float(at_switch[-1]["score"]), **{int(e["env_step"]): float(e["score"]) for e in after}}
    return Online(offline=curve[0], lowest=min(e["score"] for e in after), final=float(rec["final_score"]),
                  regret=regret, env_steps=int(online["env_steps"]), curve=curve)


def short_labels(res: Results) -> dict[Variant, str]:
    """Variant labels without the flags every variant shares (`--online-steps=20000` on each column says nothing)."""
    shared = set.intersection(*(set(v.flags) for v in res.variants))
    steps = len({v.total_steps for v in res.variants}) > 1
    return {v: dataclasses.replace(v, flags=tuple(f for f in v.flags if f not in shared)).label(steps)
            for v in res.variants}


def cell(values: list[float | None]) -> str:
    if not values or any(v is None for v in values):
        return "—"
    return f"{fmt(values)} (n={len(values)})"


def table(res: Results, runs: dict[int, Online], labels: dict[Variant, str]) -> list[str]:
    lines = ["| dataset | algorithm | env steps | offline | lowest online | dip | after fine-tuning | regret |",
             "|---|---|---:|---|---|---|---|---|"]
    for d in res.datasets:
        for v in res.variants:
            recs = res.cells.get((v, d))
            if not recs:
                continue
            o = [runs[id(r)] for r in recs]
            env_steps = sorted({x.env_steps for x in o})
            lines.append(f"| {d} | {labels[v]} | {'/'.join(f'{s:,}' for s in env_steps)} | "
                         f"{cell([x.offline for x in o])} | {cell([x.lowest for x in o])} | "
                         f"{cell([x.offline - x.lowest for x in o])} | {cell([x.final for x in o])} | "
                         f"{cell([None if x.regret is None else 100 * x.regret for x in o])} |")
    return lines


def plot(res: Results, runs: dict[int, Online], labels: dict[Variant, str], path: Path) -> None:
    """One panel per dataset: normalized score against environment steps, mean over seeds, min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    ncols = min(3, len(res.datasets))
    nrows = math.ceil(len(res.datasets) / ncols)
    width = 4.2 * ncols
    legend_cols, legend_rows = legend_layout(list(labels.values()), width)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.2 * nrows + 0.3 + 0.25 * legend_rows), squeeze=False,
                             layout="constrained")
    for ax, d in zip(axes.flat, res.datasets):
        for i, v in enumerate(res.variants):
            recs = res.cells.get((v, d))
            if not recs:
                continue
            curves = [runs[id(r)].curve for r in recs]
            steps = sorted(set.intersection(*(set(c) for c in curves)))  # steps every seed evaluated at
            ys = np.array([[c[s] for s in steps] for c in curves])
            color = palette[i % len(palette)]
            ax.plot(steps, ys.mean(0), color=color, label=labels[v])
            ax.fill_between(steps, ys.min(0), ys.max(0), color=color, alpha=0.2, linewidth=0)
        ax.set(title=d, xlabel="environment steps (online)", ylabel="normalized score")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x else "0")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(res.datasets):]:
        ax.set_axis_off()
    legend = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=legend_cols, frameon=False)
    save_png(fig, path)


@dataclasses.dataclass
class Args:
    results: tyro.conf.Positional[list[str]]
    """One or more results JSONL files written by benchmarks/run_grid.py, of runs with an online phase."""
    out: str | None = None
    """Report file (markdown); the plot goes to `<stem>_plots/` beside it. Default: the results file with `.md`
    (required with several results files)."""
    plots: bool = True
    """Write the PNG plot (--no-plots skips it and its link)."""


def main(args: Args) -> None:
    if not args.results:
        raise SystemExit("error: no results file given (usage: python benchmarks/finetune_report.py RESULTS.jsonl)")
    if len(args.results) > 1 and args.out is None:
        raise SystemExit("error: several results files: name the report file with --out")
    out = Path(args.out) if args.out else Path(args.results[0]).with_suffix(".md")
    res = group(load_results([Path(p) for p in args.results]))
    runs = {id(r): online_of(r) for r in res.records}  # checks every run before writing anything
    labels = short_labels(res)
    command = shlex.join(["python", "benchmarks/finetune_report.py", *args.results,
                          *(["--out", args.out] if args.out else []), *([] if args.plots else ["--no-plots"])])
    offline_steps = sorted({v.total_steps for v in res.variants})
    lines = table(res, runs, labels) + [
        "",
        f"Normalized score × 100 after {'/'.join(f'{s:,}' for s in offline_steps)} offline updates, then the online "
        "phase (env steps). *offline*: the evaluation at the switch; *lowest online*: the lowest evaluation during "
        "fine-tuning; *dip*: offline minus lowest (positive: worse than at the switch); *after fine-tuning*: the "
        "final evaluation; *regret*: CORL's cumulative regret × 100, the mean over the online training episodes of "
        "1 − success (on dense tasks success is the episode's normalized score / 100, clipped to [0, 1]). "
        "Mean ± std over n seeds.",
    ]
    if args.plots:
        folder = out.parent / f"{out.stem}_plots"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "finetuning_curves.png"
        plot(res, runs, labels, path)
        print(f"wrote {path}", flush=True)
        lines += ["", f"![fine-tuning curves]({path.relative_to(out.parent).as_posix()})", "",
                  "Normalized score against environment steps of the online phase, from the offline score at 0: mean "
                  "over seeds, band from the lowest to the highest seed."]
    commits = sorted({r.get("git_commit", "")[:7] for r in res.records if r.get("git_commit")})
    lines += ["", f"Runs at git commit {', '.join(commits) or 'unknown'}; each run's command is in its record's "
              f"`command` field. Regenerate: `{command}`."]
    text = "\n".join(lines)
    write_atomic(out, text + "\n")
    print(text)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
