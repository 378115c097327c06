"""TD3+BC: a minimalist approach to offline reinforcement learning.

Fujimoto, Gu. "A Minimalist Approach to Offline Reinforcement Learning." NeurIPS 2021.
arXiv:2106.06860. Authors' code: github.com/sfujim/TD3_BC (PyTorch).

TD3 with one change to the actor: a behaviour-cloning term keeps the policy near the dataset's
actions, and the Q term is normalized by the scale of Q so one weight alpha works across tasks:

    a~' = clip(pibar(s') + clip(eps, -c, c), -1, 1),   eps ~ N(0, sigma^2)
    L_Q(theta) = E[ sum_i ( r + gamma (1 - d) min_j Qbar_j(s', a~') - Q_theta_i(s, a) )^2 ]
    L_pi(phi)  = -lambda E[ Q_1(s, pi_phi(s)) ] + E[ (pi_phi(s) - a)^2 ],   lambda = alpha / E|Q_1(s, pi(s))|

Implementation details (all from the authors' code unless marked "deviation"):
 1. Observations are normalized with the dataset's mean and std + 1e-3, also at evaluation time.
    Rewards are not scaled.
 2. The BC term is `mse_loss(pi(s), a)`: a mean over the batch AND the action dimensions (the
    paper writes a squared norm); lambda is computed on the batch and detached.
 3. The actor and both target networks are updated every `policy_freq` = 2 critic updates; targets
    by Polyak averaging (tau = 0.005) only on those steps.
 4. Target policy smoothing: noise N(0, 0.2^2) clipped to +-0.5 (times max_action = 1).
 5. Deterministic actor with tanh output; 2x256 ReLU MLPs; PyTorch's default (nn.Linear) init.
 6. The twin Q-functions are one batched ensemble module (weights [2, in, out]).
 7. Deviation: the score is the final evaluation (10 episodes every 5,000 updates), where the
    paper averages the last 10 evaluations.

Default hyperparameters are the paper's (main.py / TD3_BC.py): alpha 2.5, lr 3e-4, batch 256,
gamma 0.99, tau 0.005, policy noise 0.2, noise clip 0.5, policy_freq 2, 1M updates.

Usage:
    python algorithms/td3_bc.py                                      # stitch/hopper/medium-replay-v0
    python algorithms/td3_bc.py --dataset stitch/hopper/medium-v0 --q-weight 2.5 --seed 1
    python algorithms/td3_bc.py --resume runs/td3_bc__stitch-hopper-medium-replay-v0__s0__20261121-120000
"""

from __future__ import annotations

import dataclasses
import json
import math
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


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates."""
    batch_size: int = 256
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the two hidden layers of actor and critics."""
    actor_lr: float = 3e-4
    """Actor learning rate."""
    critic_lr: float = 3e-4
    """Critic learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target networks."""
    q_weight: float = 2.5
    """Weight alpha of the Q term relative to behaviour cloning (lambda = alpha / mean |Q|): larger clones less."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise."""
    noise_clip: float = 0.5
    """Clip of the target policy smoothing noise."""
    policy_freq: int = 2
    """Critic updates per actor (and target) update."""
    normalize_obs: bool = True
    """Normalize observations with the dataset's mean and std."""
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
    require(args.q_weight >= 0.0, "q_weight", "must be >= 0", args.q_weight)
    require(args.policy_noise >= 0.0, "policy_noise", "must be >= 0", args.policy_noise)
    require(args.noise_clip >= 0.0, "noise_clip", "must be >= 0", args.noise_clip)
    require(args.policy_freq >= 1, "policy_freq", "must be a positive integer", args.policy_freq)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, member by member
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """Q_1..Q_n(s, a) as one module; returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2):
        super().__init__()
        self.n = n
        self.net = nn.Sequential(EnsembleLinear(n, obs_dim + act_dim, hidden), nn.ReLU(),
                                 EnsembleLinear(n, hidden, hidden), nn.ReLU(), EnsembleLinear(n, hidden, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


class Actor(nn.Module):
    """Deterministic policy pi(s) = tanh(MLP(s))."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, act_dim), nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def smoothed_target_action(next_action: torch.Tensor, policy_noise: float, noise_clip: float) -> torch.Tensor:
    """a~' = clip(pibar(s') + clip(eps, -c, c), -1, 1), eps ~ N(0, sigma^2)  (TD3's target smoothing)."""
    noise = (torch.randn_like(next_action) * policy_noise).clamp(-noise_clip, noise_clip)
    return (next_action + noise).clamp(-1.0, 1.0)


def critic_loss(q: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, next_q: torch.Tensor,
                gamma: float) -> torch.Tensor:
    """L_Q = sum_i MSE(Q_i(s, a), r + gamma (1 - d) min_j Qbar_j(s', a~')); q, next_q = [n, B] (next_q: targets)."""
    target = (rew + gamma * (1.0 - done) * next_q.min(0).values).detach()
    return ((q - target) ** 2).mean(1).sum()


