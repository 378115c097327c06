"""BEAR: Bootstrapping Error Accumulation Reduction (support-constrained actor-critic).

Kumar, Fu, Soh, Tucker, Levine. "Stabilizing Off-Policy Q-Learning via Bootstrapping Error Reduction."
NeurIPS 2019. arXiv:1906.00949. Authors' code: github.com/aviralkumar2907/BEAR (PyTorch), and the version the
authors ran for the D4RL paper, github.com/rail-berkeley/d4rl_evaluations (bear/, rlkit).

BEAR keeps the policy on the support of the data's actions rather than close to their density: a conditional
VAE G(a | s) models the behaviour policy, and the policy pi is constrained so that the maximum mean discrepancy
(MMD) between n of its samples and n of the VAE's stays below a threshold epsilon. The constraint enters the
actor's loss through a Lagrange multiplier alpha that dual gradient ascent adjusts. An ensemble of critics is
trained on actions of pi at s', with BCQ's soft mix of the ensemble's minimum and maximum:

    L_VAE(omega) = E_(s,a)~D [ ||D(s, z) - a||^2 / |A| + 0.5 KL(N(mu(s, a), sigma(s, a)^2) || N(0, I)) / dim(z) ]
    MMD_k(X, Y)  = sqrt( mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j) + 1e-6 ),
                   X: n pre-tanh samples of G(. | s),  Y: n pre-tanh samples of pi(. | s)
                   gaussian k(x, y) = exp(-||x - y||_2^2 / (2 sigma)),
                   laplacian k(x, y) = exp(-||x - y||_1 / (2 sigma))
    y            = r + gamma (1 - d) max_i [ lambda min_j Qbar_j(s', a_i) + (1 - lambda) max_j Qbar_j(s', a_i) ],
                   a_i ~ pi(. | s'), i = 1..m
    L_Q(theta)   = E_(s,a,r,s')~D [ sum_j ( y - Q_theta_j(s, a) )^2 ]
    L_pi(phi)    = E_s [ -min_j Q_j(s, a~) + alpha (MMD_k(X, Y) - epsilon) ],  a~ ~ pi(. | s) reparameterized
                   (the first bc_steps updates: E_s [ alpha (MMD_k(X, Y) - epsilon) ] only)
    L_alpha      = -E_s [ alpha (MMD_k(X, Y) - epsilon) ],  alpha = exp(log alpha),  log alpha clamped to [-5, 10]
                   (gradient descent on L_alpha raises alpha while MMD > epsilon and lowers it below)
    acting:        pi(s) = argmax_{a_i} Q_1(s, a_i),  a_i ~ pi(. | s), i = 1..100

Implementation details (all from the authors' D4RL code, bear/rlkit/torch/sac/bear.py and
bear/examples/bear_hdf5_d4rl.py, unless marked "deviation"):
 1. Update order: the VAE, then the critics (targets from pi as it is, no target policy), then the policy and
    log alpha (both from the MMD of this update's samples, each with the other's value before its step), then
    Polyak averaging (tau = 0.005) of the target critics. The authors' code builds the actor's Q forward before
    the critics' step and backpropagates after it; here the actor's loss reads the critics after their step.
 2. The MMD compares pre-tanh actions (the VAE decoder's output before its tanh and the policy's Gaussian
    sample before its tanh), so the kernel's gradient does not vanish where tanh saturates. n = 4 samples of
    each (`--num-divergence-samples`). The VAE's latents are clipped to [-0.5, 0.5] for these samples (as in
    BCQ); its samples carry no gradient.
 3. Kernel: Laplacian, sigma = 20 (`--kernel`, `--mmd-sigma`), the settings of the authors' D4RL runs on Hopper
    and Walker2d (their README; on HalfCheetah they used the Gaussian kernel, sigma = 20: `--kernel gaussian`).
    The D4RL script's own flag defaults (Gaussian, sigma = 50; its code comment: 20 for hopper and cheetah, 50
    for walker and ant) and the original repository's README (Laplacian 10 or Gaussian 20) differ. The kernel
    matters: in one dimension the MMD between point masses a distance d apart is about d / sqrt(sigma) with the
    Gaussian kernel but sqrt(d / sigma) with the Laplacian, so at epsilon = 0.05 the Gaussian kernel (sigma 20)
    lets the policy sit about 0.22 (pre-tanh) from the VAE's actions, the Laplacian about 0.05.
 4. Lagrange multiplier: log alpha starts at 0 and takes Adam steps (lr 1e-3) on L_alpha, then is clamped to
    [-5, 10] (the original repository's `lagrange_thresh` = 10); epsilon = 0.05 (`--lagrange-threshold`).
 5. Warm start: for the first 40,000 updates (`--bc-steps`) the policy minimizes only alpha (MMD - epsilon),
    i.e. it learns to match the VAE's support; the critics and alpha train from the start.
 6. The policy's Q term uses the first of its n MMD samples and the minimum over the critics (`policy_update_style
    = 0`). The ensemble has 2 critics (`--num-critics`); lambda = 0.75 (`--target-min-weight`); m = 10 actions
    per next state in the target (`--num-action-samples`).
 7. Networks: critics and policy 2x256 ReLU MLPs with rlkit's init (hidden W ~ U(+-1/sqrt(out_features)),
    b = 0.1; last layer U(+-3e-3) for Q, U(+-1e-3) for the policy's mean and log-std); tanh-Gaussian policy with
    log-std clamped to [-5, 2]. VAE: encoder and decoder 750-750 ReLU MLPs with PyTorch's default init, latent
    2 |A|, log sigma clamped to [-4, 15]. The critic ensemble is one batched module (weights [E, in, out]).
 8. Deviation: acting samples 100 actions per state and takes the best by Q_1 like the authors' evaluation, but
    the 100 Gaussian noises are drawn once from `--seed` (their own generator) and reused for every state, so an
    evaluation, and `load_policy` of the run folder, replay exactly. (Either way, where Q_1 still rises
    monotonically in the action, as an early critic's can, the best of 100 lies about 2.5 policy standard
    deviations from the policy's mean on that side: a constant offset in the action.)
 9. Deviation: evaluation runs 10 episodes every 5,000 updates (the authors': 5,000 evaluation steps every 1,000
    updates), 1M updates in all (theirs: up to 3,000 epochs of 1,000), and the score is the final evaluation.
    No reward scaling and no observation normalization, as the authors.
10. Deviation: the original repository's ensemble-variance penalty (off by default there) and its fixed-weight
    (`mode='hardcoded'`) variant are not implemented.

Default hyperparameters are the authors' D4RL settings: policy lr 1e-4, critic lr 3e-4, VAE lr 3e-4, alpha lr
1e-3, batch 256, gamma 0.99, tau 0.005, Laplacian kernel with sigma 20, n = 4, epsilon 0.05, 40k warm-start
updates, 100 acting samples.

Usage:
    python algorithms/bear.py                                        # stitch/hopper/medium-replay-v0
    python algorithms/bear.py --dataset stitch/walker2d/medium-v0 --kernel laplacian --seed 1
    python algorithms/bear.py --resume runs/bear__stitch-hopper-medium-replay-v0__s0__20261121-120000
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
from common.fast import adam, fast_update  # noqa: E402
from common.interrupt import StopSignal, resume_command  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402

KERNEL_SIGMA = {"gaussian": 20.0, "laplacian": 20.0}  # the authors' D4RL runs (their README)
LOG_ALPHA_MIN, LOG_ALPHA_MAX = -5.0, 10.0  # clamp of log alpha (authors')


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling, policy and VAE samples, the acting noises and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates."""
    batch_size: int = 256
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the two hidden layers of the policy and of each critic."""
    vae_hidden_dim: int = 750
    """Width of the two hidden layers of the VAE's encoder and of its decoder."""
    actor_lr: float = 1e-4
    """Policy learning rate."""
    critic_lr: float = 3e-4
    """Learning rate of the critics."""
    behaviour_lr: float = 3e-4
    """Learning rate of the VAE behaviour model."""
    lagrange_lr: float = 1e-3
    """Learning rate of log alpha, the Lagrange multiplier of the MMD constraint."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    num_critics: int = 2
    """Critics in the ensemble (the target mixes their minimum and maximum; the policy maximizes their minimum)."""
    target_min_weight: float = 0.75
    """Weight lambda of the minimum in the target's lambda min_j Q_j + (1 - lambda) max_j Q_j, in [0, 1]."""
    num_action_samples: int = 10
    """Actions m sampled from the policy per next state in the critics' target (the best by the mixed Q is taken)."""
    num_eval_action_samples: int = 100
    """Actions n sampled from the policy per state when acting (evaluation and load_policy): the best by Q_1."""
    num_divergence_samples: int = 4
    """Samples n of the policy and of the VAE per state in the MMD estimate (the authors' num_samples_mmd_match)."""
    kernel: Literal["gaussian", "laplacian"] = "laplacian"
    """Kernel k of the MMD: gaussian exp(-||x - y||^2 / (2 sigma)) or laplacian exp(-||x - y||_1 / (2 sigma))."""
    mmd_sigma: float | None = None
    """Width sigma of the MMD kernel (default: 20 for either kernel, as the authors' D4RL runs)."""
    lagrange_threshold: float = 0.05
    """Threshold epsilon of the constraint MMD <= epsilon that the Lagrange multiplier alpha enforces."""
    bc_steps: int = 40_000
    """Initial updates in which the policy minimizes only alpha (MMD - epsilon), without Q (the authors' warm start)."""
    kl_weight: float = 0.5
    """Weight of the KL term in the VAE's loss."""
    max_latent: float = 0.5
    """Latents z ~ N(0, I) are clipped to [-max_latent, max_latent] when sampling actions from the VAE."""
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
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)
    require(args.vae_hidden_dim > 0, "vae_hidden_dim", "must be a positive integer", args.vae_hidden_dim)
    for f in ("behaviour_lr", "lagrange_lr"):
        require(math.isfinite(getattr(args, f)) and getattr(args, f) > 0, f, "must be positive", getattr(args, f))
    require(args.num_critics >= 2, "num_critics", "must be an integer >= 2", args.num_critics)
    require(0.0 <= args.target_min_weight <= 1.0, "target_min_weight", "must be in [0, 1]", args.target_min_weight)
    for f in ("num_action_samples", "num_eval_action_samples"):
        require(getattr(args, f) > 0, f, "must be a positive integer", getattr(args, f))
    require(args.num_divergence_samples >= 2, "num_divergence_samples", "must be an integer >= 2",
            args.num_divergence_samples)
    require(args.kernel in KERNEL_SIGMA, "kernel", "must be 'gaussian' or 'laplacian'", args.kernel)
    require(args.mmd_sigma is None or (math.isfinite(args.mmd_sigma) and args.mmd_sigma > 0), "mmd_sigma",
            "must be positive", args.mmd_sigma)
    require(math.isfinite(args.lagrange_threshold) and args.lagrange_threshold >= 0, "lagrange_threshold",
            "must be >= 0", args.lagrange_threshold)
    require(args.bc_steps >= 0, "bc_steps", "must be an integer >= 0", args.bc_steps)
    require(args.kl_weight >= 0.0, "kl_weight", "must be >= 0", args.kl_weight)
    require(args.max_latent > 0.0, "max_latent", "must be positive", args.max_latent)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def rlkit_init(layer: nn.Linear, last_bound: float | None = None) -> nn.Linear:
    """Hidden: W ~ U(+-1/sqrt(out_features)) (rlkit's fanin_init on [out, in]), b = 0.1; last: W, b ~ U(+-bound)."""
    bound = 1.0 / math.sqrt(layer.out_features) if last_bound is None else last_bound
    nn.init.uniform_(layer.weight, -bound, bound)
    if last_bound is None:
        nn.init.constant_(layer.bias, 0.1)
    else:
        nn.init.uniform_(layer.bias, -bound, bound)
    return layer


