"""The behaviour-policy network shared by the SAC trainer and the dataset builder, and what the SAC and DQN
trainers share (snapshot evaluation, argument and environment checks, the progress bar).

A tanh-squashed Gaussian actor (SAC's policy). Snapshots are stored as plain state dicts plus a
little metadata so they load with `torch.load(..., weights_only=True)` and are small enough to
ship with the repository (`benchmarks/suite/policies/`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from common.evaluation import make_env

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, hidden
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(obs)
        log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return self.mu(h), log_std

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized tanh-Gaussian sample and its log-probability."""
        mu, log_std = self.dist(obs)
        std = log_std.exp()
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        u = mu + std * eps
        a = torch.tanh(u)
        logp = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return a, logp

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        if deterministic:
            return torch.tanh(self.dist(obs)[0])
        return self.sample(obs, generator)[0]


def save_actor(path: Path, actor: GaussianActor, env_id: str, step: int) -> None:
    tmp = Path(str(path) + ".tmp")
    torch.save({"state_dict": {k: v.detach().clone() for k, v in actor.state_dict().items()},
                "obs_dim": actor.obs_dim, "act_dim": actor.act_dim, "hidden": actor.hidden,
                "env_id": env_id, "step": step}, tmp)
    os.replace(tmp, path)


def load_actor(path: str | Path) -> tuple[GaussianActor, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    actor = GaussianActor(blob["obs_dim"], blob["act_dim"], blob["hidden"])
    actor.load_state_dict(blob["state_dict"])
    actor.eval()
    return actor, {k: v for k, v in blob.items() if k != "state_dict"}


def episode_returns(act: Callable[[torch.Tensor], np.ndarray | int], env_id: str, episodes: int,
                    seed: int) -> list[float]:
    """Undiscounted returns of `episodes` episodes of `act(obs[1, obs_dim]) -> action` in `env_id`, reset seeds
    seed, seed + 1, ...: the trainers' quick snapshot evaluation (SAC's mean action, DQN's greedy one)."""
    env = make_env(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            with torch.no_grad():
                a = act(torch.as_tensor(obs, dtype=torch.float32)[None])
            obs, r, term, trunc, _ = env.step(a)
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return returns


# ----------------------------------------------------------------------------------------------
# What both behaviour trainers (train_behavior.py: SAC, dqn.py: DQN) check and show
# ----------------------------------------------------------------------------------------------
def check_trainer_args(args, positive: tuple[str, ...]) -> None:
    """SystemExit naming the first invalid field: the `positive` fields, learning_starts, gamma."""
    for name in positive:
        if getattr(args, name) <= 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 <= args.learning_starts < args.total_steps:
        raise SystemExit(f"error: --learning-starts must be in [0, total_steps), got {args.learning_starts}")
    if not 0 < args.gamma <= 1:
        raise SystemExit(f"error: --gamma must be in (0, 1], got {args.gamma}")


def make_trainer_env(env_id: str, actions_ok: Callable[[gym.Space], bool], needs: str) -> gym.Env:
    """`make_env(env_id)`, or SystemExit if it cannot be made, its observations are not a flat Box, or
    `actions_ok(action_space)` is false (`needs` says what the trainer needs instead)."""
    try:
        env = make_env(env_id)
    except gym.error.Error as e:
        raise SystemExit(f"error: --env {env_id!r}: {e}") from None
    if not actions_ok(env.action_space):
        raise SystemExit(f"error: --env {env_id} has actions {env.action_space}; {needs}")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        raise SystemExit(f"error: --env {env_id} observes {env.observation_space}; this trainer needs a flat Box")
    return env


def progress_bar(args, step: int, label: str) -> tqdm:
    """Environment steps of a trainer run, from `step` to args.total_steps (hidden by --no-progress)."""
    return tqdm(total=args.total_steps, initial=step, desc=f"{label} {args.env}", unit="step", dynamic_ncols=True,
                mininterval=5.0, disable=not args.progress)
