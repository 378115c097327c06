"""SPIBB-DQN: Safe Policy Improvement with Baseline Bootstrapping, on a Double DQN.

Laroche, Trichelair, Tachet des Combes. "Safe Policy Improvement with Baseline Bootstrapping." ICML 2019.
arXiv:1712.06924. Authors' code: github.com/RomainLaroche/SPIBB (tabular), github.com/rems75/SPIBB-DQN (DQN).

Where the data say little about an action (a state-action (pseudo-)count below N_wedge, the "bootstrapped set"
B), the learned policy keeps the behaviour policy's probability of that action; it re-assigns only the mass of
the well-covered actions, all of it to the best of them. The DQN backup evaluates that policy at s':

    B(s)   = { a : n(s, a) < N_wedge }
    a*     = argmax_{a not in B(s')} Q_theta(s', a)                               (online network: Double DQN)
    y      = r + gamma (1 - d) [ Qbar(s', a*) sum_{a not in B(s')} pi_b(a|s')
                                 + sum_{a in B(s')} pi_b(a|s') Qbar(s', a) ]
    L(theta) = E_D[ Huber(Q_theta(s, a) - y) ]
    pi_spibb(a|s) = pi_b(a|s) for a in B(s);  + sum_{a' not in B(s)} pi_b(a'|s) on a* = argmax_{a not in B(s)} Q(s, a)

How n(s, a) and pi_b are estimated (the data record neither):
  n(s, a)  the DQN code's pseudo-count (rems75/SPIBB-DQN, dataset.py): a triangular similarity kernel between
           states, summed over the dataset's transitions that took action a,
               n(s, a) = sum_{i : a_i = a} max(0, 1 - ||s - s_i||_2 / r),   r = `--count-radius`,
           with states the normalized observations (mean and std of the data). A transition's own (s_i, a_i)
           counts 1; with one-hot or otherwise well-separated states it is the exact count. n(s', .) of every
           dataset next state is computed once at start (chunked, on the training device); acting computes n(s, .)
           of the observed states against all dataset states.
  pi_b     the estimated behaviour policy of the DQN code's `pi_b_hat` variants: a classifier pi_b(a | s) =
           softmax(MLP(s)) fitted by cross-entropy to the data's actions, trained alongside Q (deviation: the code
           trains it beforehand; the paper's experiments use the true behaviour policy, which these datasets do not
           record).

Implementation details:
 1. Double DQN target with a hard copy every 1,000 updates, Huber loss, batch 32, N_wedge = 10 and kernel radius
    r = 0.2 (rems75/SPIBB-DQN, config_batch_cartpole.yaml: ddqn, update_freq 1000, minibatch_size 32,
    minimum_count 10, count_param 0.2). An action is bootstrapped where n < N_wedge (the DQN code's `c >=
    minimum_count` marks the others; the tabular code uses n <= N_wedge).
 2. Deviation: Adam (lr 2.5e-4, the code's learning rate) replaces the code's RMSprop(alpha 0.95, eps 1e-7), as
    every script here uses common.fast.adam; the loss is the batch mean, not the sum.
 3. Deviation: gamma 0.99 (the code's CartPole config uses 0.9) and an MLP 2x256 ReLU for Q and for pi_b (the
    code's "dense" network is 32-128-32), as the other discrete scripts; the radius applies to normalized
    observations (the code counts on raw states).
 4. Evaluation is deterministic: the most probable action of pi_spibb (the code samples from it).
 5. The checkpoint keeps the normalized dataset states and actions, so `load_policy` computes counts without
    the dataset.

Usage:
    python algorithms/spibb.py                                        # stitch/cartpole/medium-replay-v0
    python algorithms/spibb.py --count-threshold 0                    # N_wedge = 0: Double DQN
    python algorithms/spibb.py --resume runs/spibb__stitch-cartpole-medium-replay-v0__s0__20261121-120000
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
import torch.nn.functional as F
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

MASKED = -1e8  # the value an excluded action gets before an argmax


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/cartpole/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates."""
    batch_size: int = 32
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the two hidden layers of Q and of the behaviour classifier."""
    critic_lr: float = 2.5e-4
    """Q's learning rate."""
    actor_lr: float = 3e-4
    """Learning rate of the behaviour classifier pi_b."""
    gamma: float = 0.99
    """Discount factor."""
    target_update_every: int = 1_000
    """Updates between hard copies of Q into its target."""
    count_threshold: float = 10.0
    """N_wedge: actions whose pseudo-count n(s, a) is below it keep the behaviour policy's probability (0: DQN)."""
    count_radius: float = 0.2
    """Radius r of the pseudo-count kernel max(0, 1 - ||s - s_i|| / r), in normalized observation units."""
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
    require(args.count_threshold >= 0.0, "count_threshold", "must be >= 0", args.count_threshold)
    require(args.count_radius > 0.0, "count_radius", "must be positive", args.count_radius)
    require(args.target_update_every > 0, "target_update_every", "must be a positive integer", args.target_update_every)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


