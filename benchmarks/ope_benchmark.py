"""How wrong is each off-policy estimator? A DOPE-style benchmark on the stitch suite, where the truth is known.

    python benchmarks/ope_benchmark.py --dataset stitch/cartpole/medium-replay-v0 \
        --runs runs/grid/bc_discrete__stitch-cartpole-medium-replay-v0__* --out benchmarks/results/ope

In the spirit of DOPE (Fu et al., "Benchmarks for Deep Off-Policy Evaluation", ICLR 2021, arXiv:2103.16596): a
set of policies whose true value is measured online, every estimator of algorithms/ope.py (IS, WIS, PDIS, WPDIS,
DR, WDR) and algorithms/fqe.py run on one logged dataset for each of them, and per estimator

* absolute error: mean over the policies of |J_hat - J|;
* rank correlation: Spearman's between the estimates and the true values;
* regret@1: J of the best policy minus J of the policy the estimator ranks first, over the spread of the true
  values (max J - min J), as DOPE normalizes it.

The policies: the suite's own behaviour snapshots for the dataset's environment (expert.pt, medium.pt and every
medium-replay snapshot in benchmarks/suite/policies/<env>/; `--snapshots N` keeps N of them, evenly spaced), plus
the run folders given with `--runs` (any script in algorithms/, loaded as algorithms/fqe.py loads them). Each acts
as the estimators evaluate it: discrete policies epsilon-greedily on their action with `--target-epsilon` (default
0.05, the epsilon the suite's medium and expert data were logged with, so those snapshots are exactly their
behaviour), continuous ones with Gaussian noise of `--target-std` x half the action range, clipped; SAC snapshots
act as they did in the data, sampling their tanh-Gaussian (on the data they logged, every ratio is 1). J is the
mean discounted return (`--gamma`) of `--true-episodes` online episodes from the environment's reset distribution,
the distribution the dataset's episodes start from; its standard error is reported next to it.

Writes `<out>/<dataset>.json` (every policy's true value and every estimate), `<out>/<dataset>.md` (the table)
and `<out>/<dataset>.png` (estimate against truth, one panel per estimator). `--summary JSON... --out FILE.md`
writes one table over several datasets' JSONs instead: per estimator and dataset the rank correlation, regret@1
and the median absolute error in units of the spread of the true values (max J - min J), comparable across
environments whose returns differ in scale.

Usage:
    python benchmarks/ope_benchmark.py --dataset stitch/cartpole/medium-replay-v0 --out /tmp/ope \
        --snapshots 4 --true-episodes 20 --fqe-steps 500 --bc-steps 500      # a quick end-to-end check
    python benchmarks/ope_benchmark.py --dataset stitch/hopper/medium-v0 --runs runs/grid/*hopper-medium-v0* \
        --behavior recorded --out benchmarks/results/ope
    python benchmarks/ope_benchmark.py --summary benchmarks/results/ope/*.json --out benchmarks/results/ope.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from algorithms import ope  # noqa: E402
from algorithms.fqe import TargetPolicy, load_target  # noqa: E402
from benchmarks.suite import build as suite  # noqa: E402
from benchmarks.suite import dqn  # noqa: E402
from benchmarks.suite.behavior import load_actor  # noqa: E402
from common.checkpoints import CheckpointError  # noqa: E402
from common.data import DatasetError, load_dataset  # noqa: E402
from common.evaluation import flatten_obs, make_env  # noqa: E402

ESTIMATORS = (*ope.ESTIMATORS, "fqe")


class Greedy(nn.Module):
    """A DQN snapshot's greedy action [B] (int64)."""

    def __init__(self, q: nn.Module):
        super().__init__()
        self.q = q

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(obs).argmax(-1)


class TanhMean(nn.Module):
    """A SAC snapshot's mean action tanh(mu(s)) [B, act_dim]."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.actor.dist(obs)[0])


@dataclasses.dataclass
class SACSnapshot(TargetPolicy):
    """A SAC snapshot acting as it did in the data: a = tanh(u), u ~ N(mu(s), std(s)^2), actions in [-1, 1]."""

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, log_std = self.module.actor.dist(obs)
        return torch.tanh(mu + log_std.exp() * torch.randn(mu.shape, generator=generator, device=mu.device))

    @torch.no_grad()
    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """The tanh-Gaussian's log-density at the stored actions (float32 near +-1 costs digits)."""
        mu, log_std = (x.double() for x in self.module.actor.dist(obs))
        u = torch.atanh(act.double().clamp(-1 + 1e-7, 1 - 1e-7))
        return suite.tanh_gaussian_log_prob(u, mu, log_std)


