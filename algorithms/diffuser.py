"""Diffuser: planning by denoising whole trajectories, guided by a learned return.

Janner, Du, Tenenbaum, Levine. "Planning with Diffusion for Flexible Behavior Synthesis." ICML 2022.
arXiv:2205.09991. Authors' code: github.com/jannerm/diffuser (config/locomotion.py, diffuser/models,
diffuser/sampling).

A trajectory tau = [(a_0, s_0), ..., (a_{H-1}, s_{H-1})] (a [H, |A| + |S|] array, actions first) is generated
by a denoising diffusion model over all its steps at once. Training is DDPM's, with the network predicting the
clean trajectory tau^0 from its noisy version tau^i (i = 0..T-1 with the authors' indexing):

    q(tau^i | tau^0) = N(sqrt(abar_i) tau^0, (1 - abar_i) I),   abar_i = prod_{k<=i} (1 - beta_k), cosine betas
    L(theta)  = E_{i, eps, tau^0} [ w * || f_theta(tau^i, i) - tau^0 ||^2 ]      (w: 10 on a_0, 1 elsewhere)

A separate value network J_phi(tau^i, i) regresses the discounted return from the trajectory's first step to the
end of its episode, on noisy trajectories:

    L(phi)    = E_{i, eps, tau^0} [ (J_phi(tau^i, i) - sum_{k>=0} gamma^k r_k)^2 ]

Planning (the paper's Algorithm 1) conditions on the current state s by inpainting: s_0 of every sample is
overwritten with s after every change. From tau^T ~ N(0, I), for i = T-1 .. 0:

    tau <- tau + alpha * Sigma_i * grad_tau J_phi(tau, i)   (n_guide times; skipped for i < t_stopgrad)
    mu   = c1_i * f_theta(tau, i) + c2_i * tau              (the posterior mean of q(tau^{i-1} | tau^i, tau^0))
    tau <- mu + sqrt(Sigma_i) * z,  z ~ N(0, I) (z = 0 at i = 0)

and the first action of the sample with the highest J is executed; the plan is made again at every step.

Implementation details (the authors' code and config/locomotion.py unless marked "deviation"):
 1. Temporal U-Net over the horizon axis: base width 32 (`--hidden-dim`), widths x (1, 2, 4, 8), two residual
    blocks per level (Conv1d kernel 5 -> GroupNorm(8) -> Mish, twice; the time embedding, sinusoidal -> Linear
    -> Mish -> Linear, added after the first), Conv1d(3, stride 2) down and ConvTranspose1d(4, 2) up; no
    attention. Horizon H = 32, T = 20 diffusion steps, cosine schedule (s = 0.008), betas clipped at 0.999.
 2. The network predicts tau^0 (predict_epsilon=False); the prediction is not clipped (clip_denoised=False).
    The loss weights every entry 1 and the first action 10 (action_weight; loss_discount 1).
 3. Observations and actions are z-scored per dimension with the data's mean and std (GaussianNormalizer; here
    with + 1e-6 on the std against constant dimensions). Actions are first mapped to [-1, 1] like every script.
 4. Training windows start at every step s < min(L - 1, L_max - H) of an episode of L steps (L_max: the longest
    episode, 1000 in locomotion: the authors' max_path_length); windows that run past an episode's end are
    padded with zero observations and actions (zeros before normalization), as the authors' use_padding.
    Value targets: the discounted reward-to-go of the window's first step to the end of its episode, -100 added
    to the last reward of an episode that terminated, not normalized.
 5. Value network: the U-Net's down half (every level downsamples), two more residual blocks with 1/2 and 1/4
    of the last width, each followed by a downsampling, then Linear -> Mish -> Linear on [features, time
    embedding]. gamma = 0.997: the value model the authors' plan config loads (the values config says 0.99).
 6. Adam 2e-4 for both networks. Batch 64 = the authors' 32 x 2 accumulated gradients (the same gradient).
    The diffusion model trains for 1M updates, the value network in the first 200k of them (the authors train
    them as separate runs of those lengths), each on the same windows with its own noise levels i and noise.
    EMA of both networks' weights, decay 0.995, every 10 updates, a plain copy for the first 2,000 updates;
    planning uses the EMA weights.
 7. Guidance: scale alpha = 0.1, 2 gradient steps per denoising step, the gradient multiplied by the posterior
    variance Sigma_i (scale_grad_by_std), none for i < t_stopgrad = 2; 64 plans per state. The authors'
    overrides: hopper-medium-expert --guide-scale 0.0001 --unguided-steps 4; halfcheetah H = 4, widths
    x (1, 4, 8), scale 0.001, t_stopgrad 4, with attention (not implemented here).
 8. grad_tau J is written out layer by layer (Mish, GroupNorm, Conv1d and Linear input gradients) rather than
    taken with autograd, so that the whole planner is one traceable module of plain tensor operations
    (benchmarks/export.py); it reuses the forward pass's activations, as autograd would, and
    tests/test_diffuser.py checks it against torch.autograd.grad.
 9. Deviation: acting is deterministic. The sampler's noise (tau^T and every z) is drawn once from `--seed`
    and reused at every step and for every state, so the policy is a function of the state (the authors draw
    fresh noise at each step). The plans are ranked by J of the final plan at i = 0 (the authors rank by the
    value of the last guidance step).
10. Deviation: evaluation every 100k updates, 10 episodes; the score is the final evaluation. Planning time
    per environment step is measured: `plan_s_per_step`, one batched call of an evaluation (all its running
    episodes at once), the mean over its steps, logged with each evaluation and in result.json as the mean over
    the evaluations the finishing process ran (as tt.py); `plan_s_one_state` in result.json, one state alone
    (the paper's setting).
    At the defaults (64 plans, 20 denoising steps, horizon 32; an untrained Hopper-sized model, 11 + 3 dims; one
    CPU thread, the machine's other core busy with a training run) one state takes ~2.7 s
    (benchmarks/results/plan_speed_cpu_1thread_diffuser.json, written by `OMP_NUM_THREADS=1 python
    benchmarks/plan_speed.py --algo diffuser --steps 3 --out FILE`): a 1,000-step episode is about 45 minutes on
    a CPU thread, so evaluate fewer episodes on a CPU (--eval-episodes) or plan on a GPU.

Usage:
    python algorithms/diffuser.py                                        # stitch/hopper/medium-replay-v0
    python algorithms/diffuser.py --dataset stitch/hopper/medium-expert-v0 --guide-scale 0.0001 --unguided-steps 4
    python algorithms/diffuser.py --horizon 8 --dim-mults 1 4 --diffusion-steps 5 --plan-samples 8  # small, CPU
    python algorithms/diffuser.py --resume runs/diffuser__stitch-hopper-medium-replay-v0__s0__20261207-120000
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
from common.checkpoints import (CheckpointError, load_policy_checkpoint, load_run_checkpoint,  # noqa: E402
                                resumed_args, rng_state, save_checkpoint, set_rng_state)
from common.config import ArgumentError, check_common, require, resolve_device  # noqa: E402
from common.data import Dataset, DatasetError, load_dataset  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.fast import adam, fast_update  # noqa: E402
from common.interrupt import StopSignal, resume_command  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402

GROUPS = 8  # GroupNorm groups in every convolution block (the authors' n_groups)


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling, the planner's fixed noise and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates of the diffusion model."""
    batch_size: int = 64
    """Trajectory windows per update (the authors' 32 x 2 accumulated gradients)."""
    hidden_dim: int = 32
    """Channels of the U-Net's first level (the paper's dim); a multiple of 8 (GroupNorm's groups)."""
    dim_mults: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 8])
    """Channel multipliers of the U-Net's levels (and the value network's); one downsampling between levels."""
    horizon: int = 32
    """Planning horizon H: steps per trajectory; divisible by 2^(levels - 1)."""
    diffusion_steps: int = 20
    """Number of diffusion steps T."""
    action_weight: float = 10.0
    """Loss weight of the first action a_0 in the denoising loss (every other entry weighs 1)."""
    actor_lr: float = 2e-4
    """Learning rate of the diffusion model (the network that outputs the plans and their actions)."""
    critic_lr: float = 2e-4
    """Learning rate of the value network J."""
    value_steps: int = 200_000
    """The value network J is trained in the first this-many updates (0: never; needs --guide-scale 0)."""
    gamma: float = 0.997
    """Discount factor of the value targets J regresses to."""
    termination_penalty: float = -100.0
    """Added to the last reward of an episode that terminated, in the value targets."""
    ema_decay: float = 0.995
    """Decay of the exponential moving average of both networks' weights (used for planning)."""
    ema_every: int = 10
    """Updates between EMA steps."""
    ema_start: int = 2_000
    """Before this update the EMA weights are plain copies of the networks'."""
    guide_scale: float = 0.1
    """Guidance scale alpha: step size along Sigma_i * grad J at each denoising step (0: no guidance)."""
    guide_steps: int = 2
    """Guidance gradient steps per denoising step (the authors' n_guide_steps)."""
    unguided_steps: int = 2
    """The last denoising steps (i < t_stopgrad) are taken without guidance: the authors' t_stopgrad."""
    plan_samples: int = 64
    """Plans sampled per state when acting; the first action of the one with the highest J is executed."""
    eval_every: int = 100_000
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
    levels = len(args.dim_mults)
    require(levels >= 1 and all(isinstance(m, int) and m > 0 for m in args.dim_mults), "dim_mults",
            "must be one or more positive integers", args.dim_mults)
    require(args.hidden_dim > 0 and args.hidden_dim % GROUPS == 0, "hidden_dim",
            f"must be a positive multiple of {GROUPS} (GroupNorm's groups)", args.hidden_dim)
    require(args.horizon >= 2 and args.horizon % 2 ** (levels - 1) == 0, "horizon",
            f"must be >= 2 and divisible by 2^(levels - 1) = {2 ** (levels - 1)}", args.horizon)
    # the value network's last residual block: a quarter of the last width, after levels + 1 halvings of H
    width, length = args.hidden_dim * args.dim_mults[-1] // 4, -(-args.horizon // 2 ** (levels + 1))
    require(width % GROUPS == 0 and width // GROUPS * length >= 4, "dim_mults",
            f"times --hidden-dim must end in a width whose quarter is a multiple of {GROUPS} and leaves GroupNorm 4 or "
            f"more values per group in the value network's last block ({width // GROUPS} channels x {length} steps: "
            f"fewer normalize to near-constants that pass no gradient)", args.dim_mults)
    require(args.diffusion_steps >= 1, "diffusion_steps", "must be a positive integer", args.diffusion_steps)
    require(args.action_weight >= 0, "action_weight", "must be >= 0", args.action_weight)
    require(args.value_steps >= 0, "value_steps", "must be >= 0", args.value_steps)
    require(args.value_steps > 0 or args.guide_scale == 0, "value_steps",
            "must be positive while --guide-scale is not 0 (guidance follows a trained value network)")
    require(0.0 < args.ema_decay < 1.0, "ema_decay", "must be in (0, 1)", args.ema_decay)
    require(args.ema_every > 0, "ema_every", "must be a positive integer", args.ema_every)
    require(args.ema_start >= 0, "ema_start", "must be >= 0", args.ema_start)
    require(args.guide_scale >= 0, "guide_scale", "must be >= 0", args.guide_scale)
    require(args.guide_steps >= 0, "guide_steps", "must be >= 0", args.guide_steps)
    require(args.unguided_steps >= 0, "unguided_steps", "must be >= 0", args.unguided_steps)
    require(args.plan_samples > 0, "plan_samples", "must be a positive integer", args.plan_samples)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
