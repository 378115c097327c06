"""Pick a SAC or DQN run's expert and medium snapshots and ship them as the suite's behaviour policies.

Reads a run folder written by `benchmarks/suite/train_behavior.py` (SAC) or `benchmarks/suite/dqn.py` (DQN, for the
discrete tasks) and writes `<out>/` (by default
`benchmarks/suite/policies/<env>/`, the folder `benchmarks/suite/build.py` builds from):

    expert.pt            the snapshot with the best evaluation in the run's index (or --expert-step; or
                         with --expert-candidates K, the best measured of the K best in the index)
    medium.pt            a snapshot from before the run first reached the expert's level whose return
                         is in (or closest to) D4RL's medium band, 40-55% of the way from random to
                         expert on the normalized scale, nearest 47.5% within it (or --medium-step)
    replay/actor_<step>.pt   every snapshot after the run's random warm-up up to medium (medium-replay)
    manifest.json        steps, measured returns, reference scores, the run's schedule

Measurements use `build.rollout` (lockstepped envs, batched actor) on the same 100 evaluation
episodes (reset seeds) for every policy. Medium candidates: of the snapshots taken before the run first
got `expert_level` of the way from the random policy's return to the expert's index evaluation (on the
normalized scale, so that negative returns such as Acrobot's work; D4RL's medium is an early-stopped
policy: a later snapshot that fell back from expert level is not one, and medium-replay, every snapshot
up to medium, would then hold expert-level data), the `--candidates` whose index evaluation (a few
deterministic episodes) is nearest `--target`; on a curve that climbs steadily (HalfCheetah) those are
mid-run, where the last snapshots before expert level would all be near it. Each is measured like the final
policies (100 stochastic episodes: with 20, hopper's fall-or-run returns swing by 10 points).
Reference scores, D4RL-style: ref_min_score = the mean return of
uniform random actions, ref_max_score = the expert's mean return with stochastic actions, the way
it acts in the datasets (so `expert` normalizes to about 100); both over 100 episodes.

DQN runs: a snapshot acts epsilon-greedily (`suite.load_policy`), "stochastic" measurements use the
behaviour epsilon (`--epsilon`, by default the run's final `end_e`) and "deterministic" ones the greedy
policy. The manifest then also records `"algorithm": "DQN"`, `behaviour_epsilon` (the medium and
expert levels) and, for each medium-replay snapshot, the mean epsilon of the run's exploration
schedule over the training steps that snapshot stands for (the steps since the previous one).

Usage:
    python benchmarks/suite/select_policies.py --run /work/sac_runs/hopper --env hopper
    python benchmarks/suite/select_policies.py --run /work/sac_runs/hopper --env hopper --medium-step 300000
    python benchmarks/suite/select_policies.py --run runs/dqn/cartpole --env cartpole
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.suite import dqn  # noqa: E402
from benchmarks.suite.build import ENVS, Policy, load_policy, make_envs, rollout  # noqa: E402
from common.checkpoints import load_checkpoint  # noqa: E402


BAND = (0.40, 0.55)  # D4RL's medium: 40-55% of the expert on the normalized scale


@dataclasses.dataclass
class Args:
    run: str
    """Run folder written by benchmarks/suite/train_behavior.py or benchmarks/suite/dqn.py (snapshots/,
    checkpoint.pt)."""
    env: str = "hopper"
    """Suite environment name (a key of build.ENVS)."""
    expert_step: int | None = None
    """Snapshot step to use as expert (default: best eval_mean in the run's index)."""
    medium_step: int | None = None
    """Snapshot step to use as medium (default: closest to `target` of the expert's normalized score)."""
    target: float = 0.475
    """Medium's target normalized score as a fraction of the expert's (D4RL's band: 0.40-0.55)."""
    expert_level: float = 0.9
    """Medium comes from before the first snapshot whose evaluation gets this fraction of the way from the
    random policy's return to the expert's."""
    expert_candidates: int = 1
    """Expert candidates: the snapshots with the best index evaluations (a few deterministic episodes each), each
    measured over `episodes` episodes acting as in the data; the best measured is the expert. 1: the best index
    evaluation, as is. Raise it for a run whose index evaluations are noisy (Walker2d's swing by 1000s)."""
    candidates: int = 4
    """Medium candidates measured: of the snapshots before the run first reached the expert's level, those whose
    index evaluation is nearest `target`."""
    episodes: int = 100
    """Episodes for the reference scores and the chosen policies' returns."""
    ref_max: float | None = None
    """Provisional ref_max_score to record instead of the expert's measured return, while the SAC run is
    still short of its expert target (e.g. D4RL's hopper 3234.3); the manifest is then marked provisional."""
    epsilon: float | None = None
    """DQN runs: epsilon of the medium and expert policies in the datasets (default: the run's end_e)."""
    note: str | None = None
    """A sentence for the dataset cards on how the policies were chosen (e.g. why --expert-step was given)."""
    seed: int = 0
    """Seed of the evaluation episodes."""
    out: str | None = None
    """Output folder (default: the suite's policy folder for `env`)."""


def read_index(run: Path) -> dict[int, dict]:
    """step -> the snapshot's index record (the last line per step: a resumed run may repeat steps)."""
    path = run / "snapshots" / "index.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run} a train_behavior.py run folder?")
    index = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            index[record["step"]] = record
    return {step: index[step] for step in sorted(index) if snapshot_path(run, step).is_file()}


