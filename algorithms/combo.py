"""COMBO: Conservative Offline Model-Based Policy Optimization (CQL on real data and model rollouts).

Yu, Kumar, Rafailov, Rajeswaran, Levine, Finn. "COMBO: Conservative Offline Model-Based Policy Optimization."
NeurIPS 2021. arXiv:2102.08363. No official code was released; the reference implementation is OfflineRL-Kit's
(github.com/yihaosun1124/OfflineRL-Kit, offlinerlkit/policy/model_based/combo.py, run_example/run_combo.py).

COMBO learns the same probabilistic dynamics ensemble as MOPO and rolls the policy out in it, but instead of
penalizing model rewards by an uncertainty estimate it regularizes the critic as CQL does: Q is pushed down on
state-actions from the model rollouts (where the policy goes) and up on the dataset's state-actions, so the
value of what the model invents is conservative without having to quantify the model's error:

    Dynamics and rollouts: as mopo.py (E Gaussian members over (s' - s, r), learned log-variance bounds, MBPO's
      early stopping and elites; h-step rollouts from dataset states, stopping at terminal states), no penalty.
    d_f = f D + (1 - f) d_model  (each minibatch: f real transitions, the rest from the model buffer)
    gap_j     = E_{s~d_f}[ temp log sum_{a in A_s} exp( (Q_j(s, a) - log mu(a|s)) / temp ) ] - E_{(s,a)~D}[ Q_j(s, a) ]
                A_s: N actions ~ U[-1, 1]^|A|, N ~ pi(.|s), N ~ pi(.|s'), all evaluated at s
    L_Q(theta) = sum_j ( E_{d_f}[ (Q_j(s, a) - y)^2 ] + beta gap_j ),  y = r + gamma (1 - d) min_k Qbar_k(s', a'),
                 a' ~ pi(.|s')
    L_pi(phi)  = E_{s~d_f}[ alpha log pi(a~|s) - min_j Q_j(s, a~) ],  L_alpha = -E[ log alpha (log pi(a~|s) + H) ]

Implementation details (from OfflineRL-Kit unless marked "deviation"):
 1. The dynamics model, its training (MBPO's: 7 members of 4 x 200 swish layers, learned log-variance bounds,
    per-layer weight decay, bootstrap resamples, a min(20%, 5000) holdout, early stopping once no member improves
    its holdout MSE by 1% for more than 5 epochs, each member's best weights, 5 elites), the rollouts
    (`rollout_batch` 50,000 dataset states every 1,000 updates, h steps of the current policy's sampled actions,
    each step from a random elite, stopping at terminal states) and the model buffer (5 rollouts' worth) are
    mopo.py's (its details 1-5 and 8; this script carries its own copy, so that it stands alone). The model is
    trained once per run, saved as `dynamics.pt`, not retrained on resume, and `--dynamics-path` reuses one (a
    mopo.py run's too: the file is the same). Its training stops on Ctrl-C or SIGTERM after the step in progress,
    saving its state to `dynamics_training.pt` (also every `--dynamics-checkpoint-every` = 5 epochs), and
    `--resume` continues it exactly (mopo.py's detail 3). The rewards are the model's own: no uncertainty penalty
    (the mean uncertainty of each rollout is still logged, as `model_uncertainty`).
 2. Minibatch of 256: f = `real_ratio` = 0.5 real, the rest model transitions. The conservative term's soft
    maximum is taken at the states of the whole minibatch (OfflineRL-Kit's `rho_s="mix"`), its push-up term at
    the real transitions only; the TD loss and the actor's loss use the whole minibatch.
 3. The soft maximum is CQL(H)'s importance-sampled log-sum-exp (each Q minus the log-density of its proposal,
    without gradient) over N = 10 uniform actions, 10 samples of pi(.|s) and 10 of pi(.|s') (all at s),
    temperature 1; beta multiplies the whole gap (push-down and push-up). No Lagrange variant, no max-Q backup.
 4. Order of one update (OfflineRL-Kit's): the policy step (with the temperature before its step), then the
    temperature, then the critics, whose target action and conservative samples come from the updated policy;
    then Polyak averaging (tau 0.005). Deterministic backup (no entropy term in the target).
 5. Networks: twin Q and a tanh-Gaussian policy, 3 hidden layers of 256 with ReLU, torch's default init; the
    policy's log-std is clamped to [-5, 2]. Actor lr 1e-4, critic lr 3e-4, temperature lr 1e-4, automatic
    entropy tuning towards -|A|. Deviation: OfflineRL-Kit's Q loss is per critic with its own Adam; here one
    Adam over both (identical: each loss touches one critic).
 6. No reward or observation normalization for the agent.
 7. Deviation: evaluation runs 10 episodes every 5,000 updates; training is 1M updates (1000 epochs x 1000).

Rollout length h and conservative weight beta are OfflineRL-Kit's suggested ones per dataset (said to follow the
paper) unless given: halfcheetah medium 5/0.5, medium-replay 5/0.5, medium-expert 5/5; hopper medium 5/5,
medium-replay 5/0.5, medium-expert 5/5; walker2d medium 1/5, medium-replay 1/0.5, medium-expert 1/5
(PAPER_SETTINGS). A dataset id ending in <env>/<level>-v<N> (stitch/hopper/medium-v0, mujoco/hopper/medium-v0)
gets its environment's and level's; any other dataset (random and expert levels, logged data) gets (5, 0.5), the
hopper-medium-replay setting. The run prints which it used and records them in args.json.

Usage:
    python algorithms/combo.py                                       # stitch/hopper/medium-replay-v0
    python algorithms/combo.py --dataset stitch/hopper/medium-v0 --seed 1           # h 5, beta 5 (suggested)
    python algorithms/combo.py --dataset stitch/hopper/medium-v0 --regularizer-weight 1    # h 5, beta 1
    python algorithms/combo.py --dataset stitch/walker2d/medium-replay-v0 \\
        --dynamics-path runs/mopo__stitch-walker2d-medium-replay-v0__s0__20261207-120000/dynamics.pt
    python algorithms/combo.py --resume runs/combo__stitch-hopper-medium-replay-v0__s0__20261207-120000
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
import torch.nn.functional as F
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from common.buffer import Buffer  # noqa: E402
from common.checkpoints import (CheckpointError, load_checkpoint, load_policy_checkpoint,  # noqa: E402
                                load_run_checkpoint, resumed_args, rng_state, save_checkpoint, set_rng_state)
from common.config import ArgumentError, check_common, require, resolve_device  # noqa: E402
from common.data import DatasetError, load_dataset  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.files import remove_orphans  # noqa: E402
from common.fast import adam, fast_update  # noqa: E402
from common.interrupt import StopSignal, resume_command  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for the dynamics model, minibatch sampling, rollouts, policy samples, and evaluation."""
    total_steps: int = 1_000_000
    """Number of agent gradient updates (the dynamics model's training comes before and is not counted)."""
    batch_size: int = 256
    """Minibatch size of the agent (real and model transitions together)."""
    hidden_dim: int = 256
    """Width of the three hidden layers of the policy and the Q-functions."""
    actor_lr: float = 1e-4
    """Policy learning rate (also the entropy temperature's)."""
    critic_lr: float = 3e-4
    """Learning rate of the Q-functions."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target Q-functions."""
    target_entropy: float | None = None
    """Target entropy H of the automatic temperature tuning (None: -|A|)."""
    regularizer_weight: float | None = None
    """Weight beta of the conservative term (push Q down at model-rollout states, up on the data's (s, a)).
    None: the suggested one for the dataset (PAPER_SETTINGS), else 0.5."""
    num_action_samples: int = 10
    """Samples N of each kind (uniform, pi(.|s), pi(.|s')) per state in the log-sum-exp."""
    logsumexp_temperature: float = 1.0
    """Temperature temp of the log-sum-exp."""
    rollout_length: int | None = None
    """Length h of the branched model rollouts. None: the suggested one for the dataset (PAPER_SETTINGS), else 5."""
    rollout_batch: int = 50_000
    """Dataset states each rollout starts from."""
    rollout_freq: int = 1_000
    """Updates between rollouts (the first comes before update 1)."""
    model_retain_epochs: int = 5
    """Rollouts the model buffer holds (its capacity is rollout_batch x rollout_length x this)."""
    real_ratio: float = 0.5
    """Fraction f of each minibatch drawn from the dataset; the rest from the model buffer."""
    termination: Literal["auto", "hopper", "walker2d", "halfcheetah", "invertedpendulum", "never"] = "auto"
    """Termination function of model rollouts: auto (from the dataset's environment), a task's, or never."""
    ensemble_size: int = 7
    """Members of the dynamics ensemble."""
    num_elites: int = 5
    """Members with the lowest holdout error that rollouts sample from."""
    dynamics_hidden_dim: int = 200
    """Width of the four hidden layers of each dynamics member."""
    dynamics_lr: float = 1e-3
    """Learning rate of the dynamics ensemble."""
    dynamics_batch_size: int = 256
    """Minibatch size of the dynamics ensemble's training."""
    holdout_ratio: float = 0.2
    """Fraction of transitions held out to early-stop the dynamics and pick its elites (at most 5000)."""
    max_epochs_since_update: int = 5
    """Dynamics training stops once no member's holdout MSE has improved by 1% for more than this many epochs."""
    max_dynamics_epochs: int | None = None
    """Cap on the dynamics training epochs (None: train to early stopping)."""
    dynamics_path: str | None = None
    """A trained dynamics.pt (or a run folder holding one) to reuse instead of training a new model."""
    dynamics_checkpoint_every: int = 5
    """Dynamics-training epochs between checkpoints of its state (one is also written on Ctrl-C or SIGTERM; 0: only
    then)."""
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
    """Compile the update with torch.compile; on CUDA also capture it as one CUDA graph and replay it. The dynamics
    model's training loss is compiled too."""
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


