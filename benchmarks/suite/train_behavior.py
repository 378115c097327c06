"""Train the SAC behaviour policies that generate the `stitch/` datasets.

Soft Actor-Critic (Haarnoja et al., 2018, arXiv:1812.05905) with automatic entropy tuning, the
same recipe D4RL used for its behaviour policies. The run is built to be killed and restarted:

* every `checkpoint_every` environment steps the whole state (networks, optimizers, replay buffer,
  RNG states, step counters) is written atomically to `<out>/checkpoint.pt` (+ `replay.npz`);
  restarting the same command continues from there (the episode in progress is restarted);
* every `snapshot_every` steps the actor alone is saved to `<out>/snapshots/actor_<step>.pt`
  together with a short evaluation (`<out>/snapshots/index.jsonl`), so that any point of the
  learning curve can later become a dataset level (`medium`, the `medium-replay` mixture, ...).

Usage:
    python benchmarks/suite/train_behavior.py --env Hopper-v5 --out runs/behavior/hopper
    python benchmarks/suite/train_behavior.py --env Hopper-v5 --out runs/behavior/hopper  # resumes
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
from benchmarks.suite.behavior import (GaussianActor, check_trainer_args, episode_returns,  # noqa: E402
                                 make_trainer_env, progress_bar, save_actor)
from common.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402


@dataclasses.dataclass
class Args:
    env: str = "Hopper-v5"
    """Gymnasium environment id."""
    out: str = "runs/behavior/hopper"
    """Run folder: checkpoint, replay buffer, actor snapshots, metrics."""
    seed: int = 0
    """Seed for the networks, the environment and the replay sampling."""
    total_steps: int = 1_000_000
    """Environment steps to train for."""
    learning_starts: int = 5_000
    """Uniform random actions before the first update."""
    batch_size: int = 256
    """Minibatch size for SAC updates."""
    hidden: int = 256
    """Width of the two hidden layers of actor and critics."""
    lr: float = 3e-4
    """Adam learning rate for actor, critics and temperature."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient for the target critics."""
    snapshot_every: int = 10_000
    """Environment steps between actor snapshots (each evaluated)."""
    snapshot_eval_episodes: int = 5
    """Deterministic evaluation episodes recorded with each snapshot."""
    checkpoint_every: int = 20_000
    """Environment steps between full (resumable) checkpoints."""
    threads: int = 1
    """torch intra-op threads (1 leaves the other core free)."""
    progress: bool = True
    """Show a progress bar (environment steps, steps/s, last snapshot's evaluation, ETA); --no-progress hides it."""


class TwinCritic(nn.Module):
    """Two Q-networks evaluated as one batched ensemble (weights [2, in, out])."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2):
        super().__init__()
        sizes = [obs_dim + act_dim, hidden, hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, o in zip(sizes[:-1], sizes[1:]):
            w = torch.empty(n, i, o)
            for k in range(n):  # same init as nn.Linear, member by member
                lin = nn.Linear(i, o)
                w[k] = lin.weight.detach().T
            self.weights.append(nn.Parameter(w))
            bias = torch.stack([nn.Linear(i, o).bias.detach() for _ in range(n)]).unsqueeze(1)
            self.biases.append(nn.Parameter(bias))
        self.n = n

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        for j, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if j < len(self.weights) - 1:
                x = F.relu(x)
        return x.squeeze(-1)  # [n, batch]


def evaluate(actor: GaussianActor, env_id: str, episodes: int, seed: int) -> list[float]:
    """Returns of the actor's deterministic (mean) action."""
    return episode_returns(lambda obs: actor.act(obs, deterministic=True)[0].numpy(), env_id, episodes, seed)


def check_args(args: Args) -> None:
    """SystemExit naming the first invalid field."""
    check_trainer_args(args, ("total_steps", "batch_size", "hidden", "lr", "snapshot_every", "snapshot_eval_episodes",
                              "checkpoint_every", "threads"))
    if not 0 < args.tau <= 1:
        raise SystemExit(f"error: --tau must be in (0, 1], got {args.tau}")