def snapshot_path(run: Path, step: int) -> Path:
    return run / "snapshots" / f"actor_{step:08d}.pt"


def medium_pool(index: dict[int, dict], expert_step: int, expert_level: float, n: int, floor: float = 0.0,
                target: float = 0.475) -> list[int]:
    """Of the snapshots before the first whose index evaluation reaches floor + `expert_level` x (the expert's -
    floor), floor being the random policy's return, the `n` whose index evaluation is nearest `target` of the
    way from floor to the expert's (on a steady learning curve those are mid-run, not the last before expert
    level), in step order."""
    top = index[expert_step]["eval_mean"]
    level = floor + expert_level * (top - floor)
    first = min(s for s in index if index[s]["eval_mean"] >= level)
    before = [s for s in index if s < first]
    nearest = sorted(before, key=lambda s: (abs((index[s]["eval_mean"] - floor) / (top - floor) - target), -s))
    return sorted(nearest[:n])


def pick_medium(candidates: list[dict], target: float) -> int:
    """The candidate step inside BAND (else nearest to it) whose normalized return is nearest `target`."""
    def miss(c: dict) -> tuple[float, float]:
        return max(BAND[0] - c["normalized"], c["normalized"] - BAND[1], 0.0), abs(c["normalized"] - target)

    return min(candidates, key=miss)["step"]


def replay_epsilons(steps: list[int], run_args: dict) -> list[float]:
    """For each snapshot step (sorted), the mean epsilon of the DQN's schedule over the steps since the
    previous snapshot (the first: since the warm-up ended)."""
    bounds = [run_args["learning_starts"], *steps]
    return [round(float(np.mean([dqn.epsilon_at(t, run_args) for t in range(a, b)])), 6)
            for a, b in zip(bounds, bounds[1:])]


def command_line(args: Args) -> str:
    """The command that makes this policy folder again (the flags that differ from their defaults)."""
    defaults = Args(run=args.run)
    parts = ["python", "benchmarks/suite/select_policies.py", "--run", args.run, "--env", args.env]
    for field in dataclasses.fields(Args):
        value = getattr(args, field.name)
        if field.name not in ("run", "env") and value != getattr(defaults, field.name):
            parts += [f"--{field.name.replace('_', '-')}", str(value)]
    return shlex.join(parts)


