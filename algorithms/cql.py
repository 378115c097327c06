"""CQL: Conservative Q-Learning (continuous actions, SAC-based, CQL(H)).

Kumar, Zhou, Tucker, Levine. "Conservative Q-Learning for Offline Reinforcement Learning." NeurIPS 2020.
arXiv:2006.04779. Authors' code: github.com/aviralkumar2907/CQL (d4rl/rlkit/torch/sac/cql.py, PyTorch).

CQL adds to soft actor-critic a regularizer that pushes Q down on actions the policy and a uniform
proposal would pick (a soft maximum over actions) and up on the dataset's actions, so Q under-estimates
values out of the data's support. Per critic i, with N samples of each kind (min_q_version = 3):

    gap_i     = E_s[ temp log sum_{a in A_s} exp( (Q_i(s, a) - log mu(a|s)) / temp ) ] - E_(s,a)~D[ Q_i(s, a) ]
                A_s: N actions ~ U[-1, 1]^|A| (mu = 0.5^|A|), N ~ pi(.|s'), N ~ pi(.|s), all evaluated at s
    L_Q(theta) = sum_i ( E_D[ (Q_i(s, a) - y)^2 ] + alpha_cql gap_i ),  y = r + gamma (1 - d) min_j Qbar_j(s', a')
                 with a' ~ pi(.|s')
    L_pi(phi)  = E_s[ alpha log pi(a~|s) - min_i Q_i(s, a~) ],  a~ ~ pi(.|s) reparameterized
                 (the first bc_steps updates: E_(s,a)~D[ alpha log pi(a~|s) - log pi(a|s) ] instead)
    L_alpha    = -E_s[ log alpha (log pi(a~|s) + target_entropy) ]
    Lagrange:  the CQL term becomes alpha' (alpha_cql gap_i - threshold), alpha' = exp(log alpha') clipped to
               [0, 1e6], and log alpha' minimizes L_alpha' = -1/2 sum_i alpha' (alpha_cql gap_i - threshold),
               so alpha' grows while the gap exceeds the threshold and shrinks below it.

Implementation details (all from the authors' code unless marked "deviation"):
 1. One update: the entropy temperature alpha first, then the actor and the critics, each against the
    networks as they were at the start of the update (the actor's loss uses the Q before this update's
    Q step, the critics use actions sampled from the policy before its step), then Polyak averaging of
    both target critics (tau = 0.005) every update. (`--update-order critic-first` steps the critics first
    and then the temperature and the actor, whose loss reads the updated critics, as d3rlpy's CQL does; the
    critics' samples still come from the policy before its step.)
 2. Deterministic backup: the target has no entropy term (`--backup-entropy` adds -alpha log pi(a'|s')).
    The target uses the min of the two target critics at one action a' ~ pi(.|s'). (`--target-action mean`
    takes a' = tanh of the policy's mean instead, as d3rlpy's CQL does in its deterministic backup.)
 3. Importance-sampled log-sum-exp: each sampled Q is divided by its proposal density (uniform 0.5^|A|,
    or pi's density, both without gradient); the constant log(3N) normalizer is omitted. Samples are drawn
    without gradient: the conservative term trains only the critics.
 4. No reward scaling and no observation normalization (`--reward-scale` optionally applies IQL's
    1000 / (return range) scale, off by default). Actions live in [-1, 1], which the uniform proposal
    assumes (`common` maps other Box bounds to [-1, 1] and back; MuJoCo's are already +-1).
 5. Policy: tanh-squashed Gaussian, state-dependent log-std clamped to [-5, 2] (`--log-std-min -20`: d3rlpy's
    floor); log-probabilities use log N(z) - log(1 - tanh(z)^2 + 1e-6). For the log-probability of a dataset
    action, the action is clipped to +-(1 - 1e-6) before atanh and the pre-tanh mean to [-9, 9] (rlkit's
    `log_prob`; deviation: the Jacobian term also uses the clipped action, which changes nothing unless
    |a| > 1 - 1e-6). Evaluation uses tanh(mean).
 6. The first `bc_steps` = 40,000 updates train the policy by behaviour cloning (with the entropy bonus);
    the critics train with the full CQL loss from the start. Entropy tuning: target -|A|, log alpha
    initialized at 0, learning rate = actor lr.
 7. Networks: 3x256 ReLU MLPs for the twin Q and the policy, rlkit init: hidden layers W ~ U(+-1/sqrt(d)),
    b = 0.1, where rlkit's `fanin_init` reads d = size[0] of PyTorch's [out, in] weight, i.e. the layer's
    OUTPUT width (copied as is); Q's output layer W, b ~ U(+-3e-3); the policy's mean and log-std layers
    W, b ~ U(+-1e-3). (`--init torch` keeps nn.Linear's default init everywhere, as d3rlpy's CQL does.)
 8. The twin Q-functions are one batched ensemble module (weights [2, in, out]); the official code's two
    Adam optimizers are one Adam over both (identical: Adam is elementwise and each loss touches one critic).
    All 3N sampled actions and the dataset action go through both critics in one batched forward.
 9. Deviation (compute only, same distribution): the official code repeats each state N times and runs
    the policy on the copies; here the policy runs once on the batch of s and s' and all samples are
    drawn from those means and standard deviations.
10. Deviation: the official code has the optional max-Q backup (`max_q_backup`) and CQL(rho) (`min_q_version=2`);
    this script implements only the defaults (expected backup, CQL(H) importance-sampled).
11. Deviation: evaluation runs 10 episodes every 5,000 updates (the official code runs 1,000 evaluation
    steps every 1,000 updates), and the score is the final evaluation. Training is 1M updates (the paper's
    count; the official script's 3000 epochs x 1000 updates is 3M).
12. Offline to online (`--online-steps N`, 0 by default: offline only, which then runs exactly as without the
    flag): after the offline updates, N environment steps, each taking a ~ pi(.|s) (sampled with its own generator,
    saved in checkpoints) in the dataset's environment, appending the transition to the same buffer as the data
    (`Buffer.add`), then `--utd-ratio` updates on minibatches drawn uniformly from data and online rows together
    (CORL's CQL fine-tuning: one buffer, one step then one update). Only terminations stop bootstrapping; time limits
    end the episode. Evaluation goes on every --eval-every updates (each record also has `env_step`); each finished
    online episode logs `online/return`, `online/score` and `online/regret` (CORL's cumulative regret,
    common/online.py). Resume is exact across the switch and inside the online phase: the checkpoint holds the
    online rows, the generator and the running episode's actions, which are replayed from the episode's seeded reset
    (common/online.py). `--compile` applies to the offline updates; the online ones run eager (the buffer's size
    changes every step). cal_ql.py fine-tunes the same way with the calibrated bound and the Cal-QL mixing of data.

Default hyperparameters are the official D4RL script (examples/cql_mujoco_new.py) with the README's
recommendation for Gym-MuJoCo: alpha_cql (min_q_weight) 5.0 without Lagrange, policy lr 1e-4, Q lr 3e-4,
batch 256, gamma 0.99, N = 10, temp 1.0, bc_steps (policy_eval_start) 40,000, deterministic backup.
The README also reports alpha_cql 10 and policy lr 3e-4 as working; the paper used Lagrange threshold 10
for Gym (`--lagrange-threshold 10`).

d3rlpy's CQL (as its reproduction script runs it) differs from the authors' in six settings, each a flag here:
no behaviour-cloning warm-up (`--bc-steps 0`), weight 10 on medium datasets (`--regularizer-weight 10`), PyTorch's init
(`--init torch`), a' = tanh(mean) in the backup (`--target-action mean`), critics before actor (`--update-order
critic-first`) and a log-std floor of -20 (`--log-std-min -20`). The defaults stay the authors'; how the
two compare, and with which of these flags, is in benchmarks/RESULTS.md, "CQL against d3rlpy on hopper-medium".

Usage:
    python algorithms/cql.py                                         # stitch/hopper/medium-replay-v0
    python algorithms/cql.py --dataset stitch/walker2d/medium-v0 --regularizer-weight 10 --seed 1
    python algorithms/cql.py --lagrange-threshold 10 --regularizer-weight 1   # CQL-Lagrange, as in the paper
    python algorithms/cql.py --dataset stitch/hopper/medium-v0 --bc-steps 0 --regularizer-weight 10 --init torch \
        --target-action mean --update-order critic-first --log-std-min -20   # d3rlpy's CQL settings
    python algorithms/cql.py --online-steps 250000                   # then fine-tune online (detail 12)
    python algorithms/cql.py --resume runs/cql__stitch-hopper-medium-replay-v0__s0__20261121-120000
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
from common.data import DatasetError, load_dataset, return_range_scale  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.fast import adam, fast_update  # noqa: E402
from common.interrupt import StopSignal, resume_command  # noqa: E402
from common.online import OnlineEnv, require_environment  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling, policy and uniform samples, and evaluation."""
    total_steps: int = 1_000_000
    """Number of offline gradient updates (before the online phase, if any)."""
    online_steps: int = 0
    """Environment steps of online fine-tuning after the offline updates, each followed by --utd-ratio updates
    (0: offline only)."""
    utd_ratio: int = 1
    """Updates per online environment step (update-to-data ratio; CORL's fine-tuning: 1)."""
    batch_size: int = 256
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the three hidden layers of every network."""
    actor_lr: float = 1e-4
    """Policy learning rate (also the entropy temperature's)."""
    critic_lr: float = 3e-4
    """Learning rate of the Q-functions (also alpha' of the Lagrange variant)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target Q-functions."""
    regularizer_weight: float = 5.0
    """Weight alpha_cql of the conservative term (the paper's alpha, the official `min_q_weight`); with Lagrange it
    scales the gap."""
    lagrange_threshold: float = -1.0
    """Threshold on alpha_cql * gap for CQL-Lagrange (tunes alpha' automatically); negative turns it off."""
    num_action_samples: int = 10
    """Samples N of each kind (uniform, pi(.|s), pi(.|s')) per state in the log-sum-exp."""
    logsumexp_temperature: float = 1.0
    """Temperature temp of the log-sum-exp (the official code's `temp`)."""
    bc_steps: int = 40_000
    """Initial updates that train the policy by behaviour cloning (official `policy_eval_start`)."""
    backup_entropy: bool = False
    """Subtract alpha * log pi(a'|s') in the Bellman target (off: the official deterministic backup)."""
    target_action: Literal["sample", "mean"] = "sample"
    """Action a' of the Bellman target: a sample of pi(.|s') (the official code) or tanh of its mean (d3rlpy's)."""
    init: Literal["rlkit", "torch"] = "rlkit"
    """Weight init: rlkit's (the official code; details below) or torch (nn.Linear's default, as d3rlpy's CQL)."""
    update_order: Literal["authors", "critic-first"] = "authors"
    """authors: temperature, actor and critics each from the networks as they were at the start of the update
    (the official code); critic-first: the critics step first and the actor reads the updated critics (d3rlpy)."""
    log_std_min: float = -5.0
    """Floor of the policy's log-std (rlkit's -5; d3rlpy's is -20)."""
    target_entropy: float | None = None
    """Target entropy of the automatic temperature tuning (default -|A|)."""
    reward_scale: bool = False
    """Rescale rewards by 1000 / (max - min episode return) like IQL (the official CQL code does not)."""
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
    require(math.isfinite(args.regularizer_weight) and args.regularizer_weight >= 0.0, "regularizer_weight",
            "must be >= 0", args.regularizer_weight)
    require(math.isfinite(args.lagrange_threshold), "lagrange_threshold",
            "must be a number (negative turns CQL-Lagrange off)", args.lagrange_threshold)
    require(isinstance(args.num_action_samples, int) and args.num_action_samples >= 1, "num_action_samples",
            "must be an integer >= 1", args.num_action_samples)
    require(math.isfinite(args.logsumexp_temperature) and args.logsumexp_temperature > 0.0, "logsumexp_temperature",
            "must be positive", args.logsumexp_temperature)
    require(isinstance(args.bc_steps, int) and args.bc_steps >= 0, "bc_steps", "must be an integer >= 0",
            args.bc_steps)
    require(args.target_entropy is None or math.isfinite(args.target_entropy), "target_entropy",
            "must be a finite number", args.target_entropy)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)
    require(args.target_action in ("sample", "mean"), "target_action", "must be 'sample' or 'mean'", args.target_action)
    require(not (args.backup_entropy and args.target_action == "mean"), "target_action",
            "must be 'sample' with --backup-entropy (its term needs log pi of a sampled a')", args.target_action)
    require(args.init in ("rlkit", "torch"), "init", "must be 'rlkit' or 'torch'", args.init)
    require(args.update_order in ("authors", "critic-first"), "update_order", "must be 'authors' or 'critic-first'",
            args.update_order)
    require(math.isfinite(args.log_std_min) and args.log_std_min < LOG_STD_MAX, "log_std_min",
            f"must be a number below the log-std ceiling {LOG_STD_MAX}", args.log_std_min)
    require(isinstance(args.online_steps, int) and args.online_steps >= 0, "online_steps", "must be an integer >= 0",
            args.online_steps)
    require(isinstance(args.utd_ratio, int) and args.utd_ratio >= 1, "utd_ratio", "must be an integer >= 1",
            args.utd_ratio)
    require(args.online_steps == 0 or args.eval_episodes == 0 or args.total_steps % args.eval_every == 0,
            "eval_every", "must divide --total-steps with --online-steps (the offline score is the evaluation at "
            "the switch)", args.eval_every)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
