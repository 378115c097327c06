"""Discrete BC and %BC: behaviour cloning of discrete actions as a classifier, optionally on the best episodes.

Behaviour cloning fits a classifier pi_phi(a | s) = softmax(f_phi(s))_a to the dataset's actions by maximum
likelihood (cross-entropy); %BC does the same on the top fraction of episodes ranked by return (the
filtered-BC baseline of Chen et al., "Decision Transformer", NeurIPS 2021, arXiv:2106.01345):

    D_top = the ceil(fraction * #episodes) episodes with the highest undiscounted return
    L(phi) = -E_(s,a)~D_top [ log softmax(f_phi(s))_a ]
    acting: a = argmax_a f_phi(s)_a

Implementation details:
 1. MLP classifier 2x256 ReLU -> one logit per action, PyTorch's default init (the width of bc.py's policy
    and of discrete BCQ's non-Atari imitation network).
 2. Observations are normalized with the mean and std + 1e-3 of the data actually trained on (as bc.py).
 3. Episodes are ranked by their undiscounted return, whole episodes are kept; `--top-fraction 1.0` is plain
    BC, 0.1 is 10%BC (as bc.py).
 4. Adam 3e-4, batch 256 (bc.py's, CORL's settings), no logit penalty. d3rlpy's DiscreteBC adds
    beta * ||logits||^2 (beta 0.5) and uses lr 1e-3, batch 100; its peer cell here is run with ours.
 5. Evaluation acts greedily: the most likely action.

Usage:
    python algorithms/bc_discrete.py                                  # stitch/cartpole/medium-replay-v0
    python algorithms/bc_discrete.py --dataset stitch/acrobot/expert-v0 --top-fraction 0.1
    python algorithms/bc_discrete.py --resume runs/bc_discrete__stitch-cartpole-medium-replay-v0__s0__20261121-120000
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from common.buffer import Buffer  # noqa: E402
from common.checkpoints import (CheckpointError, load_policy_checkpoint, load_run_checkpoint,  # noqa: E402
                                resumed_args, rng_state, save_checkpoint, set_rng_state)
from common.config import ArgumentError, check_common, require, resolve_device  # noqa: E402
from common.data import DatasetError, load_dataset, observation_stats, top_fraction_episodes  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.fast import adam, fast_update  # noqa: E402
from common.interrupt import StopSignal, resume_command  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/cartpole/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates."""
    batch_size: int = 256
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the two hidden layers of the classifier."""
    actor_lr: float = 3e-4
    """Learning rate of the classifier (the policy)."""
    top_fraction: float = 1.0
    """Fraction of episodes, best return first, to clone: 1.0 is BC, 0.1 is 10%BC."""
    normalize_obs: bool = True
    """Normalize observations with the mean and std of the cloned data."""
    eval_every: int = 5_000
    """Updates between evaluations."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic actions); 0: no evaluation."""
    ref_min_score: float | None = None
    """Return that scores 0 (with --ref-max-score; default: the dataset's reference returns, if it has any)."""
    ref_max_score: float | None = None
    """Return that scores 100 (with --ref-min-score)."""
    log_every: int = 1_000
    """Updates between training-metric logs."""
    checkpoint_every: int = 50_000
    """Updates between checkpoints (one is always written at the end, and one on Ctrl-C or SIGTERM)."""
    checkpoint_minutes: float = 10.0
    """Also checkpoint once this many minutes have passed since the last checkpoint (0: off)."""
    device: str = "auto"
    """Training device: auto (cuda if available), cpu, cuda, cuda:N."""
    compile: bool = False
    """Compile the update with torch.compile; on CUDA also capture it as one CUDA graph and replay it."""
    runs_dir: str = "runs"
    """Folder that holds run folders."""
    resume: str | None = None
    """A run folder to continue (its own saved settings are used)."""
    download: bool = False
    """Download a remote (non-stitch) dataset if it is not found locally."""
    track: bool = False
    """Log to Weights & Biases (offline mode unless WANDB_MODE says otherwise)."""
    progress: bool = True
    """Show a progress bar."""


def check_args(args: Args) -> None:
    check_common(args)
    require(0.0 < args.top_fraction <= 1.0, "top_fraction", "must be in (0, 1]", args.top_fraction)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
