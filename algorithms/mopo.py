"""MOPO: Model-based Offline Policy Optimization (uncertainty-penalized model rollouts + SAC).

Yu, Thomas, Yu, Ermon, Zou, Levine, Finn, Ma. "MOPO: Model-based Offline Policy Optimization." NeurIPS 2020.
arXiv:2005.13239. Authors' code: github.com/tianheyu927/mopo (TensorFlow; MBPO's model, softlearning's SAC).

MOPO learns a probabilistic dynamics ensemble from the data, rolls the current policy out in it for a few steps
from dataset states, and trains SAC on real and model transitions, the model's rewards lowered by how uncertain
the model is, so the policy is paid only for what the model can vouch for:

    Dynamics (E members, each a diagonal Gaussian over y = (s' - s, r) given x = (s, a), x standardized):
      L_i(theta)  = E_(x,y)~D_i[ (mu_i(x) - y)^T Sigma_i(x)^-1 (mu_i(x) - y) / d + log det Sigma_i(x) / d ]
      L(theta)    = sum_i L_i + sum_l w_l ||W_l||^2 / 2 + 0.01 (sum maxlogvar - sum minlogvar)
      log sigma^2 = minlogvar + softplus(maxlogvar - softplus(maxlogvar - h) - minlogvar)  (learned soft bounds)
    Penalty ("max aleatoric"): u(s, a) = max_i || sigma_i(s, a) ||_2   (std over all d = |S| + 1 outputs)
    Model data: s_{t+1}, r_t ~ N(mu_k, Sigma_k)(s_t, a_t), k a random elite, a_t ~ pi(.|s_t), for t < h, from
                s_0 ~ D, stopping where the task's termination function says the state is terminal;
                r~_t = r_t - lambda u(s_t, a_t)
    SAC on minibatches of (1 - f) model and f real transitions (f = real_ratio):
      L_Q(phi)    = sum_j E[ (Q_j(s, a) - y)^2 ],  y = r + gamma (1 - d) (min_j Qbar_j(s', a') - alpha log pi(a'|s'))
      L_pi(psi)   = E_s[ alpha log pi(a~|s) - min_j Q_j(s, a~) ],   L_alpha = -E_s[ log alpha (log pi(a~|s) + H) ]

Implementation details (all from the authors' code unless marked "deviation"):
 1. Dynamics network (MBPO's): 7 members, each 4 hidden layers of 200 with swish, and a last layer that outputs the
    mean and the raw log-variance of (s' - s, r) (the authors' `separate_mean_var`: two heads, one matmul here).
    Weights ~ truncated normal, std 1 / (2 sqrt(fan_in)), biases 0. The log-variance is soft-clamped between a
    learned maxlogvar (initialized 0.5) and minlogvar (initialized -10), one value per output shared by the
    members, and the loss pushes the bounds together by 0.01 (sum maxlogvar - sum minlogvar). L2 weight decay
    w_l = 2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4 on the five layers' weights. Adam, lr 1e-3, batch 256. Inputs
    standardized with the training split's mean and std (std below 1e-12 replaced by 1); targets raw.
 2. Dynamics training (MBPO's): a random holdout of min(20%, 5000) transitions; each member trains on its own
    bootstrap resample of the rest (indices drawn with replacement once, reshuffled every epoch). After each epoch,
    the mean's MSE on the holdout per member; a member whose holdout MSE fell by more than 1% of its best keeps
    its weights as its new best; training stops once no member has improved for more than
    `max_epochs_since_update` = 5 epochs (or at `--max-dynamics-epochs`). Each member then gets its best weights
    back (deviation: the shared log-variance bounds keep their last values; MBPO restores only the members'
    layers too), and the `num_elites` = 5 members of lowest holdout MSE are the elites that rollouts sample.
    The per-epoch training loss and per-member holdout MSEs go to `dynamics.json` in the run folder. Speed (the
    same computation): all members in one batched matmul per layer, each step's minibatches gathered with one
    index_select, Adam fused (one kernel per tensor; its rounding differs from torch's default loop by an ulp or
    so), and with `--compile` the loss (forward and backward) compiled. A step of 7 members x 256 (Hopper's sizes)
    is ~1.4 GFLOP, nearly all the three 200 x 200 layers' matmuls, which bound its speed on a CPU
    (benchmarks/dynamics_speed.py --synthetic measures steps/s). On stitch/hopper/medium-v0 (1M transitions,
    the 2-core CPU) an epoch took ~39 s, and at epoch 55 (36 minutes) the holdout MSE was still falling by more
    than 1% an epoch, so training to early stopping takes longer than that there: pass --max-dynamics-epochs, or
    train once and share it with --dynamics-path (benchmarks/results/dynamics_speed_cpu.json).
 3. The dynamics model trains once, before the agent, and is saved as `dynamics.pt` in the run folder; a resumed
    run loads it instead of retraining, and `--dynamics-path` reuses one trained by another run (same dataset,
    architecture and data dimensions). It is initialized and trained from its own random generator, so an agent
    run is the same whether its model was trained in the run or loaded. Its training can be stopped and resumed
    like the agent's (deviation: MBPO's cannot): the run writes its update-0 checkpoint before it, Ctrl-C or
    SIGTERM stops it after the gradient step in progress, and the training state (the model with its input
    statistics, each member's best weights and holdout MSE, Adam's state, the bootstrap order, the generator, the
    epoch and step, the epochs since an improvement, the log so far) goes to `dynamics_training.pt` in the run
    folder, also every `--dynamics-checkpoint-every` = 5 epochs (what a SIGKILL can lose); `--resume` continues
    it from there to the same model, bit for bit, as an uninterrupted training, and deletes the file once
    `dynamics.pt` is written.
 4. Rollouts: every `rollout_freq` = 1000 updates (the first before update 1), `rollout_batch` = 50,000 dataset
    states, h steps with actions sampled from the current policy (stochastic), each transition sampled from the
    Gaussian of one elite chosen at random per state; a rollout stops where the termination function says
    terminal (its transition is stored with d = 1). The uncertainty u is the max over ALL members (not only the
    elites) of the L2 norm of the predicted std vector over reward and state outputs, as in the authors'
    `penalty_learned_var=True` ("max aleatoric"; the other variant, the max distance of a member's mean from the
    ensemble's mean, is not implemented). The model buffer holds `model_retain_epochs` = 5 rollouts
    (rollout_batch x h x 5 transitions, first in first out).
 5. Termination functions are the authors' hard-coded ones (`mopo/static/`): hopper terminal unless height > 0.7,
    |angle| < 0.2, every later observation entry below 100 and all finite (deviation: |x| < 100, as the
    environment checks; the authors' `np.abs(x < 100)` checks x < 100); walker2d terminal unless
    0.8 < height < 2 and -1 < angle < 1; halfcheetah never terminal. Added here (not the authors'):
    InvertedPendulum's, Gymnasium's rule (terminal unless finite and |angle| <= 0.2). They are picked from the dataset's
    environment (`--termination auto`); an environment without one is an error (name one with
    `--termination`). Deviation: a dataset that records no environment (logged data) trains with
    `--termination never` unless told otherwise, and says so.
 6. SAC (softlearning's, as the authors run it): twin Q and a tanh-Gaussian policy, 2 hidden layers of 256 with
    ReLU; log-std clamped to [-20, 2]; soft backup (with -alpha log pi(a'|s')); the temperature is tuned towards a
    target entropy of -3 (fixed in the authors' base config for every task; `--target-entropy`); lr 3e-4 for
    all; tau 5e-3 every update; batch 256 with 5% real transitions (`real_ratio` 0.05: 12 real, 244 model).
    The critics, the policy and the temperature are each updated from the networks as they were at the start of
    the update (softlearning runs the three steps in one session call). Deviations: torch's default init (TF's
    Glorot in softlearning), and the Q loss is the plain MSE (softlearning halves it; Adam is scale-invariant).
 7. No reward or observation normalization for the agent.
 8. Deviation: the model buffer is part of every checkpoint (up to 1.25M transitions, ~140 MB on Hopper), so a
    resumed run continues exactly; the authors do not resume.
 9. Deviation: evaluation runs 10 episodes every 5,000 updates (the authors: every epoch of 1,000), and the score
    is the final evaluation. Training is 1M updates (the authors' Hopper count; 3M for HalfCheetah/Walker2d).

Rollout length h and penalty lambda are the authors' per dataset (examples/config/d4rl/, D4RL v0) unless given:
halfcheetah random 5/0.5, medium 1/1, medium-replay 5/1, medium-expert 5/5; hopper random 5/1, medium 5/5,
medium-replay 5/1, medium-expert 5/1; walker2d random 1/1, medium 5/5, medium-replay 1/1, medium-expert 1/2
(PAPER_SETTINGS). A dataset id ending in <env>/<level>-v<N> (stitch/hopper/medium-v0, mujoco/hopper/medium-v0)
gets its environment's and level's; any other dataset (expert levels, logged data) gets (5, 1.0), the
hopper-medium-replay ("mixed") setting. The run prints which it used and records them in args.json.

Usage:
    python algorithms/mopo.py                                        # stitch/hopper/medium-replay-v0
    python algorithms/mopo.py --dataset stitch/hopper/medium-v0 --seed 1           # h 5, lambda 5 (the authors')
    python algorithms/mopo.py --dataset stitch/hopper/medium-v0 --penalty-weight 2  # h 5, lambda 2
    python algorithms/mopo.py --dataset stitch/walker2d/medium-replay-v0 \
        --dynamics-path runs/mopo__stitch-walker2d-medium-replay-v0__s0__20261207-120000/dynamics.pt
    python algorithms/mopo.py --resume runs/mopo__stitch-hopper-medium-replay-v0__s0__20261207-120000
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
    """Width of the two hidden layers of the policy and the Q-functions."""
    actor_lr: float = 3e-4
    """Policy learning rate (also the entropy temperature's)."""
    critic_lr: float = 3e-4
    """Learning rate of the Q-functions."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target Q-functions."""
    target_entropy: float | None = -3.0
    """Target entropy H of the automatic temperature tuning (the authors fix -3; None: -|A|)."""
    penalty_weight: float | None = None
    """Weight lambda of the uncertainty penalty: model rewards are r - lambda u(s, a) (0: no penalty, plain MBPO).
    None: the authors' for the dataset (PAPER_SETTINGS), else 1.0."""
    rollout_length: int | None = None
    """Length h of the branched model rollouts. None: the authors' for the dataset (PAPER_SETTINGS), else 5."""
    rollout_batch: int = 50_000
    """Dataset states each rollout starts from."""
    rollout_freq: int = 1_000
    """Updates between rollouts (the first comes before update 1)."""
    model_retain_epochs: int = 5
    """Rollouts the model buffer holds (its capacity is rollout_batch x rollout_length x this)."""
    real_ratio: float = 0.05
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


# The authors' (h, lambda) per D4RL v0 dataset (examples/config/d4rl/<env>.py), by environment and level.
PAPER_SETTINGS = {
    "halfcheetah": {"random": (5, 0.5), "medium": (1, 1.0), "medium-replay": (5, 1.0), "medium-expert": (5, 5.0)},
    "hopper": {"random": (5, 1.0), "medium": (5, 5.0), "medium-replay": (5, 1.0), "medium-expert": (5, 1.0)},
    "walker2d": {"random": (1, 1.0), "medium": (5, 5.0), "medium-replay": (1, 1.0), "medium-expert": (1, 2.0)},
}
OTHER_SETTING = (5, 1.0)  # any other dataset: the hopper-medium-replay ("mixed") setting


def paper_setting(dataset: str) -> tuple[int, float] | None:
    """The authors' (h, lambda) for a dataset id ending in <env>/<level>-v<N>, or None."""
    parts = dataset.split("/")
    level = parts[-1].rsplit("-v", 1)[0]
    return PAPER_SETTINGS.get(parts[-2], {}).get(level) if len(parts) >= 2 else None


def with_dataset_settings(args: Args) -> Args:
    """args with --rollout-length and --penalty-weight filled in where not given (None), and a line saying so."""
    if args.rollout_length is not None and args.penalty_weight is not None:
        return args
    paper = paper_setting(args.dataset)
    h, lam = paper or OTHER_SETTING
    args = dataclasses.replace(args, rollout_length=h if args.rollout_length is None else args.rollout_length,
                               penalty_weight=lam if args.penalty_weight is None else args.penalty_weight)
    where = "the authors' for this environment and level" if paper else "the default for datasets the authors did " \
        "not tune"
    print(f"mopo: rollout length {args.rollout_length}, penalty weight {args.penalty_weight} (unset flags: {where})",
          flush=True)
    return args


def check_args(args: Args) -> None:
    check_common(args)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)
    require(args.target_entropy is None or math.isfinite(args.target_entropy), "target_entropy",
            "must be a finite number", args.target_entropy)
    require(math.isfinite(args.penalty_weight) and args.penalty_weight >= 0, "penalty_weight", "must be >= 0",
            args.penalty_weight)
    check_model_args(args, real_min=0)


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
# Termination functions (the authors' mopo/static/*.py): which predicted next states end an episode
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
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # softlearning's clamp of the policy's log-std
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

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2, layers: int = 2):
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

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int = 2, log_std_min: float = LOG_STD_MIN):
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
        return obs + y[:, :-1], y[:, -1], mopo_uncertainty(logvar)


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


