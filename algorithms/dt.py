"""DT: Decision Transformer.

Chen, Lu, Rajeswaran, Lee, Grover, Laskin, Abbeel, Srinivas, Mordatch. "Decision Transformer: Reinforcement
Learning via Sequence Modeling." NeurIPS 2021. arXiv:2106.01345. Authors' code: github.com/kzl/decision-transformer
(gym/, PyTorch on HuggingFace's GPT-2).

DT learns no value function. It reads the last K steps of a trajectory as a sequence of tokens, each step three of
them: the return-to-go R_t (the reward still to come), the state s_t and the action a_t, and a causal transformer
predicts each action from the tokens up to and including its state. Acting, the first return-to-go is a target
return, lowered by each reward received, so the policy is asked for the behaviour that earned that much in the data:

    R_t = sum_{t' >= t} r_t'                                       (undiscounted, to the end of the logged episode)
    tau = (R_1, s_1, a_1, R_2, s_2, a_2, ..., R_K, s_K, a_K)       (the last K steps; 3K tokens)
    a^_t = tanh(W h(s_t)),  h = GPT(tau) with a causal mask: token i attends to tokens <= i only
    L(theta) = E_tau [ 1/K sum_t || a^_t - a_t ||^2 ]              (over the steps of the window that are not padding)
    acting: R_1 = target return; after each step R_{t+1} = R_t - r_t

Implementation details (from the authors' gym code, gym/experiment.py and gym/decision_transformer/, unless marked
"deviation"):
 1. Tokens: each of R, s, a has its own linear embedding; a learned embedding of the timestep within the episode
    (nn.Embedding) is added to all three tokens of a step, and there is no other position embedding (the authors
    remove GPT-2's). LayerNorm, then dropout, on the token sequence.
 2. The transformer is GPT-2's: pre-LayerNorm blocks of masked self-attention and an MLP (4x width, ReLU as the
    authors configure it), dropout 0.1 on attention weights, residual branches and embeddings, a final LayerNorm;
    GPT-2's init (normal std 0.02, residual output projections 0.02 / sqrt(2 n_layers)) in the blocks, PyTorch's
    default init in DT's own embeddings and action head. Written here in a few lines, not taken from a library.
 3. The action is read from the hidden state of the state token s_t (linear + tanh); the authors' return and
    state prediction heads are unused in their loss and left out.
 4. Training windows: a start transition drawn uniformly from the whole dataset (the authors draw a trajectory with
    probability proportional to its length, then a start uniformly in it: the same distribution), K steps from there,
    cut at the trajectory's end and left-padded to K; padding is masked out of attention (as keys) and out of the loss.
    Return-to-go is computed over the whole trajectory, not the window.
 5. A trajectory ends where the dataset's episode ends, or at a terminal or timeout flag inside one; the return-to-go
    of a timed-out trajectory sums what was logged (the future after the time limit is unknown, as in the paper).
 6. States are standardized with the data's mean and std + 1e-6; returns-to-go are divided by `return_scale` 1000.
    Timesteps past the embedding table (the longest trajectory in the data or the environment's time limit,
    whichever is longer) use its last entry.
 7. AdamW (lr 1e-4, weight decay 1e-4 on every parameter), linear warm-up of the learning rate over 10,000 updates
    and constant after, gradient-norm clip 0.25, batch 64, context K = 20, width 128, 3 layers, 1 head.
 8. Target returns: the paper's per environment, the first for the score and the others recorded beside it:
    Hopper 3600 (and 1800), HalfCheetah 12000 (and 6000), Walker2d 5000 (and 2500); for the stitch suite the
    environment decides (stitch/hopper/... uses Hopper's). Deviation: any other environment (or a dataset without
    one) is conditioned on the data's highest episode return unless `--target-return` says otherwise.
 9. Deviation: 100k updates evaluated every 10k like the authors, but with 10 episodes per target return
    (the authors: 100), and the score is the final evaluation's, not the best.
10. Acting keeps each running episode's last K steps (left-padded at the start of the episode), with a zero action
    token in the current step as the authors do; evaluation tells the policy when episodes start and what each
    step earned through the policy's `reset(n)` and `observe(rewards, ended)` (common/evaluation.py).

Default hyperparameters are the paper's Gym-MuJoCo settings (gym/experiment.py). CORL's dt.py trains with batch 4096
and lr 8e-4 instead (tuned, not the paper's).

Usage:
    python algorithms/dt.py                                          # stitch/hopper/medium-replay-v0
    python algorithms/dt.py --dataset stitch/hopper/medium-expert-v0 --target-return 3600 1800 2700
    python algorithms/dt.py --resume runs/dt__stitch-hopper-medium-replay-v0__s0__20261207-120000
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
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

# The paper's conditioning returns per environment (gym/experiment.py's env_targets): the first gives the score.
PAPER_TARGET_RETURNS = {"hopper": [3600.0, 1800.0], "halfcheetah": [12000.0, 6000.0], "walker2d": [5000.0, 2500.0]}


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, dropout, minibatch sampling and evaluation."""
    total_steps: int = 100_000
    """Number of gradient updates."""
    batch_size: int = 64
    """Minibatch size, in trajectory windows of --context-length steps."""
    context_length: int = 20
    """Context K: the steps (each three tokens: return-to-go, state, action) the transformer sees."""
    hidden_dim: int = 128
    """Width of every token embedding and of the transformer (GPT-2's n_embd); its MLPs are 4 times wider."""
    n_layers: int = 3
    """Transformer blocks."""
    n_heads: int = 1
    """Attention heads per block (must divide --hidden-dim)."""
    dropout: float = 0.1
    """Dropout on the embeddings, the attention weights and every residual branch."""
    actor_lr: float = 1e-4
    """Learning rate of the transformer (AdamW), reached after the warm-up."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay, on every parameter."""
    lr_warmup_steps: int = 10_000
    """Updates over which the learning rate rises linearly from 0 to --actor-lr (0: none)."""
    grad_clip: float = 0.25
    """Largest gradient norm; larger gradients are scaled down to it."""
    return_scale: float = 1000.0
    """Returns-to-go are divided by this before they are embedded."""
    target_return: list[float] | None = None
    """Target returns to condition on when acting, one evaluation each; the first gives the score and load_policy's
    default (default: the paper's for Hopper, HalfCheetah, Walker2d; else the data's highest episode return)."""
    normalize_obs: bool = True
    """Normalize observations with the mean and std of the data."""
    eval_every: int = 10_000
    """Updates between evaluations."""
    eval_episodes: int = 10
    """Episodes per evaluation and target return (deterministic actions); 0: no evaluation."""
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
    require(args.context_length > 0, "context_length", "must be a positive integer", args.context_length)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)
    require(args.n_layers > 0, "n_layers", "must be a positive integer", args.n_layers)
    require(args.n_heads > 0 and args.hidden_dim % args.n_heads == 0, "n_heads",
            f"must be a positive divisor of --hidden-dim {args.hidden_dim}", args.n_heads)
    require(0.0 <= args.dropout < 1.0, "dropout", "must be in [0, 1)", args.dropout)
    require(args.weight_decay >= 0.0, "weight_decay", "must be >= 0", args.weight_decay)
    require(args.lr_warmup_steps >= 0, "lr_warmup_steps", "must be >= 0 (0: no warm-up)", args.lr_warmup_steps)
    require(args.grad_clip > 0.0, "grad_clip", "must be positive", args.grad_clip)
    require(args.return_scale > 0.0 and math.isfinite(args.return_scale), "return_scale", "must be positive",
            args.return_scale)
    targets = args.target_return
    require(targets is None or (len(targets) > 0 and all(math.isfinite(t) for t in targets)), "target_return",
            "must be one or more finite returns", targets)