class Classifier(nn.Module):
    """Logits f(s) of pi(a | s) = softmax(f(s))_a: an MLP with one output per action."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def bc_loss(logits: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """L = -E[log softmax(f(s))_a]; logits = f(s) [B, n_actions], act = the data's actions [B] (int64)."""
    return F.cross_entropy(logits, act)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "bc_discrete")
        args = resumed_args(Args, args, "bc_discrete", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: the top fraction of episodes by return; observations normalized with their statistics.
    data = load_dataset(args.dataset, download=args.download, discrete=True)
    evaluator = Evaluator(data, args, "bc_discrete")  # says at start if it cannot evaluate or score
    if args.top_fraction < 1.0:
        data = data.select_episodes(top_fraction_episodes(data, args.top_fraction))
    if args.normalize_obs:
        obs_mean, obs_std = observation_stats(data.observations, eps=1e-3)
    else:
        obs_mean, obs_std = np.zeros(data.obs_dim, np.float32), np.ones(data.obs_dim, np.float32)
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, obs_mean=obs_mean, obs_std=obs_std)
    obs_mean_t, obs_std_t = torch.as_tensor(obs_mean, device=device), torch.as_tensor(obs_std, device=device)

    actor = Classifier(data.obs_dim, data.n_actions, args.hidden_dim).to(device)
    actor_opt = adam(actor.parameters(), args.actor_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("actor", actor), ("actor_opt", actor_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = (Path(args.resume) if args.resume
               else Path(args.runs_dir) / run_name("bc_discrete", args.dataset, args.seed))
    run = Run(run_dir, args, "bc_discrete", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update() -> dict[str, torch.Tensor]:
        batch = buffer.sample(args.batch_size)
        obs, act = batch.obs, batch.actions
        loss = bc_loss(actor(obs), act)
        actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        actor_opt.step()
        return {"loss/bc": loss}

    policy_fn = policy_function(actor, device, obs_mean_t, obs_std_t)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "actor": actor.state_dict(), "actor_opt": actor_opt.state_dict(), "buffer": buffer.state_dict(),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "bc_discrete", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "n_actions": data.n_actions,
            "obs_mean": obs_mean_t.cpu(), "obs_std": obs_std_t.cpu()})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            step += 1
            metrics = update_fn()
            if step % args.log_every == 0:
                run.log(step, {k: v.item() for k, v in metrics.items()}
                        | {"updates_per_s": (step - start_step) / (time.time() - start_time)})
                run.advance(args.log_every)
            if step == args.total_steps:
                save()  # the final checkpoint comes before the final evaluation: a failure there loses nothing
            if evaluator.due(step, evals):
                evals.append(evaluator(policy_fn, step, run))
            if run.checkpoint_due(step) or stop:
                save()
            if stop:
                run.close()
                raise stop.exit(resume_command(__file__, run_dir), step)
    if evaluator.due(step, evals):  # resumed from a final checkpoint whose evaluation did not finish
        evals.append(evaluator(policy_fn, step, run))
        save()
    run.advance(step - run.progress.n)
    final = evals[-1] if evals else {"score": None, "return": None}  # no evaluation: losses only
    result = {"algo": "bc_discrete", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"bc_discrete {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class GreedyPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> the most likely actions [n]
    (int64). Its forward is the whole policy, so it exports as it is (benchmarks/export.py)."""

    def __init__(self, actor: Classifier, obs_mean: torch.Tensor, obs_std: torch.Tensor):
        super().__init__()
        self.actor = actor
        self.register_buffer("obs_mean", obs_mean.detach().clone())
        self.register_buffer("obs_std", obs_std.detach().clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor((obs - self.obs_mean) / self.obs_std).argmax(-1)


def policy_function(actor: Classifier, device: torch.device, obs_mean: torch.Tensor,
                    obs_std: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim], normalized with the training data's statistics,
    -> the most likely actions [n] (int64) (`.module`: the same policy as one nn.Module, a GreedyPolicy)."""
    module = GreedyPolicy(actor, obs_mean, obs_std)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: the network)."""
    state = load_policy_checkpoint(run_dir, "bc_discrete")
    args = Args(**upgrade_args("bc_discrete", json.loads(state["args"])))
    actor = Classifier(state["obs_dim"], state["n_actions"], args.hidden_dim).to(device)
    actor.load_state_dict(state["actor"])
    return policy_function(actor.eval(), torch.device(device), state["obs_mean"].to(device),
                           state["obs_std"].to(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