def pseudo_counts(query: torch.Tensor, obs: torch.Tensor, act: torch.Tensor, n_actions: int, radius: float,
                  chunk: int = 256) -> torch.Tensor:
    """n(s, a) = sum_{i : a_i = a} max(0, 1 - ||s - s_i|| / r) for each query state s: [M, n_actions].
    obs = the dataset's states s_i [N, d], act = their actions a_i [N]. Exact, but faster than comparing every pair:
    the dataset is sorted along one coordinate (the one that leaves the fewest s_i within r of 1,024 of the
    queries), and each chunk of queries (sorted the same way) is compared only with the s_i whose coordinate lies
    within r of theirs; the others are farther than r and weigh 0."""
    sample = query[:1024]
    columns = obs.sort(0).values.T.contiguous()
    within = [(torch.searchsorted(col, sample[:, j] + radius, right=True)
               - torch.searchsorted(col, sample[:, j] - radius)).sum() for j, col in enumerate(columns)]
    axis = int(torch.stack(within).argmin()) if within and len(sample) else 0
    order = obs[:, axis].argsort()
    obs, onehot = obs[order], F.one_hot(act[order], n_actions).to(obs.dtype)
    key = obs[:, axis].contiguous()
    out = torch.zeros(len(query), n_actions, device=obs.device, dtype=obs.dtype)
    q_order = query[:, axis].argsort()
    for i in range(0, len(query), chunk):
        rows = q_order[i:i + chunk]
        q = query[rows]
        lo = int(torch.searchsorted(key, q[:, axis].min() - radius))
        hi = int(torch.searchsorted(key, q[:, axis].max() + radius, right=True))
        distance = torch.cdist(q, obs[lo:hi], compute_mode="donot_use_mm_for_euclid_dist")
        out[rows] = (1.0 - distance / radius).clamp_min(0.0) @ onehot[lo:hi]
    return out


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def spibb_target(next_q: torch.Tensor, next_q_target: torch.Tensor, next_pi_b: torch.Tensor,
                 next_counts: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, gamma: float,
                 count_threshold: float) -> torch.Tensor:
    """y = r + gamma (1 - d) [Qbar(s', a*) sum_{a not in B} pi_b(a|s') + sum_{a in B} pi_b(a|s') Qbar(s', a)],
    a* = argmax_{a not in B(s')} Q(s', a), B(s') = {a : n(s', a) < N_wedge}; all inputs [B, n] but rew, done [B]."""
    free = next_counts >= count_threshold  # not bootstrapped
    a_star = torch.where(free, next_q, torch.full_like(next_q, MASKED)).argmax(-1, keepdim=True)
    free_mass = (next_pi_b * free).sum(-1)
    bootstrapped = (next_pi_b * ~free * next_q_target).sum(-1)
    return rew + gamma * (1.0 - done) * (next_q_target.gather(1, a_star).squeeze(1) * free_mass + bootstrapped)