def snapshot_policies(env_name: str, data, noise: float, keep: int | None,
                      device: torch.device = torch.device("cpu")) -> dict[str, TargetPolicy]:
    """The suite's behaviour snapshots of `env_name` as target policies on `device`: name -> policy."""
    policy_dir = suite.ENVS[env_name].policy_dir
    manifest = suite.load_manifest(policy_dir)
    replay = sorted(manifest["replay"], key=lambda e: e["step"])
    if keep is not None and keep < len(replay):
        replay = [replay[i] for i in np.linspace(0, len(replay) - 1, keep).round().astype(int)]
    files = {"expert": manifest["expert"]["file"], "medium": manifest["medium"]["file"]}
    steps = {manifest["expert"]["step"], manifest["medium"]["step"]}
    files.update({f"step {e['step']:,}": e["file"] for e in replay if e["step"] not in steps})  # each policy once
    discrete = suite.is_discrete(manifest)
    out = {}
    for name, file in files.items():
        if discrete:
            module = Greedy(dqn.load_qnet(policy_dir / file)[0].eval()).to(device)
            out[name] = TargetPolicy(module, data.n_actions, noise)
        else:  # acting as in the data (noise unused)
            out[name] = SACSnapshot(TanhMean(load_actor(policy_dir / file)[0]).to(device), None, 0.0,
                                    torch.as_tensor(data.action_low, device=device),
                                    torch.as_tensor(data.action_high, device=device))
    return out


