"""Discrete CQL: Conservative Q-Learning, CQL(H), on a DQN or a QR-DQN critic.

Kumar, Zhou, Tucker, Levine. "Conservative Q-Learning for Offline Reinforcement Learning." NeurIPS 2020.
arXiv:2006.04779. Authors' code: github.com/aviralkumar2907/CQL (atari/: QR-DQN on Dopamine, TensorFlow).

With discrete actions the soft maximum over actions is exact: CQL(H) adds to the critic's TD loss the gap
between a log-sum-exp of Q over all actions and Q of the data's action, which pushes Q down on actions the
data did not take and up on those it did:

    L_CQL(theta) = alpha E_s~D[ log sum_a exp Q_theta(s, a) - E_a~D(.|s) Q_theta(s, a) ] + L_TD(theta)

The critic (`--critic`):
  qrdqn  (the paper's Atari agent) N quantiles theta_1..N(s, a), Q(s, a) = mean_i theta_i(s, a);
         a* = argmax_a Qbar(s', a) (target network), T theta_j = r + gamma (1 - d) thetabar_j(s', a*), and
         L_TD = E_D[ sum_i mean_j rho^kappa_{tau_i}(T theta_j - theta_i(s, a)) ],  tau_i = (2i - 1) / (2N),
         rho^kappa_tau(u) = |tau - 1(u < 0)| Huber_kappa(u) / kappa                (QR-DQN's quantile Huber loss)
  dqn    (d3rlpy's DiscreteCQL) one value per action; Double DQN's target
         y = r + gamma (1 - d) Qbar(s', argmax_a Q(s', a)),  L_TD = E_D[ Huber(Q(s, a) - y) ]

Implementation details:
 1. Settings of the authors' Atari QR-DQN configs (atari/batch_rl/fixed_replay/configs/quantile*.gin), which
    d3rlpy's DiscreteCQL reproduction also uses: 200 quantiles, kappa 1, gamma 0.99, Adam lr 5e-5 with eps
    0.01/32 = 3.125e-4, batch 32, a hard target copy every 2,000 updates (Dopamine's 8,000 agent steps at one
    update per 4 steps), alpha 1.0 (the gin default; the README uses 4.0 for the 1% Atari data).
 2. The `dqn` critic is d3rlpy's DiscreteCQL (a DoubleDQN with the CQL term; Huber TD loss), with the same
    optimizer and target settings.
 3. Deviation: the network is an MLP 2x256 ReLU (d3rlpy's default encoder for vector observations) in place of
    the Nature-DQN convolutional torso; its last layer outputs n_actions x N values (QR) or n_actions (DQN).
 4. Deviation: observations are normalized with the data's mean and std + 1e-3 (`--no-normalize-obs`: raw), as
    every discrete script here does; Atari's reward clipping to [-1, 1] is not applied.
 5. The conservative term is computed on Q = the mean of the quantiles (the authors' `q_values`), for both
    critics. Evaluation is greedy in Q.
 6. Deviation: the score is the final evaluation, not an average over iterations.
 7. Note on alpha: the TD losses here have bounded gradients (Huber slope 1; a quantile's at most max(tau, 1-tau)),
    while the penalty's gradient on Q(s, a) is alpha (softmax_a Q(s, .) - pi_b(a|s)) whatever the rewards, so an
    action the data take with small probability can be pushed below the others without limit: roughly, alpha must
    stay below pi_b(a|s) (DQN) or pi_b(a|s) / 2 (QR) for a rarely taken best action to stay best (the chain test in
    tests/test_discrete_algos.py fails with alpha 1 and passes with 0.1). Atari's clipped rewards and many
    actions are what alpha 1-4 was tuned for.

Usage:
    python algorithms/cql_discrete.py                                 # stitch/cartpole/medium-replay-v0, QR-DQN
    python algorithms/cql_discrete.py --critic dqn --regularizer-weight 4.0
    python algorithms/cql_discrete.py --resume runs/cql_discrete__stitch-cartpole-medium-replay-v0__s0__20261121-120000
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable, Literal

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
    dataset: str = "stitch/cartpole/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates."""
    batch_size: int = 32
    """Minibatch size."""
    critic: Literal["qrdqn", "dqn"] = "qrdqn"
    """The critic: qrdqn (quantile regression, the paper's Atari agent) or dqn (one value per action, d3rlpy's)."""
    num_quantiles: int = 200
    """Quantiles N of the QR-DQN critic."""
    kappa: float = 1.0
    """Huber threshold kappa of the quantile loss."""
    hidden_dim: int = 256
    """Width of the two hidden layers of the critic."""
    critic_lr: float = 5e-5
    """Critic learning rate."""
    adam_eps: float = 3.125e-4
    """Adam's epsilon (the authors' 0.01 / 32)."""
    gamma: float = 0.99
    """Discount factor."""
    target_update_every: int = 2_000
    """Updates between hard copies of the critic into its target."""
    regularizer_weight: float = 1.0
    """Weight alpha of the conservative term logsumexp_a Q(s, a) - Q(s, a_data)."""
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
    require(args.critic in ("qrdqn", "dqn"), "critic", "must be 'qrdqn' or 'dqn'", args.critic)
    require(args.num_quantiles > 0, "num_quantiles", "must be a positive integer", args.num_quantiles)
    require(args.kappa > 0.0, "kappa", "must be positive", args.kappa)
    require(args.adam_eps > 0.0, "adam_eps", "must be positive", args.adam_eps)
    require(args.target_update_every > 0, "target_update_every", "must be a positive integer", args.target_update_every)
    require(args.regularizer_weight >= 0.0, "regularizer_weight", "must be >= 0", args.regularizer_weight)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