def main(args: Args) -> None:
    check_args(args)
    torch.set_num_threads(args.threads)
    env = make_trainer_env(args.env, lambda space: isinstance(space, gym.spaces.Box) and bool(
        np.all(space.low == -1) and np.all(space.high == 1)), "this SAC trainer needs a Box in [-1, 1]")
    obs_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]
    out = Path(args.out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    actor = GaussianActor(obs_dim, act_dim, args.hidden)
    critic = TwinCritic(obs_dim, act_dim, args.hidden)
    critic_target = TwinCritic(obs_dim, act_dim, args.hidden)
    critic_target.load_state_dict(critic.state_dict())
    log_alpha = torch.zeros(1, requires_grad=True)
    target_entropy = -float(act_dim)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.lr)
    alpha_opt = torch.optim.Adam([log_alpha], lr=args.lr)

    cap = args.total_steps
    buf_obs = np.zeros((cap, obs_dim), np.float32)
    buf_next = np.zeros((cap, obs_dim), np.float32)
    buf_act = np.zeros((cap, act_dim), np.float32)
    buf_rew = np.zeros((cap,), np.float32)
    buf_term = np.zeros((cap,), np.float32)
    step, episode = 0, 0
    rng = np.random.default_rng(args.seed)

    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        saved = json.loads(state["args"])  # runs from before "algorithm" was recorded are SAC runs
        if state.get("algorithm", "SAC") != "SAC" or saved["env"] != args.env:
            raise SystemExit(f"error: {ckpt_path} is not a SAC checkpoint for {args.env}; use another --out")
        if int(state["step"]) > args.total_steps:  # the replay buffer holds total_steps transitions
            raise SystemExit(f"error: {ckpt_path} is already at step {state['step']} > --total-steps "
                             f"{args.total_steps}")
        actor.load_state_dict(state["actor"])
        critic.load_state_dict(state["critic"])
        critic_target.load_state_dict(state["critic_target"])
        actor_opt.load_state_dict(state["actor_opt"])
        critic_opt.load_state_dict(state["critic_opt"])
        alpha_opt.load_state_dict(state["alpha_opt"])
        with torch.no_grad():
            log_alpha.copy_(state["log_alpha"])
        step, episode = int(state["step"]), int(state["episode"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = json.loads(state["np_rng"])
        replay = np.load(out / "replay.npz")
        n = int(replay["n"])
        buf_obs[:n], buf_next[:n], buf_act[:n] = replay["obs"], replay["next_obs"], replay["act"]
        buf_rew[:n], buf_term[:n] = replay["rew"], replay["term"]
        assert n == step, f"replay buffer holds {n} transitions but the checkpoint is at step {step}"
        print(f"resumed {out} at step {step}", flush=True)

    def checkpoint() -> None:
        tmp = out / "replay.tmp.npz"
        np.savez(tmp, n=step, obs=buf_obs[:step], next_obs=buf_next[:step], act=buf_act[:step],
                 rew=buf_rew[:step], term=buf_term[:step])
        os.replace(tmp, out / "replay.npz")
        save_checkpoint(ckpt_path, {
            "algorithm": "SAC", "actor": actor.state_dict(), "critic": critic.state_dict(),
            "critic_target": critic_target.state_dict(), "actor_opt": actor_opt.state_dict(),
            "critic_opt": critic_opt.state_dict(), "alpha_opt": alpha_opt.state_dict(),
            "log_alpha": log_alpha.detach().clone(), "step": step, "episode": episode,
            "torch_rng": torch.get_rng_state(), "np_rng": json.dumps(rng.bit_generator.state),
            "args": json.dumps(dataclasses.asdict(args)),
        })

    obs, _ = env.reset(seed=args.seed * 100_003 + episode)
    ep_ret, ep_len = 0.0, 0
    t0, last_step = time.time(), step
    metrics = open(out / "metrics.jsonl", "a")
    bar = progress_bar(args, step, "SAC")
    while step < args.total_steps:
        if step < args.learning_starts:
            act = rng.uniform(-1, 1, act_dim).astype(np.float32)
        else:
            with torch.no_grad():
                act = actor.act(torch.as_tensor(obs, dtype=torch.float32)[None], deterministic=False)[0].numpy()
        next_obs, rew, term, trunc, _ = env.step(act)
        buf_obs[step], buf_act[step], buf_next[step] = obs, act, next_obs
        buf_rew[step], buf_term[step] = rew, float(term)
        step += 1
        bar.update(1)
        ep_ret += float(rew)
        ep_len += 1
        obs = next_obs
        if term or trunc:
            metrics.write(json.dumps({"step": step, "episode_return": ep_ret, "episode_length": ep_len}) + "\n")
            episode += 1
            obs, _ = env.reset(seed=args.seed * 100_003 + episode)
            ep_ret, ep_len = 0.0, 0

        if step >= args.learning_starts:
            idx = torch.as_tensor(rng.integers(0, step, args.batch_size))
            o = torch.from_numpy(buf_obs)[idx]
            a = torch.from_numpy(buf_act)[idx]
            r = torch.from_numpy(buf_rew)[idx]
            d = torch.from_numpy(buf_term)[idx]
            o2 = torch.from_numpy(buf_next)[idx]
            alpha = log_alpha.exp().detach()
            with torch.no_grad():
                a2, logp2 = actor.sample(o2)
                q_next = critic_target(o2, a2).min(0).values - alpha * logp2
                y = r + args.gamma * (1.0 - d) * q_next
            q = critic(o, a)
            critic_loss = 0.5 * ((q - y) ** 2).mean(1).sum()
            critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_opt.step()

            pi, logp = actor.sample(o)
            for p in critic.parameters():
                p.requires_grad_(False)
            q_pi = critic(o, pi).min(0).values
            for p in critic.parameters():
                p.requires_grad_(True)
            actor_loss = (alpha * logp - q_pi).mean()
            actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            actor_opt.step()

            alpha_loss = -(log_alpha * (logp.detach() + target_entropy)).mean()
            alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            alpha_opt.step()

            with torch.no_grad():
                for p, pt in zip(critic.parameters(), critic_target.parameters()):
                    pt.lerp_(p, args.tau)

        if step % args.snapshot_every == 0:
            rets = evaluate(actor, args.env, args.snapshot_eval_episodes, seed=10_000_000 + step)
            save_actor(out / "snapshots" / f"actor_{step:08d}.pt", actor, args.env, step)
            rec = {"step": step, "eval_mean": float(np.mean(rets)), "eval_std": float(np.std(rets)),
                   "episodes": episode, "alpha": float(log_alpha.detach().exp()),
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


if __name__ == "__main__":
    main(tyro.cli(Args))
