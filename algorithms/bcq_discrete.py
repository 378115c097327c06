"""Discrete BCQ: Batch-Constrained deep Q-learning for discrete actions.

Fujimoto, Conti, Ghavamzadeh, Pineau. "Benchmarking Batch Deep Reinforcement Learning Algorithms." NeurIPS 2019
Deep RL Workshop. arXiv:1910.01708. Authors' code: github.com/sfujim/BCQ (discrete_BCQ/, PyTorch).

A generative model G_omega(a | s) of the data's actions, a classifier, restricts which actions Q may choose:
only those whose probability is at least a fraction tau of the most likely action's. The backup is Double DQN's
over those actions, so the critic never bootstraps from actions the data rarely took:

    A_tau(s)   = { a : G(a | s) / max_a' G(a' | s) > tau }
    a'         = argmax_{a in A_tau(s')} Q_theta(s', a)                         (online network)
    y          = r + gamma (1 - d) Qbar(s', a')                                 (target network)
    L(theta, omega) = E_D[ Huber(Q_theta(s, a) - y) ] + E_D[ -log G_omega(a | s) ] + lambda E_D[ ||logits_omega(s)||^2 ]
    acting: a = argmax_{a in A_tau(s)} Q_theta(s, a)

Implementation details (the authors' non-Atari settings, discrete_BCQ/main.py `regular_parameters`, unless marked):
 1. One module with two MLP heads on separate trunks, as the authors' FC_Q: Q (2x256 ReLU -> one value per action)
    and G's logits (2x256 ReLU -> one logit per action); one Adam (lr 3e-4) on the sum of the losses.
 2. The Q loss is the Huber (smooth L1) loss; G's loss is the negative log-likelihood of the data's action plus
    1e-2 times the mean squared logit (the authors' penalty on the imitation logits).
 3. The mask compares probabilities: exp(log G) / max exp(log G) > tau; masked actions get -1e8 before the
    argmax, in the target and when acting.
 4. Target network: Polyak averaging with tau_target = 0.005 after every update (`--target-update-every 1`);
    the Atari settings' hard copy every 8,000 updates is `--tau 1 --target-update-every 8000`.
 5. Batch 64, gamma 0.99, threshold tau = 0.3. Evaluation is greedy over A_tau(s) (the authors' eval epsilon
    is 0 in the non-Atari settings, 1e-3 on Atari).
 6. Deviation: observations are normalized with the data's mean and std + 1e-3 (`--no-normalize-obs`: the
    authors' raw observations), as every discrete script here does.
 7. Deviation: the paper's score is the average over evaluations; here it is the final evaluation.

Usage:
    python algorithms/bcq_discrete.py                                 # stitch/cartpole/medium-replay-v0
    python algorithms/bcq_discrete.py --dataset stitch/acrobot/medium-v0 --threshold 0.1
    python algorithms/bcq_discrete.py --resume runs/bcq_discrete__stitch-cartpole-medium-replay-v0__s0__20261121-120000
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
from common.data import DatasetError, load_dataset, observation_stats  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.fast import adam, fast_update  # noqa: E402
from common.interrupt import StopSignal, resume_command  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402

MASKED = -1e8  # the value a disallowed action gets before an argmax (the authors')


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/cartpole/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates."""
    batch_size: int = 64
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the two hidden layers of each head (Q and G)."""
    critic_lr: float = 3e-4
    """Learning rate of the one Adam over both heads (Q and the generative model G)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target network (1: a hard copy)."""
    target_update_every: int = 1
    """Updates between target-network updates."""
    threshold: float = 0.3
    """BCQ's tau: an action is allowed where G(a|s) / max_a' G(a'|s) > threshold; 0 is DQN, near 1 imitation."""
    logit_penalty: float = 1e-2
    """Weight of the mean squared logit of G added to its loss."""
    normalize_obs: bool = True
    """Normalize observations with the data's mean and std."""
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
    require(0.0 <= args.threshold < 1.0, "threshold", "must be in [0, 1)", args.threshold)
    require(args.logit_penalty >= 0.0, "logit_penalty", "must be >= 0", args.logit_penalty)
    require(args.target_update_every > 0, "target_update_every", "must be a positive integer", args.target_update_every)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


class QAndGenerator(nn.Module):
    """Q(s, .) and the logits of G(. | s), two MLPs on separate trunks (the authors' FC_Q)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int):
        super().__init__()
        self.q = mlp(obs_dim, hidden, n_actions)
        self.g = mlp(obs_dim, hidden, n_actions)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q(s, .) [B, n], log G(. | s) [B, n], G's logits [B, n]."""
        logits = self.g(obs)
        return self.q(obs), F.log_softmax(logits, -1), logits


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def allowed_actions(log_g: torch.Tensor, threshold: float) -> torch.Tensor:
    """A_tau(s) as a boolean mask [B, n]: G(a|s) / max_a' G(a'|s) > tau."""
    g = log_g.exp()
    return g / g.max(-1, keepdim=True).values > threshold


def constrained_argmax(q: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """argmax_{a in A_tau(s)} Q(s, a) [B] (disallowed actions valued -1e8, as the authors)."""
    return torch.where(allowed, q, torch.full_like(q, MASKED)).argmax(-1)


def bcq_target(q_next: torch.Tensor, log_g_next: torch.Tensor, q_next_target: torch.Tensor, rew: torch.Tensor,
               done: torch.Tensor, gamma: float, threshold: float) -> torch.Tensor:
    """y = r + gamma (1 - d) Qbar(s', argmax_{a in A_tau(s')} Q(s', a)); q_next = Q(s', .) of the online network."""
    next_act = constrained_argmax(q_next, allowed_actions(log_g_next, threshold))
    return rew + gamma * (1.0 - done) * q_next_target.gather(1, next_act[:, None]).squeeze(1)


def q_loss(q_data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[Huber(Q(s, a) - y)] (smooth L1 with beta 1, the authors')."""
    return F.smooth_l1_loss(q_data, target.detach())


def generator_loss(log_g: torch.Tensor, logits: torch.Tensor, act: torch.Tensor, logit_penalty: float) -> torch.Tensor:
    """E[-log G(a | s)] + lambda E[mean_a logits(s)_a^2]."""
    return F.nll_loss(log_g, act) + logit_penalty * logits.pow(2).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "bcq_discrete")
        args = resumed_args(Args, args, "bcq_discrete", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    data = load_dataset(args.dataset, download=args.download, discrete=True)
    evaluator = Evaluator(data, args, "bcq_discrete")  # says at start if it cannot evaluate or score
    if args.normalize_obs:
        obs_mean, obs_std = observation_stats(data.observations, eps=1e-3)
    else:
        obs_mean, obs_std = np.zeros(data.obs_dim, np.float32), np.ones(data.obs_dim, np.float32)
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, obs_mean=obs_mean, obs_std=obs_std)
    obs_mean_t, obs_std_t = torch.as_tensor(obs_mean, device=device), torch.as_tensor(obs_std, device=device)

    net = QAndGenerator(data.obs_dim, data.n_actions, args.hidden_dim).to(device)
    net_target = QAndGenerator(data.obs_dim, data.n_actions, args.hidden_dim).to(device)
    net_target.load_state_dict(net.state_dict())
    net_target.requires_grad_(False)
    opt = adam(net.parameters(), args.critic_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("net", net), ("net_target", net_target), ("opt", opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = (Path(args.resume) if args.resume
               else Path(args.runs_dir) / run_name("bcq_discrete", args.dataset, args.seed))
    run = Run(run_dir, args, "bcq_discrete", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update(target: bool) -> dict[str, torch.Tensor]:  # target: move the target network after this update
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        with torch.no_grad():
            q_next, log_g_next, _ = net(next_obs)
            y = bcq_target(q_next, log_g_next, net_target(next_obs)[0], rew, done, args.gamma, args.threshold)
        q, log_g, logits = net(obs)
        q_data = q.gather(1, act[:, None]).squeeze(1)
        td = q_loss(q_data, y)
        g_loss = generator_loss(log_g, logits, act, args.logit_penalty)
        opt.zero_grad(set_to_none=True)
        (td + g_loss).backward()
        opt.step()
        if target:
            with torch.no_grad():
                torch._foreach_lerp_(list(net_target.parameters()), list(net.parameters()), args.tau)
        return {"loss/q": td, "loss/bc": g_loss, "q_data": q_data.mean(),
                "allowed_actions": allowed_actions(log_g_next, args.threshold).float().sum(-1).mean()}

    policy_fn = policy_function(net, args.threshold, device, obs_mean_t, obs_std_t)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "net": net.state_dict(), "net_target": net_target.state_dict(), "opt": opt.state_dict(),
            "buffer": buffer.state_dict(), "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "bcq_discrete", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "n_actions": data.n_actions,
            "obs_mean": obs_mean_t.cpu(), "obs_std": obs_std_t.cpu()})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            step += 1
            metrics = update_fn(target=step % args.target_update_every == 0)
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
    result = {"algo": "bcq_discrete", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"bcq_discrete {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class GreedyPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> argmax_{a in A_tau(s)} Q(s, a)
    [n] (int64). Its forward is the whole policy, so it exports as it is (benchmarks/export.py)."""

    def __init__(self, net: QAndGenerator, threshold: float, obs_mean: torch.Tensor, obs_std: torch.Tensor):
        super().__init__()
        self.net, self.threshold = net, threshold
        self.register_buffer("obs_mean", obs_mean.detach().clone())
        self.register_buffer("obs_std", obs_std.detach().clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        q, log_g, _ = self.net((obs - self.obs_mean) / self.obs_std)
        return constrained_argmax(q, allowed_actions(log_g, self.threshold))


def policy_function(net: QAndGenerator, threshold: float, device: torch.device, obs_mean: torch.Tensor,
                    obs_std: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim], normalized with the training data's statistics,
    -> argmax_{a in A_tau(s)} Q(s, a) [n] (int64) (`.module`: the same policy as one nn.Module, a GreedyPolicy)."""
    module = GreedyPolicy(net, threshold, obs_mean, obs_std)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: the network)."""
    state = load_policy_checkpoint(run_dir, "bcq_discrete")
    args = Args(**upgrade_args("bcq_discrete", json.loads(state["args"])))
    net = QAndGenerator(state["obs_dim"], state["n_actions"], args.hidden_dim).to(device)
    net.load_state_dict(state["net"])
    return policy_function(net.eval(), args.threshold, torch.device(device), state["obs_mean"].to(device),
                           state["obs_std"].to(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