# OfflineRL-Kit's suggested (h, beta) per D4RL dataset (run_example/run_combo.py), by environment and level.
PAPER_SETTINGS = {
    "halfcheetah": {"medium": (5, 0.5), "medium-replay": (5, 0.5), "medium-expert": (5, 5.0)},
    "hopper": {"medium": (5, 5.0), "medium-replay": (5, 0.5), "medium-expert": (5, 5.0)},
    "walker2d": {"medium": (1, 5.0), "medium-replay": (1, 0.5), "medium-expert": (1, 5.0)},
}
OTHER_SETTING = (5, 0.5)  # any other dataset: the hopper-medium-replay setting


def paper_setting(dataset: str) -> tuple[int, float] | None:
    """The suggested (h, beta) for a dataset id ending in <env>/<level>-v<N>, or None."""
    parts = dataset.split("/")
    level = parts[-1].rsplit("-v", 1)[0]
    return PAPER_SETTINGS.get(parts[-2], {}).get(level) if len(parts) >= 2 else None


def with_dataset_settings(args: Args) -> Args:
    """args with --rollout-length and --regularizer-weight filled in where not given (None), and a line saying so."""
    if args.rollout_length is not None and args.regularizer_weight is not None:
        return args
    paper = paper_setting(args.dataset)
    h, beta = paper or OTHER_SETTING
    args = dataclasses.replace(args, rollout_length=h if args.rollout_length is None else args.rollout_length,
                               regularizer_weight=beta if args.regularizer_weight is None else args.regularizer_weight)
    where = "the suggested ones for this environment and level" if paper else "the default for datasets without " \
        "suggested ones"
    print(f"combo: rollout length {args.rollout_length}, regularizer weight {args.regularizer_weight} (unset flags: "
          f"{where})", flush=True)
    return args


