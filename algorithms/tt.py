"""TT: Trajectory Transformer.

Janner, Li, Levine. "Offline Reinforcement Learning as One Big Sequence Modeling Problem." NeurIPS 2021.
arXiv:2106.02039. Authors' code: github.com/jannerm/trajectory-transformer (PyTorch).

TT models whole trajectories as text. Every dimension of every transition (state, action, reward, and the
reward-to-go after it) is discretized into one of N bins, each a token; a causal GPT learns the sequence by
next-token prediction; acting is planning: beam search over the model's own continuations of the recent past,
scored by the predicted rewards and the predicted value at the end of the plan:

    x_t = (s_t^1..s_t^D, a_t^1..a_t^M, r_t, V_t),  V_t = sum_{k >= 1} gamma^(k-1) r_(t+k)   (one transition, T tokens)
    tokens: bin_j(x^j) for each dimension j, from the data's per-dimension quantiles (or a uniform grid)
    L(theta) = E [ sum_i w_i CE( P_theta(. | tokens_<i), token_i ) ]     (w: 5 for action tokens, 1 for the rest)
    plan: for t = 0..H-1: expand every beam n_expand times, sample its action tokens, read E[r_t] and E[V_t] from
          the predicted reward and value token distributions, score = sum_{t' <= t} gamma^t' r_t' + gamma^(t+1) V_t,
          keep the best `beam_width` beams, then greedily decode the next state; act with the best plan's first action.

Implementation details (from the authors' code, config/offline.py, trajectory/..., unless marked "deviation"):
 1. Trajectories end where the dataset's episodes end and at terminal or timeout flags; a transition that
    terminated gets the reward -100 (`termination_penalty`, the authors' for locomotion). V_t sums the discounted
    logged rewards after t (gamma 0.99). States are not normalized; actions are in [-1, 1].
 2. Discretization: N = 100 bins per dimension at the data's quantiles (bin edges at evenly spaced ranks of the
    sorted values), or evenly spaced between each dimension's min and max (`--discretizer uniform`); a token stands
    for its bin's centre. The token vocabulary of dimension j is offset by j N; one shared token marks the positions
    after a trajectory's end (trained on like any other token, as the authors do).
 3. GPT (minGPT-style, as the authors'): learned position embeddings over the block, pre-LayerNorm blocks, GELU
    MLPs 4x wide, dropout 0.1 (embedding, attention, residual), init normal std 0.02; the output head has one linear
    map per position within a transition. Width 128, 4 layers, 4 heads; block = 10 transitions x T tokens - 1.
 4. Loss: token cross-entropy weighted 5 for action tokens and 1 for the others, averaged over the window.
    Training windows start at any transition but the last of its trajectory, uniformly; positions past the end are
    the end token.
 5. AdamW, betas (0.9, 0.95), lr 6e-4, weight decay 0.1 on the linear layers' weights only, gradient-norm clip 1.0,
    batch 256. The learning rate warms up linearly over one epoch (the number of windows / batch size, in updates)
    and follows a cosine to 10% at 20 epochs. Deviation: it then stays at 10% (the authors' cosine, left unclamped,
    rises again after 20 epochs). The default 200k updates is about the authors' 50 epochs of 1M/|D| passes
    (50 x 1e6 / 256 updates, whatever |D| is).
 6. Planning: horizon H 15, beam width 128, n_expand 2, action tokens sampled from the smallest set of tokens
    holding 60% of the probability (`cdf_act`), reward and value as the expectation of their predicted bins,
    next-state tokens greedy; the context is the last 5 real transitions (their value token a discretized 0, as
    the authors'), and the model reads the current transition and the 5 before it (the authors' crop keeps 4 once
    the current one has begun); replanning every step.
    The authors' per-dataset overrides (halfcheetah H 5 and beam 32, ...) are flags here, not built in.
 7. Planning runs in batch: every running evaluation episode and all its beams in one forward pass per token.
    Deviation: sampling uses a generator seeded with --seed at each new set of episodes (the authors use torch's
    global one), so an evaluation, and load_policy's replay of it, is repeatable. The time planning takes per
    environment step is logged at every evaluation (`plan_s_per_step` in metrics.jsonl; in result.json the mean
    over the evaluations the finishing process ran, with the device). Planning still runs H x T forward passes
    over (episodes x beam_width x n_expand) sequences per environment step, but with a key-value cache (KVCache;
    the authors re-read the whole window for every token): the context is read once per step, each new token is one
    position, and the cache's rows follow the beams as they are duplicated and selected. The window the model reads
    moves by a transition whenever a new one begins (the position embeddings count from its start), so once per
    planned transition the whole window is read again. The logits are the uncached ones up to float rounding
    (tests/test_tt.py). Planning time per environment step at the defaults (beam 128, horizon 15; an untrained
    Hopper-sized model, 11 + 3 dims; one CPU thread, the machine's other core busy with a training run): ~3.7 s
    with the cache, ~54 s without
    (benchmarks/results/plan_speed_cpu_1thread.json and _nocache.json, written by
    `OMP_NUM_THREADS=1 python benchmarks/plan_speed.py --steps S [--no-cache] --out FILE`). Per planned transition
    the cache reads ~13k token positions instead of ~239k. Even cached, a 1,000-step episode takes about an hour
    on a CPU thread: use a GPU, or a smaller --beam-width and --horizon, for many episodes.
 8. Deviation: the score is the final evaluation's, with 10 episodes (the authors: 15 seeds x 1 episode).

Usage:
    python algorithms/tt.py                                          # stitch/hopper/medium-replay-v0
    python algorithms/tt.py --dataset stitch/hopper/medium-v0 --beam-width 32 --horizon 5
    python algorithms/tt.py --resume runs/tt__stitch-hopper-medium-replay-v0__s0__20261207-120000
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

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


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, dropout, minibatch sampling, evaluation and the planner's sampling."""
    total_steps: int = 200_000
    """Number of gradient updates."""
    batch_size: int = 256
    """Minibatch size, in windows of --sequence-length transitions."""
    sequence_length: int = 10
    """Transitions per training window (the model's block is this many transitions of tokens, less one)."""
    n_bins: int = 100
    """Bins N per dimension: the tokens of each dimension."""
    discretizer: Literal["quantile", "uniform"] = "quantile"
    """Bin edges per dimension: at the data's quantiles (the authors'), or evenly spaced from its min to its max."""
    hidden_dim: int = 128
    """Width of the token embeddings and of the transformer (the paper's n_embd); its MLPs are 4 times wider."""
    n_layers: int = 4
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads per block (must divide --hidden-dim)."""
    dropout: float = 0.1
    """Dropout on the embeddings, the attention weights and every residual branch."""
    actor_lr: float = 6e-4
    """Peak learning rate of the transformer (AdamW), after one epoch of warm-up; cosine to 10% at 20 epochs."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay on the linear layers' weights (not biases, LayerNorms or embeddings)."""
    grad_clip: float = 1.0
    """Largest gradient norm; larger gradients are scaled down to it."""
    action_weight: float = 5.0
    """Weight of the action tokens' cross-entropy (the other tokens weigh 1)."""
    gamma: float = 0.99
    """Discount of the value token V_t and of the planner's scores."""
    termination_penalty: float = -100.0
    """Reward given to a transition that terminated the episode."""
    beam_width: int = 128
    """Plans kept after each planning step."""
    horizon: int = 15
    """Planning horizon H, in transitions."""
    n_expand: int = 2
    """Continuations sampled from each kept plan at each planning step."""
    cdf_act: float = 0.6
    """Action tokens are sampled from the most likely tokens that together hold this much probability (1: all)."""
    max_context_transitions: int = 5
    """Real transitions before the current state that the planner conditions on."""
    eval_every: int = 50_000
    """Updates between evaluations."""
    eval_episodes: int = 10
    """Episodes per evaluation; 0: no evaluation."""
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
    require(args.sequence_length > 1, "sequence_length", "must be an integer > 1", args.sequence_length)
    require(args.n_bins > 1, "n_bins", "must be an integer > 1", args.n_bins)
    require(args.discretizer in ("quantile", "uniform"), "discretizer", "must be 'quantile' or 'uniform'",
            args.discretizer)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)
    require(args.n_layers > 0, "n_layers", "must be a positive integer", args.n_layers)
    require(args.n_heads > 0 and args.hidden_dim % args.n_heads == 0, "n_heads",
            f"must be a positive divisor of --hidden-dim {args.hidden_dim}", args.n_heads)
    require(0.0 <= args.dropout < 1.0, "dropout", "must be in [0, 1)", args.dropout)
    require(args.weight_decay >= 0.0, "weight_decay", "must be >= 0", args.weight_decay)
    require(args.grad_clip > 0.0, "grad_clip", "must be positive", args.grad_clip)
    require(args.action_weight >= 0.0, "action_weight", "must be >= 0", args.action_weight)
    require(math.isfinite(args.termination_penalty), "termination_penalty", "must be finite", args.termination_penalty)
    require(args.beam_width > 0, "beam_width", "must be a positive integer", args.beam_width)
    require(args.horizon > 0, "horizon", "must be a positive integer", args.horizon)
    require(args.n_expand > 0, "n_expand", "must be a positive integer", args.n_expand)
    require(0.0 < args.cdf_act <= 1.0, "cdf_act", "must be in (0, 1]", args.cdf_act)
    require(0 <= args.max_context_transitions < args.sequence_length, "max_context_transitions",
            f"must be in [0, --sequence-length {args.sequence_length})", args.max_context_transitions)


