"""The environment of offline-to-online fine-tuning: one training episode at a time, resumable exactly.

    env = OnlineEnv(data, seed=args.seed, score=evaluator.score)   # fails at start if the data has no environment
    obs, reward, next_obs, terminated, ended = env.step(action)    # action in [-1, 1] (mapped to the env's bounds)
    buffer.add(obs, action, reward, next_obs, terminated)          # the script decides what to store, and where
    env.regret()                                                   # CORL's cumulative regret so far (see below)

Episode k of a run with seed `seed` is reset with `online_seed(seed, k)`, a range that neither the dataset builders
nor evaluation use. Only `terminated` stops bootstrapping; a time limit (`truncated`) ends the episode all the same
and the next one is reset.

Resume: `state_dict` holds the episode index, the actions taken so far in the running episode, its return and the
finished episodes' records. `load_state_dict` resets episode k with its seed and replays those actions: Gymnasium's
environments are deterministic given the reset seed and the actions, so the replay reaches the very state the run
was in (checked against the saved observation), and a resumed run goes on exactly as one never interrupted.

Regret, as CORL's fine-tuning scripts report it (`train/regret`): the mean over the online phase's finished
training episodes of 1 - success. On goal tasks success is whether the episode reached the goal (the environment's
`success` or `goal_achieved` info, as CORL's `is_goal_reached`; deviation: CORL also counts any positive reward as
the goal where that info is missing, here such a task counts as dense). On dense-reward tasks, where CORL reports no
regret, success is the episode's normalized score / 100 clipped to [0, 1] (this project's extension), and without
reference scores there is no regret (None).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from common.data import DatasetError
from common.evaluation import env_actions, flatten_obs, make_env

ONLINE_SEED_OFFSET = 2_000_000_011  # far from the dataset builders' seeds and from evaluation's (1_000_000_007 + ...)
GOAL_KEYS = ("success", "goal_achieved")


def online_seed(seed: int, episode: int) -> int:
    """The reset seed of online training episode `episode` (0, 1, ...) of a run with seed `seed`."""
    return ONLINE_SEED_OFFSET + 1_000_000 * seed + episode


def require_environment(data) -> None:
    """The one-line error for fine-tuning on data that records no environment (a script checks at start)."""
    if data.env_spec is None:
        raise DatasetError(f"--online-steps: dataset {data.dataset_id!r} records no environment to fine-tune in "
                           f"(--online-steps 0 trains offline only)")


class OnlineEnv:
    def __init__(self, data, seed: int, score: Callable[[np.ndarray], float | None]):
        require_environment(data)
        self.env = make_env(data.env_spec)
        self.space, self.seed, self.score = self.env.action_space, seed, score
        self.episode, self.env_steps = 0, 0
        self.actions: list[np.ndarray] = []  # the running episode's actions, as given (for the replay on resume)
        self.episode_return, self.goal, self.reached = 0.0, False, False
        self.finished: list[dict] = []  # one record per finished training episode
        self.obs = self._reset()

    def _reset(self) -> np.ndarray:
        self.actions, self.episode_return, self.goal, self.reached = [], 0.0, False, False
        return flatten_obs(self.env.reset(seed=online_seed(self.seed, self.episode))[0])

    def _act(self, action: np.ndarray):
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        o, r, term, trunc, info = self.env.step(env_actions(a[None], self.space)[0])
        self.actions.append(a)
        self.episode_return += float(r)
        if any(k in info for k in GOAL_KEYS):
            self.goal = True
            self.reached = self.reached or any(bool(info.get(k, False)) for k in GOAL_KEYS)
        return flatten_obs(o), float(r), bool(term), bool(trunc)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, bool, dict | None]:
        """One environment step from the current observation: (obs, reward, next_obs, terminated, ended), where
        `ended` is the finished episode's record when this step ended it (the environment is then reset)."""
        obs = self.obs
        next_obs, reward, term, trunc = self._act(action)
        self.env_steps += 1
        ended = None
        if term or trunc:
            score = self.score(np.asarray([self.episode_return]))
            success = (float(self.reached) if self.goal else
                       None if score is None else min(max(score / 100.0, 0.0), 1.0))
            ended = {"env_step": self.env_steps, "length": len(self.actions), "return": self.episode_return,
                     "score": score, "success": success}
            self.finished.append(ended)
            self.episode += 1
            self.obs = self._reset()
        else:
            self.obs = next_obs
        return obs, reward, next_obs, term, ended

    def regret(self) -> float | None:
        """Mean over finished online episodes of 1 - success (CORL's cumulative regret); None before the first
        episode ends or without a success measure."""
        s = [e["success"] for e in self.finished]
        return None if not s or any(x is None for x in s) else float(np.mean([1.0 - x for x in s]))

    def state_dict(self) -> dict:
        return {"episode": self.episode, "env_steps": self.env_steps, "finished": [dict(e) for e in self.finished],
                "actions": torch.as_tensor(np.asarray(self.actions, dtype=np.float64)),
                "obs": torch.as_tensor(self.obs)}

    def load_state_dict(self, state: dict) -> None:
        """Restore by replaying: reset episode `episode` with its seed, then take the saved actions again."""
        self.episode, self.env_steps = int(state["episode"]), int(state["env_steps"])
        self.finished = [dict(e) for e in state["finished"]]
        self.obs = self._reset()
        for a in state["actions"].numpy():
            self.obs = self._act(a)[0]
        if not np.array_equal(self.obs, state["obs"].numpy()):
            raise DatasetError(f"resuming the online phase: replaying episode {self.episode}'s "
                               f"{len(state['actions'])} actions did not reach the saved observation (the "
                               f"environment is not deterministic given its seed and actions)")

    def close(self) -> None:
        self.env.close()
