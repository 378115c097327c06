"""BCQ: Batch-Constrained deep Q-learning (continuous actions).

Fujimoto, Meger, Precup. "Off-Policy Deep Reinforcement Learning without Exploration." ICML 2019.
arXiv:1812.02900. Authors' code: github.com/sfujim/BCQ (continuous_BCQ/, PyTorch).

BCQ acts only with actions that resemble the dataset's. A conditional VAE G(a | s) models the data's
actions; a perturbation network xi nudges each of n actions sampled from G by at most Phi; the agent takes
the candidate with the highest Q. Twin critics are trained on the same candidates at s', with a soft
version of clipped double Q-learning:

    L_VAE(omega) = E_(s,a)~D [ ||D(s, z) - a||^2 / |A| + 0.5 KL(N(mu(s, a), sigma(s, a)^2) || N(0, I)) / dim(z) ],
                   z = mu + sigma eps,  eps ~ N(0, I)
    candidates:    a_i = clip(a~_i + xi_phi(s, a~_i), -1, 1),  a~_i = D(s, z_i),  z_i ~ clip(N(0, I), -0.5, 0.5),
                   i = 1..n,  |xi_phi(s, a)| <= Phi
    y            = r + gamma (1 - d) max_i [ lambda min_j Qbar_j(s', a_i) + (1 - lambda) max_j Qbar_j(s', a_i) ]
                   (a_i from the target perturbation network and the current VAE at s')
    L_Q(theta)   = E_(s,a,r,s')~D [ sum_j ( y - Q_theta_j(s, a) )^2 ]
    L_xi(phi)    = -E_s~D [ Q_theta_1(s, clip(a~ + xi_phi(s, a~), -1, 1)) ],  a~ = D(s, z),  z ~ clip(N(0, I), -.5, .5)
    pi(s)        = argmax_{a_i} Q_theta_1(s, a_i)

Implementation details (all from the authors' code unless marked "deviation"):
 1. Update order per step: the VAE, then the critics (targets built with the freshly updated VAE), then the
    perturbation network, then Polyak averaging (tau = 0.005) of the target critics and the target
    perturbation network. The VAE has no target network.
 2. The VAE's encoder outputs mu and log sigma (clamped to [-4, 15]); its latent has 2 |A| dimensions; the
    decoder ends in tanh (actions in [-1, 1]). Its loss is the mean squared reconstruction error plus 0.5 times
    the KL divergence, both averaged over their dimensions. When sampling candidates (not when reconstructing)
    z ~ N(0, I) is clipped to [-0.5, 0.5] (`--max-latent`), which keeps the samples near the data's modes.
 3. The perturbation network outputs Phi tanh(.) (Phi = 0.05, `--max-perturbation`); the perturbed action is
    clipped to [-1, 1]. Its loss uses Q_1 only (deterministic policy gradient). The VAE's samples are
    constants in that loss (the authors' VAE receives that gradient too, but discards it before its own step).
 4. n = 10 candidates per next state in the target (`--num-action-samples`), 100 per state when acting
    (`--num-eval-action-samples`); lambda = 0.75 (`--target-min-weight`; 1 is TD3's clipped double Q).
 5. Networks: VAE encoder and decoder 750-750 ReLU MLPs; perturbation network and each critic 400-300 ReLU
    MLPs on (s, a); PyTorch's default nn.Linear init. The twin critics are one batched ensemble module
    (weights [2, in, out]). Rewards and observations are used as they are (no scaling, no normalization).
 6. Deviation: acting is deterministic. The authors draw fresh latents at every step; here the n latents
    z_1..z_n are drawn once from `--seed` (their own generator, not the global one) and reused for every
    state, so an evaluation, and `load_policy` of the run folder, replay exactly.
 7. Deviation: evaluation runs 10 episodes every 5,000 updates like the authors', but the score is the
    final evaluation, not an average over the last evaluations.

Default hyperparameters are the authors' (continuous_BCQ/main.py, BCQ.py): Adam lr 1e-3 for the VAE,
the perturbation network and the critics, batch 100, gamma 0.99, tau 0.005, lambda 0.75, Phi 0.05, 1M updates.

Usage:
    python algorithms/bcq.py                                         # stitch/hopper/medium-replay-v0
    python algorithms/bcq.py --dataset stitch/hopper/medium-v0 --seed 1 --total-steps 200000
    python algorithms/bcq.py --resume runs/bcq__stitch-hopper-medium-replay-v0__s0__20261121-120000
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


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling, the acting latents and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates."""
    batch_size: int = 100
    """Minibatch size."""
    hidden_dim: int = 400
    """Width of the first hidden layer of the perturbation network and of each critic; the second has 3/4 of
    it (the authors' 400-300)."""
    vae_hidden_dim: int = 750
    """Width of the two hidden layers of the VAE's encoder and of its decoder."""
    actor_lr: float = 1e-3
    """Learning rate of the VAE and of the perturbation network."""
    critic_lr: float = 1e-3
    """Learning rate of the twin critics."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics and the target perturbation network."""
    max_perturbation: float = 0.05
    """Phi: the perturbation network moves each action by at most this much per dimension (actions in [-1, 1])."""
    target_min_weight: float = 0.75
    """Weight lambda of the minimum in the soft clipped double-Q target lambda min_j Q_j + (1 - lambda) max_j Q_j,
    in [0, 1]; 1 is TD3's clipped double Q."""
    num_action_samples: int = 10
    """Candidate actions n sampled from the VAE (and perturbed) per next state in the critics' target."""
    num_eval_action_samples: int = 100
    """Candidate actions n per state when acting (evaluation and load_policy): the agent takes the best by Q_1."""
    kl_weight: float = 0.5
    """Weight of the KL term in the VAE's loss."""
    max_latent: float = 0.5
    """Latents z ~ N(0, I) are clipped to [-max_latent, max_latent] when sampling candidate actions from the VAE."""
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
    require(args.hidden_dim >= 2, "hidden_dim", "must be an integer >= 2", args.hidden_dim)
    require(args.vae_hidden_dim > 0, "vae_hidden_dim", "must be a positive integer", args.vae_hidden_dim)
    require(args.max_perturbation >= 0.0, "max_perturbation", "must be >= 0", args.max_perturbation)
    require(0.0 <= args.target_min_weight <= 1.0, "target_min_weight", "must be in [0, 1]", args.target_min_weight)
    require(args.num_action_samples > 0, "num_action_samples", "must be a positive integer", args.num_action_samples)
    require(args.num_eval_action_samples > 0, "num_eval_action_samples", "must be a positive integer",
            args.num_eval_action_samples)
    require(args.kl_weight >= 0.0, "kl_weight", "must be >= 0", args.kl_weight)
    require(args.max_latent > 0.0, "max_latent", "must be positive", args.max_latent)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_dim))
        for i in range(n):  # each member initialized as a separate nn.Linear would be
            layer = nn.Linear(in_dim, out_dim)
            self.weight.data[i], self.bias.data[i, 0] = layer.weight.data.T, layer.bias.data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """Q_1..Q_n(s, a) as one module, each a 400-300 MLP; returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2):
        super().__init__()
        self.n = n
        self.net = nn.Sequential(EnsembleLinear(n, obs_dim + act_dim, hidden), nn.ReLU(),
                                 EnsembleLinear(n, hidden, hidden * 3 // 4), nn.ReLU(),
                                 EnsembleLinear(n, hidden * 3 // 4, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


def mlp(in_dim: int, hidden: int, out_dim: int, hidden2: int | None = None) -> nn.Sequential:
    hidden2 = hidden if hidden2 is None else hidden2
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden2), nn.ReLU(),
                         nn.Linear(hidden2, out_dim))


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
        return self.decode(obs, z), mean, log_std

    def sample_latent(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latents z ~ N(0, I) clipped to [-max_latent, max_latent], for sampling actions: [n, latent_dim]."""
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        return z.clamp(-self.max_latent, self.max_latent)

    def decode(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(torch.cat([obs, z], -1)))