# ----------------------------------------------------------------------------------------------
# Data: transitions (s, a, r, V) and their tokens
# ----------------------------------------------------------------------------------------------
def trajectory_bounds(terminals: np.ndarray, timeouts: np.ndarray, episode_starts: np.ndarray,
                      n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of every trajectory of n flat transitions: one starts at every episode start and after
    every transition flagged terminal or timeout."""
    ends = np.flatnonzero((np.asarray(terminals) > 0) | (np.asarray(timeouts) > 0)) + 1
    starts = np.unique(np.concatenate([[0], np.asarray(episode_starts, np.int64), ends[ends < n]])).astype(np.int64)
    return starts, np.diff(np.append(starts, n)).astype(np.int64)


def values_after(rewards: np.ndarray, starts: np.ndarray, lengths: np.ndarray, gamma: float) -> np.ndarray:
    """V_t = sum_{k >= 1} gamma^(k-1) r_(t+k) within each trajectory (0 for its last transition): [n] float64."""
    r = np.asarray(rewards, np.float64)
    v = np.zeros_like(r)
    for k in range(int(lengths.max()) - 2, -1, -1):  # backwards in time, all trajectories at once
        t = starts[lengths > k + 1] + k
        v[t] = r[t + 1] + gamma * v[t + 1]  # V_t = r_(t+1) + gamma V_(t+1)
    return v


class Discretizer(nn.Module):
    """Per-dimension bins: x [..., D] <-> tokens [..., D] in [0, N), each token its bin's centre."""

    def __init__(self, edges: torch.Tensor):
        super().__init__()
        self.register_buffer("edges", edges)  # [N + 1, D], non-decreasing along bins

    @classmethod
    def fit(cls, data: np.ndarray, n_bins: int, kind: str) -> "Discretizer":
        if kind == "quantile":  # edges at evenly spaced ranks of each dimension's sorted values
            ranks = np.linspace(0, len(data) - 1, n_bins + 1).astype(np.int64)
            edges = np.sort(data, axis=0)[ranks]
        else:
            edges = np.linspace(data.min(0), data.max(0), n_bins + 1)
        return cls(torch.as_tensor(edges, dtype=torch.float32))

    @property
    def n_bins(self) -> int:
        return self.edges.shape[0] - 1

    def discretize(self, x: torch.Tensor) -> torch.Tensor:
        """The last bin i whose left edge is <= x, per dimension, clipped to [0, N)."""
        flat = x.reshape(-1, x.shape[-1]).T.contiguous()  # [D, B]
        idx = torch.searchsorted(self.edges.T.contiguous(), flat, right=True) - 1
        return idx.clamp(0, self.n_bins - 1).T.reshape(x.shape)

    def centers(self) -> torch.Tensor:
        return (self.edges[1:] + self.edges[:-1]) / 2  # [N, D]

    def reconstruct(self, tokens: torch.Tensor, dims: slice = slice(None)) -> torch.Tensor:
        """Bin centres of tokens [..., d] of the dimensions `dims`."""
        centers = self.centers()[:, dims]
        return torch.gather(centers, 0, tokens.reshape(-1, tokens.shape[-1]).clamp(0, self.n_bins - 1)).reshape(
            tokens.shape)

    def expectation(self, probs: torch.Tensor, dim: int) -> torch.Tensor:
        """E[x^dim] under probabilities [..., N] over the bins of dimension `dim`."""
        return probs @ self.centers()[:, dim]


# ----------------------------------------------------------------------------------------------
# Networks: minGPT with a per-position output head
# ----------------------------------------------------------------------------------------------
class KVCache:
    """The keys and values every block computed for the tokens a model has read from one window, so that planning
    feeds only the tokens that are new (an implementation speed-up: the authors' planner re-reads the whole window
    for every token). Its rows follow the sequences: `select(rows)` reorders, duplicates or drops them (applied when
    the cache is next read, so a selection just before the window moves costs nothing)."""

    def __init__(self, capacity: int):
        self.capacity = capacity  # the longest window, in tokens
        self.reset(-1)

    def reset(self, start: int) -> None:
        """Forget everything; the next tokens read are the window that begins at token `start` of the sequence."""
        self.start, self.length, self.rows = start, 0, None
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def select(self, rows: torch.Tensor) -> None:
        self.rows = rows if self.rows is None else self.rows[rows]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The new tokens' keys and values k, v [B, H, t, d] of block `layer` -> all of the window's so far."""
        if layer == 0 and self.rows is not None:
            self.keys = [key[self.rows] for key in self.keys]
            self.values = [value[self.rows] for value in self.values]
            self.rows = None
        if layer == len(self.keys):  # the first tokens of this window: room for the whole window
            b, h, _, d = k.shape
            self.keys.append(k.new_empty(b, h, self.capacity, d))
            self.values.append(v.new_empty(b, h, self.capacity, d))
        end = self.length + k.shape[2]
        if k.shape[0] != self.keys[layer].shape[0] or end > self.capacity:
            raise ValueError(f"{k.shape[0]} sequences, tokens {self.length}..{end} for a cache of "
                             f"{self.keys[layer].shape[0]} sequences and {self.capacity} tokens")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Block(nn.Module):
    """x + attention(LN(x)) with a causal mask, then x + MLP(LN(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.attn_dropout, self.resid_drop = dropout, nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """x [B, t, dim]: the next t tokens after the cache's (all of them without a cache)."""
        b, t, dim = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        past = k.shape[2] - t  # tokens before these, read from the cache
        # softmax(Q K^T / sqrt(d) + causal mask) V, token i attending to tokens <= i (torch's fused kernel: planning
        # runs it hundreds of times per environment step); one new token may attend to everything
        mask = None if past == 0 or t == 1 else (
            torch.arange(past, past + t, device=x.device)[:, None] >= torch.arange(past + t, device=x.device))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_dropout if self.training
                                           else 0.0, is_causal=past == 0 and t > 1)
        x = x + self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, dim)))
        return x + self.mlp(self.ln2(x))