# ----------------------------------------------------------------------------------------------
# Data: trajectories, returns-to-go, training windows
# ----------------------------------------------------------------------------------------------
def trajectory_bounds(terminals: np.ndarray, timeouts: np.ndarray, episode_starts: np.ndarray,
                      n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of every trajectory of n flat transitions: one starts at every episode start and after
    every transition flagged terminal or timeout (a flag inside a logged episode ends a trajectory there too)."""
    ends = np.flatnonzero((np.asarray(terminals) > 0) | (np.asarray(timeouts) > 0)) + 1
    starts = np.unique(np.concatenate([[0], np.asarray(episode_starts, np.int64), ends[ends < n]])).astype(np.int64)
    return starts, np.diff(np.append(starts, n)).astype(np.int64)


def returns_to_go(rewards: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """R_t = sum_{t' >= t} r_t' within each trajectory (undiscounted), for every transition: [n] float64."""
    r = np.asarray(rewards, np.float64)
    traj = np.repeat(np.arange(len(starts)), lengths)
    before = np.cumsum(r) - r  # sum of the rewards before each transition, over the whole flat array
    totals = np.add.reduceat(r, starts)
    return totals[traj] - (before - before[starts][traj])


def timesteps_in_trajectory(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Every transition's index within its trajectory (0 at its start): [n] int64."""
    return np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def sample_windows(obs: torch.Tensor, actions: torch.Tensor, rtg: torch.Tensor, timesteps: torch.Tensor,
                   traj_end: torch.Tensor, batch_size: int, context: int, generator: torch.Generator):
    """`batch_size` windows of `context` steps, each from a start transition drawn uniformly (so a trajectory is
    drawn in proportion to its length), cut at the trajectory's end `traj_end[start]` and left-padded. Returns
    (rtg [B, K], obs [B, K, obs_dim], actions [B, K, act_dim], timesteps [B, K], mask [B, K]: True where real)."""
    start = torch.randint(0, len(obs), (batch_size,), device=obs.device, generator=generator)
    length = torch.clamp(traj_end[start] - start, max=context)  # steps available from the start, at most K
    offset = torch.arange(context, device=obs.device) - (context - length[:, None])  # < 0: padding on the left
    mask = offset >= 0
    idx = start[:, None] + offset.clamp(min=0)
    pad = mask.unsqueeze(-1)
    return (rtg[idx] * mask, obs[idx] * pad, actions[idx] * pad, timesteps[idx] * mask, mask)


# ----------------------------------------------------------------------------------------------
# Networks: a GPT-2 style causal transformer, and DT around it
# ----------------------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    """softmax(Q K^T / sqrt(d) + mask) V over the tokens each token may see, per head."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop, self.resid_drop = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x [B, T, dim]; allowed [B, 1, T, T]: True where query token i may attend to key token j."""
        b, t, dim = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(dim // self.n_heads)
        weights = self.attn_drop(torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1))
        return self.resid_drop(self.proj((weights @ v).transpose(1, 2).reshape(b, t, dim)))


class Block(nn.Module):
    """GPT-2's block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, n_heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), allowed)
        return x + self.mlp(self.ln2(x))


def attention_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] from the steps' mask [B, K] (T = 3K tokens): causal (key j <= query i), and no real token attends
    to padding; every token sees itself, so no row of the softmax is empty."""
    tokens = mask.repeat_interleave(3, dim=1)  # (R_t, s_t, a_t) share their step's mask
    t = tokens.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()
    itself = torch.eye(t, dtype=torch.bool, device=mask.device)
    return (causal & (tokens[:, None, :] | itself)).unsqueeze(1)


class DecisionTransformer(nn.Module):
    """(R, s, a) for K steps -> a^_t for every step t, each from the tokens up to s_t."""

    def __init__(self, obs_dim: int, act_dim: int, dim: int, n_layers: int, n_heads: int, dropout: float,
                 max_timestep: int):
        super().__init__()
        self.embed_timestep = nn.Embedding(max_timestep, dim)
        self.embed_return, self.embed_state = nn.Linear(1, dim), nn.Linear(obs_dim, dim)
        self.embed_action = nn.Linear(act_dim, dim)
        self.embed_ln, self.embed_drop = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(dim, n_heads, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.predict_action = nn.Sequential(nn.Linear(dim, act_dim), nn.Tanh())
        for name, p in self.blocks.named_parameters():  # GPT-2's init in the transformer
            if name.endswith("weight") and p.dim() == 2:
                residual_out = name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight")
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layers) if residual_out else 0.02)
            elif name.endswith("bias") and "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, timesteps: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """rtg [B, K] (scaled), states [B, K, obs_dim] (normalized), actions [B, K, act_dim], timesteps [B, K],
        mask [B, K] (True: a real step) -> predicted actions [B, K, act_dim]."""
        b, k = mask.shape
        time_emb = self.embed_timestep(timesteps)
        tokens = torch.stack([self.embed_return(rtg.unsqueeze(-1)) + time_emb, self.embed_state(states) + time_emb,
                              self.embed_action(actions) + time_emb], dim=2).reshape(b, 3 * k, -1)  # R1 s1 a1 R2 ...
        x = self.embed_drop(self.embed_ln(tokens))
        allowed = attention_mask(mask)
        for block in self.blocks:
            x = block(x, allowed)
        return self.predict_action(self.ln_f(x)[:, 1::3])  # a^_t from the hidden state of s_t


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def action_loss(pred: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L = mean over the real (unpadded) steps and action dimensions of (a^_t - a_t)^2."""
    m = mask.unsqueeze(-1).to(pred.dtype)
    return ((pred - act) ** 2 * m).sum() / (m.sum() * pred.shape[-1])


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def default_target_returns(data) -> list[float]:
    """The paper's targets for the data's environment, else the data's highest episode return (see details, 8)."""
    env = data.env_spec.id.split("-")[0].lower() if data.env_spec is not None else None
    if env in PAPER_TARGET_RETURNS:
        return list(PAPER_TARGET_RETURNS[env])
    return [float(data.episode_returns().max())]


def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "dt")
        args = resumed_args(Args, args, "dt", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: trajectories split at episode ends, terminals and timeouts; returns-to-go over whole trajectories.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "dt")  # says at start if it cannot evaluate or score
    targets = [float(t) for t in args.target_return] if args.target_return else default_target_returns(data)
    starts, lengths = trajectory_bounds(data.terminals, data.timeouts, data.episode_starts, len(data))
    env_limit = getattr(data.env_spec, "max_episode_steps", None) or 0
    max_timestep = int(max(lengths.max(), env_limit))  # size of the timestep embedding table
    if args.normalize_obs:
        obs_mean, obs_std = observation_stats(data.observations, eps=1e-6)
    else:
        obs_mean, obs_std = np.zeros(data.obs_dim, np.float32), np.ones(data.obs_dim, np.float32)
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, obs_mean=obs_mean, obs_std=obs_std)
    rtg = torch.as_tensor(returns_to_go(data.rewards, starts, lengths) / args.return_scale, dtype=torch.float32,
                          device=device)
    timesteps = torch.as_tensor(timesteps_in_trajectory(starts, lengths), device=device)
    traj_end = torch.as_tensor(np.repeat(starts + lengths, lengths), device=device)

    model = DecisionTransformer(data.obs_dim, data.act_dim, args.hidden_dim, args.n_layers, args.n_heads,
                                args.dropout, max_timestep).to(device)
    opt = adam(model.parameters(), args.actor_lr, device, weight_decay=args.weight_decay, decoupled_weight_decay=True)
    warmup = max(args.lr_warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 1.0))

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("model", model), ("opt", opt), ("sched", sched), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("dt", args.dataset, args.seed)
    run = Run(run_dir, args, "dt", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update() -> dict[str, torch.Tensor]:  # one whole update; the loop below steps the warm-up schedule
        rtg_w, obs_w, act_w, t_w, mask = sample_windows(buffer.obs, buffer.actions, rtg, timesteps, traj_end,
                                                        args.batch_size, args.context_length, buffer.generator)
        loss = action_loss(model(rtg_w, obs_w, act_w, t_w, mask), act_w, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        return {"loss/actor": loss}

    module = DTPolicy(model, torch.as_tensor(obs_mean, device=device), torch.as_tensor(obs_std, device=device),
                      args.return_scale)

    def evaluate_targets() -> dict:
        """One evaluation per target return (dropout off); the first is the run's score and is logged."""
        model.eval()
        records = [evaluator(HistoryPolicy(module, args.context_length, target, device), step,
                             run if i == 0 else None) for i, target in enumerate(targets)]
        model.train()
        return records[0] | {"targets": [{"target": t, "return": r["return"], "score": r["score"]}
                                         for t, r in zip(targets, records)]}

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
            "buffer": buffer.state_dict(), "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "dt", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "max_timestep": max_timestep,
            "target_returns": json.dumps(targets), "obs_mean": module.obs_mean.cpu(), "obs_std": module.obs_std.cpu()})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            metrics = update_fn()
            sched.step()
            step += 1
            if step % args.log_every == 0:
                run.log(step, {k: v.item() for k, v in metrics.items()}
                        | {"updates_per_s": (step - start_step) / (time.time() - start_time)})
                run.advance(args.log_every)
            if step == args.total_steps:
                save()  # the final checkpoint comes before the final evaluation: a failure there loses nothing
            if evaluator.due(step, evals):
                evals.append(evaluate_targets())
            if run.checkpoint_due(step) or stop:
                save()
            if stop:
                run.close()
                raise stop.exit(resume_command(__file__, run_dir), step)
    if evaluator.due(step, evals):  # resumed from a final checkpoint whose evaluation did not finish
        evals.append(evaluate_targets())
        save()
    run.advance(step - run.progress.n)
    final = evals[-1] if evals else {"score": None, "return": None}  # no evaluation: losses only
    result = {"algo": "dt", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "target_returns": targets, "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"dt {args.dataset} seed {args.seed}: {shown} at target return {targets[0]:g} after {step} updates "
          f"-> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: the episode so far -> actions
# ----------------------------------------------------------------------------------------------
class DTPolicy(nn.Module):
    """The whole deterministic policy as one module on tensors: the last K steps of n episodes, raw (returns-to-go
    [n, K], observations [n, K, obs_dim], actions [n, K, act_dim] in [-1, 1], timesteps [n, K], mask [n, K]: True
    for a real step, left-padded) -> the action of each episode's last step [n, act_dim] in [-1, 1]."""

    def __init__(self, model: DecisionTransformer, obs_mean: torch.Tensor, obs_std: torch.Tensor,
                 return_scale: float):
        super().__init__()
        self.model = model
        self.register_buffer("obs_mean", obs_mean)
        self.register_buffer("obs_std", obs_std)
        self.return_scale = return_scale

    def forward(self, rtg: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor, timesteps: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        timesteps = timesteps.clamp(max=self.model.embed_timestep.num_embeddings - 1)
        pred = self.model(rtg / self.return_scale, (obs - self.obs_mean) / self.obs_std, actions, timesteps, mask)
        return pred[:, -1]


class HistoryPolicy:
    """What evaluation runs: float32 observations [n, obs_dim] of n running episodes -> actions [n, act_dim] in
    [-1, 1], conditioned on `target_return` and each episode's history (`.module`: the DTPolicy that acts on it).

        policy.reset(n)                   # n new episodes (the first call without reset starts len(obs) of them)
        actions = policy(obs)             # one step of every running episode
        policy.observe(rewards, ended)    # what the step earned; ended episodes leave the batch
    """

    def __init__(self, module: DTPolicy, context: int, target_return: float, device: torch.device):
        self.module, self.context, self.target_return, self.device = module, context, float(target_return), device
        self.history: dict[str, torch.Tensor] | None = None

    def reset(self, n: int) -> None:
        k, obs_dim = self.context, self.module.obs_mean.shape[0]
        act_dim = self.module.model.predict_action[0].out_features
        zeros = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=self.device)  # noqa: E731
        self.history = {"rtg": zeros(n, k), "obs": zeros(n, k, obs_dim), "actions": zeros(n, k, act_dim),
                        "timesteps": zeros(n, k, dtype=torch.long), "mask": zeros(n, k, dtype=torch.bool)}
        self.next_rtg = torch.full((n,), self.target_return, device=self.device)  # R_t of each episode's next step
        self.t = torch.zeros(n, dtype=torch.long, device=self.device)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if self.history is None:
            self.reset(len(obs_t))
        h = self.history
        if len(obs_t) != len(h["obs"]):
            raise ValueError(f"{len(obs_t)} observations for {len(h['obs'])} running episodes: call reset(n) when "
                             f"new episodes start, and observe(rewards, ended) after each step")
        new = {"rtg": self.next_rtg, "obs": obs_t, "actions": torch.zeros_like(h["actions"][:, 0]),
               "timesteps": self.t, "mask": torch.ones_like(h["mask"][:, 0])}
        for key, value in new.items():  # drop the oldest step, append this one (its action token is zero)
            h[key] = torch.cat([h[key][:, 1:], value.unsqueeze(1)], dim=1)
        with torch.no_grad():
            action = self.module(h["rtg"], h["obs"], h["actions"], h["timesteps"], h["mask"])
        h["actions"][:, -1] = action
        return action.cpu().numpy()

    def observe(self, rewards: np.ndarray, ended: np.ndarray) -> None:
        self.next_rtg = self.next_rtg - torch.as_tensor(rewards, dtype=torch.float32, device=self.device)
        self.t = self.t + 1
        keep = torch.as_tensor(~np.asarray(ended, dtype=bool), device=self.device)
        self.history = {key: value[keep] for key, value in self.history.items()}
        self.next_rtg, self.t = self.next_rtg[keep], self.t[keep]


def load_policy(run_dir: str | Path, device: str = "cpu", target_return: float | None = None) -> HistoryPolicy:
    """The policy of a run folder's checkpoint, as evaluation runs it (`.module`: one nn.Module), conditioned on
    `target_return` (default: the run's first target return).

    Unlike the README's stateless policies it keeps each episode's history, so in your own loop tell it when an
    episode starts and what every step earned (as common/evaluation.py does, for n episodes in lockstep):

        policy = dt.load_policy(run_dir)                      # or load_policy(run_dir, target_return=1800)
        obs, _ = env.reset(seed=0); policy.reset(1)           # a new episode: empty history, R_1 = target return
        while True:                                           # obs [1, obs_dim] float32 -> action [1, act_dim]
            obs, r, term, trunc, _ = env.step(policy(obs[None].astype(np.float32))[0])
            policy.observe(np.array([r]), np.array([term or trunc]))  # R_(t+1) = R_t - r_t; step t + 1
            if term or trunc: break

    Call reset(n) before each new episode (or batch of n): an ended episode leaves the batch, and a call with more
    observations than running episodes is a ValueError. Skipping observe is not caught: the next call would repeat
    the last step's return-to-go and timestep. Actions are in [-1, 1]; for other bounds map them with
    common.evaluation.env_actions(action, env.action_space). The first call without any reset(n) starts len(obs)
    episodes."""
    state = load_policy_checkpoint(run_dir, "dt")
    args = Args(**upgrade_args("dt", json.loads(state["args"])))
    model = DecisionTransformer(state["obs_dim"], state["act_dim"], args.hidden_dim, args.n_layers, args.n_heads,
                                args.dropout, int(state["max_timestep"])).to(device)
    model.load_state_dict(state["model"])
    module = DTPolicy(model.eval(), state["obs_mean"].to(device), state["obs_std"].to(device), args.return_scale)
    target = json.loads(state["target_returns"])[0] if target_return is None else target_return
    return HistoryPolicy(module, args.context_length, target, torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