def q_loss(q_data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[Huber(Q(s, a) - y)]."""
    return F.huber_loss(q_data, target.detach())


def behaviour_loss(logits: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """-E[log pi_b(a | s)], pi_b = softmax(logits)."""
    return F.cross_entropy(logits, act)


def spibb_policy(q: torch.Tensor, pi_b: torch.Tensor, counts: torch.Tensor, count_threshold: float) -> torch.Tensor:
    """pi_spibb(. | s) [B, n]: pi_b on B(s), the rest of the mass on argmax_{a not in B(s)} Q(s, a)."""
    free = counts >= count_threshold
    pi = pi_b * ~free
    a_star = torch.where(free, q, torch.full_like(q, MASKED)).argmax(-1, keepdim=True)
    return pi.scatter_add(1, a_star, (1.0 - pi.sum(-1, keepdim=True)).clamp_min(0.0))


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "spibb")
        args = resumed_args(Args, args, "spibb", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: observations normalized (the pseudo-count kernel measures distances in these units); the pseudo-counts
    # n(s', .) of every next state, once.
    data = load_dataset(args.dataset, download=args.download, discrete=True)
    evaluator = Evaluator(data, args, "spibb")  # says at start if it cannot evaluate or score
    obs_mean, obs_std = observation_stats(data.observations, eps=1e-3)
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, obs_mean=obs_mean, obs_std=obs_std)
    obs_mean_t, obs_std_t = torch.as_tensor(obs_mean, device=device), torch.as_tensor(obs_std, device=device)
    data_obs, data_act = buffer.obs[:buffer.size], buffer.actions[:buffer.size]
    next_counts = pseudo_counts(buffer.next_obs[:buffer.size], data_obs, data_act, data.n_actions, args.count_radius)

    q = mlp(data.obs_dim, args.hidden_dim, data.n_actions).to(device)
    q_target = mlp(data.obs_dim, args.hidden_dim, data.n_actions).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    behaviour = mlp(data.obs_dim, args.hidden_dim, data.n_actions).to(device)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    b_opt = adam(behaviour.parameters(), args.actor_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("q", q), ("q_target", q_target), ("behaviour", behaviour), ("q_opt", q_opt),
                              ("b_opt", b_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("spibb", args.dataset, args.seed)
    run = Run(run_dir, args, "spibb", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update(target: bool) -> dict[str, torch.Tensor]:  # target: copy Q into its target after this update
        # the minibatch as buffer.sample draws it, with the indices kept to look up the next states' counts
        idx = torch.randint(0, buffer.size, (args.batch_size,), device=buffer.device, generator=buffer.generator)
        obs, act, rew, next_obs, done = (buffer.obs[idx], buffer.actions[idx], buffer.rewards[idx],
                                         buffer.next_obs[idx], buffer.dones[idx])
        logits = behaviour(obs)
        b_loss = behaviour_loss(logits, act)
        b_opt.zero_grad(set_to_none=True)
        b_loss.backward()
        b_opt.step()

        with torch.no_grad():
            counts = next_counts[idx]
            y = spibb_target(q(next_obs), q_target(next_obs), F.softmax(behaviour(next_obs), -1), counts, rew, done,
                             args.gamma, args.count_threshold)
        q_data = q(obs).gather(1, act[:, None]).squeeze(1)
        td = q_loss(q_data, y)
        q_opt.zero_grad(set_to_none=True)
        td.backward()
        q_opt.step()
        if target:
            with torch.no_grad():
                torch._foreach_copy_(list(q_target.parameters()), list(q.parameters()))
        return {"loss/q": td, "loss/bc": b_loss, "q_data": q_data.mean(),
                "bootstrapped_frac": (counts < args.count_threshold).float().mean()}

    policy_fn = policy_function(q, behaviour, data_obs, data_act, args.count_radius, args.count_threshold, device,
                                obs_mean_t, obs_std_t)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "q": q.state_dict(), "q_target": q_target.state_dict(), "behaviour": behaviour.state_dict(),
            "q_opt": q_opt.state_dict(), "b_opt": b_opt.state_dict(), "buffer": buffer.state_dict(),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "spibb", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "n_actions": data.n_actions,
            "obs_mean": obs_mean_t.cpu(), "obs_std": obs_std_t.cpu(),
            "count_obs": data_obs.cpu(), "count_actions": data_act.cpu()})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            step += 1
            metrics = update_fn(target=step % args.target_update_every == 0)
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
    result = {"algo": "spibb", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"spibb {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class SPIBBPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> the most probable action of
    pi_spibb(. | s) [n] (int64). Its forward is the whole policy, so it exports as it is (benchmarks/export.py):
    the pseudo-counts compare each state with every stored one through one matmul (`pseudo_counts`, for the
    large batches of training, computes them exactly with data-dependent windows a traced module could not keep;
    the two agree to float rounding, ~1e-6 of a count)."""

    def __init__(self, q: nn.Module, behaviour: nn.Module, count_obs: torch.Tensor, count_actions: torch.Tensor,
                 count_radius: float, count_threshold: float, obs_mean: torch.Tensor, obs_std: torch.Tensor):
        super().__init__()
        self.q, self.behaviour = q, behaviour
        self.radius, self.threshold = count_radius, count_threshold
        self.register_buffer("count_obs", count_obs.detach().clone())
        self.register_buffer("count_sq", (count_obs.detach() ** 2).sum(-1))
        self.register_buffer("count_onehot", F.one_hot(count_actions, q[-1].out_features).to(count_obs.dtype))
        self.register_buffer("obs_mean", obs_mean.detach().clone())
        self.register_buffer("obs_std", obs_std.detach().clone())

    def distribution(self, obs: torch.Tensor) -> torch.Tensor:
        s = (obs - self.obs_mean) / self.obs_std
        # ||s - s_i|| through ||s||^2 + ||s_i||^2 - 2 s.s_i (one matmul; exports to ONNX, which has no cdist)
        squared = (s * s).sum(-1, keepdim=True) + self.count_sq - 2.0 * s @ self.count_obs.T
        distance = squared.clamp_min(0.0).sqrt()
        counts = (1.0 - distance / self.radius).clamp_min(0.0) @ self.count_onehot
        return spibb_policy(self.q(s), F.softmax(self.behaviour(s), -1), counts, self.threshold)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs).argmax(-1)


