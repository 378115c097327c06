"""Evaluate a policy in copies of the dataset's environment.

    returns = evaluate(policy, data.env_spec, episodes=10, seed=args.seed)
    score = data.normalized_score(returns).mean()     # D4RL-style normalized score x 100

`policy` maps a float32 batch of observations [n, obs_dim] to a batch of actions; it is called once per
step for all episodes still running (batched inference), and should act deterministically.
Continuous actions are expected in [-1, 1] and mapped to the environment's [low, high] (the
convention `Buffer.from_dataset` trains with). Discrete actions (a `Discrete(n)` action space) are integer
indices in [0, n), one per observation (shape [n] or [n, 1]), as the datasets log them: a discrete script's
policy returns the argmax of its scores; anything else (a float that is not a whole number, an index out of
range) is a ValueError that names the action. Each
episode runs in its own environment copy, reset with seeds from a range that dataset builds and
training never use, so evaluations are repeatable and disjoint from training.

A policy that acts on the episode so far (a sequence model such as a Decision Transformer) may have two methods,
which `evaluate` calls (`start_episodes` and `observe_step` below) and a policy without them never sees:
`policy.reset(n)` before the first step of `n` new episodes run in lockstep, and `policy.observe(rewards, ended)`
after each step, with the reward of each row of the batch it was just called with and whether that row's episode
ended; the next call's rows are those that did not end, in the same order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Callable

import gymnasium as gym
import numpy as np

EVAL_SEED_OFFSET = 1_000_000_007  # far from the seeds the dataset builders and trainers use


def flatten_obs(obs) -> np.ndarray:
    """One observation as a flat float32 vector (dict observations: parts concatenated in key order)."""
    if isinstance(obs, dict):
        return np.concatenate([flatten_obs(obs[k]) for k in sorted(obs)])
    return np.asarray(obs, dtype=np.float32).reshape(-1)


_MUJOCO_WARNED: set[str] = set()


def _mujoco_warning_once(message: str) -> None:
    if message not in _MUJOCO_WARNED:
        _MUJOCO_WARNED.add(message)
        print(f"WARNING (MuJoCo, shown once): {message}", file=sys.stderr)


def make_env(env_spec, **kwargs) -> gym.Env:
    """`gym.make(env_spec, **kwargs)`, with two fixes for making many copies:

    - MuJoCo's warnings are shown once per process, not once per copy: MuJoCo 4 warns on every compile of a
      model that uses the deprecated `settotalmass` attribute, as Gymnasium's HalfCheetah does, which
      otherwise prints one line per environment made (10 per evaluation).
    - The file gymnasium-robotics leaks is removed: its maze envs write their MuJoCo model to the temporary
      folder on every make and never delete it (thousands over a benchmark grid)."""
    try:
        import mujoco
    except ImportError:  # an install without gymnasium[mujoco]: no MuJoCo envs to make
        mujoco = None
    if mujoco is not None and mujoco.get_mju_user_warning() is None:  # leave a handler the user set alone
        mujoco.set_mju_user_warning(_mujoco_warning_once)
    env = gym.make(env_spec, **kwargs)
    path = getattr(env.unwrapped, "tmp_xml_file_path", None)
    if path:  # loaded into the simulator by now
        with contextlib.suppress(OSError):
            os.remove(path)
    return env


def eval_seed(seed: int, episode: int) -> int:
    """The reset seed of evaluation episode `episode` (0, 1, ...) of a run with seed `seed`."""
    return EVAL_SEED_OFFSET + 10_000 * seed + episode


def env_actions(actions: np.ndarray, space: gym.Space) -> np.ndarray:
    """A policy's batch of actions as the environment takes them: continuous actions in [-1, 1] mapped to a Box's
    [low, high] (unchanged where that is [-1, 1] already, and for discrete spaces)."""
    if isinstance(space, gym.spaces.Box) and not (np.all(space.low == -1) and np.all(space.high == 1)):
        return space.low + (np.clip(actions, -1.0, 1.0) + 1.0) * 0.5 * (space.high - space.low)
    return actions


def discrete_actions(actions: np.ndarray, n: int, n_actions: int) -> list[int]:
    """A discrete policy's output for `n` observations as `n` Python ints in [0, n_actions) (ValueError if not)."""
    flat = np.asarray(actions).reshape(-1)
    if flat.shape != (n,):
        raise ValueError(f"a discrete policy must return one action per observation: got shape "
                         f"{np.asarray(actions).shape} for {n} observations")
    if flat.dtype.kind not in "iub" and not np.all(np.isfinite(flat) & (flat == np.round(flat))):
        raise ValueError(f"discrete actions must be integer indices, got {flat[:5].tolist()}")
    ints = flat.astype(np.int64)
    if ints.min() < 0 or ints.max() >= n_actions:
        raise ValueError(f"discrete actions must be in [0, {n_actions}), got {ints.min()}..{ints.max()}")
    return ints.tolist()


def start_episodes(policy: Callable, n: int) -> None:
    """Tell a policy that keeps a history (one with `reset`) that `n` new episodes start; others need nothing."""
    reset = getattr(policy, "reset", None)
    if reset is not None:
        reset(n)