def check_args(args: Args) -> None:
    check_common(args)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)
    require(args.target_entropy is None or math.isfinite(args.target_entropy), "target_entropy",
            "must be a finite number", args.target_entropy)
    require(math.isfinite(args.regularizer_weight) and args.regularizer_weight >= 0.0, "regularizer_weight",
            "must be >= 0", args.regularizer_weight)
    require(isinstance(args.num_action_samples, int) and args.num_action_samples >= 1, "num_action_samples",
            "must be an integer >= 1", args.num_action_samples)
    require(math.isfinite(args.logsumexp_temperature) and args.logsumexp_temperature > 0.0, "logsumexp_temperature",
            "must be positive", args.logsumexp_temperature)
    check_model_args(args, real_min=1)  # the push-up term needs real transitions


def check_model_args(args, real_min: int) -> None:
    """The flags of the dynamics model and the rollouts (the same in mopo.py and combo.py)."""
    for f in ("rollout_length", "rollout_batch", "rollout_freq", "model_retain_epochs", "ensemble_size",
              "num_elites", "dynamics_hidden_dim", "dynamics_batch_size", "max_epochs_since_update"):
        v = getattr(args, f)
        require(isinstance(v, int) and v > 0, f, "must be a positive integer", v)
    require(args.num_elites <= args.ensemble_size, "num_elites", f"must be at most --ensemble-size "
            f"{args.ensemble_size}", args.num_elites)
    require(args.max_dynamics_epochs is None or (isinstance(args.max_dynamics_epochs, int)
                                                 and args.max_dynamics_epochs > 0),
            "max_dynamics_epochs", "must be a positive integer (or None: until early stopping)",
            args.max_dynamics_epochs)
    require(args.dynamics_lr > 0, "dynamics_lr", "must be positive", args.dynamics_lr)
    require(isinstance(args.dynamics_checkpoint_every, int) and args.dynamics_checkpoint_every >= 0,
            "dynamics_checkpoint_every", "must be an integer >= 0", args.dynamics_checkpoint_every)
    require(0.0 < args.holdout_ratio < 1.0, "holdout_ratio", "must be in (0, 1)", args.holdout_ratio)
    n_real = int(args.batch_size * args.real_ratio)
    require(0.0 <= args.real_ratio < 1.0 and n_real >= real_min and n_real < args.batch_size, "real_ratio",
            f"must be in [0, 1) and leave {real_min} to {args.batch_size - 1} real transitions in a minibatch of "
            f"{args.batch_size}", args.real_ratio)
    require(args.termination in TERMINATION or args.termination == "auto", "termination",
            f"must be auto, {', '.join(TERMINATION)}", args.termination)
    require(args.dynamics_path is None or (Path(args.dynamics_path).is_file()
                                           or (Path(args.dynamics_path) / "dynamics.pt").is_file()),
            "dynamics_path", "must be a dynamics.pt file or a run folder holding one", args.dynamics_path)


# ----------------------------------------------------------------------------------------------
# Termination functions (MOPO's authors' mopo/static/*.py): which predicted next states end an episode
# ----------------------------------------------------------------------------------------------
def hopper_done(next_obs: torch.Tensor) -> torch.Tensor:
    """Hopper: healthy while height > 0.7, |angle| < 0.2, and every later entry finite and below 100 in size."""
    height, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (torch.isfinite(next_obs).all(-1) & (next_obs[:, 1:].abs() < 100).all(-1)
               & (height > 0.7) & (angle.abs() < 0.2))
    return ~healthy


def walker2d_done(next_obs: torch.Tensor) -> torch.Tensor:
    """Walker2d: healthy while 0.8 < height < 2.0 and -1 < angle < 1."""
    height, angle = next_obs[:, 0], next_obs[:, 1]
    return ~((height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0))


def inverted_pendulum_done(next_obs: torch.Tensor) -> torch.Tensor:
    """InvertedPendulum (not the authors'; Gymnasium's own rule): healthy while finite and |angle| <= 0.2."""
    return ~(torch.isfinite(next_obs).all(-1) & (next_obs[:, 1].abs() <= 0.2))


def never_done(next_obs: torch.Tensor) -> torch.Tensor:
    """HalfCheetah (and --termination never): no state is terminal."""
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


TERMINATION: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hopper": hopper_done, "walker2d": walker2d_done, "halfcheetah": never_done,
    "invertedpendulum": inverted_pendulum_done, "never": never_done}


def termination_function(data, how: str, algo: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The termination function `--termination` names, or with auto the one of the dataset's environment."""
    if how != "auto":
        return TERMINATION[how]
    if data.env_spec is None:
        print(f"{algo}: dataset {data.dataset_id!r} records no environment: model rollouts never terminate "
              f"(--termination names a task's termination function)", file=sys.stderr, flush=True)
        return never_done
    task = data.env_spec.id.split("-")[0].lower()
    if task not in TERMINATION or task == "never":
        raise DatasetError(f"dataset {data.dataset_id!r}: {algo}.py has no termination function for its environment "
                           f"{data.env_spec.id} (it has hopper, walker2d, halfcheetah, invertedpendulum; "
                           f"--termination never rolls out without one)")
    return TERMINATION[task]


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # OfflineRL-Kit's clamp of the policy's log-std
DECAYS = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)  # L2 weight decay of the dynamics members' five layers (MBPO)