def mopo_uncertainty(logvar: torch.Tensor) -> torch.Tensor:
    """u(s, a) = max_i || sigma_i(s, a) ||_2 over the members ("max aleatoric"): logvar [E, B, d] -> [B]."""
    return (0.5 * logvar).exp().norm(dim=-1).max(0).values


def penalized_reward(reward: torch.Tensor, uncertainty: torch.Tensor, penalty_weight: float) -> torch.Tensor:
    """r~(s, a) = r(s, a) - lambda u(s, a)  (MOPO, Eq. 5)."""
    return reward - penalty_weight * uncertainty


def td_loss(q_data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[(Q_j(s, a) - y)^2] per critic: q_data = [n, B] Q_j(s, a), target = [B] y (no gradient). Returns [n]."""
    return ((q_data - target.detach()) ** 2).mean(-1)


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
def rollout(step_fn: Callable, act_fn: Callable, done_fn: Callable, start_obs: torch.Tensor, horizon: int,
            penalty_weight: float = 0.0) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Branched rollouts of `horizon` steps from `start_obs`: a = act_fn(s), (s', r, u) = step_fn(s, a), reward
    r - penalty_weight u, d = done_fn(s'); a rollout that reaches a terminal state stops there. Returns the
    transitions (obs, act, rew, next_obs, done, concatenated over steps) and their statistics."""
    obs, parts = start_obs, []
    for _ in range(horizon):
        act = act_fn(obs)
        next_obs, rew, unc = step_fn(obs, act)
        done = done_fn(next_obs)
        parts.append((obs, act, penalized_reward(rew, unc, penalty_weight), next_obs, done.float(), rew, unc))
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
        state = load_run_checkpoint(args.resume, "mopo")
        args = resumed_args(Args, args, "mopo", state)  # the run continues with its own saved settings
    args = with_dataset_settings(args)
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: raw rewards, raw observations, like the authors' code.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    if data.actions.dtype.kind != "f":
        raise DatasetError(f"dataset {args.dataset!r} has discrete actions; mopo.py needs continuous actions in "
                           f"[-1, 1]")
    done_fn = termination_function(data, args.termination, "mopo")
    evaluator = Evaluator(data, args, "mopo")  # says at start if it cannot evaluate or score
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed)
    obs_dim, act_dim = data.obs_dim, data.act_dim
    target_entropy = -float(act_dim) if args.target_entropy is None else args.target_entropy
    n_real = int(args.batch_size * args.real_ratio)

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
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("mopo", args.dataset, args.seed)
    run = Run(run_dir, args, "mopo", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def model_rollout() -> dict[str, float]:
        """Rollouts of the current policy in the model from rollout_batch dataset states, into the model buffer."""
        start = buffer.obs[torch.randint(0, len(buffer), (args.rollout_batch,), device=device)]
        batch, stats = rollout(dynamics.step, lambda s: sample_actions(*policy(s))[0], done_fn, start,
                               args.rollout_length, args.penalty_weight)
        model_buffer.add(batch)
        return stats

    def update() -> dict[str, torch.Tensor]:
        real, fake = buffer.sample(n_real), model_buffer.sample(args.batch_size - n_real)
        obs, act, rew, next_obs, done = (torch.cat([a, b]) for a, b in zip(real, fake))
        B = obs.shape[0]
        # Every loss from the networks as they are at the start of the update (softlearning's one session call).
        mean, log_std = policy(torch.cat([obs, next_obs]))
        new_act, new_logp = sample_actions(mean[:B], log_std[:B])  # a~ ~ pi(.|s), with gradient (actor)
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            next_act, next_logp = sample_actions(mean[B:], log_std[B:])
            next_q = q_target(next_obs, next_act).min(0).values - alpha * next_logp  # soft backup
            target = rew + args.gamma * (1.0 - done) * next_q
        pi_loss = sac_actor_loss(new_logp, q(obs, new_act).min(0).values, alpha)
        pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()  # also leaves gradients on Q's weights; q_opt.zero_grad discards them
        pi_opt.step()
        a_loss = alpha_loss(log_alpha, new_logp, target_entropy)
        alpha_opt.zero_grad(set_to_none=True)
        a_loss.backward()
        alpha_opt.step()
        # Each loss is formed just before its backward (a compiled update backpropagates each graph once); the
        # critics' loss reads nothing the two steps above changed: Q, and the target drawn before them.
        q_data = q(obs, act)
        q_loss = td_loss(q_data, target).sum()
        q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        q_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
        return {"loss/q": q_loss.detach(), "loss/actor": pi_loss.detach(), "loss/alpha": a_loss.detach(),
                "alpha": alpha.squeeze(), "entropy": -new_logp.mean().detach(),
                "q_data": q_data.min(0).values.mean().detach()}

    policy_fn = policy_function(policy, device)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "q": q.state_dict(), "q_target": q_target.state_dict(), "policy": policy.state_dict(),
            "log_alpha": log_alpha.detach(), "q_opt": q_opt.state_dict(), "pi_opt": pi_opt.state_dict(),
            "alpha_opt": alpha_opt.state_dict(), "buffer": buffer.state_dict(),
            "model_buffer": model_buffer.state_dict(), "rollout_metrics": json.dumps(rollout_metrics),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "mopo", "args": json.dumps(dataclasses.asdict(args)), "obs_dim": obs_dim, "act_dim": act_dim})

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
    result = {"algo": "mopo", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(), "dynamics": dynamics_info,
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"mopo {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
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
    state = load_policy_checkpoint(run_dir, "mopo")
    args = Args(**upgrade_args("mopo", json.loads(state["args"])))
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