@torch.no_grad()
def true_value(target: TargetPolicy, env_spec, episodes: int, gamma: float, seed: int) -> dict:
    """Mean discounted and undiscounted return of `episodes` online episodes of `target` (reset seeds seed + i),
    run in lockstep."""
    device = next(target.module.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    envs = [make_env(env_spec) for _ in range(episodes)]
    obs = [flatten_obs(env.reset(seed=seed + i)[0]) for i, env in enumerate(envs)]
    disc, undisc, t = np.zeros(episodes), np.zeros(episodes), 0
    running = list(range(episodes))
    while running:
        o = torch.as_tensor(np.stack([obs[i] for i in running]), dtype=torch.float32, device=device)
        if target.n_actions is not None:
            actions = torch.multinomial(target.probs(o), 1, generator=gen)[:, 0].cpu().numpy()
        else:
            actions = target.sample(o, gen).cpu().numpy()
        still = []
        for i, a in zip(running, actions):
            o2, r, term, trunc, _ = envs[i].step(int(a) if target.n_actions is not None else a)
            disc[i] += gamma ** t * float(r)
            undisc[i] += float(r)
            obs[i] = flatten_obs(o2)
            if not (term or trunc):
                still.append(i)
        running, t = still, t + 1
    for env in envs:
        env.close()
    return {"value": float(disc.mean()), "stderr": float(disc.std() / np.sqrt(episodes)),
            "return": float(undisc.mean()), "episodes": episodes}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); nan with fewer than 2 policies or a constant side."""
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def summarize(truth: np.ndarray, estimates: dict[str, np.ndarray]) -> dict[str, dict]:
    spread = truth.max() - truth.min()
    out = {}
    for name, est in estimates.items():
        finite = np.isfinite(est)
        best = int(np.nanargmax(np.where(finite, est, -np.inf))) if finite.any() else None
        err = np.abs(est - truth)
        out[name] = {"abs_error": float(np.mean(err)) if finite.all() else float("inf"),
                     "median_abs_error": float(np.median(err)) if finite.all() else float("inf"),
                     "rank_correlation": spearman(est, truth),
                     "regret@1": None if best is None or spread == 0 else float((truth.max() - truth[best]) / spread)}
    return out


def run_label(run: str) -> str:
    """A run folder's name without the time stamp and random suffix run folders end with: script, dataset, seed."""
    return re.sub(r"__\d{8}-\d{6}-[0-9a-f]+$", "", Path(run).name)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="a stitch/ id (its environment's snapshots are the policies)")
    parser.add_argument("--runs", nargs="*", default=[], help="run folders of trained policies to add")
    parser.add_argument("--snapshots", type=int, default=None, help="medium-replay snapshots to keep (default: all)")
    parser.add_argument("--behavior", choices=("recorded", "estimated"), default="recorded")
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--target-epsilon", type=float, default=0.05)
    parser.add_argument("--target-std", type=float, default=0.1)
    parser.add_argument("--true-episodes", type=int, default=100, help="online episodes per policy for its J")
    parser.add_argument("--fqe-steps", type=int, default=100_000)
    parser.add_argument("--fqe-lr", type=float, default=ope.Args.critic_lr, help="FQE's learning rate")
    parser.add_argument("--fqe-tau", type=float, default=ope.Args.tau, help="FQE's target averaging rate")
    parser.add_argument("--bc-steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/ope")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the table and plot of a JSON this wrote")
    parser.add_argument("--summary", nargs="+", metavar="JSON", help="only write one table over these JSONs to --out")
    args = parser.parse_args(argv)
    if args.render:
        try:
            result = json.loads(Path(args.render).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"error: --render {args.render}: {e}") from None
        rows = result["policies"]  # the summary again, as this version computes it
        result["summary"] = summarize(np.array([r["true"]["value"] for r in rows]),
                                      {k: np.array([r["estimates"][k] for r in rows]) for k in ESTIMATORS})
        write_json(Path(args.render), result)
        render(result, Path(args.render).parent)
        return result
    if args.summary:
        results = []
        for path in args.summary:
            try:
                results.append(json.loads(Path(path).read_text()))
            except (OSError, json.JSONDecodeError) as e:
                raise SystemExit(f"error: --summary {path}: {e}") from None
        if not args.out.endswith(".md"):
            raise SystemExit(f"error: --out {args.out}: with --summary, the Markdown file to write (ending .md)")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(summary_table(results))
        print(f"wrote {args.out}")
        return {"datasets": [r["dataset"] for r in results]}
    if not args.dataset:
        raise SystemExit("error: --dataset is required (a stitch/ id), unless --render")
    try:
        env_name, _ = suite.parse_id(args.dataset)
        data = load_dataset(args.dataset)
    except (ValueError, DatasetError) as e:
        raise SystemExit(f"error: {e}") from None
    if env_name not in suite.ENVS:
        raise SystemExit(f"error: {args.dataset}: the benchmark needs behaviour snapshots (hopper, halfcheetah, "
                         f"walker2d, cartpole, acrobot)")
    device = torch.device(args.device)
    discrete = data.n_actions is not None and np.issubdtype(data.actions.dtype, np.integer)
    noise = args.target_epsilon if discrete else args.target_std
    policies = snapshot_policies(env_name, data, noise, args.snapshots, device)
    for run in args.runs:
        try:
            policies[run_label(run)] = load_target(run, data, noise, device)
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
    settings = ope.Args(policy="-", dataset=args.dataset, behavior=args.behavior, seed=args.seed, gamma=args.gamma,
                        fqe_steps=args.fqe_steps, critic_lr=args.fqe_lr, tau=args.fqe_tau, bc_steps=args.bc_steps,
                        device=args.device, log_every=10**9)

    rows = []
    log_mu = None
    if args.behavior == "recorded":
        try:
            log_mu = ope.recorded_behavior(data)
        except DatasetError as e:
            raise SystemExit(f"error: {e}") from None
    for i, (name, target) in enumerate(policies.items()):
        truth = true_value(target, data.env_spec, args.true_episodes, args.gamma, seed=10**6 + 1000 * i)
        if args.behavior == "estimated" and log_mu is None:  # the same BC estimate for every policy
            log_mu = ope.estimate_behavior(data, target, settings, device, log=lambda _: None)
        values, ess = ope.estimate(data, target, log_mu, settings, device, log=lambda _: None)
        values.setdefault("fqe", float("nan"))  # --fqe-steps 0: no model
        rows.append({"policy": name, "true": truth, "estimates": values, "effective_episodes": ess})
        print(f"{name}: J = {truth['value']:.2f} ± {truth['stderr']:.2f}; "
              + ", ".join(f"{k} {v:.2f}" for k, v in values.items()), flush=True)

    truth = np.array([r["true"]["value"] for r in rows])
    summary = summarize(truth, {k: np.array([r["estimates"][k] for r in rows]) for k in ESTIMATORS})
    result = {"dataset": args.dataset, "behavior": args.behavior, "gamma": args.gamma, "episodes": len(
        data.episode_lengths), "settings": vars(args), "policies": rows, "summary": summary}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{args.dataset.replace('/', '_')}.json", result)
    render(result, out)
    return result


