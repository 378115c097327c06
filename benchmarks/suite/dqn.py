"""Train the DQN behaviour policies of the discrete `stitch/` datasets (CartPole-v1, Acrobot-v1).

Double DQN (van Hasselt, Guez & Silver, AAAI 2016, arXiv:1509.06461) on DQN (Mnih et al., Nature 2015):

    a*(s')  = argmax_a' Q(s', a')                            the online network picks the next action,
    y       = r + gamma * (1 - terminated) * Q_target(s', a*)  the target network values it;
    loss    = mean over the batch of (Q(s, a) - y)^2

Implementation details:
 1. Q network: MLP obs -> 120 -> 84 -> one Q-value per action, ReLU (CleanRL's QNetwork).
 2. The first `learning_starts` steps act uniformly at random and fill the replay buffer; after that,
    epsilon-greedy with epsilon linear from `start_e` (at step 0) to `end_e` (at `exploration_fraction`
    x `total_steps`), then `end_e` (CleanRL's linear_schedule; `epsilon_at`).
 3. One gradient step on a batch of `batch_size` every `train_frequency` environment steps, uniform
    sampling from a ring buffer of the last `buffer_size` transitions; Adam.
 4. The target network is a copy of the online network made every `target_network_frequency` steps.
 5. Only terminations stop bootstrapping; time-limit truncations (CartPole's and Acrobot's 500 steps)
    bootstrap like any other step.
 6. The Double DQN target instead of CleanRL's max over the target network (less overestimation). The
    squared TD error as in CleanRL, not the Huber loss of Nature DQN: with CleanRL's settings (a target copy
    every 50 gradient steps) Huber let Q diverge on CartPole (Q ~ 3,000 where returns are at most 100 after
    discounting, greedy return 9 after 100k steps), while the squared error reached 500 by 41k steps.

Defaults are CleanRL's `dqn.py` (the settings it benchmarks on CartPole-v1 and Acrobot-v1: lr 2.5e-4,
buffer 10k, batch 128, gamma 0.99, target copy every 500 steps, epsilon 1 -> 0.05, 10k warm-up steps,
an update every 10 steps), except the budget: 100k environment steps instead of 500k, so the decay of
epsilon over half the run takes 50k steps instead of 250k. The shipped CartPole policies come from the
default run (seed 0); the Acrobot ones from 200k steps with the same 50k-step decay (the usage line
below), because at 100k the best snapshot's epsilon-greedy return (-98.0) was barely at the -100 target.

The run is built to be killed and restarted, like `benchmarks/suite/train_behavior.py` (the SAC trainer):
* every `checkpoint_every` steps the whole state (networks, optimizer, replay buffer, RNG states, step
  counters) is written atomically to `<out>/checkpoint.pt` (+ `replay.npz`); rerunning the same command
  continues from there (the episode in progress is restarted);
* every `snapshot_every` steps the Q network alone is saved to `<out>/snapshots/actor_<step>.pt` with a
  short greedy evaluation in `<out>/snapshots/index.jsonl`, for `benchmarks/suite/select_policies.py` to pick
  the `expert`, `medium` and `medium-replay` policies from.

The behaviour of a snapshot in the datasets is `EpsilonGreedy` (see `benchmarks/suite/build.py`).

Usage:
    python benchmarks/suite/dqn.py --env CartPole-v1 --out runs/dqn/cartpole
    python benchmarks/suite/dqn.py --env Acrobot-v1 --out runs/dqn/acrobot --total-steps 200000 \
        --exploration-fraction 0.25
    python benchmarks/suite/dqn.py --env CartPole-v1 --out runs/dqn/cartpole   # resumes where it stopped
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.suite.behavior import (check_trainer_args, episode_returns, make_trainer_env,  # noqa: E402
                                 progress_bar)
from common.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402


@dataclasses.dataclass
class Args:
    env: str = "CartPole-v1"
    """Gymnasium environment id (a Discrete action space and a flat Box observation)."""
    out: str = "runs/dqn/cartpole"
    """Run folder: checkpoint, replay buffer, Q-network snapshots, metrics."""
    seed: int = 0
    """Seed for the network, the environment and the exploration."""
    total_steps: int = 100_000
    """Environment steps to train for."""
    learning_rate: float = 2.5e-4
    """Adam learning rate."""
    buffer_size: int = 10_000
    """Replay buffer capacity (the last buffer_size transitions)."""
    gamma: float = 0.99
    """Discount factor."""
    target_network_frequency: int = 500
    """Environment steps between copies of the Q network into the target network."""
    batch_size: int = 128
    """Minibatch size of a gradient step."""
    start_e: float = 1.0
    """Epsilon at step 0 of the linear schedule."""
    end_e: float = 0.05
    """Epsilon at the end of the schedule and after it."""
    exploration_fraction: float = 0.5
    """Fraction of total_steps over which epsilon goes from start_e to end_e."""
    learning_starts: int = 10_000
    """Uniform random actions (and no updates) for this many steps."""
    train_frequency: int = 10
    """Environment steps between gradient steps."""
    hidden: tuple[int, ...] = (120, 84)
    """Hidden layer widths of the Q network."""
    snapshot_every: int = 1_000
    """Environment steps between Q-network snapshots (each evaluated greedily)."""
    snapshot_eval_episodes: int = 10
    """Greedy evaluation episodes recorded with each snapshot."""
    checkpoint_every: int = 10_000
    """Environment steps between full (resumable) checkpoints."""
    threads: int = 1
    """torch intra-op threads (1 leaves the other core free)."""
    progress: bool = True
    """Show a progress bar (environment steps, steps/s, last snapshot's evaluation, ETA); --no-progress hides it."""


# ----------------------------------------------------------------------------------------------
# Networks and behaviour
# ----------------------------------------------------------------------------------------------

class QNetwork(nn.Module):
    """Q(s, .): an MLP from a flat observation to one value per discrete action."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...] = (120, 84)):
        super().__init__()
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, tuple(hidden)
        sizes, layers = [obs_dim, *hidden], []
        for i, o in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(i, o), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def uniform_action(u: torch.Tensor, n_actions: int) -> torch.Tensor:
    """Actions uniform on {0, ..., n_actions - 1} from uniform draws u in [0, 1)."""
    return (u * n_actions).long().clamp_(max=n_actions - 1)


class EpsilonGreedy:
    """How a DQN behaves: the greedy action of `q` with probability 1 - epsilon, else a uniform action."""

    def __init__(self, q: QNetwork, epsilon: float):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.q, self.epsilon = q, float(epsilon)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, u: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions [B] for observations [B, obs_dim]; u [B, 2] uniform draws in [0, 1): u[:, 0] < epsilon
        picks a random action, u[:, 1] chooses it. deterministic: the greedy action, u unused."""
        values = self.q(obs)
        greedy = values.argmax(-1)
        if deterministic:
            return greedy
        return torch.where(u[:, 0] < self.epsilon, uniform_action(u[:, 1], values.shape[-1]), greedy)

    @torch.no_grad()
    def probs(self, obs: torch.Tensor, deterministic: bool = False) -> np.ndarray:
        """[B, n] float64: the probability `act` gives every action, epsilon / n + (1 - epsilon) for the greedy one
        (deterministic: one-hot on it). Draws nothing."""
        greedy = self.q(obs).argmax(-1).numpy()
        n = self.q.n_actions
        eps = 0.0 if deterministic else self.epsilon
        p = np.full((len(greedy), n), eps / n)
        p[np.arange(len(greedy)), greedy] += 1.0 - eps
        return p


def epsilon_at(step: int, args: Args | dict) -> float:
    """Epsilon of the exploration schedule at environment step `step` (0-based); 1 during the warm-up."""
    a = args if isinstance(args, dict) else dataclasses.asdict(args)
    if step < a["learning_starts"]:
        return 1.0
    duration = a["exploration_fraction"] * a["total_steps"]
    if duration <= 0:
        return float(a["end_e"])
    slope = (a["end_e"] - a["start_e"]) / duration
    return float(max(slope * step + a["start_e"], a["end_e"]))


def save_qnet(path: Path, q: QNetwork, env_id: str, step: int) -> None:
    """A snapshot: the state dict plus what rebuilds the network (loads with weights_only=True), written atomically."""
    tmp = Path(str(path) + ".tmp")
    torch.save({"kind": "dqn", "state_dict": {k: v.detach().clone() for k, v in q.state_dict().items()},
                "obs_dim": q.obs_dim, "n_actions": q.n_actions, "hidden": list(q.hidden), "env_id": env_id,
                "step": step}, tmp)
    os.replace(tmp, path)


def load_qnet(path: str | Path) -> tuple[QNetwork, dict]:
    """(network in eval mode, metadata) of a snapshot written by `save_qnet`."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("kind") != "dqn":
        raise ValueError(f"{path} is not a DQN snapshot (written by benchmarks/suite/dqn.py)")
    q = QNetwork(blob["obs_dim"], blob["n_actions"], tuple(blob["hidden"]))
    q.load_state_dict(blob["state_dict"])
    q.eval()
    return q, {k: v for k, v in blob.items() if k != "state_dict"}


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def double_dqn_target(q: QNetwork, q_target: QNetwork, rewards: torch.Tensor, next_obs: torch.Tensor,
                      terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminated) Q_target(s', argmax_a' Q(s', a'))."""
    next_action = q(next_obs).argmax(-1, keepdim=True)
    next_q = q_target(next_obs).gather(-1, next_action).squeeze(-1)
    return rewards + gamma * (1.0 - terminated) * next_q


def td_loss(q: QNetwork, obs: torch.Tensor, actions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(Q(s, a) - y)^2, mean over the batch."""
    q_sa = q(obs).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return F.mse_loss(q_sa, target)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

def evaluate(q: QNetwork, env_id: str, episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of `episodes` greedy episodes, reset seeds seed, seed + 1, ..."""
    return episode_returns(lambda obs: int(q(obs).argmax(-1)), env_id, episodes, seed)


def check_args(args: Args) -> None:
    """SystemExit naming the first invalid field."""
    check_trainer_args(args, ("total_steps", "learning_rate", "buffer_size", "target_network_frequency",
                              "batch_size", "train_frequency", "snapshot_every", "snapshot_eval_episodes",
                              "checkpoint_every", "threads"))
    if not 0 <= args.end_e <= args.start_e <= 1:
        raise SystemExit(f"error: need 0 <= --end-e <= --start-e <= 1, got {args.end_e} and {args.start_e}")
    if not 0 <= args.exploration_fraction <= 1:
        raise SystemExit(f"error: --exploration-fraction must be in [0, 1], got {args.exploration_fraction}")
    if not args.hidden or min(args.hidden) <= 0:
        raise SystemExit(f"error: --hidden must be positive layer widths, got {args.hidden}")


def main(args: Args) -> None:
    check_args(args)
    torch.set_num_threads(args.threads)
    env = make_trainer_env(args.env, lambda space: isinstance(space, gym.spaces.Discrete),
                           "DQN needs a Discrete action space")
    obs_dim, n_actions = env.observation_space.shape[0], int(env.action_space.n)
    out = Path(args.out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    q = QNetwork(obs_dim, n_actions, args.hidden)
    q_target = QNetwork(obs_dim, n_actions, args.hidden)
    q_target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=args.learning_rate)

    cap = args.buffer_size
    buf_obs = np.zeros((cap, obs_dim), np.float32)
    buf_next = np.zeros((cap, obs_dim), np.float32)
    buf_act = np.zeros((cap,), np.int64)
    buf_rew = np.zeros((cap,), np.float32)
    buf_term = np.zeros((cap,), np.float32)
    step, episode = 0, 0
    rng = np.random.default_rng(args.seed)

    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        saved = json.loads(state["args"])
        if state.get("algorithm") != "DQN" or saved["env"] != args.env:
            raise SystemExit(f"error: {ckpt_path} is not a DQN checkpoint for {args.env}; use another --out")
        q.load_state_dict(state["q"])
        q_target.load_state_dict(state["q_target"])
        optimizer.load_state_dict(state["optimizer"])
        step, episode = int(state["step"]), int(state["episode"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = json.loads(state["np_rng"])
        with np.load(out / "replay.npz") as replay:
            buf_obs[:], buf_next[:], buf_act[:] = replay["obs"], replay["next_obs"], replay["act"]
            buf_rew[:], buf_term[:] = replay["rew"], replay["term"]
        print(f"resumed {out} at step {step}", flush=True)

    def checkpoint() -> None:
        tmp = out / "replay.tmp.npz"
        np.savez(tmp, obs=buf_obs, next_obs=buf_next, act=buf_act, rew=buf_rew, term=buf_term)
        os.replace(tmp, out / "replay.npz")
        save_checkpoint(ckpt_path, {
            "algorithm": "DQN", "q": q.state_dict(), "q_target": q_target.state_dict(),
            "optimizer": optimizer.state_dict(), "step": step, "episode": episode,
            "torch_rng": torch.get_rng_state(), "np_rng": json.dumps(rng.bit_generator.state),
            "args": json.dumps(dataclasses.asdict(args)),
        })

    obs, _ = env.reset(seed=args.seed * 100_003 + episode)
    ep_ret, ep_len, loss = 0.0, 0, float("nan")
    t0, last_step = time.time(), step
    metrics = open(out / "metrics.jsonl", "a")
    bar = progress_bar(args, step, "DQN")
    while step < args.total_steps:
        epsilon = epsilon_at(step, args)
        if rng.random() < epsilon:
            act = int(rng.integers(n_actions))
        else:
            with torch.no_grad():
                act = int(q(torch.as_tensor(obs, dtype=torch.float32)[None]).argmax(-1))
        next_obs, rew, term, trunc, _ = env.step(act)
        i = step % cap
        buf_obs[i], buf_act[i], buf_next[i], buf_rew[i], buf_term[i] = obs, act, next_obs, rew, float(term)
        step += 1
        bar.update(1)
        ep_ret += float(rew)
        ep_len += 1
        obs = next_obs
        if term or trunc:
            metrics.write(json.dumps({"step": step, "episode_return": ep_ret, "episode_length": ep_len,
                                      "epsilon": epsilon}) + "\n")
            episode += 1
            obs, _ = env.reset(seed=args.seed * 100_003 + episode)
            ep_ret, ep_len = 0.0, 0

        if step > args.learning_starts and step % args.train_frequency == 0:
            idx = torch.as_tensor(rng.integers(0, min(step, cap), args.batch_size))
            o, a = torch.from_numpy(buf_obs)[idx], torch.from_numpy(buf_act)[idx]
            r, d, o2 = torch.from_numpy(buf_rew)[idx], torch.from_numpy(buf_term)[idx], torch.from_numpy(buf_next)[idx]
            y = double_dqn_target(q, q_target, r, o2, d, args.gamma)
            td = td_loss(q, o, a, y)
            optimizer.zero_grad(set_to_none=True)
            td.backward()
            optimizer.step()
            loss = td.detach()
        if step > args.learning_starts and step % args.target_network_frequency == 0:
            q_target.load_state_dict(q.state_dict())

        if step % args.snapshot_every == 0:
            rets = evaluate(q, args.env, args.snapshot_eval_episodes, seed=10_000_000 + step)
            save_qnet(out / "snapshots" / f"actor_{step:08d}.pt", q, args.env, step)
            rec = {"step": step, "eval_mean": float(np.mean(rets)), "eval_std": float(np.std(rets)),
                   "episodes": episode, "epsilon": epsilon_at(step, args), "loss": float(loss),
                   "steps_per_s": (step - last_step) / (time.time() - t0)}
            with open(out / "snapshots" / "index.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            metrics.flush()
            bar.write(json.dumps(rec))
            bar.set_postfix(eval=f"{rec['eval_mean']:.1f}", refresh=False)
            t0, last_step = time.time(), step
        if step % args.checkpoint_every == 0:
            checkpoint()
    checkpoint()
    bar.close()
    metrics.close()
    env.close()


if __name__ == "__main__":
    main(tyro.cli(Args))