class TrajectoryGPT(nn.Module):
    """tokens [B, L] (bins in [0, N], N: past the trajectory's end; L a prefix of whole transitions, any length up to
    the block) -> logits [B, L, N + 1] of each next token."""

    def __init__(self, transition_dim: int, n_bins: int, block_size: int, dim: int, n_layers: int, n_heads: int,
                 dropout: float):
        super().__init__()
        self.transition_dim, self.n_bins, self.block_size = transition_dim, n_bins, block_size
        self.tok_emb = nn.Embedding(n_bins * transition_dim + 1, dim)  # dimension j's bins at j N; one end token
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size, dim))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(dim, n_heads, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Parameter(torch.empty(transition_dim, dim, n_bins + 1))  # one map per position in a transition
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.head, 0.0, 0.02)

    def forward(self, tokens: torch.Tensor, last_only: bool = False, cache: KVCache | None = None) -> torch.Tensor:
        """last_only: the logits of the last position only [B, 1, N + 1] (what sampling needs). cache: tokens are the
        ones after those the cache holds (positions from cache.length on), and the cache gains them."""
        b, t = tokens.shape
        past = 0 if cache is None else cache.length
        if past + t > self.block_size:
            raise ValueError(f"tokens {past}..{past + t} past the block of {self.block_size}")
        pos = torch.arange(past, past + t, device=tokens.device)
        dim_of = pos % self.transition_dim  # which dimension each position holds
        ids = torch.where(tokens == self.n_bins, self.n_bins * self.transition_dim, tokens + dim_of * self.n_bins)
        x = self.drop(self.tok_emb(ids) + self.pos_emb[:, past:past + t])
        if cache is None:
            x = self.blocks(x)
        else:
            for layer, block in enumerate(self.blocks):
                x = block(x, cache, layer)
            cache.length += t
        x = self.ln_f(x)
        if last_only:
            x, dim_of = x[:, -1:], dim_of[-1:]
        return torch.einsum("btd,tdv->btv", x, self.head[dim_of])


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def token_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L = mean_i w_i CE(logits_i, target_i); logits [B, L, V], targets [B, L], weights [L]."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (ce.view(targets.shape) * weights).mean()