class Perturbation(nn.Module):
    """xi_phi: a -> clip(a + Phi tanh(f(s, a)), -1, 1), each dimension moved by at most Phi."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, max_perturbation: float):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, act_dim, hidden * 3 // 4)
        self.max_perturbation = max_perturbation

    def perturbation(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Phi tanh(f(s, a)): the change to a, before clipping."""
        return self.max_perturbation * torch.tanh(self.net(torch.cat([obs, act], -1)))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return (act + self.perturbation(obs, act)).clamp(-1.0, 1.0)


def candidates(obs: torch.Tensor, z: torch.Tensor, vae: VAE,
               perturb: Perturbation) -> tuple[torch.Tensor, torch.Tensor]:
    """n candidate actions per state: a_i = xi(s, D(s, z_i)). obs [B, obs_dim], z [B * n, latent] (state-major);
    returns the states repeated n times [B * n, obs_dim] and the candidates [B * n, act_dim]."""
    rep = obs.repeat_interleave(z.shape[0] // obs.shape[0], 0)
    return rep, perturb(rep, vae.decode(rep, z))


def select_action(q1: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """pi(s) = argmax_i Q_1(s, a_i): q1 [B, n], actions [B, n, act_dim] -> [B, act_dim]."""
    best = q1.argmax(1)
    return actions[torch.arange(actions.shape[0], device=actions.device), best]


class BCQPolicy(nn.Module):
    """What BCQ acts with: n candidates per state from the VAE and the perturbation network, the best by Q_1.
    The n latents are fixed (drawn once from `seed`), so the policy is a deterministic function of the state."""

    def __init__(self, vae: VAE, perturb: Perturbation, q: EnsembleQ, num_samples: int, seed: int):
        super().__init__()
        self.vae, self.perturb, self.q = vae, perturb, q
        z = vae.sample_latent(num_samples, torch.device("cpu"), torch.Generator().manual_seed(seed))
        self.register_buffer("z", z.to(next(vae.parameters()).device))

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        n = self.z.shape[0]
        rep, act = candidates(obs, self.z.repeat(obs.shape[0], 1), self.vae, self.perturb)
        return select_action(self.q(rep, act)[0].view(-1, n), act.view(-1, n, act.shape[-1]))


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def vae_loss(recon: torch.Tensor, act: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
             kl_weight: float) -> torch.Tensor:
    """L_VAE = mean((D(s, z) - a)^2) + kl_weight * KL,  KL = -0.5 mean(1 + log sigma^2 - mu^2 - sigma^2)"""
    recon_loss = ((recon - act) ** 2).mean()
    kl = -0.5 * (1.0 + 2.0 * log_std - mean**2 - (2.0 * log_std).exp()).mean()
    return recon_loss + kl_weight * kl


def soft_clipped_target(next_q: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, gamma: float, lam: float,
                        n: int) -> torch.Tensor:
    """y = r + gamma (1 - d) max_i [lam min_j Q_j(s', a_i) + (1 - lam) max_j Q_j(s', a_i)];
    next_q = [2, B * n] target Q of the n candidates of each next state (state-major)."""
    soft = lam * next_q.min(0).values + (1.0 - lam) * next_q.max(0).values
    return rew + gamma * (1.0 - done) * soft.view(-1, n).max(1).values


def q_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_Q = E[sum_j (y - Q_j(s, a))^2]; q = [2, B] Q_j(s, a), target = y (a constant)."""
    return ((q - target.detach()) ** 2).mean(1).sum()


def actor_loss(q1: torch.Tensor) -> torch.Tensor:
    """L_xi = -E[Q_1(s, xi(s, a~))], a~ ~ G(s) (deterministic policy gradient through Q_1)."""
    return -q1.mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "bcq")
        args = resumed_args(Args, args, "bcq", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: rewards and observations as they are; actions in [-1, 1].
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "bcq")  # says at start if it cannot evaluate or score
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed)

    vae = VAE(data.obs_dim, data.act_dim, args.vae_hidden_dim, args.max_latent).to(device)
    perturb = Perturbation(data.obs_dim, data.act_dim, args.hidden_dim, args.max_perturbation).to(device)
    perturb_target = Perturbation(data.obs_dim, data.act_dim, args.hidden_dim, args.max_perturbation).to(device)
    perturb_target.load_state_dict(perturb.state_dict())
    perturb_target.requires_grad_(False)
    q = EnsembleQ(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target = EnsembleQ(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    vae_opt = adam(vae.parameters(), args.actor_lr, device)
    perturb_opt = adam(perturb.parameters(), args.actor_lr, device)
    q_opt = adam(q.parameters(), args.critic_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("vae", vae), ("perturb", perturb), ("perturb_target", perturb_target), ("q", q),
                              ("q_target", q_target), ("vae_opt", vae_opt), ("perturb_opt", perturb_opt),
                              ("q_opt", q_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("bcq", args.dataset, args.seed)
    run = Run(run_dir, args, "bcq", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update() -> dict[str, torch.Tensor]:  # one whole update
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        recon, mean, log_std = vae(obs, act)
        g_loss = vae_loss(recon, act, mean, log_std, args.kl_weight)
        vae_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        vae_opt.step()

        with torch.no_grad():  # n candidates per next state, from the freshly updated VAE and the target xi
            n = args.num_action_samples
            next_rep, next_act = candidates(next_obs, vae.sample_latent(len(next_obs) * n, device), vae,
                                            perturb_target)
            target = soft_clipped_target(q_target(next_rep, next_act), rew, done, args.gamma,
                                         args.target_min_weight, n)
        q_data = q(obs, act)
        qf_loss = q_loss(q_data, target)
        q_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        q_opt.step()

        with torch.no_grad():
            sampled = vae.decode(obs, vae.sample_latent(len(obs), device))
        pi_loss = actor_loss(q(obs, perturb(obs, sampled))[0])
        perturb_opt.zero_grad(set_to_none=True)
        pi_loss.backward()  # also leaves gradients in Q; q_opt.zero_grad clears them before Q's next step
        perturb_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
            torch._foreach_lerp_(list(perturb_target.parameters()), list(perturb.parameters()), args.tau)
        return {"loss/vae": g_loss, "loss/q": qf_loss, "loss/actor": pi_loss,
                "q_data": q_data.detach().min(0).values.mean()}

    policy_fn = policy_function(BCQPolicy(vae, perturb, q, args.num_eval_action_samples, args.seed), device)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "vae": vae.state_dict(), "perturb": perturb.state_dict(), "perturb_target": perturb_target.state_dict(),
            "q": q.state_dict(), "q_target": q_target.state_dict(), "vae_opt": vae_opt.state_dict(),
            "perturb_opt": perturb_opt.state_dict(), "q_opt": q_opt.state_dict(), "buffer": buffer.state_dict(),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "bcq", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
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
    result = {"algo": "bcq", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"bcq {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
def policy_function(policy: BCQPolicy, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim] -> deterministic actions [n, act_dim] in [-1, 1]."""
    def act(obs: np.ndarray) -> np.ndarray:
        return policy(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = policy
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: the BCQPolicy)."""
    state = load_policy_checkpoint(run_dir, "bcq")
    args = Args(**upgrade_args("bcq", json.loads(state["args"])))
    obs_dim, act_dim = state["obs_dim"], state["act_dim"]
    vae = VAE(obs_dim, act_dim, args.vae_hidden_dim, args.max_latent).to(device)
    perturb = Perturbation(obs_dim, act_dim, args.hidden_dim, args.max_perturbation).to(device)
    q = EnsembleQ(obs_dim, act_dim, args.hidden_dim).to(device)
    for net, name in ((vae, "vae"), (perturb, "perturb"), (q, "q")):
        net.load_state_dict(state[name])
    policy = BCQPolicy(vae, perturb, q, args.num_eval_action_samples, args.seed)
    return policy_function(policy.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