class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int, last_bound: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        for i in range(n):  # each member initialized as rlkit initializes a separate nn.Linear
            layer = rlkit_init(nn.Linear(in_dim, out_dim), last_bound)
            self.weight.data[i], self.bias.data[i, 0] = layer.weight.data.T, layer.bias.data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """Q_1..Q_n(s, a) as one module, each a 2-hidden-layer MLP; returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2):
        super().__init__()
        self.n = n
        self.net = nn.Sequential(EnsembleLinear(n, obs_dim + act_dim, hidden), nn.ReLU(),
                                 EnsembleLinear(n, hidden, hidden), nn.ReLU(),
                                 EnsembleLinear(n, hidden, 1, last_bound=3e-3))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


class TanhGaussianPolicy(nn.Module):
    """tanh(u), u ~ N(mu(s), exp(log_std(s))^2): rlkit's TanhGaussianPolicy (2 hidden layers, log-std in [-5, 2])."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.trunk = nn.Sequential(rlkit_init(nn.Linear(obs_dim, hidden)), nn.ReLU(),
                                   rlkit_init(nn.Linear(hidden, hidden)), nn.ReLU())
        self.mean = rlkit_init(nn.Linear(hidden, act_dim), last_bound=1e-3)
        self.log_std = rlkit_init(nn.Linear(hidden, act_dim), last_bound=1e-3)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, n: int, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterized samples per state: actions tanh(u) and pre-tanh u = mu + sigma eps, each [B, n, A]."""
        mean, log_std = self(obs)
        if eps is None:
            eps = torch.randn(obs.shape[0], n, mean.shape[-1], device=obs.device)
        raw = mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * eps
        return torch.tanh(raw), raw


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


class VAE(nn.Module):
    """Conditional VAE G(a | s): encoder (s, a) -> (mu, log sigma) of z; decoder (s, z) -> tanh(.) in [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, max_latent: float = 0.5):
        super().__init__()
        self.latent_dim, self.max_latent = 2 * act_dim, max_latent
        self.encoder = mlp(obs_dim + act_dim, hidden, 2 * self.latent_dim)
        self.decoder = mlp(obs_dim + self.latent_dim, hidden, act_dim)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction D(s, z) with z = mu + sigma eps (reparameterized), and mu, log sigma."""
        mean, log_std = self.encoder(torch.cat([obs, act], -1)).chunk(2, -1)
        log_std = log_std.clamp(-4.0, 15.0)
        z = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(self.decoder(torch.cat([obs, z], -1))), mean, log_std

    def sample(self, obs: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples per state, latents z ~ N(0, I) clipped to +-max_latent: actions and pre-tanh outputs [B, n, A]."""
        z = torch.randn(obs.shape[0], n, self.latent_dim, device=obs.device).clamp(-self.max_latent, self.max_latent)
        raw = self.decoder(torch.cat([obs.unsqueeze(1).expand(-1, n, -1), z], -1))
        return torch.tanh(raw), raw