def mish_grad(x: torch.Tensor) -> torch.Tensor:
    """d/dx of Mish(x) = x tanh(softplus(x)): tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)."""
    tsp = torch.tanh(F.softplus(x))
    return tsp + x * torch.sigmoid(x) * (1 - tsp * tsp)


def group_norm_input_grad(y: torch.Tensor, norm: nn.GroupNorm, g: torch.Tensor) -> torch.Tensor:
    """g^T d norm(y) / dy for y [B, C, L]: (g' - mean(g') - yhat mean(g' yhat)) / sigma per group, g' = g gamma."""
    yg = y.reshape(y.shape[0], norm.num_groups, -1)
    mu = yg.mean(-1, keepdim=True)
    rstd = torch.rsqrt(yg.var(-1, unbiased=False, keepdim=True) + norm.eps)
    yhat = (yg - mu) * rstd
    gg = (g * norm.weight[:, None]).reshape(yg.shape)
    dy = rstd * (gg - gg.mean(-1, keepdim=True) - yhat * (gg * yhat).mean(-1, keepdim=True))
    return dy.reshape(y.shape)


def conv_input_grad(conv: nn.Conv1d, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """g^T d conv(x) / dx: the transposed convolution of g (output_padding restores x's length)."""
    stride, pad, k = conv.stride[0], conv.padding[0], conv.kernel_size[0]
    extra = x.shape[-1] - ((g.shape[-1] - 1) * stride - 2 * pad + k)
    return F.conv_transpose1d(g, conv.weight, stride=stride, padding=pad, output_padding=extra)


class TimeEmbedding(nn.Module):
    """Diffusion step i -> sinusoidal features (dim) -> Linear(4 dim) -> Mish -> Linear(dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half, dtype = self.dim // 2, self.mlp[0].weight.dtype
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=dtype) * (-math.log(10000) / (half - 1)))
        angles = t.to(dtype)[:, None] * freqs[None]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], -1))


class ConvBlock(nn.Module):
    """Conv1d (kernel 5, same length) -> GroupNorm(8) -> Mish, over [B, channels, H]."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.norm = nn.GroupNorm(GROUPS, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(self.norm(self.conv(x)))

    def forward_saved(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """forward(x), and what input_grad needs: (x, conv(x), norm(conv(x)))."""
        y = self.conv(x)
        z = self.norm(y)
        return F.mish(z), (x, y, z)

    def input_grad(self, saved: tuple, g: torch.Tensor) -> torch.Tensor:
        """g^T d forward(x) / dx, from forward_saved's record of x."""
        x, y, z = saved
        return conv_input_grad(self.conv, x, group_norm_input_grad(y, self.norm, g * mish_grad(z)))


class ResidualBlock(nn.Module):
    """out = block2(block1(x) + Linear(Mish(time embedding))) + residual(x); residual a 1x1 conv where widths
    differ (the authors' ResidualTemporalBlock)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int):
        super().__init__()
        self.block1, self.block2 = ConvBlock(c_in, c_out), ConvBlock(c_out, c_out)
        self.time = nn.Sequential(nn.Mish(), nn.Linear(time_dim, c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.time(t_emb)[:, :, None]
        return self.block2(h) + self.residual(x)

    def forward_saved(self, x: torch.Tensor, t_emb: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """forward(x, t_emb), and what input_grad needs."""
        h, saved1 = self.block1.forward_saved(x)
        out, saved2 = self.block2.forward_saved(h + self.time(t_emb)[:, :, None])
        return out + self.residual(x), (x, saved1, saved2)

    def input_grad(self, saved: tuple, g: torch.Tensor) -> torch.Tensor:
        """g^T d forward(x, t_emb) / dx (the time embedding held fixed), from forward_saved's record."""
        x, saved1, saved2 = saved
        gx = self.block1.input_grad(saved1, self.block2.input_grad(saved2, g))
        return gx + (conv_input_grad(self.residual, x, g) if isinstance(self.residual, nn.Conv1d) else g)


def downsample(c: int) -> nn.Conv1d:
    return nn.Conv1d(c, c, 3, stride=2, padding=1)


class TemporalUnet(nn.Module):
    """f_theta(tau^i, i) -> the predicted clean trajectory tau^0: [B, H, D] -> [B, H, D] (D = |A| + |S|)."""

    def __init__(self, transition_dim: int, dim: int, dim_mults: list[int]):
        super().__init__()
        widths = [transition_dim, *(dim * m for m in dim_mults)]
        pairs = list(zip(widths[:-1], widths[1:]))
        self.time = TimeEmbedding(dim)
        self.downs = nn.ModuleList([nn.ModuleList([
            ResidualBlock(c_in, c_out, dim), ResidualBlock(c_out, c_out, dim),
            downsample(c_out) if k < len(pairs) - 1 else nn.Identity()]) for k, (c_in, c_out) in enumerate(pairs)])
        self.mid1, self.mid2 = ResidualBlock(widths[-1], widths[-1], dim), ResidualBlock(widths[-1], widths[-1], dim)
        self.ups = nn.ModuleList([nn.ModuleList([
            ResidualBlock(2 * c_out, c_in, dim), ResidualBlock(c_in, c_in, dim),
            nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1)]) for c_in, c_out in reversed(pairs[1:])])
        self.final = nn.Sequential(ConvBlock(dim, dim), nn.Conv1d(dim, transition_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, t_emb, skips = x.transpose(1, 2), self.time(t), []
        for res1, res2, down in self.downs:
            x = res2(res1(x, t_emb), t_emb)
            skips.append(x)
            x = down(x)
        x = self.mid2(self.mid1(x, t_emb), t_emb)
        for res1, res2, up in self.ups:
            x = up(res2(res1(torch.cat([x, skips.pop()], 1), t_emb), t_emb))
        return self.final(x).transpose(1, 2)


class ValueFunction(nn.Module):
    """J_phi(tau^i, i): [B, H, D] -> [B], the U-Net's down half (a downsampling after every level), two residual
    blocks of 1/2 and 1/4 the last width (each followed by a downsampling), then an MLP on [features, time]."""

    def __init__(self, transition_dim: int, horizon: int, dim: int, dim_mults: list[int]):
        super().__init__()
        widths = [transition_dim, *(dim * m for m in dim_mults)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [ResidualBlock(c_in, c_out, dim), ResidualBlock(c_out, c_out, dim), downsample(c_out)]
        last = widths[-1]
        layers += [ResidualBlock(last, last // 2, dim), downsample(last // 2),
                   ResidualBlock(last // 2, last // 4, dim), downsample(last // 4)]
        self.layers = nn.ModuleList(layers)
        self.time = TimeEmbedding(dim)
        length = horizon
        for _ in range(len(dim_mults) + 2):
            length = (length + 1) // 2  # each stride-2 downsampling (kernel 3, padding 1): ceil(L / 2)
        features = last // 4 * length
        self.fc1, self.fc2 = nn.Linear(features + dim, features // 2), nn.Linear(features // 2, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x, t_emb = x.transpose(1, 2), self.time(t)
        for layer in self.layers:
            x = layer(x, t_emb) if isinstance(layer, ResidualBlock) else layer(x)
        return self.fc2(F.mish(self.fc1(torch.cat([x.flatten(1), t_emb], -1)))).squeeze(-1)

    def input_grad(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_tau J_phi(tau, i) for every trajectory of the batch: [B, H, D], by the chain rule layer by layer
        (what torch.autograd.grad(J.sum(), tau) computes; plain tensor operations, so the planner traces)."""
        h, t_emb, saved = x.transpose(1, 2), self.time(t), []
        for layer in self.layers:  # the forward pass, keeping what each layer's input gradient needs
            h, record = layer.forward_saved(h, t_emb) if isinstance(layer, ResidualBlock) else (layer(h), h)
            saved.append(record)
        pre = self.fc1(torch.cat([h.flatten(1), t_emb], -1))
        g = ((self.fc2.weight * mish_grad(pre)) @ self.fc1.weight)[:, :h[0].numel()].reshape(h.shape)
        for layer, record in zip(reversed(self.layers), reversed(saved)):  # back through them, last first
            g = layer.input_grad(record, g) if isinstance(layer, ResidualBlock) else conv_input_grad(layer, record, g)
        return g.transpose(1, 2)


# ----------------------------------------------------------------------------------------------
# Diffusion: the noise schedule, inpainting, the losses and one guided denoising step
# ----------------------------------------------------------------------------------------------
class Schedule(nn.Module):
    """DDPM's constants for T steps of the cosine schedule (Nichol & Dhariwal 2021), as buffers:
    abar_i = f((i + 1) / T) / f(0), f(u) = cos^2(pi/2 (u + s) / (1 + s)); beta_i = 1 - abar_i / abar_{i-1}, clipped
    at 0.999 (abar recomputed from the clipped betas)."""

    def __init__(self, steps: int, s: float = 0.008):
        super().__init__()
        f = np.cos((np.arange(steps + 1) / steps + s) / (1 + s) * np.pi / 2) ** 2
        betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
        abar = np.cumprod(1 - betas)
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        var = betas * (1 - abar_prev) / (1 - abar)  # posterior variance Sigma_i of q(tau^{i-1} | tau^i, tau^0)
        for name, value in (("betas", betas), ("alphas_cumprod", abar), ("posterior_variance", var),
                            ("posterior_std", np.sqrt(np.maximum(var, 1e-20))),
                            ("coef_x0", betas * np.sqrt(abar_prev) / (1 - abar)),
                            ("coef_xt", (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar))):
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32))
        self.steps = steps

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """tau^i = sqrt(abar_i) tau^0 + sqrt(1 - abar_i) eps, per trajectory step i = t [B]."""
        abar = self.alphas_cumprod[t][:, None, None]
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def condition(x: torch.Tensor, state: torch.Tensor, act_dim: int) -> torch.Tensor:
    """Inpainting: tau with its first state s_0 replaced by `state` [B, |S|] (the authors' apply_conditioning)."""
    x = x.clone()
    x[:, 0, act_dim:] = state
    return x


def loss_weights(horizon: int, act_dim: int, obs_dim: int, action_weight: float) -> torch.Tensor:
    """w [H, |A| + |S|]: 1 everywhere but on the first action a_0, which weighs `action_weight`."""
    weights = torch.ones(horizon, act_dim + obs_dim)
    weights[0, :act_dim] = action_weight
    return weights


def diffusion_loss(x0_pred: torch.Tensor, x0: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L(theta) = E[w * ||f_theta(tau^i, i) - tau^0||^2], the mean over batch, steps and dimensions; w [H, D]."""
    return (weights * (x0_pred - x0) ** 2).mean()


def value_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L(phi) = E[(J_phi(tau^i, i) - sum_k gamma^k r_k)^2]."""
    return ((pred - target) ** 2).mean()


def guide(x: torch.Tensor, state: torch.Tensor, i: int, value: ValueFunction, schedule: Schedule, scale: float,
          steps: int, unguided_steps: int, act_dim: int) -> torch.Tensor:
    """tau <- tau + alpha Sigma_i grad J(tau, i), `steps` times, each followed by inpainting; none for i <
    t_stopgrad."""
    if i < unguided_steps or scale == 0:
        return x
    t = torch.zeros_like(x[:, 0, 0], dtype=torch.long) + i
    for _ in range(steps):
        x = condition(x + scale * schedule.posterior_variance[i] * value.input_grad(x, t), state, act_dim)
    return x


def denoise(x: torch.Tensor, state: torch.Tensor, i: int, model: TemporalUnet, schedule: Schedule,
            noise: torch.Tensor, act_dim: int) -> torch.Tensor:
    """One reverse step: tau <- c1_i f(tau, i) + c2_i tau + sqrt(Sigma_i) z (z = 0 at i = 0), then inpainting."""
    t = torch.zeros_like(x[:, 0, 0], dtype=torch.long) + i
    mean = schedule.coef_x0[i] * model(x, t) + schedule.coef_xt[i] * x
    return condition(mean + schedule.posterior_std[i] * noise if i > 0 else mean, state, act_dim)


# ----------------------------------------------------------------------------------------------
# Data: normalized trajectory windows and their value targets
# ----------------------------------------------------------------------------------------------
def trajectory_windows(data: Dataset, horizon: int, gamma: float, termination_penalty: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(rows [N', D] of normalized (action, observation) with H - 1 zero rows (before normalization) after every
    episode, the row of every window's start [M], its value target [M], the normalization statistics)."""
    actions = data.actions.astype(np.float32)
    if data.action_low is not None and not (np.all(data.action_low == -1) and np.all(data.action_high == 1)):
        actions = 2.0 * (actions - data.action_low) / (data.action_high - data.action_low) - 1.0
    stats = {"act_mean": actions.mean(0), "act_std": actions.std(0) + 1e-6,
             "obs_mean": data.observations.mean(0), "obs_std": data.observations.std(0) + 1e-6}
    stats = {k: v.astype(np.float32) for k, v in stats.items()}
    zero = np.concatenate([-stats["act_mean"] / stats["act_std"], -stats["obs_mean"] / stats["obs_std"]])
    steps = np.concatenate([(actions - stats["act_mean"]) / stats["act_std"],
                            (data.observations - stats["obs_mean"]) / stats["obs_std"]], 1).astype(np.float32)
    longest = int(data.episode_lengths.max()) if len(data.episode_lengths) else 0
    rows, starts, targets, at = [], [], [], 0
    for a, n in zip(data.episode_starts, data.episode_lengths):
        rewards = data.rewards[a:a + n].astype(np.float64)
        if data.terminals[a + n - 1] > 0:
            rewards[-1] += termination_penalty
        to_go, acc = np.zeros(n), 0.0
        for k in range(n - 1, -1, -1):  # discounted reward-to-go of every step, to the end of the episode
            acc = rewards[k] + gamma * acc
            to_go[k] = acc
        count = max(0, min(n - 1, longest - horizon))
        rows += [steps[a:a + n], np.tile(zero, (horizon - 1, 1))]
        starts.append(at + np.arange(count))
        targets.append(to_go[:count])
        at += n + horizon - 1
    if not rows or sum(len(s) for s in starts) == 0:
        raise DatasetError(f"dataset {data.dataset_id!r} has no trajectory window of --horizon {horizon} steps "
                           f"(its longest episode has {longest})")
    return (np.concatenate(rows).astype(np.float32), np.concatenate(starts).astype(np.int64),
            np.concatenate(targets).astype(np.float32), stats)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "diffuser")
        args = resumed_args(Args, args, "diffuser", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: every window of H steps as normalized [a, s] rows on the device, with its discounted return to go.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "diffuser")  # says at start if it cannot evaluate or score
    rows, starts, targets, stats = trajectory_windows(data, args.horizon, args.gamma, args.termination_penalty)
    rows_t, starts_t, targets_t = (torch.as_tensor(a, device=device) for a in (rows, starts, targets))
    offsets = torch.arange(args.horizon, device=device)
    sampler = torch.Generator(device=device)
    sampler.manual_seed(args.seed)
    act_dim, transition_dim = data.act_dim, data.act_dim + data.obs_dim
    stats_t = {k: torch.as_tensor(v, device=device) for k, v in stats.items()}

    model = TemporalUnet(transition_dim, args.hidden_dim, args.dim_mults).to(device)
    value = ValueFunction(transition_dim, args.horizon, args.hidden_dim, args.dim_mults).to(device)
    ema_model = TemporalUnet(transition_dim, args.hidden_dim, args.dim_mults).to(device).requires_grad_(False)
    ema_value = ValueFunction(transition_dim, args.horizon, args.hidden_dim, args.dim_mults).to(device)
    ema_value.requires_grad_(False)
    ema_model.load_state_dict(model.state_dict())
    ema_value.load_state_dict(value.state_dict())
    schedule = Schedule(args.diffusion_steps).to(device)
    model_opt = adam(model.parameters(), args.actor_lr, device)
    value_opt = adam(value.parameters(), args.critic_lr, device)
    weights = loss_weights(args.horizon, act_dim, data.obs_dim, args.action_weight).to(device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("model", model), ("value", value), ("ema_model", ema_model), ("ema_value", ema_value),
                              ("model_opt", model_opt), ("value_opt", value_opt)):
                obj.load_state_dict(state[name])
            sampler.set_state(state["sampler"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = (Path(args.resume) if args.resume
               else Path(args.runs_dir) / run_name("diffuser", args.dataset, args.seed))
    run = Run(run_dir, args, "diffuser", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update(train_value: bool) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(starts_t), (args.batch_size,), device=device, generator=sampler)
        x0 = rows_t[starts_t[idx, None] + offsets]  # [B, H, D]: a batch of trajectory windows tau^0
        s0 = x0[:, 0, act_dim:]
        t = torch.randint(0, args.diffusion_steps, (args.batch_size,), device=device)
        x_noisy = condition(schedule.q_sample(x0, t, torch.randn_like(x0)), s0, act_dim)
        loss = diffusion_loss(condition(model(x_noisy, t), s0, act_dim), x0, weights)
        model_opt.zero_grad(set_to_none=True)
        loss.backward()
        model_opt.step()
        if not train_value:
            return {"loss/diffusion": loss}

        t = torch.randint(0, args.diffusion_steps, (args.batch_size,), device=device)  # J sees its own noise
        x_noisy = condition(schedule.q_sample(x0, t, torch.randn_like(x0)), s0, act_dim)
        v_loss = value_loss(value(x_noisy, t), targets_t[idx])
        value_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        value_opt.step()
        return {"loss/diffusion": loss, "loss/value": v_loss}

    def ema_step(online: nn.Module, ema: nn.Module) -> None:  # a plain copy before --ema-start
        weight = 1.0 if step < args.ema_start else 1.0 - args.ema_decay
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(online.parameters()), weight)

    planner = Planner(ema_model, ema_value, schedule, stats_t, act_dim, args)
    policy_fn = policy_function(planner, device)
    plan_times: list[float] = []  # seconds per environment step of this process's evaluations (not checkpointed)

    def evaluate_planner() -> dict:
        """An evaluation, timing each batched planning call (one per environment step of its running episodes)."""
        calls = []

        def timed_policy(obs: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            actions = policy_fn(obs)
            calls.append(time.perf_counter() - start)
            return actions
        record = evaluator(timed_policy, step, run)
        if calls:
            plan_times.append(float(np.mean(calls)))
            run.log(step, {"plan_s_per_step": plan_times[-1]})
        return record

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "model": model.state_dict(), "value": value.state_dict(), "ema_model": ema_model.state_dict(),
            "ema_value": ema_value.state_dict(), "model_opt": model_opt.state_dict(),
            "value_opt": value_opt.state_dict(), "sampler": sampler.get_state(),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "diffuser", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, **{k: v.cpu() for k, v in stats_t.items()}})

    update_fn = fast_update(update, device, args.compile, generators=[sampler])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            train_value = step < args.value_steps
            metrics = update_fn(train_value=train_value)
            if step % args.ema_every == 0:  # the authors' order: the EMA step looks at the update count before
                ema_step(model, ema_model)
                if train_value:
                    ema_step(value, ema_value)
            step += 1
            if step % args.log_every == 0:
                run.log(step, {k: v.item() for k, v in metrics.items()}
                        | {"updates_per_s": (step - start_step) / (time.time() - start_time)})
                run.advance(args.log_every)
            if step == args.total_steps:
                save()  # the final checkpoint comes before the final evaluation: a failure there loses nothing
            if evaluator.due(step, evals):
                evals.append(evaluate_planner())
            if run.checkpoint_due(step) or stop:
                save()
            if stop:
                run.close()
                raise stop.exit(resume_command(__file__, run_dir), step)
    if evaluator.due(step, evals):  # resumed from a final checkpoint whose evaluation did not finish
        evals.append(evaluate_planner())
        save()
    run.advance(step - run.progress.n)
    one = data.observations[:1].astype(np.float32)
    single = []
    for _ in range(3):  # planning time for one state, the paper's setting (the first call warms up)
        start = time.perf_counter()
        policy_fn(one)
        single.append(time.perf_counter() - start)
    final = evals[-1] if evals else {"score": None, "return": None}  # no evaluation: losses only
    result = {"algo": "diffuser", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "plan_s_per_step": float(np.mean(plan_times)) if plan_times else None,
              "plan_s_one_state": float(np.median(single[1:])),
              "plan_device": str(device), "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"diffuser {args.dataset} seed {args.seed}: {shown} after {step} updates, planning "
          f"{1000 * result['plan_s_one_state']:.0f} ms per state -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class Planner(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> the first action [n, act_dim]
    (in [-1, 1]) of the best of `plan_samples` guided plans per observation. The sampler's noise is drawn once
    from the seed (a buffer), so the planner is a deterministic function; its forward is the whole policy, so it
    exports as it is (benchmarks/export.py)."""

    def __init__(self, model: TemporalUnet, value: ValueFunction, schedule: Schedule,
                 stats: dict[str, torch.Tensor], act_dim: int, args: Args):
        super().__init__()
        self.model, self.value, self.schedule, self.act_dim = model, value, schedule, act_dim
        for k, v in stats.items():
            self.register_buffer(k, v)
        self.samples, self.guide_scale = args.plan_samples, args.guide_scale
        self.guide_steps, self.unguided_steps = args.guide_steps, args.unguided_steps
        transition_dim = act_dim + stats["obs_mean"].shape[0]
        generator = torch.Generator().manual_seed(args.seed)  # [T + 1, P, H, D]: tau^T, then z of every step
        noise = torch.randn(args.diffusion_steps + 1, args.plan_samples, args.horizon, transition_dim,
                            generator=generator)
        self.register_buffer("noise", noise.to(stats["obs_mean"].device))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        n, steps, a = obs.shape[0], self.schedule.steps, self.act_dim
        state = ((obs - self.obs_mean) / self.obs_std).repeat_interleave(self.samples, 0)  # [n * P, |S|]
        x = condition(self.noise[steps].repeat(n, 1, 1), state, a)
        for i in reversed(range(steps)):
            x = guide(x, state, i, self.value, self.schedule, self.guide_scale, self.guide_steps,
                      self.unguided_steps, a)
            x = denoise(x, state, i, self.model, self.schedule, self.noise[i].repeat(n, 1, 1), a)
        values = self.value(x, torch.zeros_like(x[:, 0, 0], dtype=torch.long)).reshape(n, self.samples)
        first = x[:, 0, :a].reshape(n, self.samples, a)
        best = torch.gather(first, 1, values.argmax(1)[:, None, None].expand(n, 1, a)).squeeze(1)
        return (best * self.act_std + self.act_mean).clamp(-1, 1)


def policy_function(planner: Planner, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim] -> deterministic actions [n, act_dim] in [-1, 1]
    (`.module`: the same policy as one nn.Module on tensors, the Planner)."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return planner(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = planner
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: one nn.Module)."""
    state = load_policy_checkpoint(run_dir, "diffuser")
    args = Args(**upgrade_args("diffuser", json.loads(state["args"])))
    transition_dim = state["obs_dim"] + state["act_dim"]
    model = TemporalUnet(transition_dim, args.hidden_dim, args.dim_mults).to(device)
    value = ValueFunction(transition_dim, args.horizon, args.hidden_dim, args.dim_mults).to(device)
    model.load_state_dict(state["ema_model"])
    value.load_state_dict(state["ema_value"])
    stats = {k: state[k].to(device) for k in ("act_mean", "act_std", "obs_mean", "obs_std")}
    planner = Planner(model.eval(), value.eval(), Schedule(args.diffusion_steps).to(device), stats,
                      state["act_dim"], args)
    return policy_function(planner.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
