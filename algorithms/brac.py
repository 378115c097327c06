"""BRAC: Behavior Regularized Actor Critic (BRAC-v, value penalty, and BRAC-p, policy regularization).

Wu, Tucker, Nachum. "Behavior Regularized Offline Reinforcement Learning." 2019. arXiv:1911.11361.
Authors' code: github.com/google-research/google-research/tree/master/behavior_regularized_offline_rl (TF2),
also copied into github.com/rail-berkeley/d4rl_evaluations (brac/) for the D4RL paper's runs.

BRAC is soft actor-critic with a divergence D(pi(. | s), pi_b(. | s)) between the policy and a behaviour policy
pi_b fitted to the data, weighted by alpha, either in the policy's loss only (policy regularization, BRAC-p) or
also subtracted from the value of the next state in the critics' target (value penalty, BRAC-v). Two phases,
one after the other:

    1. behaviour cloning:  L_b(omega) = -E_(s,a)~D [ log pi_b(a | s) ]
    2. BRAC:
       y        = r + gamma (1 - d) [ min_j Qbar_j(s', a') - alpha D^(s') ],  a' ~ pi(. | s')   (value penalty)
       y        = r + gamma (1 - d) min_j Qbar_j(s', a')                                      (policy regularization)
       L_Q      = E_(s,a,r,s')~D [ sum_j ( y - Q_j(s, a) )^2 ]
       L_pi     = E_s [ alpha D^(s) - min_j Q_j(s, a~) ],  a~ ~ pi(. | s) reparameterized
                  (the first bc_steps updates of phase 2: E_s [ alpha D^(s) ] only)
       dual alpha (`--regularizer-mode dual`): L_alpha = -E_s [ alpha (D^(s) - epsilon) ], alpha clipped to [0, 500]
    Divergence estimates D^(s):
       kl:   (1/n) sum_i [ log pi(a_i | s) - log pi_b(a_i | s) ],  a_i ~ pi(. | s)           (samples, n = 4)
       mmd:  mean k(a_i, a_j) + mean k(b_i, b_j) - 2 mean k(a_i, b_j),  a ~ pi, b ~ pi_b,
             k(x, y) = exp(-||x - y||_1 / sigma)                                              (laplacian, no sqrt)
       w:    g(s, a~) - g(s, b),  b ~ pi_b(. | s), with a critic g trained on the dual form of the Wasserstein
             distance: L_g = -E_s [ g(s, a~) - g(s, b) ] + lambda_gp E_s [ max(||grad_a g(s, a^)||_2 - 1, 0)^2 ],
             a^ = a~ + u (b - a~), u ~ U[0, 1]  (gradient penalty, lambda_gp = 5)

Implementation details (all from the authors' code, brac_primal_agent.py, brac_dual_agent.py, divergences.py,
networks.py, unless marked "deviation"):
 1. Phases are step ranges of one run: updates [0, behaviour_steps) fit pi_b by maximum likelihood (the
    authors' separate `bc` agent run, 300k updates with Adam 5e-4 in run_bc.sh); the rest are BRAC's, whose first
    bc_steps (the authors' warm_start, 20k) leave out the Q term of the policy's loss. By default the phases
    keep the authors' proportions of --total-steps (300k : 20k : 480k of 800k).
 2. Policies pi and pi_b: tanh-squashed Gaussians with a state-dependent mean and log-std, the log-std squashed
    into [-5, 0] by -5 + 2.5 (tanh(x) + 1). Log-densities of actions not drawn from the same distribution (data
    actions for pi_b, pi's samples under pi_b in the KL) are taken at actions clipped to +-(1 - 1e-3).
 3. One update of phase 2: Polyak averaging of the target critics (tau 0.005) first, then the critics, the
    policy (reading the critics after their step), the W critic g (`--divergence w`: 3 steps, each on its own
    minibatch, the authors' c_iter) and alpha (`--regularizer-mode dual`). 2 critics, the target takes their
    minimum (the authors' ensemble_q_lambda = 1). No entropy term (the authors' alpha_entropy defaults to 0).
 4. Deviation: alpha's dual step uses the divergence estimated in this update's policy step (the authors
    estimate it again after the policy's step). alpha is a raw parameter projected onto [0, 500] after each step
    (the authors clip it in the forward pass, with a gradient that only lets it return into the interval).
 5. Deviation: `--divergence w` compares pi's samples with samples of the fitted pi_b at s and at s'; the authors'
    dual agent uses the data's actions a and a' instead (no behaviour model there). Here every divergence
    compares pi with the same pi_b and no transition needs its next action.
 6. Networks: critics 300-300 (`--hidden-dim`, also the W critic's), policy and pi_b 200-200
    (`--actor-hidden-dim`), ReLU, Keras' default init (Glorot-uniform weights, zero biases). The critic ensemble
    is one batched module (weights [E, in, out]).
 7. Evaluation (10 episodes every 5,000 updates; the score is the final one) acts with tanh of pi's mean, the
    authors' 'main' test policy; during phase 1 it runs pi_b's. No reward scaling, no observation normalization.

Default hyperparameters are BRAC-v with the KL divergence as in the authors' example scripts (run_primal.sh,
run_bc.sh): alpha 0.1, critic lr 1e-3, policy lr 3e-4, alpha lr 1e-3, pi_b lr 5e-4, batch 256, gamma 0.99, tau
0.005, n = 4, 300k behaviour-cloning and 500k BRAC updates. The D4RL runs (d4rl_evaluations' train_brac.py) used
policy lr 3e-5, alpha lr 1e-5 and 1M updates of each phase; which alpha they used per dataset is not recorded.
Dual-form (w) settings from run_dual.sh: g's lr 1e-3, 3 steps per update, lambda_gp 5 (divergences.py).

Usage:
    python algorithms/brac.py                                        # BRAC-v, KL, stitch/hopper/medium-replay-v0
    python algorithms/brac.py --mode policy_regularization --divergence mmd --regularizer-weight 1.0   # BRAC-p, MMD
    python algorithms/brac.py --divergence w --regularizer-mode dual --lagrange-threshold 0.5
    python algorithms/brac.py --resume runs/brac__stitch-hopper-medium-replay-v0__s0__20261121-120000
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
from common.checkpoints import (CheckpointError, load_policy_checkpoint, load_run_checkpoint,  # noqa: E402
                                resumed_args, rng_state, save_checkpoint, set_rng_state)
from common.config import ArgumentError, check_common, require, resolve_device  # noqa: E402
from common.data import DatasetError, load_dataset  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.fast import adam, fast_update  # noqa: E402
from common.interrupt import StopSignal, resume_command  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402

MAX_REGULARIZER_WEIGHT = 500.0  # the authors' ALPHA_MAX
CLIP_EPS = 1e-3  # actions clipped to +-(1 - CLIP_EPS) before another distribution's log-density


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling, policy samples and evaluation."""
    total_steps: int = 800_000
    """Number of gradient updates, both phases together."""
    behaviour_steps: int | None = None
    """Updates of phase 1, fitting pi_b by maximum likelihood (default: 3/8 of total_steps; the authors': 300k of
    800k)."""
    bc_steps: int | None = None
    """First updates of phase 2 whose policy loss has no Q term, only alpha D (the authors' warm start; default: 1/40
    of total_steps, their 20k of 800k)."""
    batch_size: int = 256
    """Minibatch size."""
    hidden_dim: int = 300
    """Width of the two hidden layers of each critic and of the W critic g."""
    actor_hidden_dim: int = 200
    """Width of the two hidden layers of the policy pi and of the behaviour policy pi_b."""
    actor_lr: float = 3e-4
    """Policy learning rate."""
    critic_lr: float = 1e-3
    """Learning rate of the critics."""
    behaviour_lr: float = 5e-4
    """Learning rate of the behaviour policy pi_b (phase 1)."""
    lagrange_lr: float = 1e-3
    """Learning rate of alpha with --regularizer-mode dual."""
    discriminator_lr: float = 1e-3
    """Learning rate of the W critic g (--divergence w)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    num_critics: int = 2
    """Critics in the ensemble (the target and the policy use their minimum)."""
    divergence: Literal["kl", "mmd", "w"] = "kl"
    """Divergence D(pi, pi_b): kl (sample estimate), mmd (laplacian kernel) or w (Wasserstein, dual form with a
    critic g and a gradient penalty)."""
    mode: Literal["value_penalty", "policy_regularization"] = "value_penalty"
    """value_penalty (BRAC-v): alpha D in the critics' target and the policy's loss; policy_regularization (BRAC-p):
    in the policy's loss only."""
    regularizer_weight: float = 0.1
    """Weight alpha of the divergence (its initial value with --regularizer-mode dual)."""
    regularizer_mode: Literal["fixed", "dual"] = "fixed"
    """fixed: alpha stays as given; dual: alpha follows dual gradient ascent toward D = epsilon, clipped to [0, 500]."""
    lagrange_threshold: float = 0.0
    """Target divergence epsilon of --regularizer-mode dual (the authors' target_divergence)."""
    num_divergence_samples: int = 4
    """Samples n of pi (and of pi_b for mmd) per state in the kl and mmd estimates."""
    mmd_sigma: float = 20.0
    """Width sigma of the laplacian kernel exp(-||x - y||_1 / sigma) of --divergence mmd."""
    gradient_penalty_weight: float = 5.0
    """Weight lambda_gp of the W critic's gradient penalty."""
    discriminator_steps: int = 3
    """Steps of the W critic g per update, each on its own minibatch (the authors' c_iter)."""
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