class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]. init="torch":
    each member as nn.Linear initializes itself; "truncnormal": W ~ truncated N(0, 1 / (2 sqrt(in))^2), b = 0."""

    def __init__(self, n: int, in_dim: int, out_dim: int, init: str = "torch"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_dim))
        for i in range(n):
            if init == "torch":
                layer = nn.Linear(in_dim, out_dim)
                self.weight.data[i], self.bias.data[i, 0] = layer.weight.data.T, layer.bias.data
            else:
                std = 1.0 / (2.0 * math.sqrt(in_dim))
                nn.init.trunc_normal_(self.weight.data[i], std=std, a=-2 * std, b=2 * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """Q_1..Q_n(s, a) as one module; returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2, layers: int = 3):
        super().__init__()
        self.n = n
        dims = [obs_dim + act_dim] + [hidden] * layers
        blocks = [m for a, b in zip(dims, dims[1:]) for m in (EnsembleLinear(n, a, b), nn.ReLU())]
        self.net = nn.Sequential(*blocks, EnsembleLinear(n, hidden, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


class TanhGaussianPolicy(nn.Module):
    """tanh(z), z ~ N(mu(s), exp(log_std(s))^2), log-std clamped to [log_std_min, 2]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int = 3, log_std_min: float = LOG_STD_MIN):
        super().__init__()
        self.log_std_min = log_std_min
        dims = [obs_dim] + [hidden] * layers
        self.trunk = nn.Sequential(*[m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())])
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

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


def soft_bound_logvar(raw: torch.Tensor, max_logvar: torch.Tensor, min_logvar: torch.Tensor) -> torch.Tensor:
    """The dynamics' log-variance, softly clamped to [minlogvar, maxlogvar] with gradients everywhere:
    maxlogvar - softplus(maxlogvar - h), then minlogvar + softplus(. - minlogvar)."""
    logvar = max_logvar - F.softplus(max_logvar - raw)
    return min_logvar + F.softplus(logvar - min_logvar)


class EnsembleDynamics(nn.Module):
    """E Gaussian models of y = (s' - s, r) given (s, a), as one module: mean and log-variance [E, B, |S| + 1].
    Holds its input statistics and its elites (buffers), so a saved state dict is the whole model."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 7, num_elites: int = 5):
        super().__init__()
        self.n, self.obs_dim, self.out_dim = n, obs_dim, obs_dim + 1
        dims = [obs_dim + act_dim] + [hidden] * 4
        blocks = [m for a, b in zip(dims, dims[1:]) for m in (EnsembleLinear(n, a, b, "truncnormal"), nn.SiLU())]
        self.net = nn.Sequential(*blocks, EnsembleLinear(n, hidden, 2 * self.out_dim, "truncnormal"))
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), -10.0))
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(num_elites))

    def layers(self) -> list[EnsembleLinear]:
        return [m for m in self.net if isinstance(m, EnsembleLinear)]

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, |S|], act [B, |A|] (the same for every member), or both [E, B, .] (a batch per member)."""
        x = (torch.cat([obs, act], -1) - self.in_mean) / self.in_std
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)
        mean, raw_logvar = self.net(x).chunk(2, dim=-1)
        return mean, soft_bound_logvar(raw_logvar, self.max_logvar, self.min_logvar)

    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One model step for a batch: the next state and reward sampled from a random elite's Gaussian per state,
        and the uncertainty u = max over all members of || sigma_i ||_2."""
        mean, logvar = self(obs, act)
        std = (0.5 * logvar).exp()
        k = self.elites[torch.randint(0, len(self.elites), (obs.shape[0],), device=obs.device)]
        rows = torch.arange(obs.shape[0], device=obs.device)
        y = mean[k, rows] + std[k, rows] * torch.randn_like(obs[:, :1].expand(-1, self.out_dim))
        return obs + y[:, :-1], y[:, -1], model_uncertainty(logvar)


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def gaussian_nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per member: E[(mu - y)^2 exp(-log sigma^2)] + E[log sigma^2], averaged over the batch and the outputs
    (MBPO's loss: the Gaussian negative log-likelihood x 2 / d, without the constant). [E, B, d] -> [E]."""
    return ((mean - target) ** 2 * (-logvar).exp()).mean((1, 2)) + logvar.mean((1, 2))


def dynamics_loss(model: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor):
    """The ensemble's training loss: sum of the members' NLL, the layers' L2 decay and the log-variance bounds'
    regularizer 0.01 (sum maxlogvar - sum minlogvar). obs, act, target: [E, B, .], a minibatch per member."""
    mean, logvar = model(obs, act)
    nll = gaussian_nll(mean, logvar, target).sum()
    decay = sum(w * 0.5 * (layer.weight ** 2).sum() for w, layer in zip(DECAYS, model.layers()))
    bounds = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
    return nll + decay + bounds


def holdout_mse(model: EnsembleDynamics, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each member's MSE of its mean on held-out data, averaged over transitions and outputs: [E]."""
    with torch.no_grad():
        return ((model(obs, act)[0] - target) ** 2).mean((1, 2))


def model_uncertainty(logvar: torch.Tensor) -> torch.Tensor:
    """u(s, a) = max_i || sigma_i(s, a) ||_2 over the members (MOPO's "max aleatoric"; logged only here)."""
    return (0.5 * logvar).exp().norm(dim=-1).max(0).values


def td_loss(q_data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[(Q_j(s, a) - y)^2] per critic: q_data = [n, B] Q_j(s, a), target = [B] y (no gradient). Returns [n]."""
    return ((q_data - target.detach()) ** 2).mean(-1)


def conservative_gap(q_rand: torch.Tensor, q_pi_next: torch.Tensor, q_pi: torch.Tensor, logp_next: torch.Tensor,
                     logp: torch.Tensor, q_real: torch.Tensor, act_dim: int, temp: float) -> torch.Tensor:
    """gap_j = E_{s~d_f}[temp logsumexp_a((Q_j(s, a) - log mu(a|s)) / temp)] - E_{(s,a)~D}[Q_j(s, a)]  (COMBO, Eq. 2,
    with CQL(H)'s importance-sampled soft maximum). q_rand, q_pi_next, q_pi: [n, N, B] Q_j at the minibatch's B
    (real and model) states of uniform actions, actions ~ pi(.|s') and ~ pi(.|s); logp_next, logp: [N, B] their
    log-densities; q_real: [n, B_real] Q_j of the real transitions' (s, a). Returns [n]."""
    log_uniform = act_dim * math.log(0.5)  # log density of U[-1, 1]^|A|
    cat = torch.cat([q_rand - log_uniform, q_pi_next - logp_next.detach(), q_pi - logp.detach()], dim=1)
    return temp * torch.logsumexp(cat / temp, dim=1).mean(-1) - q_real.mean(-1)


def sac_actor_loss(log_pi: torch.Tensor, q_min: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """L_pi = E_s[alpha log pi(a~|s) - min_j Q_j(s, a~)], a~ ~ pi(.|s) reparameterized."""
    return (alpha.detach() * log_pi - q_min).mean()


def alpha_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """L_alpha = -E_s[log alpha (log pi(a~|s) + target_entropy)]  (SAC's automatic entropy tuning)."""
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()


# ----------------------------------------------------------------------------------------------
# The dynamics model: training with early stopping, saving, loading
# ----------------------------------------------------------------------------------------------
def train_dynamics(model: EnsembleDynamics, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray,
                   rewards: np.ndarray, args, generator: torch.Generator, device: torch.device,
                   log: Callable[[dict], None] = lambda record: None, resume: dict | None = None,
                   checkpoint: Callable[[dict], None] | None = None, checkpoint_every: int = 0,
                   stop=None, compile: bool = False) -> dict | None:
    """Train `model` in place on the transitions (MBPO's procedure, details 1-2); returns what the run records:
    the epochs, the seconds, the per-member holdout MSE of the kept weights and the elites.

    Interruptible (detail 3): the training state (the model, each member's best weights and MSE, the optimizer, the
    bootstrap order, `generator`, the epoch and the step within it) goes to `checkpoint(state)` after every
    `checkpoint_every`-th epoch, and once `stop` is true (a StopSignal that caught Ctrl-C or SIGTERM) after the
    gradient step in progress, and then None is returned. `resume=state` continues from such a state: the model
    ends exactly as if the training had never stopped. `compile`: the loss (forward and backward) through
    torch.compile."""
    start = time.time()
    x_obs, x_act = torch.as_tensor(obs, device=device), torch.as_tensor(act, device=device)
    y = torch.cat([torch.as_tensor(next_obs - obs, device=device),
                   torch.as_tensor(rewards, device=device).view(-1, 1)], -1)
    n = len(y)
    n_hold = max(1, min(int(n * args.holdout_ratio), 5000))
    perm = torch.randperm(n, generator=generator).to(device)
    hold, train = perm[:n_hold], perm[n_hold:]
    inputs = torch.cat([x_obs, x_act], -1)[train]
    model.in_mean.copy_(inputs.mean(0))
    std = inputs.std(0, unbiased=False)
    model.in_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))

    E, n_train, B = model.n, len(train), args.dynamics_batch_size
    # fused: one kernel per parameter tensor for Adam's whole step (a third of the time of torch's default loop on
    # CPU; the same update up to float rounding)
    opt = torch.optim.Adam(model.parameters(), lr=args.dynamics_lr, fused=device.type in ("cpu", "cuda"))
    loss_fn = torch.compile(dynamics_loss, dynamic=False) if compile else dynamics_loss
    boot = train[torch.randint(0, n_train, (E, n_train), generator=generator).to(device)]  # a resample per member
    best = torch.full((E,), 1e10)  # as MBPO: the first epoch always improves
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    epoch, since_update, position, losses, seconds = 0, 0, 0, [], 0.0
    if resume is not None:  # the same split and statistics as above; the rest as it was when it stopped
        if (resume["train_size"], resume["holdout_size"]) != (n_train, n_hold):
            raise CheckpointError(f"the saved dynamics training ran on {resume['train_size']} + "
                                  f"{resume['holdout_size']} transitions, this data has {n_train} + {n_hold}")
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        best_state = {k: v.to(device) for k, v in resume["best_state"].items()}
        best, boot = resume["best_mse"].clone(), resume["boot"].to(device, torch.long)
        generator.set_state(resume["generator"])
        epoch, since_update, position = int(resume["epoch"]), int(resume["since_update"]), int(resume["position"])
        losses, seconds = list(resume["losses"].to(device).unbind()), float(resume["seconds"])

    def state(position: int) -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "best_state": best_state,
                "best_mse": best, "boot": boot.int(), "generator": generator.get_state(), "epoch": epoch,
                "since_update": since_update, "position": position,
                "losses": torch.stack(losses) if losses else torch.zeros(0), "seconds": seconds + time.time() - start,
                "train_size": n_train, "holdout_size": n_hold}

    while args.max_dynamics_epochs is None or epoch < args.max_dynamics_epochs:
        if position == 0:  # a new epoch (a resumed one goes on from its step)
            boot = boot.gather(1, torch.rand(E, n_train, generator=generator).argsort(1).to(device))  # reshuffle
            losses = []
        for i in range(position, n_train, B):
            idx = boot[:, i:i + B].reshape(-1)  # a minibatch per member, gathered as one (index_select: 8x faster
            # than indexing with a 2-D index on CPU)
            obs_b, act_b, y_b = (t.index_select(0, idx).view(E, -1, t.shape[1]) for t in (x_obs, x_act, y))
            loss = loss_fn(model, obs_b, act_b, y_b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            if stop and checkpoint is not None:  # Ctrl-C or SIGTERM: save the state after this step, and stop
                checkpoint(state(min(i + B, n_train)))
                return None
        position = 0
        epoch += 1
        mse = holdout_mse(model, x_obs[hold], x_act[hold], y[hold]).cpu()
        log({"epoch": epoch, "train_loss": torch.stack(losses).mean().item(), "holdout_mse": mse.tolist()})
        improved = (best - mse) / best > 0.01  # each member keeps the weights of its best holdout MSE
        if improved.any():
            best = torch.where(improved, mse, best)
            current = model.state_dict()
            mask = improved.to(device)
            for layer in (k for k in current if k.startswith("net.")):
                best_state[layer][mask] = current[layer][mask].clone()
            since_update = 0
        else:
            since_update += 1
        if since_update > args.max_epochs_since_update:
            break
        if checkpoint is not None and checkpoint_every and epoch % checkpoint_every == 0:
            checkpoint(state(0))
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.startswith("net."):
                v.copy_(best_state[k])
    mse = holdout_mse(model, x_obs[hold], x_act[hold], y[hold]).cpu()
    model.elites.copy_(mse.argsort()[:len(model.elites)].to(device))
    return {"epochs": epoch, "seconds": seconds + time.time() - start, "holdout_mse": mse.tolist(),
            "elites": model.elites.tolist(), "train_size": n_train, "holdout_size": n_hold}


DYNAMICS_SETTINGS = ("ensemble_size", "num_elites", "dynamics_hidden_dim")


def save_dynamics(path: Path, model: EnsembleDynamics, args, info: dict) -> None:
    save_checkpoint(path, {"dynamics": model.state_dict(), "dataset": args.dataset, "seed": args.seed,
                           "obs_dim": model.obs_dim, "act_dim": model.in_mean.numel() - model.obs_dim,
                           "info": json.dumps(info), **{k: getattr(args, k) for k in DYNAMICS_SETTINGS}})


def load_dynamics(path: str | Path, model: EnsembleDynamics, args) -> dict:
    """Load a saved dynamics model into `model`; a clear error if it is not one for this data and architecture."""
    path = Path(path)
    path = path / "dynamics.pt" if path.is_dir() else path
    state = load_checkpoint(path)
    act_dim = model.in_mean.numel() - model.obs_dim
    if "dynamics" not in state:
        raise CheckpointError(f"{path} is not a saved dynamics model (no 'dynamics')")
    found = {"obs_dim": state.get("obs_dim"), "act_dim": state.get("act_dim"),
             **{k: state.get(k) for k in DYNAMICS_SETTINGS}}
    wanted = {"obs_dim": model.obs_dim, "act_dim": act_dim, **{k: getattr(args, k) for k in DYNAMICS_SETTINGS}}
    if found != wanted:
        diff = ", ".join(f"{k} {found[k]} (this run: {wanted[k]})" for k in wanted if found[k] != wanted[k])
        raise CheckpointError(f"{path}: the dynamics model does not fit this run: {diff}")
    if state["dataset"] != args.dataset:
        print(f"warning: {path} was trained on {state['dataset']!r}, not {args.dataset!r}", file=sys.stderr,
              flush=True)
    model.load_state_dict(state["dynamics"])
    return json.loads(state["info"])


def dynamics_model(data, buffer: Buffer, args, device: torch.device, run_dir: Path, resuming: bool,
                   stop=None) -> EnsembleDynamics | None:
    """The run's dynamics model: its own saved one (resume), the one --dynamics-path names, or a new one trained
    now on the buffer's transitions (actions in [-1, 1], as the agent's) and saved in the run folder. Initialized
    and trained from its own generator (mopo.py's detail 3). Its training checkpoints itself to
    dynamics_training.pt every --dynamics-checkpoint-every epochs and once `stop` is set (then this returns None),
    and a resumed run continues it from there."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        model = EnsembleDynamics(data.obs_dim, data.act_dim, args.dynamics_hidden_dim, args.ensemble_size,
                                 args.num_elites).to(device)
    own, partial = run_dir / "dynamics.pt", run_dir / "dynamics_training.pt"
    remove_orphans(run_dir, r"dynamics(_training)?\.pt\.tmp(?P<pid>\d+)")  # a write a kill cut short
    source = own if resuming and own.is_file() else args.dynamics_path
    if source is not None:
        info = load_dynamics(source, model, args)
        print(f"dynamics: loaded from {source} (holdout MSE of the elites "
              f"{np.mean([info['holdout_mse'][i] for i in info['elites']]):.4g})", file=sys.stderr, flush=True)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        records, resume, saved = [], None, {}
        if resuming and partial.is_file():
            resume = load_checkpoint(partial)
            records = json.loads(resume["log"])
            print(f"dynamics: continuing its training from {partial} (in epoch {resume['epoch'] + 1} after "
                  f"{resume['position']} examples per member)", file=sys.stderr, flush=True)

        def log(record: dict) -> None:
            records.append(record)
            if args.progress:  # a large dataset takes minutes per epoch: show each
                best = sorted(record["holdout_mse"])[:args.num_elites]
                print(f"dynamics epoch {record['epoch']}: train loss {record['train_loss']:.4g}, holdout MSE of the "
                      f"best {len(best)} {np.mean(best):.4g}", file=sys.stderr, flush=True)

        def checkpoint(state: dict) -> None:
            save_checkpoint(partial, {**state, "log": json.dumps(records)})
            saved.update(epoch=state["epoch"], position=state["position"])

        info = train_dynamics(model, data.observations, buffer.actions[:len(buffer)].cpu().numpy(),
                              data.next_observations, data.rewards, args, generator, device, log=log, resume=resume,
                              checkpoint=checkpoint, checkpoint_every=args.dynamics_checkpoint_every, stop=stop,
                              compile=args.compile)
        if info is None:
            print(f"dynamics: training stopped in epoch {saved['epoch'] + 1} (after {saved['position']} examples "
                  f"per member); its state is in {partial}", file=sys.stderr, flush=True)
            return None
        (run_dir / "dynamics.json").write_text(json.dumps({**info, "epochs_log": records}) + "\n")
        print(f"dynamics: {info['epochs']} epochs in {info['seconds']:.1f} s; holdout MSE per member "
              f"{[round(m, 5) for m in info['holdout_mse']]}, elites {info['elites']}", file=sys.stderr, flush=True)
    if source != own:
        save_dynamics(own, model, args, info)
    partial.unlink(missing_ok=True)  # the model is saved: its training state is no longer needed
    model.requires_grad_(False)
    return model.eval()

# ----------------------------------------------------------------------------------------------
# Model rollouts and the model buffer
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def rollout(step_fn: Callable, act_fn: Callable, done_fn: Callable, start_obs: torch.Tensor,
            horizon: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Branched rollouts of `horizon` steps from `start_obs`: a = act_fn(s), (s', r, u) = step_fn(s, a),
    d = done_fn(s'); a rollout that reaches a terminal state stops there. Returns the transitions (obs, act, rew,
    next_obs, done, concatenated over steps) and their statistics (u, the model's uncertainty, only logged)."""
    obs, parts = start_obs, []
    for _ in range(horizon):
        act = act_fn(obs)
        next_obs, rew, unc = step_fn(obs, act)
        done = done_fn(next_obs)
        parts.append((obs, act, rew, next_obs, done.float(), rew, unc))
        if done.all():
            break
        obs = next_obs[~done]
    obs, act, rew, next_obs, done, raw, unc = (torch.cat(x) for x in zip(*parts))
    rollout_metrics = {"rollout_length": len(rew) / len(start_obs), "model_reward": raw.mean().item(),
                       "model_uncertainty": unc.mean().item()}
    return {"obs": obs, "act": act, "rew": rew, "next_obs": next_obs, "done": done}, rollout_metrics


class ModelBuffer:
    """A first-in-first-out buffer of model transitions on the device, sampled without touching the host: its fill
    level is a tensor, so a compiled (CUDA-graphed) update reads the current one."""

    KEYS = ("obs", "act", "rew", "next_obs", "done")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, seed: int):
        dims = {"obs": obs_dim, "act": act_dim, "rew": None, "next_obs": obs_dim, "done": None}
        self.data = {k: torch.zeros((capacity,) if d is None else (capacity, d), device=device)
                     for k, d in dims.items()}
        self.capacity, self.insert, self.size = capacity, 0, 0
        self.size_t = torch.zeros((), device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed + 1)

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        batch = {k: v[-self.capacity:] for k, v in batch.items()}  # more than it holds: the newest
        n = len(batch["rew"])
        idx = (self.insert + torch.arange(n, device=self.size_t.device)) % self.capacity
        for k in self.KEYS:
            self.data[k][idx] = batch[k]
        self.insert = (self.insert + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.size_t.fill_(self.size)

    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        idx = (torch.rand(n, device=self.size_t.device, generator=self.generator) * self.size_t).long()
        return tuple(self.data[k][idx] for k in self.KEYS)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "insert": self.insert, "size": self.size,
                **{k: v[:self.size].clone() for k, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.insert, self.size = int(state["insert"]), int(state["size"])
        for k in self.KEYS:
            self.data[k][:self.size] = state[k].to(self.size_t.device)
        self.size_t.fill_(self.size)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "combo")
        args = resumed_args(Args, args, "combo", state)  # the run continues with its own saved settings
    args = with_dataset_settings(args)
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: raw rewards, raw observations, like OfflineRL-Kit's COMBO.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    if data.actions.dtype.kind != "f":
        raise DatasetError(f"dataset {args.dataset!r} has discrete actions; combo.py needs continuous actions in "
                           f"[-1, 1]")
    done_fn = termination_function(data, args.termination, "combo")
    evaluator = Evaluator(data, args, "combo")  # says at start if it cannot evaluate or score
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed)
    obs_dim, act_dim = data.obs_dim, data.act_dim
    target_entropy = -float(act_dim) if args.target_entropy is None else args.target_entropy
    n_real, n_act = int(args.batch_size * args.real_ratio), args.num_action_samples

    q = EnsembleQ(obs_dim, act_dim, args.hidden_dim).to(device)
    q_target = EnsembleQ(obs_dim, act_dim, args.hidden_dim).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    policy = TanhGaussianPolicy(obs_dim, act_dim, args.hidden_dim).to(device)
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    pi_opt = adam(policy.parameters(), args.actor_lr, device)
    alpha_opt = adam([log_alpha], args.actor_lr, device)
    model_buffer = ModelBuffer(args.rollout_batch * args.rollout_length * args.model_retain_epochs, obs_dim,
                               act_dim, device, args.seed)

    step, evals, rollout_metrics = 0, [], {}
    if state is not None:
        try:
            for name, obj in (("q", q), ("q_target", q_target), ("policy", policy), ("q_opt", q_opt),
                              ("pi_opt", pi_opt), ("alpha_opt", alpha_opt), ("buffer", buffer),
                              ("model_buffer", model_buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        with torch.no_grad():
            log_alpha.copy_(state["log_alpha"])
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
        rollout_metrics = json.loads(state["rollout_metrics"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("combo", args.dataset, args.seed)
    run = Run(run_dir, args, "combo", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def model_rollout() -> dict[str, float]:
        """Rollouts of the current policy in the model from rollout_batch dataset states, into the model buffer."""
        start = buffer.obs[torch.randint(0, len(buffer), (args.rollout_batch,), device=device)]
        batch, stats = rollout(dynamics.step, lambda s: sample_actions(*policy(s))[0], done_fn, start,
                               args.rollout_length)
        model_buffer.add(batch)
        return stats

    def update() -> dict[str, torch.Tensor]:
        real, fake = buffer.sample(n_real), model_buffer.sample(args.batch_size - n_real)
        obs, act, rew, next_obs, done = (torch.cat([a, b]) for a, b in zip(real, fake))  # d_f: real rows first
        B = obs.shape[0]
        # 1. The policy, on the critics as they are, with the temperature before its step; 2. the temperature.
        mean, log_std = policy(obs)
        new_act, new_logp = sample_actions(mean, log_std)
        alpha = log_alpha.exp().detach()
        pi_loss = sac_actor_loss(new_logp, q(obs, new_act).min(0).values, alpha)
        pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()  # also leaves gradients on Q's weights; q_opt.zero_grad discards them
        pi_opt.step()
        a_loss = alpha_loss(log_alpha, new_logp, target_entropy)
        alpha_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        alpha_opt.step()

        # 3. The critics: samples from the updated policy at s and s' (one pass), deterministic backup.
        with torch.no_grad():
            mean, log_std = policy(torch.cat([obs, next_obs]))
            next_act, _ = sample_actions(mean[B:], log_std[B:])
            target = rew + args.gamma * (1.0 - done) * q_target(next_obs, next_act).min(0).values
            cql_act, cql_logp = sample_actions(mean, log_std, n_act)  # [N, 2B, A]: N per state of s and s'
        # Both critics at s on [dataset action, N uniform, N ~ pi(.|s'), N ~ pi(.|s)]: one batched forward.
        rand_act = torch.rand(n_act, B, act_dim, device=obs.device) * 2 - 1
        acts = torch.cat([act.unsqueeze(0), rand_act, cql_act[:, B:], cql_act[:, :B]])  # [1 + 3N, B, A]
        q_all = q(obs.repeat(1 + 3 * n_act, 1), acts.reshape(-1, act_dim)).view(q.n, 1 + 3 * n_act, B)
        q_pred, q_rand = q_all[:, 0], q_all[:, 1:1 + n_act]
        q_pi_next, q_pi = q_all[:, 1 + n_act:1 + 2 * n_act], q_all[:, 1 + 2 * n_act:]
        td = td_loss(q_pred, target)
        gap = conservative_gap(q_rand, q_pi_next, q_pi, cql_logp[:, B:], cql_logp[:, :B], q_pred[:, :n_real],
                               act_dim, args.logsumexp_temperature)
        cql = args.regularizer_weight * gap
        q_opt.zero_grad(set_to_none=True)
        (td + cql).sum().backward()
        q_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
        return {"loss/q": td.sum().detach(), "loss/cql": cql.sum().detach(), "cql_gap": gap.mean().detach(),
                "loss/actor": pi_loss.detach(), "loss/alpha": a_loss.detach(), "alpha": alpha.squeeze(),
                "entropy": -new_logp.mean().detach(), "q_data": q_pred[:, :n_real].min(0).values.mean().detach()}

    policy_fn = policy_function(policy, device)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "q": q.state_dict(), "q_target": q_target.state_dict(), "policy": policy.state_dict(),
            "log_alpha": log_alpha.detach(), "q_opt": q_opt.state_dict(), "pi_opt": pi_opt.state_dict(),
            "alpha_opt": alpha_opt.state_dict(), "buffer": buffer.state_dict(),
            "model_buffer": model_buffer.state_dict(), "rollout_metrics": json.dumps(rollout_metrics),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "combo", "args": json.dumps(dataclasses.asdict(args)), "obs_dim": obs_dim, "act_dim": act_dim})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator, model_buffer.generator])
    if state is None:
        save()  # update 0: a run stopped or killed while its dynamics model trains resumes from here
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        # the dynamics model (trained here, from where a stopped training left off, or loaded); the agent's
        # rollouts use it. Stopped by a signal, it has saved its training state: the run exits as below
        dynamics = dynamics_model(data, buffer, args, device, run_dir, resuming=state is not None, stop=stop)
        if dynamics is None:
            run.close()
            raise stop.exit(resume_command(__file__, run_dir), step)
        start_time, start_step = time.time(), step
        while step < args.total_steps:
            if step % args.rollout_freq == 0:
                rollout_metrics = model_rollout()
            metrics = update_fn()
            step += 1
            if step % args.log_every == 0:
                run.log(step, {k: v.item() for k, v in metrics.items()} | rollout_metrics
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
    dynamics_info = json.loads(load_checkpoint(run_dir / "dynamics.pt")["info"])
    result = {"algo": "combo", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(), "dynamics": dynamics_info,
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"combo {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
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
    state = load_policy_checkpoint(run_dir, "combo")
    args = Args(**upgrade_args("combo", json.loads(state["args"])))
    policy = TanhGaussianPolicy(state["obs_dim"], state["act_dim"], args.hidden_dim).to(device)
    policy.load_state_dict(state["policy"])
    return policy_function(policy.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