def observe_step(policy: Callable, rewards, ended) -> None:
    """Give a policy that keeps a history (one with `observe`) each row's reward and whether its episode ended."""
    observe = getattr(policy, "observe", None)
    if observe is not None:
        observe(np.asarray(rewards, dtype=np.float32), np.asarray(ended, dtype=bool))


def evaluate(policy: Callable[[np.ndarray], np.ndarray], env_spec, episodes: int, seed: int = 0,
             max_envs: int = 50, episode_info: dict | None = None) -> np.ndarray:
    """Undiscounted return of `episodes` episodes, run up to `max_envs` at a time in lockstep.

    `episode_info`, when given a dict, receives each episode's "length" and whether it "terminated" (rather
    than reaching the time limit), in episode order."""
    if env_spec is None:
        raise ValueError("this dataset records no environment, so its policies cannot be evaluated")
    returns: list[float] = []
    lengths: list[int] = []
    terminated: list[bool] = []
    for first in range(0, episodes, max_envs):
        n = min(max_envs, episodes - first)
        envs = [make_env(env_spec) for _ in range(n)]
        seeds = [eval_seed(seed, first + i) for i in range(n)]
        obs = [flatten_obs(env.reset(seed=s)[0]) for env, s in zip(envs, seeds)]
        space = envs[0].action_space
        discrete = isinstance(space, gym.spaces.Discrete)
        totals, running = np.zeros(n), list(range(n))
        steps, ended_by_term = np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
        start_episodes(policy, n)
        while running:
            actions = env_actions(np.asarray(policy(np.stack([obs[i] for i in running]).astype(np.float32))), space)
            if discrete:
                actions = discrete_actions(actions, len(running), int(space.n))
            still, rewards, ended = [], [], []
            for i, a in zip(running, actions):
                o, r, term, trunc, _ = envs[i].step(a)
                totals[i] += float(r)
                steps[i] += 1
                ended_by_term[i] = bool(term)
                obs[i] = flatten_obs(o)
                rewards.append(float(r))
                ended.append(bool(term or trunc))
                if not (term or trunc):
                    still.append(i)
            observe_step(policy, rewards, ended)
            running = still
        for env in envs:
            env.close()
        returns.extend(totals.tolist())
        lengths.extend(steps.tolist())
        terminated.extend(ended_by_term.tolist())
    if episode_info is not None:
        episode_info.update(length=lengths, terminated=terminated)
    return np.asarray(returns)


class Evaluator:
    """When and how a script evaluates its policy: `--eval-episodes` episodes every `--eval-every` updates and after
    the last one, in the dataset's environment, scored with its reference returns.

        evaluator = Evaluator(data, args, "iql")      # says once at start what it will not do, and why
        if evaluator.due(step, evals):                # an evaluation step not yet recorded in `evals`
            evals.append(evaluator(policy_fn, step, run))   # {"step", "return", "score"}; logged to `run`

    A dataset that records no environment is trained without evaluation (`due` is never true). One without
    reference scores (and no `--ref-min-score/--ref-max-score`) is evaluated in raw returns; its score is None.
    """

    def __init__(self, data, args, algo: str):
        self.env_spec = data.env_spec
        self.every, self.total_steps, self.seed = args.eval_every, args.total_steps, args.seed
        self.episodes = args.eval_episodes if data.env_spec is not None else 0
        lo, hi = getattr(args, "ref_min_score", None), getattr(args, "ref_max_score", None)
        if lo is None:
            lo, hi = data.ref_min_score, data.ref_max_score
        self.ref_scores = None if lo is None or hi is None else (float(lo), float(hi))
        self._scored = dataclasses.replace(data, ref_min_score=lo, ref_max_score=hi)  # shares data's arrays
        if data.env_spec is None and args.eval_episodes:
            print(f"{algo}: dataset {data.dataset_id!r} records no environment: training without evaluation "
                  f"(result.json gets the training losses and no score)", file=sys.stderr, flush=True)
        elif self.episodes and self.ref_scores is None:
            print(f"{algo}: dataset {data.dataset_id!r} has no reference scores: evaluations report raw returns and "
                  f"no normalized score (--ref-min-score and --ref-max-score give them)", file=sys.stderr, flush=True)

    def due(self, step: int, evals: list[dict]) -> bool:
        """Whether `step` is an evaluation step whose evaluation `evals` does not hold yet."""
        return (self.episodes > 0 and (step % self.every == 0 or step == self.total_steps)
                and not (evals and evals[-1]["step"] == step))

    def score(self, returns: np.ndarray) -> float | None:
        """Mean D4RL-style normalized score x 100 of `returns`, or None without reference scores."""
        return None if self.ref_scores is None else float(self._scored.normalized_score(returns).mean())

    def __call__(self, policy: Callable[[np.ndarray], np.ndarray], step: int, run=None) -> dict:
        returns = evaluate(policy, self.env_spec, self.episodes, seed=self.seed)
        record = {"step": int(step), "return": float(returns.mean()), "score": self.score(returns)}
        if run is not None:
            run.log(step, {"eval/return": record["return"]}
                    | ({} if record["score"] is None else {"eval/score": record["score"]}))
            run.score(step, record["score"], record["return"])
        return record