MEAN_MIN, MEAN_MAX = -9.0, 9.0  # rlkit clips the pre-tanh mean in the log-probability of dataset actions


def rlkit_init(layer: nn.Linear, last_bound: float | None = None, rlkit: bool = True) -> nn.Linear:
    """Hidden: W ~ U(+-1/sqrt(out_features)) (rlkit's fanin_init on [out, in]), b = 0.1; last: W, b ~ U(+-bound).
    With rlkit=False the layer keeps nn.Linear's default init (--init torch)."""
    if not rlkit:
        return layer
    bound = 1.0 / math.sqrt(layer.out_features) if last_bound is None else last_bound
    nn.init.uniform_(layer.weight, -bound, bound)
    if last_bound is None:
        nn.init.constant_(layer.bias, 0.1)
    else:
        nn.init.uniform_(layer.bias, -bound, bound)
    return layer


class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int, last_bound: float | None = None, rlkit: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        for i in range(n):  # each member initialized as rlkit (or PyTorch) initializes a separate nn.Linear
            layer = rlkit_init(nn.Linear(in_dim, out_dim), last_bound, rlkit)
            self.weight.data[i] = layer.weight.data.T
            self.bias.data[i, 0] = layer.bias.data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """Q_1..Q_n(s, a) as one module; returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2, rlkit: bool = True):
        super().__init__()
        self.n = n
        self.net = nn.Sequential(EnsembleLinear(n, obs_dim + act_dim, hidden, rlkit=rlkit), nn.ReLU(),
                                 EnsembleLinear(n, hidden, hidden, rlkit=rlkit), nn.ReLU(),
                                 EnsembleLinear(n, hidden, hidden, rlkit=rlkit), nn.ReLU(),
                                 EnsembleLinear(n, hidden, 1, last_bound=3e-3, rlkit=rlkit))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


class TanhGaussianPolicy(nn.Module):
    """tanh(z), z ~ N(mu(s), exp(log_std(s))^2): rlkit's TanhGaussianPolicy (3x256, log-std in [-5, 2])."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, rlkit: bool = True, log_std_min: float = LOG_STD_MIN):
        super().__init__()
        self.log_std_min = log_std_min
        self.trunk = nn.Sequential(rlkit_init(nn.Linear(obs_dim, hidden), rlkit=rlkit), nn.ReLU(),
                                   rlkit_init(nn.Linear(hidden, hidden), rlkit=rlkit), nn.ReLU(),
                                   rlkit_init(nn.Linear(hidden, hidden), rlkit=rlkit), nn.ReLU())
        self.mean = rlkit_init(nn.Linear(hidden, act_dim), last_bound=1e-3, rlkit=rlkit)
        self.log_std = rlkit_init(nn.Linear(hidden, act_dim), last_bound=1e-3, rlkit=rlkit)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.mean(h), self.log_std(h).clamp(self.log_std_min, LOG_STD_MAX)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean(self.trunk(obs)))