def write_json(path: Path, result: dict) -> None:
    """Write through a temporary file, so an interrupted write leaves the previous file, not half of one."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def render(result: dict, out: Path) -> None:
    """Write `<out>/<dataset>.md` (the table) and `.png` (estimate against truth) from a benchmark's result."""
    s, rows, summary = result["settings"], result["policies"], result["summary"]
    stem = result["dataset"].replace("/", "_")
    truth = np.array([r["true"]["value"] for r in rows])
    lines = [f"# Off-policy evaluation on `{result['dataset']}`", "",
             f"{len(rows)} policies, behaviour {result['behavior']}, gamma {result['gamma']}, true values from "
             f"{s['true_episodes']} online episodes each, FQE {s['fqe_steps']:,} updates (lr {s['fqe_lr']:g}, tau "
             f"{s['fqe_tau']:g}). Generated by `benchmarks/ope_benchmark.py`.", "",
             "| estimator | mean abs error | median abs error | rank correlation | regret@1 |",
             "|---|---:|---:|---:|---:|"]
    for name, e in summary.items():
        reg = "-" if e["regret@1"] is None else f"{e['regret@1']:.2f}"
        lines.append(f"| {name} | {e['abs_error']:.3g} | {e['median_abs_error']:.3g} | {e['rank_correlation']:.2f} "
                     f"| {reg} |")
    lines += ["", "| policy | true J (± s.e.) | " + " | ".join(ESTIMATORS) + " |",
              "|---|---:|" + "---:|" * len(ESTIMATORS)]
    for r in rows:
        lines.append(f"| {run_label(r['policy'])} | {r['true']['value']:.2f} ± {r['true']['stderr']:.2f} | "
                     + " | ".join(f"{r['estimates'][k]:.3g}" for k in ESTIMATORS) + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, truth, out / f"{stem}.png", result["dataset"])
    print(f"wrote {out / stem}.json, .md, .png")


def summary_table(results: list[dict]) -> str:
    """One Markdown table per metric over several datasets' results (rows: datasets, columns: estimators)."""
    order = sorted(results, key=lambda r: r["dataset"])
    scaled = {}
    for r in order:
        truth = np.array([p["true"]["value"] for p in r["policies"]])
        spread = truth.max() - truth.min()
        scaled[r["dataset"]] = {k: float(np.median(np.abs(np.array([p["estimates"][k] for p in r["policies"]])
                                                        - truth)) / spread) if spread > 0 else float("nan")
                                for k in ESTIMATORS}
    metrics = [("Rank correlation (Spearman) of the estimates with the true values; 1 orders the policies right",
                lambda r, k: r["summary"][k]["rank_correlation"], ".2f"),
               ("Regret@1: how far below the best policy the estimator's first choice is, over the spread of the "
                "true values; 0 picks the best", lambda r, k: r["summary"][k]["regret@1"], ".2f"),
               ("Median absolute error over the spread of the true values (max J - min J)",
                lambda r, k: scaled[r["dataset"]][k], ".2g")]
    lines = []
    for title, get, fmt in metrics:
        lines += [f"{title}:", "", "| dataset | policies | " + " | ".join(ESTIMATORS) + " |",
                  "|---|---:|" + "---:|" * len(ESTIMATORS)]
        for r in order:
            cells = []
            for k in ESTIMATORS:
                v = get(r, k)
                cells.append("-" if v is None or not np.isfinite(v) else format(v, fmt))
            lines.append(f"| {r['dataset']} | {len(r['policies'])} | " + " | ".join(cells) + " |")
        lines.append("")
    means = {k: np.nanmean([np.nan if (v := r["summary"][k]["rank_correlation"]) is None else v for r in order])
             for k in ESTIMATORS}
    lines.append("Mean rank correlation over the datasets: "
                 + ", ".join(f"{k} {means[k]:.2f}" for k in ESTIMATORS) + ".")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], truth: np.ndarray, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(ESTIMATORS), figsize=(2.6 * len(ESTIMATORS), 2.8), sharex=True)
    lo, hi = truth.min(), truth.max()
    for ax, name in zip(axes, ESTIMATORS):
        est = np.array([r["estimates"][name] for r in rows])
        shown = np.isfinite(est)
        ax.scatter(truth[shown], est[shown], s=12)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("true J")
    axes[0].set_ylabel("estimate")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