def policy_function(q: nn.Module, behaviour: nn.Module, count_obs: torch.Tensor, count_actions: torch.Tensor,
                    count_radius: float, count_threshold: float, device: torch.device, obs_mean: torch.Tensor,
                    obs_std: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim], normalized with the training data's statistics,
    -> the most probable action of pi_spibb(. | s) [n] (int64); `.distribution(obs)` gives pi_spibb itself."""
    module = SPIBBPolicy(q, behaviour, count_obs, count_actions, count_radius, count_threshold, obs_mean, obs_std)

    def distribution(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module.distribution(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module, act.distribution = module, distribution
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: Q)."""
    state = load_policy_checkpoint(run_dir, "spibb")
    args = Args(**upgrade_args("spibb", json.loads(state["args"])))
    q = mlp(state["obs_dim"], args.hidden_dim, state["n_actions"]).to(device)
    behaviour = mlp(state["obs_dim"], args.hidden_dim, state["n_actions"]).to(device)
    q.load_state_dict(state["q"])
    behaviour.load_state_dict(state["behaviour"])
    return policy_function(q.eval(), behaviour.eval(), state["count_obs"].to(device),
                           state["count_actions"].to(device), args.count_radius, args.count_threshold,
                           torch.device(device), state["obs_mean"].to(device), state["obs_std"].to(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