class Critic(nn.Module):
    """theta_1..N(s, .) as [B, n_actions, N] (a DQN critic is N = 1); `q` is their mean, [B, n_actions]."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int, num_quantiles: int):
        super().__init__()
        self.n_actions, self.num_quantiles = n_actions, num_quantiles
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_actions * num_quantiles))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).view(-1, self.n_actions, self.num_quantiles)

    def q(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs).mean(-1)


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def conservative_gap(q: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """E_s[log sum_a exp Q(s, a) - Q(s, a_data)]; q = Q(s, .) [B, n], act = the data's actions [B]."""
    return (torch.logsumexp(q, -1) - q.gather(1, act[:, None]).squeeze(1)).mean()


def quantile_huber_loss(theta: torch.Tensor, target: torch.Tensor, kappa: float) -> torch.Tensor:
    """E_B[ sum_i mean_j |tau_i - 1(u_ij < 0)| Huber_kappa(u_ij) / kappa ], u_ij = T theta_j - theta_i, with
    tau_i = (2i - 1) / (2N); theta = theta_i(s, a) [B, N], target = T theta_j [B, N]."""
    n = theta.shape[-1]
    tau = (torch.arange(n, device=theta.device, dtype=theta.dtype) + 0.5) / n  # tau_i = (2i - 1) / 2N, i = 1..N
    u = target.detach()[:, None, :] - theta[:, :, None]  # [B, i, j]
    huber = F.huber_loss(u, torch.zeros_like(u), reduction="none", delta=kappa)
    rho = (tau[None, :, None] - (u < 0).to(u.dtype)).abs() * huber / kappa
    return rho.mean(2).sum(1).mean()


def qrdqn_target(next_theta_target: torch.Tensor, rew: torch.Tensor, done: torch.Tensor,
                 gamma: float) -> torch.Tensor:
    """T theta_j = r + gamma (1 - d) thetabar_j(s', a*), a* = argmax_a mean_j thetabar_j(s', a); [B, N]."""
    a_star = next_theta_target.mean(-1).argmax(-1)
    chosen = next_theta_target[torch.arange(len(a_star), device=a_star.device), a_star]
    return rew[:, None] + gamma * (1.0 - done[:, None]) * chosen