class BEARPolicy(nn.Module):
    """What BEAR acts with: n actions per state from pi, the best by Q_1. The n Gaussian noises are fixed (drawn once
    from `seed`), so the policy is a deterministic function of the state."""

    def __init__(self, policy: TanhGaussianPolicy, q: EnsembleQ, num_samples: int, act_dim: int, seed: int):
        super().__init__()
        self.policy, self.q = policy, q
        eps = torch.randn(num_samples, act_dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("eps", eps.to(next(policy.parameters()).device))

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        n = self.eps.shape[0]
        act, _ = self.policy.sample(obs, n, self.eps.unsqueeze(0))  # [B, n, A]
        q1 = self.q(obs.repeat_interleave(n, 0), act.reshape(-1, act.shape[-1]))[0].view(-1, n)
        return act[torch.arange(act.shape[0], device=act.device), q1.argmax(1)]


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def vae_loss(recon: torch.Tensor, act: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
             kl_weight: float) -> torch.Tensor:
    """L_VAE = mean((D(s, z) - a)^2) + kl_weight * KL,  KL = -0.5 mean(1 + log sigma^2 - mu^2 - sigma^2)"""
    recon_loss = ((recon - act) ** 2).mean()
    kl = -0.5 * (1.0 + 2.0 * log_std - mean**2 - (2.0 * log_std).exp()).mean()
    return recon_loss + kl_weight * kl


def mmd(x: torch.Tensor, y: torch.Tensor, kernel: str, sigma: float) -> torch.Tensor:
    """MMD_k(X, Y) = sqrt(mean k(x, x') + mean k(y, y') - 2 mean k(x, y) + 1e-6) per state; x, y: [B, n, A] -> [B].
    gaussian k = exp(-||x - y||^2 / (2 sigma)), laplacian k = exp(-||x - y||_1 / (2 sigma))."""
    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # mean over all n x n pairs of a state
        diff = a.unsqueeze(2) - b.unsqueeze(1)  # [B, n, n, A]
        dist = diff.pow(2).sum(-1) if kernel == "gaussian" else diff.abs().sum(-1)
        return torch.exp(-dist / (2.0 * sigma)).mean((1, 2))
    return (k(x, x) + k(y, y) - 2.0 * k(x, y) + 1e-6).sqrt()


def soft_clipped_target(next_q: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, gamma: float, lam: float,
                        n: int) -> torch.Tensor:
    """y = r + gamma (1 - d) max_i [lam min_j Q_j(s', a_i) + (1 - lam) max_j Q_j(s', a_i)];
    next_q = [E, B * n] target Q of the n policy samples of each next state (state-major)."""
    soft = lam * next_q.min(0).values + (1.0 - lam) * next_q.max(0).values
    return rew + gamma * (1.0 - done) * soft.view(-1, n).max(1).values


def q_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_Q = E[sum_j (y - Q_j(s, a))^2]; q = [E, B] Q_j(s, a), target = y (a constant)."""
    return ((q - target.detach()) ** 2).mean(1).sum()


def actor_loss(q_min: torch.Tensor | None, divergence: torch.Tensor, alpha: torch.Tensor,
               threshold: float) -> torch.Tensor:
    """L_pi = E_s[-min_j Q_j(s, a~) + alpha (MMD - epsilon)]; q_min None (warm start): E_s[alpha (MMD - epsilon)]."""
    constraint = alpha.detach() * (divergence - threshold)
    return (constraint if q_min is None else constraint - q_min).mean()


def lagrange_loss(log_alpha: torch.Tensor, divergence: torch.Tensor, threshold: float) -> torch.Tensor:
    """L_alpha = -E_s[exp(log alpha) (MMD - epsilon)]: descending it raises alpha while MMD > epsilon."""
    return -(log_alpha.exp() * (divergence.detach() - threshold)).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "bear")
        args = resumed_args(Args, args, "bear", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    sigma = KERNEL_SIGMA[args.kernel] if args.mmd_sigma is None else args.mmd_sigma

    # Data: rewards and observations as they are; actions in [-1, 1].
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "bear")  # says at start if it cannot evaluate or score
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed)
    obs_dim, act_dim = data.obs_dim, data.act_dim

    vae = VAE(obs_dim, act_dim, args.vae_hidden_dim, args.max_latent).to(device)
    policy = TanhGaussianPolicy(obs_dim, act_dim, args.hidden_dim).to(device)
    q = EnsembleQ(obs_dim, act_dim, args.hidden_dim, args.num_critics).to(device)
    q_target = EnsembleQ(obs_dim, act_dim, args.hidden_dim, args.num_critics).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    log_alpha = torch.zeros(1, device=device, requires_grad=True)
    vae_opt = adam(vae.parameters(), args.behaviour_lr, device)
    pi_opt = adam(policy.parameters(), args.actor_lr, device)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    alpha_opt = adam([log_alpha], args.lagrange_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("vae", vae), ("policy", policy), ("q", q), ("q_target", q_target), ("vae_opt", vae_opt),
                              ("pi_opt", pi_opt), ("q_opt", q_opt), ("alpha_opt", alpha_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        with torch.no_grad():
            log_alpha.copy_(state["log_alpha"])
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("bear", args.dataset, args.seed)
    run = Run(run_dir, args, "bear", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update(bc: bool) -> dict[str, torch.Tensor]:  # bc: the warm start (the policy matches the VAE's support only)
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        recon, mean, log_std = vae(obs, act)
        g_loss = vae_loss(recon, act, mean, log_std, args.kl_weight)
        vae_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        vae_opt.step()

        with torch.no_grad():  # m actions of pi per next state, the best by the mixed ensemble
            m = args.num_action_samples
            next_act, _ = policy.sample(next_obs, m)
            next_q = q_target(next_obs.repeat_interleave(m, 0), next_act.reshape(-1, act_dim))
            target = soft_clipped_target(next_q, rew, done, args.gamma, args.target_min_weight, m)
        q_data = q(obs, act)
        qf_loss = q_loss(q_data, target)
        q_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        q_opt.step()

        n = args.num_divergence_samples
        with torch.no_grad():
            _, raw_behaviour = vae.sample(obs, n)
        pi_act, raw_pi = policy.sample(obs, n)
        divergence = mmd(raw_behaviour, raw_pi, args.kernel, sigma)
        alpha = log_alpha.exp()
        q_min = None if bc else q(obs, pi_act[:, 0]).min(0).values
        pi_loss = actor_loss(q_min, divergence, alpha, args.lagrange_threshold)
        a_loss = lagrange_loss(log_alpha, divergence, args.lagrange_threshold)
        pi_opt.zero_grad(set_to_none=True)
        alpha_opt.zero_grad(set_to_none=True)
        # One backward for both: neither loss reaches the other's parameter (each reads the other's input detached).
        # It also leaves gradients in Q; q_opt.zero_grad discards them before Q's next step.
        (pi_loss + a_loss).backward()
        pi_opt.step()
        alpha_opt.step()
        with torch.no_grad():
            log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
        return {"loss/vae": g_loss, "loss/q": qf_loss, "loss/actor": pi_loss, "loss/lagrange": a_loss,
                "q_data": q_data.detach().min(0).values.mean(), "divergence": divergence.detach().mean(),
                "lagrange_multiplier": alpha.detach().squeeze()}

    policy_fn = policy_function(BEARPolicy(policy, q, args.num_eval_action_samples, act_dim, args.seed), device)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "vae": vae.state_dict(), "policy": policy.state_dict(), "q": q.state_dict(),
            "q_target": q_target.state_dict(), "log_alpha": log_alpha.detach(), "vae_opt": vae_opt.state_dict(),
            "pi_opt": pi_opt.state_dict(), "q_opt": q_opt.state_dict(), "alpha_opt": alpha_opt.state_dict(),
            "buffer": buffer.state_dict(), "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "bear", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": obs_dim, "act_dim": act_dim})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            metrics = update_fn(bc=step < args.bc_steps)
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
    result = {"algo": "bear", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"bear {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
def policy_function(policy: BEARPolicy, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim] -> deterministic actions [n, act_dim] in [-1, 1]."""
    def act(obs: np.ndarray) -> np.ndarray:
        return policy(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = policy
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: the BEARPolicy)."""
    state = load_policy_checkpoint(run_dir, "bear")
    args = Args(**upgrade_args("bear", json.loads(state["args"])))
    obs_dim, act_dim = state["obs_dim"], state["act_dim"]
    policy = TanhGaussianPolicy(obs_dim, act_dim, args.hidden_dim).to(device)
    q = EnsembleQ(obs_dim, act_dim, args.hidden_dim, args.num_critics).to(device)
    policy.load_state_dict(state["policy"])
    q.load_state_dict(state["q"])
    return policy_function(BEARPolicy(policy, q, args.num_eval_action_samples, act_dim, args.seed).eval(),
                           torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
