"""AWR: Advantage-Weighted Regression (offline), with MARWIL and RWR weightings.

Peng, Kumar, Zhang, Levine. "Advantage-Weighted Regression: Simple and Scalable Off-Policy Reinforcement
Learning." arXiv:1910.00177, 2019. Authors' code: github.com/xbpeng/awr (TensorFlow; the D4RL paper ran it
offline, rail-berkeley/d4rl_evaluations/awr). MARWIL: Wang, Xiong, Han, Sun, Liu, Zhang. "Exponentially
Weighted Imitation Learning for Batched Historical Data." NeurIPS 2018 (no official code; RLlib's MARWIL
is the reference). RWR: Peters, Schaal. "Reinforcement Learning by Reward-Weighted Regression for
Operational Space Control." ICML 2007 (as the AWR paper's ablation).

AWR fits a state value V to returns of the dataset's own episodes and clones the dataset's actions,
each weighted by the exponentiated advantage of the return over V; no Q-function, no bootstrapping
through actions the data did not take:

    R_t       = r_t + gamma (1 - d_t) [ (1 - lam_t) V(s_t+1) + lam_t R_t+1 ]       TD(lambda) return,
                lam_t = lambda inside an episode and 0 at its last transition: an episode cut by a time
                limit (or by the end of logging) bootstraps with V(s_T), a terminal one (d = 1) with 0.
                lambda = 1 is the Monte-Carlo return (--value-target mc).
    L_V(psi)  = 1/2 E_t[ ((1 - gamma) R_t - V~_psi(s_t))^2 ],   V = V~ / (1 - gamma)
    A_t       = R_t - V(s_t),  standardized over the dataset: A^_t = (A_t - mean A) / (std A + 1e-5)
    L_pi(phi) = -E_t[ w_t log pi_phi(a_t | s_t) ] + 10 * 1/2 E_t[ sum_j max(|mu_j(s_t)| - 1, 0)^2 ]
    --weighting awr:    w_t = min(exp(A^_t / beta), 20)
                rwr:    w_t = min(exp(R^_t / beta), 20)    (R^ the standardized return: no baseline)
                marwil: w_t = min(exp(beta_m A_t / c), 20), A_t with the current V on the minibatch, and
                        c^2 <- c^2 + rho (mean_batch A^2 - c^2) before each policy update (RLlib)

Implementation details (all from the authors' code unless marked "deviation"):
 1. Offline iterations: every `recompute_every` (1000) updates, V(s) and V(s') of the whole dataset are
    evaluated with the current V, the return targets R_t (TD(lambda), lambda 0.95) are recomputed
    backwards along each episode, and the AWR/RWR weights are recomputed and then held fixed, as the
    paper recomputes them once per iteration of 1000 policy steps.
 2. Deviation: each update takes one V step and one policy step on the same minibatch (the paper takes
    200 critic steps, then 1000 policy steps, per iteration), so V gets 1000 steps per target refresh.
 3. The V network predicts V~ = (1 - gamma) V (the code's fixed value normalizer), so its targets are
    O(r); its regression loss is 1/2 mean squared error in those units.
 4. Observations are normalized with the dataset's mean and std (std floored at 0.01, the code's
    normalizer); rewards are not rescaled.
 5. Policy: Gaussian with a linear (unbounded) mean and a FIXED std of 0.4 (Hopper/HalfCheetah/Walker2d;
    0.2 Ant); mean-layer init U(+-0.01), bias 0; other layers Xavier-uniform, bias 0. A penalty of
    10 * 1/2 mean sum max(|mu| - 1, 0)^2 keeps the mean inside the action bounds. Evaluation uses the
    mean, clipped to [-1, 1].
 6. Networks: ReLU MLPs with hidden layers (hidden_dim, hidden_dim / 2) = (128, 64) for V and the policy.
    SGD with momentum 0.9: policy lr 1e-4 (Hopper; the paper uses 5e-5 for HalfCheetah, 2.5e-5 for
    Walker2d), V lr 1e-2.
 7. MARWIL follows RLlib: advantages against the current V, the running c^2 starts at 100 with rate 1e-8
    (slow: over 1M updates c^2 closes at most 1% of its gap to mean A^2), beta_m = 1. Deviation: the MARWIL
    weights are also clipped at `max_weight` (RLlib does not clip; an unclipped exp of a large early
    advantage overflows the loss). RWR is AWR without the baseline: the AWR weights of the return.
    Deviation: the return is standardized over the dataset like the advantage (RWR's exp(R / beta)
    overflows at locomotion returns and needs a per-dataset temperature otherwise).
 8. Deviation: evaluation runs 10 episodes every 5,000 updates and the score is the final evaluation.

Default hyperparameters are the authors' Hopper-v2 settings (awr_configs.py): temperature 1.0, weight
clip 20, lambda 0.95, gamma 0.99, batch 256, the nets and learning rates above; 1M updates.

Usage:
    python algorithms/awr.py                                         # stitch/hopper/medium-replay-v0
    python algorithms/awr.py --value-target mc --weighting marwil --dataset stitch/walker2d/medium-v0
    python algorithms/awr.py --resume runs/awr__stitch-hopper-medium-replay-v0__s0__20261121-120000
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from common.buffer import Buffer  # noqa: E402
from common.checkpoints import (CheckpointError, load_policy_checkpoint, load_run_checkpoint,  # noqa: E402
                                resumed_args, rng_state, save_checkpoint, set_rng_state)
from common.config import ArgumentError, check_common, require, resolve_device  # noqa: E402
from common.data import DatasetError, load_dataset  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.fast import fast_update  # noqa: E402
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
    hidden_dim: int = 128
    """Width of the first hidden layer of V and the policy; the second has half as many units (128-64)."""
    actor_lr: float = 1e-4
    """Policy learning rate (SGD with momentum)."""
    critic_lr: float = 1e-2
    """Learning rate of V (SGD with momentum)."""
    momentum: float = 0.9
    """Momentum of both SGD optimizers."""
    gamma: float = 0.99
    """Discount factor."""
    value_target: Literal["td-lambda", "mc"] = "td-lambda"
    """What V regresses to: TD(lambda) returns, or Monte-Carlo returns (lambda = 1)."""
    td_lambda: float = 0.95
    """lambda of the TD(lambda) returns."""
    recompute_every: int = 1_000
    """Updates between recomputations of the return targets and weights with the current V."""
    weighting: Literal["awr", "marwil", "rwr"] = "awr"
    """Policy weights: exp(A/beta) of the standardized advantage (AWR), exp(beta_m A/c) with a running
    advantage norm c (MARWIL), or exp(R/beta) of the standardized return (RWR)."""
    temperature: float = 1.0
    """Temperature beta of the AWR and RWR weights exp(A / beta) (MARWIL's is --inverse-temperature)."""
    max_weight: float = 20.0
    """Clip on every weight."""
    inverse_temperature: float = 1.0
    """Inverse temperature beta_m of the MARWIL weights exp(beta_m A / c) (0 is behaviour cloning)."""
    marwil_norm_rate: float = 1e-8
    """Update rate rho of MARWIL's moving average c^2 of the squared advantage."""
    marwil_norm_init: float = 100.0
    """Initial value of MARWIL's c^2."""
    action_std: float = 0.4
    """Fixed standard deviation of the Gaussian policy (actions in [-1, 1])."""
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
    require(args.value_target in ("td-lambda", "mc"), "value_target", "must be td-lambda or mc", args.value_target)
    require(0.0 <= args.td_lambda <= 1.0, "td_lambda", "must be in [0, 1]", args.td_lambda)
    require(isinstance(args.recompute_every, int) and args.recompute_every > 0, "recompute_every",
            "must be a positive integer", args.recompute_every)
    require(args.weighting in ("awr", "marwil", "rwr"), "weighting", "must be awr, marwil or rwr", args.weighting)
    require(math.isfinite(args.temperature) and args.temperature > 0.0, "temperature", "must be positive",
            args.temperature)
    require(args.max_weight > 0.0, "max_weight", "must be positive", args.max_weight)
    require(math.isfinite(args.inverse_temperature) and args.inverse_temperature >= 0.0, "inverse_temperature",
            "must be >= 0", args.inverse_temperature)
    require(0.0 <= args.marwil_norm_rate <= 1.0, "marwil_norm_rate", "must be in [0, 1]", args.marwil_norm_rate)
    require(args.marwil_norm_init > 0.0, "marwil_norm_init", "must be positive", args.marwil_norm_init)
    require(args.action_std > 0.0, "action_std", "must be positive", args.action_std)
    require(0.0 <= args.momentum < 1.0, "momentum", "must be in [0, 1)", args.momentum)
    require(args.hidden_dim >= 2, "hidden_dim", "must be an integer >= 2", args.hidden_dim)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
BOUND_LOSS_WEIGHT = 10.0  # the authors' `_actor_bound_loss_weight`
ADV_EPS = 1e-5  # added to the std when standardizing advantages (the authors' ADV_EPS)


def mlp(in_dim: int, hidden: int, out_dim: int, out_scale: float | None = None) -> nn.Sequential:
    """ReLU MLP with hidden layers (hidden, hidden // 2); Xavier-uniform weights, zero biases (the last layer
    W ~ U(+-out_scale) when given)."""
    net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
                        nn.Linear(hidden // 2, out_dim))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    if out_scale is not None:
        nn.init.uniform_(net[-1].weight, -out_scale, out_scale)
    return net


class GaussianPolicy(nn.Module):
    """N(mu(s), action_std^2) with a linear mean and a fixed std (AWR's continuous action distribution)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, action_std: float):
        super().__init__()
        self.mu = mlp(obs_dim, hidden, act_dim, out_scale=0.01)
        self.log_std = math.log(action_std)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        mean = self.mu(obs)
        return (-0.5 * ((act - mean) / math.exp(self.log_std)) ** 2 - self.log_std
                - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mu(obs)


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def lambda_returns(rewards: torch.Tensor, dones: torch.Tensor, next_values: torch.Tensor,
                   episode_lengths: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """R_t = r_t + gamma (1 - d_t) [(1 - lam_t) V(s_t+1) + lam_t R_t+1]  (the paper's TD(lambda) value target),
    backwards along each episode of the flat arrays; lam_t = 0 at an episode's last transition, so a cut
    episode bootstraps with V(s_T) and a terminal one (d = 1) with nothing. lam = 1: Monte-Carlo returns.
    rewards, dones, next_values = V(s_t+1): [N]; episode_lengths: [E] summing to N. Returns [N]."""
    n, lengths = rewards.shape[0], episode_lengths.to(rewards.device)
    episode = torch.repeat_interleave(torch.arange(len(lengths), device=rewards.device), lengths)
    pos = torch.arange(n, device=rewards.device) - (torch.cumsum(lengths, 0) - lengths)[episode]
    lam_t = torch.where(pos == lengths[episode] - 1, 0.0, lam)
    # R_t = c_t + g_t R_t+1, run over all episodes at once along a padded [T, E] time axis
    c = rewards + gamma * (1.0 - dones) * (1.0 - lam_t) * next_values
    g = gamma * (1.0 - dones) * lam_t
    T = int(lengths.max())
    C, G = rewards.new_zeros(T, len(lengths)), rewards.new_zeros(T, len(lengths))
    C[pos, episode], G[pos, episode] = c, g
    R = rewards.new_zeros(T + 1, len(lengths))
    for t in range(T - 1, -1, -1):
        R[t] = C[t] + G[t] * R[t + 1]
    return R[pos, episode]


def value_loss(v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_V = 1/2 E[(R~_t - V~(s_t))^2], both in normalized units (x (1 - gamma)); v = V~(s_t)."""
    return 0.5 * ((target.detach() - v) ** 2).mean()


def awr_weights(adv: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """w = min(exp(A^ / beta), max_weight), A^ = (A - mean A) / (std A + 1e-5) over all of `adv`  (the paper's
    policy weights, with the code's standardization and clip). RWR: pass returns instead of advantages."""
    adv = (adv - adv.mean()) / (adv.std(correction=0) + ADV_EPS)
    return torch.exp(adv / temperature).clamp(max=max_weight)


def marwil_weights(adv: torch.Tensor, sqd_norm: torch.Tensor, beta: float, rate: float,
                   max_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """c^2 <- c^2 + rho (mean A^2 - c^2); w = min(exp(beta A / (c + 1e-8)), max_weight)  (MARWIL, RLlib's
    running advantage normalization). Returns the weights and the updated c^2."""
    sqd_norm = sqd_norm + rate * ((adv.detach() ** 2).mean() - sqd_norm)
    return torch.exp(beta * adv.detach() / (sqd_norm.sqrt() + 1e-8)).clamp(max=max_weight), sqd_norm


def actor_loss(log_prob: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L_pi = -E[w log pi(a|s)]  (AWR's weighted regression); the weights carry no gradient."""
    return -(weight.detach() * log_prob).mean()


def action_bound_loss(mean: torch.Tensor, bound: float = 1.0) -> torch.Tensor:
    """1/2 E[sum_j max(|mu_j| - bound, 0)^2]: keeps the (unbounded) Gaussian mean inside the action bounds."""
    return 0.5 * ((mean - bound).clamp(min=0) ** 2 + (mean + bound).clamp(max=0) ** 2).sum(-1).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def make_optimizer(params, lr: float, momentum: float) -> torch.optim.SGD:
    """SGD with momentum, its momentum buffers created now as zeros: the first step's buffer is then the gradient,
    as with SGD's lazy buffers, and a compiled update sees one optimizer state from its first call on."""
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    for group in opt.param_groups:
        for p in group["params"]:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return opt


def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "awr")
        args = resumed_args(Args, args, "awr", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: observations normalized (std floored at 0.01), raw rewards, episode boundaries for the returns.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "awr")  # says at start if it cannot evaluate or score
    if data.actions.dtype.kind != "f":
        raise DatasetError(f"dataset {args.dataset!r} has discrete actions; awr.py needs continuous actions")
    obs_mean = data.observations.mean(0).astype(np.float32)
    obs_std = np.maximum(data.observations.std(0), 0.01).astype(np.float32)
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, obs_mean=obs_mean, obs_std=obs_std)
    obs_mean_t, obs_std_t = torch.as_tensor(obs_mean, device=device), torch.as_tensor(obs_std, device=device)
    lengths = torch.as_tensor(data.episode_lengths, device=device)
    v_scale = 1.0 / (1.0 - args.gamma)  # V = v_scale * V~
    lam = 1.0 if args.value_target == "mc" else args.td_lambda

    value = mlp(data.obs_dim, args.hidden_dim, 1).to(device)
    policy = GaussianPolicy(data.obs_dim, data.act_dim, args.hidden_dim, args.action_std).to(device)
    v_opt = make_optimizer(value.parameters(), args.critic_lr, args.momentum)
    pi_opt = make_optimizer(policy.parameters(), args.actor_lr, args.momentum)
    targets = torch.zeros(len(buffer), device=device)  # R_t of every transition, recomputed every iteration
    weights = torch.ones(len(buffer), device=device)  # AWR / RWR weights, recomputed with the targets
    sqd_norm = torch.tensor(args.marwil_norm_init, device=device)  # MARWIL's c^2
    stats = torch.zeros(3, device=device)  # mean and std of A, mean weight, at the last recomputation

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("value", value), ("policy", policy), ("v_opt", v_opt), ("pi_opt", pi_opt),
                              ("buffer", buffer)):
                obj.load_state_dict(state[name])
            for name, t in (("targets", targets), ("weights", weights), ("sqd_norm", sqd_norm), ("stats", stats)):
                t.copy_(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("awr", args.dataset, args.seed)
    run = Run(run_dir, args, "awr", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    @torch.no_grad()
    def values_of(obs: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
        return torch.cat([value(obs[i:i + chunk]).squeeze(-1) for i in range(0, len(obs), chunk)]) * v_scale

    @torch.no_grad()
    def recompute() -> None:
        """One iteration's targets and weights from the current V, over the whole dataset."""
        n = len(buffer)
        v = values_of(buffer.obs[:n])
        targets.copy_(lambda_returns(buffer.rewards[:n], buffer.dones[:n], values_of(buffer.next_obs[:n]),
                                     lengths, args.gamma, lam))
        if args.weighting == "awr":
            weights.copy_(awr_weights(targets - v, args.temperature, args.max_weight))
        elif args.weighting == "rwr":
            weights.copy_(awr_weights(targets, args.temperature, args.max_weight))
        stats.copy_(torch.stack([(targets - v).mean(), (targets - v).std(), weights.mean()]))

    def update() -> dict[str, torch.Tensor]:  # the loop below recomputes the targets and weights between updates
        idx = torch.randint(0, len(buffer), (args.batch_size,), device=device, generator=buffer.generator)
        obs, act, target = buffer.obs[idx], buffer.actions[idx], targets[idx]
        v = value(obs).squeeze(-1)
        v_loss = value_loss(v, target / v_scale)
        v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        v_opt.step()

        if args.weighting == "marwil":  # advantages against the current V, normalized by the running c
            w, new_norm = marwil_weights(target - v.detach() * v_scale, sqd_norm, args.inverse_temperature,
                                         args.marwil_norm_rate, args.max_weight)
            sqd_norm.copy_(new_norm)
        else:
            w = weights[idx]
        mean = policy.mu(obs)
        pi_loss = actor_loss(policy.log_prob(obs, act), w) + BOUND_LOSS_WEIGHT * action_bound_loss(mean)
        pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()
        pi_opt.step()
        return {"loss/value": v_loss, "loss/actor": pi_loss, "weight_batch_mean": w.mean(), "adv_mean": stats[0],
                "adv_std": stats[1], "weight_mean": stats[2]}

    policy_fn = policy_function(policy, device, obs_mean_t, obs_std_t)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "value": value.state_dict(), "policy": policy.state_dict(), "v_opt": v_opt.state_dict(),
            "pi_opt": pi_opt.state_dict(), "buffer": buffer.state_dict(), "targets": targets.cpu(),
            "weights": weights.cpu(), "sqd_norm": sqd_norm.cpu(), "stats": stats.cpu(),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "awr", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "obs_mean": obs_mean_t.cpu(), "obs_std": obs_std_t.cpu()})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            if step % args.recompute_every == 0:
                recompute()
            metrics = update_fn()
            step += 1
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
    result = {"algo": "awr", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"awr {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class DeterministicPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim], normalized with the dataset's
    statistics, -> the policy's mean actions [n, act_dim], clipped to [-1, 1]. Its forward is the whole policy, so
    it exports as it is (benchmarks/export.py)."""

    def __init__(self, policy: GaussianPolicy, obs_mean: torch.Tensor, obs_std: torch.Tensor):
        super().__init__()
        self.policy = policy
        self.register_buffer("obs_mean", obs_mean)
        self.register_buffer("obs_std", obs_std)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act((obs - self.obs_mean) / self.obs_std).clamp(-1, 1)


def policy_function(policy: GaussianPolicy, device: torch.device, obs_mean: torch.Tensor,
                    obs_std: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim], normalized with the dataset's statistics,
    -> the mean actions [n, act_dim], clipped to [-1, 1] (`.module`: the same policy as one nn.Module on tensors)."""
    module = DeterministicPolicy(policy, obs_mean, obs_std)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: one nn.Module)."""
    state = load_policy_checkpoint(run_dir, "awr")
    args = Args(**upgrade_args("awr", json.loads(state["args"])))
    policy = GaussianPolicy(state["obs_dim"], state["act_dim"], args.hidden_dim, args.action_std).to(device)
    policy.load_state_dict(state["policy"])
    return policy_function(policy.eval(), torch.device(device), state["obs_mean"].to(device),
                           state["obs_std"].to(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