def actor_loss(q_pi: torch.Tensor, pi: torch.Tensor, act: torch.Tensor, alpha: float) -> torch.Tensor:
    """L_pi = -lambda mean Q_1(s, pi(s)) + mean (pi(s) - a)^2, lambda = alpha / mean|Q_1(s, pi(s))| (detached)."""
    lmbda = alpha / q_pi.abs().mean().detach()
    return -lmbda * q_pi.mean() + F.mse_loss(pi, act)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "td3_bc")
        args = resumed_args(Args, args, "td3_bc", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: observations normalized with the dataset's statistics (also at evaluation); rewards as they are.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "td3_bc")  # says at start if it cannot evaluate or score
    if args.normalize_obs:
        obs_mean, obs_std = observation_stats(data.observations, eps=1e-3)
    else:
        obs_mean, obs_std = np.zeros(data.obs_dim, np.float32), np.ones(data.obs_dim, np.float32)
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, obs_mean=obs_mean, obs_std=obs_std)
    obs_mean_t, obs_std_t = torch.as_tensor(obs_mean, device=device), torch.as_tensor(obs_std, device=device)

    actor = Actor(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    actor_target = Actor(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    actor_target.load_state_dict(actor.state_dict())
    actor_target.requires_grad_(False)
    q = EnsembleQ(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target = EnsembleQ(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    actor_opt = adam(actor.parameters(), args.actor_lr, device)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    last_actor_loss = torch.zeros((), device=device)  # logged on the updates without an actor step too

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("actor", actor), ("actor_target", actor_target), ("q", q), ("q_target", q_target),
                              ("actor_opt", actor_opt), ("q_opt", q_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        last_actor_loss.fill_(state.get("last_actor_loss", 0.0))  # (absent from checkpoints before skeleton v2)
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("td3_bc", args.dataset, args.seed)
    run = Run(run_dir, args, "td3_bc", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update(actor_step: bool) -> dict[str, torch.Tensor]:  # actor_step: this update also steps actor and targets
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        with torch.no_grad():
            next_act = smoothed_target_action(actor_target(next_obs), args.policy_noise, args.noise_clip)
            next_q = q_target(next_obs, next_act)
        qf_loss = critic_loss(q(obs, act), rew, done, next_q, args.gamma)
        q_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        q_opt.step()

        if actor_step:  # delayed actor and target updates
            pi = actor(obs)
            q.requires_grad_(False)
            pi_loss = actor_loss(q(obs, pi)[0], pi, act, args.q_weight)
            q.requires_grad_(True)
            actor_opt.zero_grad(set_to_none=True)
            pi_loss.backward()
            actor_opt.step()
            last_actor_loss.copy_(pi_loss.detach())
            with torch.no_grad():
                torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
                torch._foreach_lerp_(list(actor_target.parameters()), list(actor.parameters()), args.tau)
        return {"loss/q": qf_loss, "loss/actor": last_actor_loss}

    policy_fn = policy_function(actor, device, obs_mean_t, obs_std_t)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "actor": actor.state_dict(), "actor_target": actor_target.state_dict(), "q": q.state_dict(),
            "q_target": q_target.state_dict(), "actor_opt": actor_opt.state_dict(), "q_opt": q_opt.state_dict(),
            "buffer": buffer.state_dict(), "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "td3_bc", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "obs_mean": obs_mean_t.cpu(), "obs_std": obs_std_t.cpu(),
            "last_actor_loss": last_actor_loss.cpu()})

    # --compile (common/fast.py); eager on CPU, where the compiled update measured 0.79x (speed_cpu_compile.json)
    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator], cpu=False)
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            step += 1
            metrics = update_fn(actor_step=step % args.policy_freq == 0)
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
    result = {"algo": "td3_bc", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"td3_bc {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class DeterministicPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim], normalized with the training data's
    mean and std, -> actions [n, act_dim] in [-1, 1]. Its forward is the whole policy, so it exports as it is
    (benchmarks/export.py)."""

    def __init__(self, actor: Actor, obs_mean: torch.Tensor, obs_std: torch.Tensor):
        super().__init__()
        self.actor = actor
        self.register_buffer("obs_mean", obs_mean)
        self.register_buffer("obs_std", obs_std)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor((obs - self.obs_mean) / self.obs_std)


def policy_function(actor: Actor, device: torch.device, obs_mean: torch.Tensor,
                    obs_std: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim] -> actions [n, act_dim] in [-1, 1], the observations
    normalized with the training data's mean and std (tensors on `device`) first (`.module`: the same policy as one
    nn.Module on tensors)."""
    module = DeterministicPolicy(actor, obs_mean, obs_std)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: one nn.Module), with the
    observation statistics saved in the checkpoint."""
    state = load_policy_checkpoint(run_dir, "td3_bc")
    args = Args(**upgrade_args("td3_bc", json.loads(state["args"])))
    actor = Actor(state["obs_dim"], state["act_dim"], args.hidden_dim).to(device)
    actor.load_state_dict(state["actor"])
    obs_mean, obs_std = state["obs_mean"].to(device), state["obs_std"].to(device)
    return policy_function(actor.eval(), torch.device(device), obs_mean, obs_std)


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