def phase_ends(args: Args) -> tuple[int, int]:
    """(end of phase 1, end of phase 2's warm start) in updates; by default the authors' 300k : 20k of 800k."""
    behaviour = args.total_steps * 3 // 8 if args.behaviour_steps is None else args.behaviour_steps
    warm = args.total_steps // 40 if args.bc_steps is None else args.bc_steps
    return behaviour, behaviour + warm


def check_args(args: Args) -> None:
    check_common(args)
    for f in ("behaviour_steps", "bc_steps"):
        v = getattr(args, f)
        require(v is None or (isinstance(v, int) and v >= 0), f, "must be an integer >= 0", v)
    behaviour_end = phase_ends(args)[0]
    require(behaviour_end < args.total_steps, "total_steps",
            f"must exceed --behaviour-steps = {behaviour_end} (phase 2 needs updates)", args.total_steps)
    for f in ("hidden_dim", "actor_hidden_dim", "num_divergence_samples", "discriminator_steps"):
        require(isinstance(getattr(args, f), int) and getattr(args, f) > 0, f, "must be a positive integer",
                getattr(args, f))
    for f in ("behaviour_lr", "lagrange_lr", "discriminator_lr", "mmd_sigma"):
        v = getattr(args, f)
        require(math.isfinite(v) and v > 0, f, "must be positive", v)
    require(args.num_critics >= 1, "num_critics", "must be a positive integer", args.num_critics)
    require(args.divergence in ("kl", "mmd", "w"), "divergence", "must be 'kl', 'mmd' or 'w'", args.divergence)
    require(args.mode in ("value_penalty", "policy_regularization"), "mode",
            "must be 'value_penalty' or 'policy_regularization'", args.mode)
    require(args.regularizer_mode in ("fixed", "dual"), "regularizer_mode", "must be 'fixed' or 'dual'",
            args.regularizer_mode)
    require(math.isfinite(args.regularizer_weight) and 0 <= args.regularizer_weight <= MAX_REGULARIZER_WEIGHT,
            "regularizer_weight", f"must be in [0, {MAX_REGULARIZER_WEIGHT:g}]", args.regularizer_weight)
    require(math.isfinite(args.lagrange_threshold), "lagrange_threshold", "must be a number", args.lagrange_threshold)
    require(math.isfinite(args.gradient_penalty_weight) and args.gradient_penalty_weight >= 0,
            "gradient_penalty_weight", "must be >= 0", args.gradient_penalty_weight)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -5.0, 0.0