# ----------------------------------------------------------------------------------------------
# Planning: beam search over the model's continuations
# ----------------------------------------------------------------------------------------------
def top_cdf_logits(logits: torch.Tensor, cdf: float) -> torch.Tensor:
    """Keep the most likely tokens that together hold at least `cdf` of the probability; the others -inf."""
    if cdf >= 1.0:
        return logits
    probs = logits.softmax(-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # probability of the tokens more likely than each
    drop_sorted = before >= cdf
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_logits(model: TrajectoryGPT, x: torch.Tensor, max_context: int, cache: KVCache | None = None
                ) -> torch.Tensor:
    """The model's logits for the token after x [B, L] (L: whole transitions, then the current one's tokens so far),
    read from the current transition and the `max_context` whole transitions before it (0: as many as the block
    holds). cache: one whose rows are x's; the model reads only the tokens the cache lacks, or the whole window again
    where the window has moved (once per transition, when a new one begins and the oldest leaves the window)."""
    start = window_start(model, x.shape[1], max_context)
    if cache is None:
        return model(x[:, start:], last_only=True)[:, -1]
    if cache.start != start:
        cache.reset(start)
    return model(x[:, start + cache.length:], last_only=True, cache=cache)[:, -1]


def window_start(model: TrajectoryGPT, length: int, max_context: int) -> int:
    """Where the tokens the model reads begin, in a sequence of `length` tokens (whole transitions, then the current
    one's tokens so far): the current transition's start, less `max_context` whole transitions (0: as many as the
    block holds), or 0 where the sequence holds fewer. Always a transition's first token."""
    big = model.transition_dim
    partial = length % big
    whole = (model.block_size - partial) // big
    return max(length - min(whole, max_context or whole) * big - partial, 0)


@torch.no_grad()
def beam_plan(model: TrajectoryGPT, disc: Discretizer, prefix: torch.Tensor, obs_dim: int, act_dim: int,
              horizon: int, beam_width: int, n_expand: int, gamma: float, cdf_act: float, max_context: int,
              generator: torch.Generator, cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Plans for n episodes at once from their prefixes [n, P] (the context's transitions, then the current state's
    tokens). Returns the best plan's tokens [n, horizon, T] and its score [n]. cache: keep the attention's keys and
    values (the same logits up to float rounding; without it every token re-reads the whole window)."""
    n, n_bins, big = prefix.shape[0], model.n_bins, model.transition_dim
    kv = None
    if cache:  # the prefix once per episode, all but its last token (the first sample reads it), then to the beams
        kv = KVCache(min(model.block_size, (max_context or model.block_size) * big + big))
        start = window_start(model, prefix.shape[1], max_context)
        kv.reset(start)
        if prefix.shape[1] - 1 > start:
            model(prefix[:, start:-1], cache=kv)
        kv.select(torch.arange(n, device=prefix.device).repeat_interleave(beam_width))
    x = prefix.repeat_interleave(beam_width, 0)  # [n W, P]: every episode's beams side by side
    rewards = torch.zeros(n * beam_width, horizon + 1, device=prefix.device)
    discounts = gamma ** torch.arange(horizon + 1, device=prefix.device, dtype=torch.float32)

    def sample(x: torch.Tensor, count: int, cdf: float, greedy: bool) -> tuple[torch.Tensor, list]:
        probs_seen = []
        for _ in range(count):
            logits = next_logits(model, x, max_context, kv)[:, :n_bins]  # the end token is never planned
            probs_seen.append(logits.softmax(-1))
            if greedy:
                token = logits.argmax(-1, keepdim=True)
            else:
                token = torch.multinomial(top_cdf_logits(logits, cdf).softmax(-1), 1, generator=generator)
            x = torch.cat([x, token], 1)
        return x, probs_seen

    for t in range(horizon):
        if kv is not None:
            kv.select(torch.arange(len(x), device=x.device).repeat_interleave(n_expand))
        x = x.repeat_interleave(n_expand, 0)  # [n W E, L]
        rewards = rewards.repeat_interleave(n_expand, 0)
        x, _ = sample(x, act_dim, cdf_act, greedy=False)
        x, (p_r, p_v) = sample(x, 2, 1.0, greedy=False)
        rewards[:, t] = disc.expectation(p_r, obs_dim + act_dim)  # E[r_t]
        rewards[:, t + 1] = disc.expectation(p_v, obs_dim + act_dim + 1)  # E[V_t], replaced by r_(t+1) next step
        scores = (rewards * discounts).sum(-1).view(n, -1)  # sum_{t' <= t} gamma^t' r_t' + gamma^(t+1) V_t
        scores, keep = scores.topk(beam_width, dim=1)
        rows = (keep + torch.arange(n, device=x.device)[:, None] * keep.new_tensor(x.shape[0] // n)).reshape(-1)
        x, rewards = x[rows], rewards[rows]
        if kv is not None:
            kv.select(rows)
        if t < horizon - 1:
            x, _ = sample(x, obs_dim, 1.0, greedy=True)
    plans = x[:, prefix.shape[1] - obs_dim:].reshape(n, beam_width, -1)[:, :, :horizon * big].view(
        n, beam_width, horizon, big)
    best = scores.argmax(1)
    return plans[torch.arange(n), best], scores[torch.arange(n), best]


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def lr_factor(step: int, warmup: int, decay_end: int) -> float:
    """Linear warm-up over `warmup` updates, then cosine to 10% at `decay_end`, then 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(decay_end - warmup, 1), 1.0)
    return max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "tt")
        args = resumed_args(Args, args, "tt", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: transitions (s, a, r, V) per trajectory, discretized per dimension; windows as token sequences.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "tt")  # says at start if it cannot evaluate or score
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed)  # actions in [-1, 1]; its sampling generator
    starts, lengths = trajectory_bounds(data.terminals, data.timeouts, data.episode_starts, len(data))
    rewards = np.where(data.terminals > 0, args.termination_penalty, data.rewards)
    values = values_after(rewards, starts, lengths, args.gamma)
    joined = np.concatenate([data.observations, buffer.actions[:len(data)].cpu().numpy(), rewards[:, None],
                             values[:, None]], axis=1).astype(np.float32)
    disc = Discretizer.fit(joined, args.n_bins, args.discretizer).to(device)
    big = joined.shape[1]  # T: tokens per transition
    seq = args.sequence_length
    # Tokens of each transition, and after every trajectory `seq - 1` end-token rows so a window never runs past.
    traj = np.repeat(np.arange(len(starts)), lengths)
    padded_row = np.arange(len(data)) + traj * (seq - 1)  # where each transition lands among the padded rows
    table = torch.full((len(data) + len(starts) * (seq - 1), big), args.n_bins, dtype=torch.long, device=device)
    table[torch.as_tensor(padded_row, device=device)] = disc.discretize(torch.as_tensor(joined, device=device))
    not_last = np.ones(len(data), bool)
    not_last[starts + lengths - 1] = False  # windows start anywhere but at a trajectory's last transition
    window_starts = torch.as_tensor(padded_row[not_last] if not_last.any() else padded_row, device=device)
    weights = torch.ones(big, device=device)
    weights[data.obs_dim:data.obs_dim + data.act_dim] = args.action_weight
    weights = weights.repeat(seq)[1:]  # the weight of each target token

    model = TrajectoryGPT(big, args.n_bins, seq * big - 1, args.hidden_dim, args.n_layers, args.n_heads,
                          args.dropout).to(device)
    decay = [p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() == 2
             and not name.startswith("tok_emb")] + [model.head]
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    opt = adam([{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}],
               args.actor_lr, device, decoupled_weight_decay=True, betas=(0.9, 0.95))
    epoch = max(len(window_starts) // args.batch_size, 1)  # updates per epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, epoch, 20 * epoch))

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("model", model), ("opt", opt), ("sched", sched), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("tt", args.dataset, args.seed)
    run = Run(run_dir, args, "tt", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))
    target_dim = (torch.arange(seq * big - 1, device=device) + 1) % big  # the dimension each target token holds
    act_targets = torch.nonzero((target_dim >= data.obs_dim) & (target_dim < data.obs_dim + data.act_dim))[:, 0]

    def update() -> dict[str, torch.Tensor]:  # one whole update; the loop below steps the schedule
        pick = torch.randint(0, len(window_starts), (args.batch_size,), device=device, generator=buffer.generator)
        rows = window_starts[pick, None] + torch.arange(seq, device=device)
        tokens = table[rows].reshape(args.batch_size, -1)  # [B, seq T]
        logits = model(tokens[:, :-1])
        loss = token_loss(logits, tokens[:, 1:], weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        with torch.no_grad():
            act_ce = F.cross_entropy(logits[:, act_targets].reshape(-1, logits.shape[-1]),
                                     tokens[:, 1:][:, act_targets].reshape(-1))  # the action tokens' part
        return {"loss/model": loss, "loss/actor": act_ce}

    planner = Planner(model, disc, data.obs_dim, data.act_dim, args)

    plan_times: list[float] = []  # seconds per environment step of this process's evaluations (not checkpointed)

    def evaluate_planner() -> dict:
        model.eval()
        policy = PlanningPolicy(planner, args.max_context_transitions, args.seed, device)
        record = evaluator(policy, step, run)
        model.train()
        plan_times.append(policy.seconds / max(policy.steps, 1))
        run.log(step, {"plan_s_per_step": plan_times[-1]})
        return record

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
            "buffer": buffer.state_dict(), "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "tt", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "edges": disc.edges.cpu()})

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
    final = evals[-1] if evals else {"score": None, "return": None}  # no evaluation: losses only
    result = {"algo": "tt", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "plan_s_per_step": float(np.mean(plan_times)) if plan_times else None, "device": str(device),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"tt {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: the episode so far -> planned actions
# ----------------------------------------------------------------------------------------------
class Planner(nn.Module):
    """The whole policy as one module: prefixes [n, P] of tokens (the context's transitions, then the current state's
    tokens) -> the first action of each episode's best plan [n, act_dim] in [-1, 1]. `generator` drives its
    sampling (set by PlanningPolicy)."""

    def __init__(self, model: TrajectoryGPT, disc: Discretizer, obs_dim: int, act_dim: int, args: Args):
        super().__init__()
        self.model, self.disc, self.obs_dim, self.act_dim = model, disc, obs_dim, act_dim
        self.settings = dict(horizon=args.horizon, beam_width=args.beam_width, n_expand=args.n_expand,
                             gamma=args.gamma, cdf_act=args.cdf_act, max_context=args.max_context_transitions)
        self.generator: torch.Generator | None = None

    def forward(self, prefix: torch.Tensor) -> torch.Tensor:
        plan, _ = beam_plan(self.model, self.disc, prefix, self.obs_dim, self.act_dim, generator=self.generator,
                            **self.settings)
        act = slice(self.obs_dim, self.obs_dim + self.act_dim)
        return self.disc.reconstruct(plan[:, 0, act], act)


class PlanningPolicy:
    """What evaluation runs: float32 observations [n, obs_dim] of n running episodes -> planned actions [n, act_dim]
    in [-1, 1], replanned every step from each episode's last transitions (`.module`: the Planner).

        policy.reset(n)                   # n new episodes (the first call without reset starts len(obs) of them)
        actions = policy(obs)             # one step of every running episode
        policy.observe(rewards, ended)    # what the step earned; ended episodes leave the batch
    """

    def __init__(self, module: Planner, max_context: int, seed: int, device: torch.device):
        self.module, self.max_context, self.seed, self.device = module, max_context, seed, device
        self.context: torch.Tensor | None = None
        self.seconds, self.steps = 0.0, 0

    def reset(self, n: int) -> None:
        self.module.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.context = torch.zeros(n, 0, dtype=torch.long, device=self.device)
        self.pending = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if self.context is None:
            self.reset(len(obs_t))
        if len(obs_t) != len(self.context):
            raise ValueError(f"{len(obs_t)} observations for {len(self.context)} running episodes: call reset(n) when "
                             f"new episodes start, and observe(rewards, ended) after each step")
        start = time.perf_counter()
        obs_tokens = self.module.disc.discretize(torch.cat([obs_t, torch.zeros(len(obs_t), self.module.act_dim + 2,
                                                                               device=self.device)], 1))
        action = self.module(torch.cat([self.context, obs_tokens[:, :self.module.obs_dim]], 1))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds, self.steps = self.seconds + time.perf_counter() - start, self.steps + 1
        self.pending = (obs_t, action)
        return action.cpu().numpy()

    def observe(self, rewards: np.ndarray, ended: np.ndarray) -> None:
        obs_t, action = self.pending
        r = torch.as_tensor(rewards, dtype=torch.float32, device=self.device)[:, None]
        transition = torch.cat([obs_t, action, r, torch.zeros_like(r)], 1)  # the value token of the past: 0
        big = transition.shape[1]
        self.context = torch.cat([self.context, self.module.disc.discretize(transition)], 1)[
            :, -self.max_context * big:] if self.max_context else self.context
        self.context = self.context[torch.as_tensor(~np.asarray(ended, dtype=bool), device=self.device)]


def load_policy(run_dir: str | Path, device: str = "cpu") -> PlanningPolicy:
    """The policy of a run folder's checkpoint, as evaluation runs it (`.module`: the Planner, one nn.Module).

    Unlike the README's stateless policies it plans from each episode's last transitions, so in your own loop tell
    it when an episode starts and what every step earned (as common/evaluation.py does, for n episodes in lockstep):

        policy = tt.load_policy(run_dir)
        obs, _ = env.reset(seed=0); policy.reset(1)           # a new episode: no context; the sampler reseeded
        while True:                                           # obs [1, obs_dim] float32 -> action [1, act_dim]
            obs, r, term, trunc, _ = env.step(policy(obs[None].astype(np.float32))[0])
            policy.observe(np.array([r]), np.array([term or trunc]))  # (s, a, r) joins the context
            if term or trunc: break

    Call reset(n) before each new episode (or batch of n): an ended episode leaves the batch, and a call with more
    observations than running episodes is a ValueError. Skipping observe is not caught: the next plan would see no
    new transition in its context. Each call plans with the run's beam width and horizon (seconds to minutes on a
    CPU at the defaults: details, 7); the action is the best plan's first, in [-1, 1] (for other bounds map it with
    common.evaluation.env_actions(action, env.action_space)). reset(n) reseeds the planner's sampling with the
    run's seed, so an episode replays alike."""
    state = load_policy_checkpoint(run_dir, "tt")
    args = Args(**upgrade_args("tt", json.loads(state["args"])))
    edges = state["edges"]
    big = edges.shape[1]
    model = TrajectoryGPT(big, args.n_bins, args.sequence_length * big - 1, args.hidden_dim, args.n_layers,
                          args.n_heads, args.dropout).to(device)
    model.load_state_dict(state["model"])
    planner = Planner(model.eval(), Discretizer(edges).to(device), state["obs_dim"], state["act_dim"], args)
    return PlanningPolicy(planner, args.max_context_transitions, args.seed, torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