def sample_actions(mean: torch.Tensor, log_std: torch.Tensor, n: int | None = None):
    """Reparameterized a = tanh(mean + std eps) and log pi(a|s); n samples per state -> [n, B, A], [n, B]."""
    eps = torch.randn(mean.shape if n is None else (n, *mean.shape), device=mean.device)
    z = mean + log_std.exp() * eps
    act = torch.tanh(z)
    # log N(z; mean, std) with (z - mean) / std = eps, minus the tanh Jacobian log(1 - tanh(z)^2 + 1e-6)
    log_prob = -0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi) - torch.log(1 - act**2 + 1e-6)
    return act, log_prob.sum(-1)


def backup_action(mean: torch.Tensor, log_std: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """a' at s' for the Bellman target and log pi of the sample: a' ~ pi(.|s') (official), or with how="mean"
    a' = tanh(mean) (d3rlpy's deterministic backup; the sample is still drawn, so the random stream is the same)."""
    act, log_prob = sample_actions(mean, log_std)
    return (torch.tanh(mean) if how == "mean" else act), log_prob


def log_prob_of(mean: torch.Tensor, log_std: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of given actions in (-1, 1): clipped to +-(1 - 1e-6) before atanh, mean clipped to [-9, 9]."""
    act = act.clamp(-1 + 1e-6, 1 - 1e-6)
    z, mean = torch.atanh(act), mean.clamp(MEAN_MIN, MEAN_MAX)
    log_normal = -0.5 * ((z - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return (log_normal - torch.log(1 - act**2 + 1e-6)).sum(-1)


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def td_loss(q_data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[(Q_i(s, a) - y)^2] per critic: q_data = [n, B] Q_i(s, a), target = [B] y (no gradient). Returns [n]."""
    return ((q_data - target.detach()) ** 2).mean(-1)


def cql_gap(q_rand: torch.Tensor, q_pi_next: torch.Tensor, q_pi: torch.Tensor, logp_next: torch.Tensor,
            logp: torch.Tensor, q_data: torch.Tensor, act_dim: int, temp: float) -> torch.Tensor:
    """gap_i = E_s[temp logsumexp_a((Q_i(s, a) - log mu(a|s)) / temp)] - E_D[Q_i(s, a)]  (CQL(H), Eq. 4,
    importance-sampled). q_rand, q_pi_next, q_pi: [n, N, B] Q_i(s, .) at uniform actions, actions ~ pi(.|s')
    and actions ~ pi(.|s); logp_next, logp: [N, B] their log-densities; q_data: [n, B]. Returns [n]."""
    log_uniform = act_dim * math.log(0.5)  # log density of U[-1, 1]^|A|
    cat = torch.cat([q_rand - log_uniform, q_pi_next - logp_next.detach(), q_pi - logp.detach()], dim=1)
    return temp * torch.logsumexp(cat / temp, dim=1).mean(-1) - q_data.mean(-1)


def lagrange_loss(alpha_prime: torch.Tensor, gap: torch.Tensor, alpha_cql: float, threshold: float) -> torch.Tensor:
    """-1/2 sum_i alpha' (alpha_cql gap_i - threshold): minimizing it raises alpha' while gap > threshold."""
    return -0.5 * (alpha_prime * (alpha_cql * gap.detach() - threshold)).sum()


def sac_actor_loss(log_pi: torch.Tensor, q_min: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """L_pi = E_s[alpha log pi(a~|s) - min_i Q_i(s, a~)], a~ ~ pi(.|s) reparameterized."""
    return (alpha.detach() * log_pi - q_min).mean()


def bc_actor_loss(log_pi: torch.Tensor, log_prob_data: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """L_pi = E_(s,a)~D[alpha log pi(a~|s) - log pi(a|s)], the first bc_steps updates."""
    return (alpha.detach() * log_pi - log_prob_data).mean()


def alpha_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """L_alpha = -E_s[log alpha (log pi(a~|s) + target_entropy)]  (SAC's automatic entropy tuning)."""
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "cql")
        online_run = json.loads(state["args"]).get("online_steps", 0) > 0
        args = resumed_args(Args, args, "cql", state,  # the run continues with its own saved settings
                            fixed_length="the online phase starts after --total-steps updates" if online_run else None)
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: raw rewards (optionally rescaled), raw observations, like the official code.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    if args.online_steps > 0:
        require_environment(data)  # before anything else is said about the data
    total_updates = args.total_steps + args.online_steps * args.utd_ratio  # offline, then online (detail 12)
    evaluator = Evaluator(data, dataclasses.replace(args, total_steps=total_updates), "cql")  # says what it cannot do
    if data.actions.dtype.kind != "f":
        raise DatasetError(f"dataset {args.dataset!r} has discrete actions; cql.py needs continuous actions in [-1, 1]")
    scale = return_range_scale(data) if args.reward_scale else 1.0
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, rewards=data.rewards * scale,
                                 capacity=len(data) + args.online_steps if args.online_steps else None)
    env = explore_gen = None
    if args.online_steps > 0:  # the environment and the generator of the exploring actions (detail 12)
        env = OnlineEnv(data, args.seed, evaluator.score)
        explore_gen = torch.Generator(device=device)
        explore_gen.manual_seed(args.seed + 2)
    obs_dim, act_dim, n_act = data.obs_dim, data.act_dim, args.num_action_samples
    target_entropy = -float(act_dim) if args.target_entropy is None else args.target_entropy
    lagrange = args.lagrange_threshold >= 0

    rlkit = args.init == "rlkit"
    q = EnsembleQ(obs_dim, act_dim, args.hidden_dim, rlkit=rlkit).to(device)
    q_target = EnsembleQ(obs_dim, act_dim, args.hidden_dim, rlkit=rlkit).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    policy = TanhGaussianPolicy(obs_dim, act_dim, args.hidden_dim, rlkit=rlkit, log_std_min=args.log_std_min).to(device)
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    log_alpha_prime = torch.zeros(1, device=device, requires_grad=True)  # used only with Lagrange
    q_opt = adam(q.parameters(), args.critic_lr, device)
    pi_opt = adam(policy.parameters(), args.actor_lr, device)
    alpha_opt = adam([log_alpha], args.actor_lr, device)
    alpha_prime_opt = adam([log_alpha_prime], args.critic_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("q", q), ("q_target", q_target), ("policy", policy), ("q_opt", q_opt),
                              ("pi_opt", pi_opt), ("alpha_opt", alpha_opt), ("alpha_prime_opt", alpha_prime_opt),
                              ("buffer", buffer)):
                obj.load_state_dict(state[name])
            if env is not None:
                explore_gen.set_state(state["explore_rng"])
                env.load_state_dict(state["online_env"])  # replays the running episode: the env as it was
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        with torch.no_grad():
            log_alpha.copy_(state["log_alpha"])
            log_alpha_prime.copy_(state["log_alpha_prime"])
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("cql", args.dataset, args.seed)
    run = Run(run_dir, args, "cql", total_updates, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    # The two halves of an update, defined here rather than inside update(): torch.compile (2.13) fails on a graph
    # break (each .backward()) in a function created inside the compiled one once a process loads the script twice.
    def actor_step(obs, act, mean, log_std, new_act, new_logp, bc: bool):
        """The temperature, then the policy (on the critics as they are now); mean, log_std: pi's at s."""
        a_loss = alpha_loss(log_alpha, new_logp, target_entropy)
        alpha_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        alpha_opt.step()
        alpha = log_alpha.exp().detach()  # the freshly updated temperature, as in the official code

        if bc:
            pi_loss = bc_actor_loss(new_logp, log_prob_of(mean, log_std, act), alpha)
        else:
            pi_loss = sac_actor_loss(new_logp, q(obs, new_act).min(0).values, alpha)
        pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()  # also leaves gradients on Q's weights; q_opt.zero_grad discards them
        pi_opt.step()
        return alpha, {"loss/actor": pi_loss, "loss/alpha": a_loss, "alpha": alpha.squeeze()}

    def critic_step(obs, act, rew, next_obs, done, next_act, next_logp, cql_act, cql_logp, alpha):
        """The critics: TD to the target critics' backup plus the conservative term; cql_act, cql_logp: the N
        samples at s (the first B) and at s' (the last B)."""
        B = obs.shape[0]
        with torch.no_grad():
            next_q = q_target(next_obs, next_act).min(0).values
            if args.backup_entropy:
                next_q = next_q - alpha * next_logp
            target = rew + args.gamma * (1.0 - done) * next_q
        # Both critics at s on [dataset action, N uniform, N ~ pi(.|s'), N ~ pi(.|s)]: one batched forward.
        rand_act = torch.rand(n_act, B, act_dim, device=obs.device) * 2 - 1
        acts = torch.cat([act.unsqueeze(0), rand_act, cql_act[:, B:], cql_act[:, :B]])  # [1 + 3N, B, A]
        q_all = q(obs.repeat(1 + 3 * n_act, 1), acts.reshape(-1, act_dim)).view(q.n, 1 + 3 * n_act, B)
        q_data, q_rand = q_all[:, 0], q_all[:, 1:1 + n_act]
        q_pi_next, q_pi = q_all[:, 1 + n_act:1 + 2 * n_act], q_all[:, 1 + 2 * n_act:]
        td = td_loss(q_data, target)
        gap = cql_gap(q_rand, q_pi_next, q_pi, cql_logp[:, B:], cql_logp[:, :B], q_data, act_dim,
                      args.logsumexp_temperature)

        metrics = {}
        if lagrange:
            alpha_prime = log_alpha_prime.exp().clamp(0.0, 1e6)
            cql = alpha_prime.detach() * (args.regularizer_weight * gap - args.lagrange_threshold)
            ap_loss = lagrange_loss(alpha_prime, gap, args.regularizer_weight, args.lagrange_threshold)
            metrics = {"loss/alpha_prime": ap_loss, "alpha_prime": alpha_prime.detach().squeeze()}
        else:
            cql = args.regularizer_weight * gap
        qf_loss = (td + cql).sum()
        q_opt.zero_grad(set_to_none=True)
        if lagrange:  # one backward for both: neither loss reaches the other's parameters (each reads the other's
            # input detached), so the gradients are two backward passes'; a compiled update computes both losses
            # in one graph, which it can backpropagate through only once
            alpha_prime_opt.zero_grad(set_to_none=True)
            (qf_loss + ap_loss).backward()
            alpha_prime_opt.step()
        else:
            qf_loss.backward()
        q_opt.step()
        return metrics | {"loss/q": td.sum(), "loss/cql": cql.sum(), "cql_gap": gap.mean(),
                          "q_data": q_data.mean().detach(), "q_rand": q_rand.mean().detach()}

    def update(bc: bool) -> dict[str, torch.Tensor]:  # bc: the policy's behaviour-cloning warm-up
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        B = obs.shape[0]
        # One policy pass on s and s'; every sample below comes from these means and standard deviations.
        mean, log_std = policy(torch.cat([obs, next_obs]))
        new_act, new_logp = sample_actions(mean[:B], log_std[:B])  # a~ ~ pi(.|s), with gradient (actor)
        with torch.no_grad():
            next_act, next_logp = backup_action(mean[B:], log_std[B:], args.target_action)  # a' for the backup
            cql_act, cql_logp = sample_actions(mean, log_std, n_act)  # [N, 2B, A]: N per state of s and s'
        critic_inputs = (obs, act, rew, next_obs, done, next_act, next_logp, cql_act, cql_logp)

        if args.update_order == "authors":
            alpha, actor_metrics = actor_step(obs, act, mean[:B], log_std[:B], new_act, new_logp, bc)
            critic_metrics = critic_step(*critic_inputs, alpha)
        else:  # d3rlpy: the critics first (a soft backup reads the temperature before its step), then the actor
            critic_metrics = critic_step(*critic_inputs, log_alpha.exp().detach())
            _, actor_metrics = actor_step(obs, act, mean[:B], log_std[:B], new_act, new_logp, bc)

        with torch.no_grad():
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
        return actor_metrics | critic_metrics | {"entropy": -new_logp.mean().detach()}

    def env_step() -> None:
        """One online step: a ~ pi(.|s) from the exploring generator, the transition appended to the buffer."""
        with torch.no_grad():
            mean, log_std = policy(torch.as_tensor(env.obs, device=device).unsqueeze(0))
            eps = torch.randn(mean.shape, device=device, generator=explore_gen)
            action = torch.tanh(mean + log_std.exp() * eps)[0].cpu().numpy()
        obs, reward, next_obs, terminated, ended = env.step(action)
        buffer.add(obs, action, reward * scale, next_obs, terminated)
        if ended is not None:
            run.log(step, {"online/return": ended["return"], "env_step": env.env_steps}
                    | ({} if ended["score"] is None else {"online/score": ended["score"]})
                    | ({} if env.regret() is None else {"online/regret": env.regret()}))

    policy_fn = policy_function(policy, device)

    def save() -> None:
        online = {} if env is None else {"explore_rng": explore_gen.get_state(), "online_env": env.state_dict()}
        save_checkpoint(run_dir / "checkpoint.pt", {
            "q": q.state_dict(), "q_target": q_target.state_dict(), "policy": policy.state_dict(),
            "log_alpha": log_alpha.detach(), "log_alpha_prime": log_alpha_prime.detach(), "q_opt": q_opt.state_dict(),
            "pi_opt": pi_opt.state_dict(), "alpha_opt": alpha_opt.state_dict(),
            "alpha_prime_opt": alpha_prime_opt.state_dict(),
            "buffer": buffer.state_dict(rows_from=len(data) if env is not None else None),  # + the online rows
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "cql", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": obs_dim, "act_dim": act_dim, "reward_scale": scale} | online)

    def evaluate_now() -> dict:
        record = evaluator(policy_fn, step, run)
        return record if env is None else record | {"env_step": env.env_steps}

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < total_updates:
            if step < args.total_steps:
                metrics = update_fn(bc=step < args.bc_steps)
            else:  # online: an environment step before every utd_ratio updates, then eager updates (detail 12)
                if (step - args.total_steps) % args.utd_ratio == 0:
                    env_step()
                metrics = update(bc=step < args.bc_steps)
            step += 1
            if step % args.log_every == 0:
                run.log(step, {k: v.item() for k, v in metrics.items()}
                        | {"updates_per_s": (step - start_step) / (time.time() - start_time)})
                run.advance(args.log_every)
            if step == total_updates:
                save()  # the final checkpoint comes before the final evaluation: a failure there loses nothing
            if evaluator.due(step, evals):
                evals.append(evaluate_now())
            if run.checkpoint_due(step) or stop:
                save()
            if stop:
                run.close()
                raise stop.exit(resume_command(__file__, run_dir), step)
    if evaluator.due(step, evals):  # resumed from a final checkpoint whose evaluation did not finish
        evals.append(evaluate_now())
        save()
    run.advance(step - run.progress.n)
    final = evals[-1] if evals else {"score": None, "return": None}  # no evaluation: losses only
    result = {"algo": "cql", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    if env is not None:
        offline = next((e for e in evals if e["step"] == args.total_steps), None)
        result["online"] = {"env_steps": env.env_steps, "episodes": env.finished, "regret": env.regret(),
                            "offline_score": None if offline is None else offline["score"]}
        env.close()
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"cql {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class DeterministicPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> the policy's mean actions
    [n, act_dim], clipped to [-1, 1]. Its forward is the whole policy, so it exports as it is (benchmarks/export.py)."""

    def __init__(self, policy: TanhGaussianPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act(obs).clamp(-1, 1)


def policy_function(policy: TanhGaussianPolicy, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim] -> deterministic actions [n, act_dim] in [-1, 1]
    (`.module`: the same policy as one nn.Module on tensors, a DeterministicPolicy)."""
    module = DeterministicPolicy(policy)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: one nn.Module)."""
    state = load_policy_checkpoint(run_dir, "cql")
    args = Args(**upgrade_args("cql", json.loads(state["args"])))
    policy = TanhGaussianPolicy(state["obs_dim"], state["act_dim"], args.hidden_dim, rlkit=args.init == "rlkit",
                                log_std_min=args.log_std_min).to(device)
    policy.load_state_dict(state["policy"])
    return policy_function(policy.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