def double_dqn_target(next_q: torch.Tensor, next_q_target: torch.Tensor, rew: torch.Tensor, done: torch.Tensor,
                      gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - d) Qbar(s', argmax_a Q(s', a)); [B]."""
    return rew + gamma * (1.0 - done) * next_q_target.gather(1, next_q.argmax(-1, keepdim=True)).squeeze(1)


def dqn_loss(q_data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[Huber(Q(s, a) - y)] (d3rlpy's DQN error)."""
    return F.huber_loss(q_data, target.detach())


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "cql_discrete")
        args = resumed_args(Args, args, "cql_discrete", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    data = load_dataset(args.dataset, download=args.download, discrete=True)
    evaluator = Evaluator(data, args, "cql_discrete")  # says at start if it cannot evaluate or score
    if args.normalize_obs:
        obs_mean, obs_std = observation_stats(data.observations, eps=1e-3)
    else:
        obs_mean, obs_std = np.zeros(data.obs_dim, np.float32), np.ones(data.obs_dim, np.float32)
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, obs_mean=obs_mean, obs_std=obs_std)
    obs_mean_t, obs_std_t = torch.as_tensor(obs_mean, device=device), torch.as_tensor(obs_std, device=device)

    n_out = args.num_quantiles if args.critic == "qrdqn" else 1
    critic = Critic(data.obs_dim, data.n_actions, args.hidden_dim, n_out).to(device)
    critic_target = Critic(data.obs_dim, data.n_actions, args.hidden_dim, n_out).to(device)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    opt = adam(critic.parameters(), args.critic_lr, device, eps=args.adam_eps)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("critic", critic), ("critic_target", critic_target), ("opt", opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = (Path(args.resume) if args.resume
               else Path(args.runs_dir) / run_name("cql_discrete", args.dataset, args.seed))
    run = Run(run_dir, args, "cql_discrete", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update(target: bool) -> dict[str, torch.Tensor]:  # target: copy the critic into its target after this update
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        theta = critic(obs)  # [B, n_actions, N]
        q = theta.mean(-1)
        with torch.no_grad():
            next_theta_target = critic_target(next_obs)
            if args.critic == "qrdqn":
                y = qrdqn_target(next_theta_target, rew, done, args.gamma)
            else:
                y = double_dqn_target(critic.q(next_obs), next_theta_target.mean(-1), rew, done, args.gamma)
        if args.critic == "qrdqn":
            td = quantile_huber_loss(theta[torch.arange(len(act), device=act.device), act], y, args.kappa)
        else:
            td = dqn_loss(q.gather(1, act[:, None]).squeeze(1), y)
        gap = conservative_gap(q, act)
        cql = args.regularizer_weight * gap
        opt.zero_grad(set_to_none=True)
        (td + cql).backward()
        opt.step()
        if target:
            with torch.no_grad():
                torch._foreach_copy_(list(critic_target.parameters()), list(critic.parameters()))
        return {"loss/q": td, "loss/cql": cql, "cql_gap": gap, "q_data": q.gather(1, act[:, None]).mean()}

    policy_fn = policy_function(critic, device, obs_mean_t, obs_std_t)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "critic": critic.state_dict(), "critic_target": critic_target.state_dict(), "opt": opt.state_dict(),
            "buffer": buffer.state_dict(), "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "cql_discrete", "args": json.dumps(dataclasses.asdict(args)),
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
    result = {"algo": "cql_discrete", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"cql_discrete {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class GreedyPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> argmax_a Q(s, a) [n] (int64).
    Its forward is the whole policy, so it exports as it is (benchmarks/export.py)."""

    def __init__(self, critic: Critic, obs_mean: torch.Tensor, obs_std: torch.Tensor):
        super().__init__()
        self.critic = critic
        self.register_buffer("obs_mean", obs_mean.detach().clone())
        self.register_buffer("obs_std", obs_std.detach().clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic.q((obs - self.obs_mean) / self.obs_std).argmax(-1)


def policy_function(critic: Critic, device: torch.device, obs_mean: torch.Tensor,
                    obs_std: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim], normalized with the training data's statistics,
    -> argmax_a Q(s, a) [n] (int64) (`.module`: the same policy as one nn.Module, a GreedyPolicy)."""
    module = GreedyPolicy(critic, obs_mean, obs_std)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: the network)."""
    state = load_policy_checkpoint(run_dir, "cql_discrete")
    args = Args(**upgrade_args("cql_discrete", json.loads(state["args"])))
    n_out = args.num_quantiles if args.critic == "qrdqn" else 1
    critic = Critic(state["obs_dim"], state["n_actions"], args.hidden_dim, n_out).to(device)
    critic.load_state_dict(state["critic"])
    return policy_function(critic.eval(), torch.device(device), state["obs_mean"].to(device),
                           state["obs_std"].to(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