def keras_init(layer: nn.Linear) -> nn.Linear:
    """Keras' Dense default: Glorot-uniform weights, zero biases."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(keras_init(nn.Linear(in_dim, hidden)), nn.ReLU(), keras_init(nn.Linear(hidden, hidden)),
                         nn.ReLU(), keras_init(nn.Linear(hidden, out_dim)))


class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_dim))
        for i in range(n):  # each member initialized as Keras initializes a separate Dense layer
            self.weight.data[i] = keras_init(nn.Linear(in_dim, out_dim)).weight.data.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """Q_1..Q_n(s, a) as one module, each a 2-hidden-layer MLP; returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2):
        super().__init__()
        self.n = n
        self.net = nn.Sequential(EnsembleLinear(n, obs_dim + act_dim, hidden), nn.ReLU(),
                                 EnsembleLinear(n, hidden, hidden), nn.ReLU(), EnsembleLinear(n, hidden, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


class Critic(nn.Module):
    """The W critic g(s, a) of the Wasserstein divergence's dual form."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


def log_prob_tanh_gaussian(mean: torch.Tensor, log_std: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """log density of a = tanh(u), u ~ N(mean, std^2), at pre-tanh u: sum over dims of log N(u) - log(1 - tanh(u)^2),
    the Jacobian term in its stable form 2 (log 2 - u - softplus(-2u))."""
    log_normal = -0.5 * ((raw - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return (log_normal - 2.0 * (math.log(2.0) - raw - F.softplus(-2.0 * raw))).sum(-1)


class TanhGaussianPolicy(nn.Module):
    """tanh(u), u ~ N(mu(s), sigma(s)^2), log sigma = -5 + 2.5 (tanh(x) + 1) in [-5, 0]: pi and pi_b."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * act_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, -1)
        return mean, LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1.0)

    def sample(self, obs: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized a = tanh(mean + std eps) and log pi(a | s): [B, A], [B], or with n: [n, B, A], [n, B]."""
        mean, log_std = self(obs)
        raw = mean + log_std.exp() * torch.randn(mean.shape if n is None else (n, *mean.shape), device=obs.device)
        return torch.tanh(raw), log_prob_tanh_gaussian(mean, log_std, raw)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log pi(a | s) of given actions (any leading sample dims), clipped to +-(1 - 1e-3) first."""
        mean, log_std = self(obs)
        return log_prob_tanh_gaussian(mean, log_std, torch.atanh(act.clamp(-1 + CLIP_EPS, 1 - CLIP_EPS)))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


# ----------------------------------------------------------------------------------------------
# Losses and divergence estimates (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def bc_loss(log_prob_data: torch.Tensor) -> torch.Tensor:
    """L_b = -E[log pi_b(a | s)]  (phase 1, maximum likelihood)."""
    return -log_prob_data.mean()


def kl_estimate(log_pi: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """D^_KL(s) = (1/n) sum_i [log pi(a_i | s) - log pi_b(a_i | s)], a_i ~ pi; log_pi, log_b: [n, B] -> [B]."""
    return (log_pi - log_b).mean(0)


def mmd_laplacian(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """D^_MMD(s) = mean k(x, x') + mean k(y, y') - 2 mean k(x, y), k = exp(-||x - y||_1 / sigma); x, y: [n, B, A]."""
    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # mean over the n x n pairs of each state
        return torch.exp(-(a.unsqueeze(0) - b.unsqueeze(1)).abs().sum(-1) / sigma).mean((0, 1))
    return k(x, x) + k(y, y) - 2.0 * k(x, y)


def w_estimate(g: nn.Module, obs: torch.Tensor, act_pi: torch.Tensor, act_b: torch.Tensor) -> torch.Tensor:
    """D^_W(s) = g(s, a~) - g(s, b): the dual form's estimate, a~ ~ pi, b ~ pi_b."""
    return g(obs, act_pi) - g(obs, act_b)


@torch.compiler.disable  # runs eager under --compile: torch.compile (2.13) cannot backpropagate twice through a graph
def gradient_penalty(g: nn.Module, obs: torch.Tensor, act_pi: torch.Tensor, act_b: torch.Tensor, weight: float,
                     u: torch.Tensor | None = None) -> torch.Tensor:
    """lambda_gp E_s[max(||grad_a g(s, a^)||_2 - 1, 0)^2], a^ = a~ + u (b - a~), u ~ U[0, 1] per state
    (the norm is sqrt(1e-8 + sum grad^2), as the authors')."""
    if u is None:
        u = torch.rand(obs.shape[0], 1, device=obs.device)
    interp = (act_pi + u * (act_b - act_pi)).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(g(obs, interp).sum(), interp, create_graph=True)
    slope = torch.sqrt(1e-8 + (grad**2).sum(-1))
    return weight * (F.relu(slope - 1.0) ** 2).mean()


def discriminator_loss(g: nn.Module, obs: torch.Tensor, act_pi: torch.Tensor, act_b: torch.Tensor,
                       gp_weight: float) -> torch.Tensor:
    """L_g = -E_s[g(s, a~) - g(s, b)] + gradient penalty: g learns to tell pi's actions from pi_b's, 1-Lipschitz."""
    return -w_estimate(g, obs, act_pi, act_b).mean() + gradient_penalty(g, obs, act_pi, act_b, gp_weight)


def value_target(next_q: torch.Tensor, next_div: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, gamma: float,
                 alpha: torch.Tensor, mode: str) -> torch.Tensor:
    """y = r + gamma (1 - d) [min_j Qbar_j(s', a') - alpha D^(s')] (value_penalty), or without the penalty
    (policy_regularization); next_q = [E, B] target Q at a' ~ pi(. | s'), next_div = [B] D^(s')."""
    v = next_q.min(0).values
    if mode == "value_penalty":
        v = v - alpha.detach() * next_div
    return (rew + gamma * (1.0 - done) * v).detach()


def q_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_Q = E[sum_j (y - Q_j(s, a))^2]; q = [E, B] Q_j(s, a), target = y (a constant)."""
    return ((q - target.detach()) ** 2).mean(1).sum()


def actor_loss(q_min: torch.Tensor | None, divergence: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """L_pi = E_s[alpha D^(s) - min_j Q_j(s, a~)] in both modes; q_min None (warm start): E_s[alpha D^(s)]."""
    reg = alpha.detach() * divergence
    return (reg if q_min is None else reg - q_min).mean()


def lagrange_loss(alpha: torch.Tensor, divergence: torch.Tensor, threshold: float) -> torch.Tensor:
    """L_alpha = -E_s[alpha (D^(s) - epsilon)]: descending it raises alpha while D^ > epsilon."""
    return -(alpha * (divergence.detach() - threshold)).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "brac")
        saved = json.loads(state["args"])  # phases left as fractions of --total-steps fix the run's length
        fixed = (None if saved.get("behaviour_steps") is not None and saved.get("bc_steps") is not None else
                 "its phases are fractions of --total-steps (runs started with --behaviour-steps and --bc-steps "
                 "can be extended)")
        args = resumed_args(Args, args, "brac", state, fixed_length=fixed)  # the run's own settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    behaviour_end, warm_end = phase_ends(args)

    # Data: rewards and observations as they are; actions in [-1, 1].
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "brac")  # says at start if it cannot evaluate or score
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed)
    obs_dim, act_dim = data.obs_dim, data.act_dim

    behaviour = TanhGaussianPolicy(obs_dim, act_dim, args.actor_hidden_dim).to(device)
    policy = TanhGaussianPolicy(obs_dim, act_dim, args.actor_hidden_dim).to(device)
    q = EnsembleQ(obs_dim, act_dim, args.hidden_dim, args.num_critics).to(device)
    q_target = EnsembleQ(obs_dim, act_dim, args.hidden_dim, args.num_critics).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    g = Critic(obs_dim, act_dim, args.hidden_dim).to(device)  # trained only with --divergence w
    alpha = torch.full((1,), args.regularizer_weight, device=device, requires_grad=True)  # stepped only when dual
    behaviour_opt = adam(behaviour.parameters(), args.behaviour_lr, device)
    pi_opt = adam(policy.parameters(), args.actor_lr, device)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    g_opt = adam(g.parameters(), args.discriminator_lr, device)
    alpha_opt = adam([alpha], args.lagrange_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("behaviour", behaviour), ("policy", policy), ("q", q), ("q_target", q_target),
                              ("g", g), ("behaviour_opt", behaviour_opt), ("pi_opt", pi_opt), ("q_opt", q_opt),
                              ("g_opt", g_opt), ("alpha_opt", alpha_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        with torch.no_grad():
            alpha.copy_(state["alpha"])
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("brac", args.dataset, args.seed)
    run = Run(run_dir, args, "brac", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def divergence_at(obs: torch.Tensor, act_pi: torch.Tensor) -> torch.Tensor:
        """D^(s) per state, differentiable in pi; act_pi: one sample a~ ~ pi(. | s) (used by w)."""
        n = args.num_divergence_samples
        if args.divergence == "kl":
            samples, log_pi = policy.sample(obs, n)
            return kl_estimate(log_pi, behaviour.log_prob(obs, samples))
        with torch.no_grad():
            b = behaviour.sample(obs, n if args.divergence == "mmd" else None)[0]
        if args.divergence == "mmd":
            return mmd_laplacian(policy.sample(obs, n)[0], b, args.mmd_sigma)
        return w_estimate(g, obs, act_pi, b)

    # One update function per phase (each compiled and captured on its own with --compile), each drawing its minibatch.
    def behaviour_update() -> dict[str, torch.Tensor]:
        obs, act, _, _, _ = buffer.sample(args.batch_size)
        loss = bc_loss(behaviour.log_prob(obs, act))
        behaviour_opt.zero_grad(set_to_none=True)
        loss.backward()
        behaviour_opt.step()
        return {"loss/bc": loss}

    def update(bc: bool) -> dict[str, torch.Tensor]:  # bc: the warm start (no Q term in the policy's loss)
        with torch.no_grad():
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        with torch.no_grad():
            next_act, _ = policy.sample(next_obs)
            next_div = divergence_at(next_obs, next_act) if args.mode == "value_penalty" else torch.zeros_like(rew)
            target = value_target(q_target(next_obs, next_act), next_div, rew, done, args.gamma, alpha, args.mode)
        q_data = q(obs, act)
        qf_loss = q_loss(q_data, target)
        q_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        q_opt.step()

        new_act, _ = policy.sample(obs)
        div = divergence_at(obs, new_act)
        pi_loss = actor_loss(None if bc else q(obs, new_act).min(0).values, div, alpha)
        pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()  # also leaves gradients in Q (and g); their zero_grad discards them before their steps
        pi_opt.step()
        metrics = {"loss/q": qf_loss, "loss/actor": pi_loss, "q_data": q_data.detach().min(0).values.mean(),
                   "divergence": div.detach().mean()}

        w_metrics, dual_metrics = {}, {}
        if args.divergence == "w":  # the W critic: discriminator_steps steps, each on its own minibatch
            for i in range(args.discriminator_steps):
                g_obs = obs if i == 0 else buffer.sample(args.batch_size).obs
                with torch.no_grad():
                    a_pi, a_b = policy.sample(g_obs)[0], behaviour.sample(g_obs)[0]
                g_loss = discriminator_loss(g, g_obs, a_pi, a_b, args.gradient_penalty_weight)
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
            w_metrics = {"loss/discriminator": g_loss.detach()}
        if args.regularizer_mode == "dual":
            a_loss = lagrange_loss(alpha, div, args.lagrange_threshold)
            alpha_opt.zero_grad(set_to_none=True)
            a_loss.backward()
            alpha_opt.step()
            with torch.no_grad():
                alpha.clamp_(0.0, MAX_REGULARIZER_WEIGHT)
            dual_metrics = {"loss/lagrange": a_loss.detach(), "lagrange_multiplier": alpha.detach().squeeze()}
        return metrics | w_metrics | dual_metrics

    behaviour_fn, policy_fn = policy_function(behaviour, device), policy_function(policy, device)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "behaviour": behaviour.state_dict(), "policy": policy.state_dict(), "q": q.state_dict(),
            "q_target": q_target.state_dict(), "g": g.state_dict(), "alpha": alpha.detach(),
            "behaviour_opt": behaviour_opt.state_dict(), "pi_opt": pi_opt.state_dict(), "q_opt": q_opt.state_dict(),
            "g_opt": g_opt.state_dict(), "alpha_opt": alpha_opt.state_dict(), "buffer": buffer.state_dict(),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "brac", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": obs_dim, "act_dim": act_dim})

    behaviour_update_fn, update_fn = (fast_update(f, device, args.compile, generators=[buffer.generator])
                                      for f in (behaviour_update, update))  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            metrics = behaviour_update_fn() if step < behaviour_end else update_fn(bc=step < warm_end)
            step += 1
            if step % args.log_every == 0:
                run.log(step, {k: v.item() for k, v in metrics.items()}
                        | {"updates_per_s": (step - start_step) / (time.time() - start_time)})
                run.advance(args.log_every)
            if step == args.total_steps:
                save()  # the final checkpoint comes before the final evaluation: a failure there loses nothing
            if evaluator.due(step, evals):  # pi_b while it is being fitted, then the policy
                evals.append(evaluator(behaviour_fn if step <= behaviour_end else policy_fn, step, run))
            if run.checkpoint_due(step) or stop:
                save()
            if stop:
                run.close()
                raise stop.exit(resume_command(__file__, run_dir), step)
    if evaluator.due(step, evals):  # resumed from a final checkpoint whose evaluation did not finish
        evals.append(evaluator(behaviour_fn if step <= behaviour_end else policy_fn, step, run))
        save()
    run.advance(step - run.progress.n)
    final = evals[-1] if evals else {"score": None, "return": None}  # no evaluation: losses only
    result = {"algo": "brac", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"brac {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class DeterministicPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> tanh(mean) actions [n, act_dim].
    Its forward is the whole policy, so it exports as it is (benchmarks/export.py)."""

    def __init__(self, policy: TanhGaussianPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act(obs)


def policy_function(policy: TanhGaussianPolicy, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim] -> deterministic actions tanh(mean) in [-1, 1]
    (`.module`: the same policy as one nn.Module on tensors, a DeterministicPolicy)."""
    module = DeterministicPolicy(policy)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: the module): pi once
    phase 2 has begun, else pi_b, as the run evaluates."""
    state = load_policy_checkpoint(run_dir, "brac")
    args = Args(**upgrade_args("brac", json.loads(state["args"])))
    policy = TanhGaussianPolicy(state["obs_dim"], state["act_dim"], args.actor_hidden_dim).to(device)
    policy.load_state_dict(state["policy" if int(state["step"]) > phase_ends(args)[0] else "behaviour"])
    return policy_function(policy.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