def main(args: Args) -> None:
    torch.set_num_threads(1)
    if args.env not in ENVS:
        raise SystemExit(f"--env {args.env!r} is not a suite environment; known: {', '.join(ENVS)}")
    env_id = ENVS[args.env].env_id
    run = Path(args.run)
    out = Path(args.out) if args.out is not None else ENVS[args.env].policy_dir
    index = read_index(run)
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    run_args, algorithm = json.loads(checkpoint["args"]), checkpoint.get("algorithm", "SAC")
    if run_args["env"] != env_id:
        raise SystemExit(f"{run} trained on {run_args['env']}, but suite env {args.env!r} is {env_id}")
    discrete = algorithm == "DQN"
    if args.epsilon is not None and not discrete:
        raise SystemExit(f"error: --epsilon is for DQN runs; {run} is a {algorithm} run")
    epsilon = (run_args["end_e"] if args.epsilon is None else args.epsilon) if discrete else None
    if epsilon is not None and not 0 <= epsilon <= 1:
        raise SystemExit(f"error: --epsilon must be in [0, 1], got {epsilon}")
    if args.expert_candidates < 1 or args.candidates < 1 or args.episodes < 1:
        raise SystemExit("error: --expert-candidates, --candidates and --episodes must be at least 1")
    for name, step in (("--expert-step", args.expert_step), ("--medium-step", args.medium_step)):
        if step is not None and step not in index:
            raise SystemExit(f"{name} {step}: no snapshot at that step in {run} (have {min(index)}..{max(index)})")
    envs = make_envs(env_id)

    def load(step: int) -> Policy:  # a snapshot, acting as it will in the datasets
        return load_policy(snapshot_path(run, step), epsilon)

    def measure(policy: Policy | None, episodes: int, deterministic: bool = False) -> dict:
        eps = rollout(envs, policy, seed=args.seed, stream="eval", n_episodes=episodes, deterministic=deterministic)
        returns = np.array([ep.rewards.sum() for ep in eps])
        return {"mean": float(returns.mean()), "std": float(returns.std()), "episodes": episodes}

    def measure_both(step: int) -> dict:
        actor = load(step)
        return {"stochastic": measure(actor, args.episodes), "deterministic": measure(actor, args.episodes, True)}

    random = measure(None, args.episodes)
    print(f"random policy: {random['mean']:.1f} ± {random['std']:.1f}", flush=True)
    expert_candidates = []
    if args.expert_step is not None:
        expert_step = args.expert_step
    elif args.expert_candidates == 1:
        expert_step = max(index, key=lambda s: index[s]["eval_mean"])
    else:
        for step in sorted(sorted(index, key=lambda s: -index[s]["eval_mean"])[:args.expert_candidates]):
            ret = measure(load(step), args.episodes)
            expert_candidates.append({"step": step, "index_eval": index[step]["eval_mean"], "return_mean": ret["mean"]})
            print(f"expert candidate: step {step}, {ret['mean']:.1f} (index {index[step]['eval_mean']:.1f})",
                  flush=True)
        expert_step = max(expert_candidates, key=lambda c: c["return_mean"])["step"]
    expert = measure_both(expert_step)
    ref_min, ref_max = random["mean"], expert["stochastic"]["mean"]
    if args.ref_max is not None:
        print(f"PROVISIONAL: ref_max_score {args.ref_max} given on the command line (the expert's own "
              f"return is {ref_max:.1f})", flush=True)
        ref_max = args.ref_max
    print(f"expert: step {expert_step}, {expert['stochastic']['mean']:.1f} ± {expert['stochastic']['std']:.1f} "
          f"(deterministic {expert['deterministic']['mean']:.1f})", flush=True)
    target = ENVS[args.env].expert_target
    if target is not None and expert["stochastic"]["mean"] < target:
        print(f"WARNING: the expert is short of its target return {target:g}: train the run longer", flush=True)

    def normalized(ret: float) -> float:
        return (ret - ref_min) / (ref_max - ref_min)

    candidates = []
    if args.medium_step is None:
        for step in medium_pool(index, expert_step, args.expert_level, args.candidates, floor=random["mean"],
                                target=args.target):
            ret = measure(load(step), args.episodes)
            candidates.append({"step": step, "return_mean": ret["mean"], "normalized": normalized(ret["mean"])})
            print(f"medium candidate: step {step}, {ret['mean']:.1f} ({100 * candidates[-1]['normalized']:.1f}%)",
                  flush=True)
        if not candidates:
            raise SystemExit(f"no snapshot before the expert (step {expert_step}) to choose medium from")
        medium_step = pick_medium(candidates, args.target)
    else:
        medium_step = args.medium_step
    medium = measure_both(medium_step)
    medium_fraction = normalized(medium["stochastic"]["mean"])
    print(f"medium: step {medium_step}, {medium['stochastic']['mean']:.1f} ± {medium['stochastic']['std']:.1f} "
          f"({100 * medium_fraction:.1f}% of expert, normalized)", flush=True)
    if not BAND[0] <= medium_fraction <= BAND[1]:
        print("WARNING: medium is outside D4RL's 40-55% band; consider --medium-step", flush=True)

    replay_steps = [s for s in index if run_args["learning_starts"] < s <= medium_step]
    acting = f"epsilon-greedy actions (epsilon {epsilon:g})" if discrete else "stochastic actions"
    manifest = {
        "env_id": env_id,
        "algorithm": algorithm,
        "run": str(run),
        "seed": args.seed,
        "episodes": args.episodes,
        "snapshot_every": run_args["snapshot_every"],
        "learning_starts": run_args["learning_starts"],
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "ref_scores": f"ref_min: uniform random actions; ref_max: expert.pt with {acting} (as in the "
                      f"datasets); mean return over `episodes` episodes each",
        "command": command_line(args),
        "note": args.note,
        "provisional": None if args.ref_max is None else (
            f"ref_max_score {args.ref_max} was given by hand (--ref-max) because the SAC run had not yet met "
            f"its expert target; expert.pt is the best snapshot so far. Rerun select_policies.py when it has."),
        "random": random,
        "expert": {"file": "expert.pt", "step": expert_step, "chosen_by": "--expert-step" if
                   args.expert_step is not None else "best index evaluation" if not expert_candidates else
                   f"best of the {len(expert_candidates)} best index evaluations, measured", **expert,
                   "candidates": expert_candidates},
        "medium": {"file": "medium.pt", "step": medium_step, "normalized": medium_fraction, **medium,
                   "target": args.target, "band": list(BAND), "expert_level": args.expert_level,
                   "in_band": BAND[0] <= medium_fraction <= BAND[1], "chosen_by": "--medium-step" if
                   args.medium_step is not None else "band", "candidates": candidates},
        "replay": [{"file": f"replay/actor_{s:08d}.pt", "step": s} for s in replay_steps],
    }
    if discrete:
        manifest["behaviour_epsilon"] = epsilon
        manifest["exploration"] = {k: run_args[k] for k in ("start_e", "end_e", "exploration_fraction", "total_steps",
                                                            "learning_starts")}
        for entry, eps in zip(manifest["replay"], replay_epsilons(replay_steps, run_args)):
            entry["epsilon"] = eps

    # Assemble next to the output folder, then swap it in, so no stale replay files survive.
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "replay").mkdir(parents=True)
    shutil.copyfile(snapshot_path(run, expert_step), tmp / "expert.pt")
    shutil.copyfile(snapshot_path(run, medium_step), tmp / "medium.pt")
    for s in replay_steps:
        shutil.copyfile(snapshot_path(run, s), tmp / f"replay/actor_{s:08d}.pt")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"wrote {out}: expert step {expert_step}, medium step {medium_step}, {len(replay_steps)} replay snapshots")


if __name__ == "__main__":
    main(tyro.cli(Args))
