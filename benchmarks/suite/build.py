"""The `stitch/` dataset suite: D4RL-style levels built locally from shipped behaviour policies, PointMaze, discrete.

Every id is `stitch/<env>/<level>-v0`. An environment is one entry of `ENVS` (a Gymnasium id and the
folder of behaviour policies that `benchmarks/suite/select_policies.py` wrote for it); every MuJoCo
environment gets the same five levels, built the way D4RL built them:

* `random`        1M steps of uniform random actions.
* `medium`        1M steps of an early-stopped SAC snapshot (about half the expert's score).
* `expert`        1M steps of the final SAC policy.
* `medium-expert` the `medium` episodes followed by the `expert` episodes (identical to those datasets).
* `medium-replay` what SAC collected on its way to `medium`: the `learning_starts` uniform random
                  steps, then, for every saved snapshot up to `medium`, rollouts of that snapshot
                  totalling the environment steps it stands for (the steps since the previous
                  snapshot), so the level holds as many steps as SAC had seen at the medium snapshot.

Policies act stochastically (a tanh-Gaussian sample), as in D4RL. Episodes end at a termination or
at the environment's time limit (1000 steps); the last episode of a stream that runs out of its step
budget is cut and marked `truncations=True`. At the time limit a step that also terminates is stored
as a termination only, so `terminations` and `truncations` are never both set.

Builds are deterministic and parallel. Each stream (the level, or one snapshot of medium-replay) is
cut into fixed lockstep groups of `GROUP_STEPS` steps (the last one shorter). Group g runs its own
episodes k = 0, 1, ... on `GROUP_ENVS` environments stepped together with one batched actor forward
per step, each episode resetting with a seed derived from (seed, stream, g, k) and drawing its action
noise from a generator seeded the same way, until its episodes hold the group's steps (all whole, so
usually a few more). A stream is its groups' episodes in order, cut at the stream's budget. The groups
run in a pool of `workers` processes (spawned, one torch thread each; default min(cpu count, 2)), but
the group structure alone fixes which episodes share a batch and every seed: rebuilding gives
byte-identical arrays for any number of workers on the same machine and torch build. (Changing
GROUP_ENVS or GROUP_STEPS changes the data: batched matmuls round differently, and MuJoCo amplifies it.)

Discrete tasks, `stitch/{cartpole,acrobot}/{random,medium,medium-replay,expert}-v0` (CartPole-v1,
Acrobot-v1), are the same levels from a Double DQN run (`benchmarks/suite/dqn.py`) instead of SAC, in the
style of D4RL and of DQN-replay (Agarwal et al., 2020): the policy folder's manifest says
`"algorithm": "DQN"`, and each snapshot acts epsilon-greedily on its Q-values (`dqn.EpsilonGreedy`):

* `random`        100k steps of uniform random actions (epsilon = 1).
* `medium`        100k steps of a snapshot at about half the expert's normalized return, epsilon 0.05.
* `expert`        100k steps of the best snapshot, epsilon 0.05 (the epsilon the DQN ended its
                  exploration with: greedy enough to score like the expert, with some diversity).
* `medium-replay` the DQN's warm-up (uniform) and each snapshot up to `medium` for the steps it
                  stands for, as Hopper's, each acting with the mean epsilon the DQN's schedule had
                  over those steps: what the DQN's replay buffer saw on its way to medium.

100k steps per level, not 1M: these tasks are short (at most 500 steps; CartPole's expert plays about
200 episodes in 100k steps, Acrobot's about 1,100), the DQNs reached expert level within 100k (CartPole)
and 200k (Acrobot) environment steps, each build takes seconds and a dataset a few MB. medium-replay
holds what the DQN saw up to medium: 21k steps (CartPole), 56k (Acrobot). CartPole's and Acrobot's
500-step time limit is a truncation (bootstrapped), a fallen pole or a raised arm a termination.
Actions are stored as int64.

`stitch/pointmaze/{umaze,medium,large}[-dense]-v0` are D4RL maze2d-style datasets in gymnasium-robotics'
PointMaze: a grid planner and a PD controller driving to random goal cells, logged continuously, rewards
for the evaluation goal. How they are made is `benchmarks/suite/maze.py`'s docstring; here they are built in
parallel segments and written like the other levels.

Every episode of the MuJoCo and discrete levels also records, in its infos, how likely the behaviour was to take
each logged action (one row per action): `behavior_log_prob` (Box actions; the tanh-Gaussian's log-density with the
tanh correction, or -act_dim log 2 for uniform actions) or `behavior_probs` (Discrete actions; the epsilon-greedy
probability of every action), computed from what each step already had: no random draw and no change of batching,
so the transitions are bit-identical to those built before the field existed. Off-policy evaluation
(algorithms/ope.py) reads them through `common.data.load_behavior`. PointMaze records none.

Datasets are created with `minari.create_dataset_from_buffers` in a hidden temporary Minari root
inside the real one; episodes are appended as their groups arrive (by `_EpisodeWriter`, Minari's
HDF5 layout written through h5py's low-level API, about 3x faster than Minari's writer), and the
dataset is moved under its id only when complete, so an interrupted build never leaves a half-made
dataset behind. Summary statistics go into the dataset's metadata (key `stitch`), which `--list` and
`--cards` read without touching the episodes.

A script that loads a missing `stitch/` id builds it through this command line: common/data.py runs
`python benchmarks/suite/build.py ID` in a subprocess (and `--list-ids` for the suite's ids), so that
common/ imports nothing from benchmarks/.

Usage:
    python benchmarks/suite/build.py stitch/hopper/medium-replay-v0
    python benchmarks/suite/build.py stitch/pointmaze/umaze-v0 stitch/cartpole/medium-replay-v0
    python benchmarks/suite/build.py --all [--force] [--workers 2]
    python benchmarks/suite/build.py --list       # every suite id: built?, size, episodes, reference scores
    python benchmarks/suite/build.py --list-ids   # the ids alone, one per line
    python benchmarks/suite/build.py --cards      # writes benchmarks/suite/DATASETS.md
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import gymnasium as gym
import h5py
import minari
import numpy as np
import torch
from minari.dataset._storages import hdf5_storage
from minari.namespace import create_namespace, list_local_namespaces
from minari.storage import get_dataset_path
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.suite import dqn, maze  # noqa: E402
from benchmarks.suite.behavior import GaussianActor, load_actor  # noqa: E402
from common.evaluation import make_env  # noqa: E402
from common.files import remove_orphans  # noqa: E402

POLICY_ROOT = Path(__file__).resolve().parent / "policies"
CARDS_PATH = Path(__file__).resolve().parent / "DATASETS.md"
CODE_PERMALINK = "benchmarks/suite/build.py (Stitch)"


LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")
DISCRETE_LEVELS = ("random", "medium", "medium-replay", "expert")
STEPS_PER_LEVEL = 1_000_000
DISCRETE_STEPS_PER_LEVEL = 100_000


@dataclasses.dataclass(frozen=True)
class SuiteEnv:
    env_id: str
    """Gymnasium id the datasets are collected in (and evaluated on)."""
    policy_dir: Path
    """Folder written by select_policies.py: manifest.json, expert.pt, medium.pt, replay/."""
    levels: tuple[str, ...] = LEVELS
    """The levels built for this environment."""
    steps: int = STEPS_PER_LEVEL
    """Steps of the random, medium and expert levels (medium-replay: what the learner saw up to medium)."""
    expert_target: float | None = None
    """The return the expert policy must reach (mean over the manifest's episodes, acting as in the data)."""


ENVS: dict[str, SuiteEnv] = {
    "hopper": SuiteEnv("Hopper-v5", POLICY_ROOT / "hopper", expert_target=3000.0),
    "halfcheetah": SuiteEnv("HalfCheetah-v5", POLICY_ROOT / "halfcheetah", expert_target=7000.0),
    "walker2d": SuiteEnv("Walker2d-v5", POLICY_ROOT / "walker2d", expert_target=3500.0),
    "cartpole": SuiteEnv("CartPole-v1", POLICY_ROOT / "cartpole", DISCRETE_LEVELS, DISCRETE_STEPS_PER_LEVEL),
    "acrobot": SuiteEnv("Acrobot-v1", POLICY_ROOT / "acrobot", DISCRETE_LEVELS, DISCRETE_STEPS_PER_LEVEL),
}
VERSION = 0
SUITE_IDS = tuple(f"stitch/{name}/{level}-v{VERSION}" for name, env in ENVS.items() for level in env.levels
                  ) + maze.MAZE_IDS

GROUP_ENVS = 16       # environments stepped together in a lockstep group
GROUP_STEPS = 50_000  # steps per lockstep group (a stream of 1M steps has 20)


# ----------------------------------------------------------------------------------------------
# Ids, policies
# ----------------------------------------------------------------------------------------------

def parse_id(dataset_id: str) -> tuple[str, str]:
    """`stitch/hopper/medium-v0` -> ("hopper", "medium"), `stitch/pointmaze/umaze-dense-v0` -> ("pointmaze",
    "umaze-dense"); ValueError for anything not in SUITE_IDS."""
    if dataset_id not in SUITE_IDS:
        raise ValueError(f"unknown stitch dataset id {dataset_id!r}; the suite has: {', '.join(SUITE_IDS)}")
    _, env_name, name = dataset_id.split("/")
    return env_name, name.rsplit("-v", 1)[0]


def load_manifest(policy_dir: str | Path) -> dict:
    """Read `<policy_dir>/manifest.json` and check that every policy file it names exists."""
    policy_dir = Path(policy_dir)
    path = policy_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"missing behaviour-policy manifest {path}; "
                                f"write it with `python benchmarks/suite/select_policies.py`")
    manifest = json.loads(path.read_text())
    for entry in [manifest["expert"], manifest["medium"], *manifest["replay"]]:
        if not (policy_dir / entry["file"]).is_file():
            raise FileNotFoundError(f"missing behaviour policy {policy_dir / entry['file']} "
                                    f"(named in {path}); rerun `python benchmarks/suite/select_policies.py`")
    return manifest


Policy = GaussianActor | dqn.EpsilonGreedy  # a behaviour policy: SAC (continuous) or epsilon-greedy DQN (discrete)


def load_policy(path: str | Path, epsilon: float | None = None) -> Policy:
    """A behaviour-policy file: a SAC actor (epsilon None), or a DQN snapshot acting epsilon-greedily."""
    return load_actor(path)[0] if epsilon is None else dqn.EpsilonGreedy(dqn.load_qnet(path)[0], epsilon)


def policy_meta(path: str | Path) -> dict:
    """The metadata of a behaviour-policy file (env_id, step, ...), SAC actor or DQN snapshot."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in blob.items() if k != "state_dict"}


def is_discrete(manifest: dict) -> bool:
    """Whether a policy folder holds DQN policies (select_policies.py records the algorithm)."""
    return manifest.get("algorithm", "SAC") == "DQN"


# ----------------------------------------------------------------------------------------------
# Rollouts
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Episode:
    seed: int                 # the env.reset seed
    observations: np.ndarray  # [T + 1, obs_dim] float32
    actions: np.ndarray       # [T, act_dim] float32
    rewards: np.ndarray       # [T] float64
    terminations: np.ndarray  # [T] bool
    truncations: np.ndarray   # [T] bool
    infos: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Per-action arrays, one row per action: the behaviour's `behavior_log_prob` [T] float64 (a Box action
    space) or `behavior_probs` [T, n] float64 (a Discrete one). See `_lockstep`."""

    def __len__(self) -> int:
        return len(self.rewards)

    def cut(self, n: int) -> Episode:
        """The first n steps; the last one is marked truncated unless the episode ended there."""
        ep = Episode(self.seed, self.observations[:n + 1], self.actions[:n], self.rewards[:n],
                     self.terminations[:n].copy(), self.truncations[:n].copy(),
                     {key: value[:n] for key, value in self.infos.items()})
        if not (ep.terminations[-1] or ep.truncations[-1]):
            ep.truncations[-1] = True
        return ep


def episode_seeds(seed: int, stream: str, *index: int) -> tuple[int, int]:
    """(reset seed, action-noise seed) of an episode, a pure function of its arguments.

    `index` places the episode in its stream: (k,) for `rollout`, (group, k) for `run_group`.
    """
    reset_seed, noise_seed = np.random.SeedSequence([seed, zlib.crc32(stream.encode()), *index]).generate_state(2)
    return int(reset_seed), int(noise_seed)


def make_envs(env_id: str, n: int = GROUP_ENVS) -> list[gym.Env]:
    envs = [make_env(env_id) for _ in range(n)]
    space = envs[0].action_space
    if isinstance(space, gym.spaces.Discrete):
        if space.start != 0:
            raise ValueError(f"{env_id}: discrete actions must start at 0, got {space}")
        return envs
    if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):
        raise ValueError(f"{env_id}: the tanh behaviour policies need actions in [-1, 1], got {space}")
    return envs


BEHAVIOR_KEY = {False: "behavior_log_prob", True: "behavior_probs"}  # discrete? -> the infos key (common/data.py)


def tanh_gaussian_log_prob(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log-density [B] of a = tanh(u), u ~ N(mu, exp(log_std)^2) per dimension, at the pre-tanh sample u [B, d]:
    sum_d [log N(u_d; mu_d, std_d) - log(1 - tanh(u_d)^2)], with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))."""
    z = (u - mu) / log_std.exp()
    log_normal = -0.5 * z.pow(2) - log_std - 0.5 * np.log(2 * np.pi)
    return (log_normal - 2 * (np.log(2.0) - u - torch.nn.functional.softplus(-2 * u))).sum(-1)


@torch.no_grad()
def _lockstep(envs: list[gym.Env], policy: Policy | None, seeds: Callable[[int], tuple[int, int]], *,
              n_episodes: int | None = None, n_steps: int | None = None, deterministic: bool = False) -> list[Episode]:
    """Whole episodes 0, 1, 2, ... run in lockstep on `envs`, one batched actor forward per step.

    Episode k resets its environment with `seeds(k)[0]` and draws its action noise from a generator
    seeded with `seeds(k)[1]`. `policy=None` acts uniformly at random; otherwise actions are
    tanh(mu + std * eps) (stochastic) or tanh(mu) (deterministic). In a Discrete action space the
    noise is two uniform draws per step: `policy=None` takes the action the second one picks, an
    `EpsilonGreedy` policy takes it when the first is below epsilon and the greedy action otherwise
    (deterministic: always greedy); actions are stored as int64. Give exactly one of `n_episodes`
    (that many episodes) or `n_steps` (episodes in order until they hold at least n_steps steps; the
    last one is whole, so they usually hold a few more).

    Which episodes share a batched forward depends only on these arguments (the scheduling below is
    deterministic), so the result is too. With `n_steps`, episode k is launched only while its
    estimated start (unfinished episodes before it counted at the mean length of the finished ones)
    is below n_steps, and dropped as soon as its earliest possible start reaches n_steps.

    Each episode's `infos` record how likely the behaviour was to take each logged action, computed from what
    the step already had (no random draw, no extra batching; the actions are the same as without it):
    `behavior_log_prob` [T] (Box actions) is the log-density of the action, log N(u; mu, std) - sum log(1 -
    tanh(u)^2) for a tanh-Gaussian sample a = tanh(u) (SAC's tanh correction, in its stable form), -act_dim *
    log 2 for uniform actions on [-1, 1]^act_dim, and 0 for `deterministic` actions (a point mass);
    `behavior_probs` [T, n] (Discrete actions) is the probability of every action: epsilon / n + (1 - epsilon)
    for the greedy action and epsilon / n for the others (uniform: 1 / n; deterministic: one-hot).
    """
    if (n_steps is None) == (n_episodes is None):
        raise ValueError("give exactly one of n_steps and n_episodes")
    horizon = envs[0].spec.max_episode_steps
    space = envs[0].action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    obs_dim = envs[0].observation_space.shape[0]
    act_shape, noise_dim = ((), 2) if discrete else (space.shape, space.shape[0])
    n = len(envs)
    # Per-slot buffers for the episode in progress.
    slot_k = [-1] * n                  # episode in the slot, -1 when idle
    slot_t = [0] * n                   # steps taken in that episode
    slot_seed = [0] * n
    obs = np.zeros((n, horizon + 1, obs_dim), np.float32)
    act = np.zeros((n, horizon, *act_shape), np.int64 if discrete else np.float32)
    rew = np.zeros((n, horizon), np.float64)
    term = np.zeros((n, horizon), bool)
    trunc = np.zeros((n, horizon), bool)
    noise = np.zeros((n, horizon, noise_dim), np.float32)
    behavior = (np.zeros((n, horizon, int(space.n)), np.float64) if discrete   # probabilities of every action
                else np.zeros((n, horizon), np.float64))                         # log-density of the action
    # Bookkeeping over all launched episodes, in index order.
    lengths: list[int] = []            # current length of every launched episode
    ended: list[bool] = []             # finished, or dropped as not needed
    finished: dict[int, Episode] = {}
    base, base_steps = 0, 0            # episodes [0, base) have ended, holding base_steps steps
    done_steps, done_count = 0, 0      # over the finished episodes, for the launch estimate

    def launch(k: int) -> bool:  # launch episode k (the next one) now?
        if n_episodes is not None:
            return k < n_episodes
        mean = done_steps / done_count if done_count else 0.0
        start = base_steps + sum(lengths[j] if ended[j] else max(lengths[j], mean) for j in range(base, k))
        return start < n_steps

    while True:
        for i in range(n):
            if slot_k[i] >= 0:
                continue
            k = len(lengths)
            if not launch(k):
                break
            slot_seed[i], noise_seed = seeds(k)
            obs[i, 0] = envs[i].reset(seed=slot_seed[i])[0]
            g = torch.Generator().manual_seed(noise_seed)
            if policy is None or discrete:
                noise[i] = torch.rand(horizon, noise_dim, generator=g).numpy()
            elif not deterministic:
                noise[i] = torch.randn(horizon, noise_dim, generator=g).numpy()
            slot_k[i], slot_t[i] = k, 0
            lengths.append(0)
            ended.append(False)
        active = [i for i in range(n) if slot_k[i] >= 0]
        if not active:
            break

        rows, t = np.array(active), np.array([slot_t[i] for i in active])
        eps = noise[rows, t]
        if discrete:
            u = torch.from_numpy(eps)
            if policy is None:
                a = dqn.uniform_action(u[:, 1], int(space.n)).numpy()
                probs = np.full((len(active), int(space.n)), 1.0 / int(space.n))
            else:
                a = policy.act(torch.from_numpy(obs[rows, t]), u, deterministic).numpy()
                probs = policy.probs(torch.from_numpy(obs[rows, t]), deterministic)
        elif policy is None:
            a = 2.0 * eps - 1.0  # uniform on [-1, 1]
            probs = np.full(len(active), -noise_dim * np.log(2.0))  # log of the uniform density 2^-act_dim
        else:
            mu, log_std = policy.dist(torch.from_numpy(obs[rows, t]))
            if deterministic:
                a, probs = torch.tanh(mu).numpy(), np.zeros(len(active))
            else:
                std_eps = torch.from_numpy(eps)
                u_pre = mu + log_std.exp() * std_eps
                a = torch.tanh(u_pre).numpy()
                probs = tanh_gaussian_log_prob(u_pre.double(), mu.double(), log_std.double()).numpy()

        for j, i in enumerate(active):
            k, ti = slot_k[i], slot_t[i]
            next_obs, r, te, tr, _ = envs[i].step(a[j])
            act[i, ti], obs[i, ti + 1], rew[i, ti], behavior[i, ti] = a[j], next_obs, r, probs[j]
            term[i, ti], trunc[i, ti] = te, tr and not te  # a terminal step at the time limit is a termination
            slot_t[i] = lengths[k] = ti + 1
            if te or tr:
                finished[k] = Episode(slot_seed[i], obs[i, :ti + 2].copy(), act[i, :ti + 1].copy(),
                                      rew[i, :ti + 1].copy(), term[i, :ti + 1].copy(), trunc[i, :ti + 1].copy(),
                                      {BEHAVIOR_KEY[discrete]: behavior[i, :ti + 1].copy()})
                ended[k], slot_k[i] = True, -1
                done_steps, done_count = done_steps + ti + 1, done_count + 1

        if n_steps is not None:  # drop the episodes that start at n_steps or later whatever happens next
            start = base_steps
            for k in range(base, len(lengths)):
                if start >= n_steps:
                    for i in range(n):
                        if slot_k[i] >= k:
                            ended[slot_k[i]], slot_k[i] = True, -1
                    break
                start += lengths[k]
        while base < len(lengths) and ended[base]:
            base_steps += lengths[base]
            base += 1

    episodes, total = [], 0
    for k in range(len(lengths)):
        if n_steps is not None and total >= n_steps:
            break
        episodes.append(finished[k])
        total += len(finished[k])
    return episodes


def rollout(envs: list[gym.Env], policy: Policy | None, *, seed: int, stream: str, n_episodes: int,
            deterministic: bool = False) -> list[Episode]:
    """Episodes 0 .. n_episodes-1 of `stream` (seeds from (seed, stream, k)), in lockstep on `envs`.

    For evaluation (select_policies.py); datasets are made of `run_group`s.
    """
    return _lockstep(envs, policy, lambda k: episode_seeds(seed, stream, k), n_episodes=n_episodes,
                     deterministic=deterministic)


def run_group(envs: list[gym.Env], policy: Policy | None, *, seed: int, stream: str, group: int,
              n_steps: int) -> list[Episode]:
    """Lockstep group `group` of `stream`: its episodes 0, 1, ... (seeds from (seed, stream, group, k)),
    stochastic actions, in order until they hold at least n_steps steps (all whole)."""
    return _lockstep(envs, policy, lambda k: episode_seeds(seed, stream, group, k), n_steps=n_steps)


# ----------------------------------------------------------------------------------------------
# Lockstep groups, in this process or a pool of worker processes
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GroupTask:
    env_id: str
    stream: str
    policy_file: str | None   # None: uniform random actions
    seed: int
    group: int
    n_steps: int
    n_envs: int
    epsilon: float | None = None  # a DQN snapshot acting epsilon-greedily; None: a SAC actor (or uniform)


def _group_tasks(env_id: str, plan: list[tuple[str, Path | None, int]], seed: int,
                 epsilons: dict[str, float] | None = None) -> list[GroupTask]:
    """Every stream of `plan` cut into groups of GROUP_STEPS steps (the last one shorter), in dataset order.
    `epsilons`: stream -> epsilon of its DQN policy (discrete environments)."""
    epsilons = epsilons or {}
    return [GroupTask(env_id, stream, None if policy_file is None else str(policy_file), seed, g,
                      min(GROUP_STEPS, steps - g * GROUP_STEPS), GROUP_ENVS, epsilons.get(stream))
            for stream, policy_file, steps in plan for g in range(-(-steps // GROUP_STEPS))]


_PROCESS_ENVS: dict[tuple[str, int], list[gym.Env]] = {}  # lockstep envs of this process, reused across groups


def _init_worker() -> None:
    torch.set_num_threads(1)  # batches of GROUP_ENVS rows: more threads only add waiting (100x slower on a busy CPU)


def _run_task(task: GroupTask) -> list[Episode]:
    envs = _PROCESS_ENVS.get((task.env_id, task.n_envs))
    if envs is None:
        envs = _PROCESS_ENVS[task.env_id, task.n_envs] = make_envs(task.env_id, task.n_envs)
    policy = None if task.policy_file is None else load_policy(task.policy_file, task.epsilon)
    return run_group(envs, policy, seed=task.seed, stream=task.stream, group=task.group, n_steps=task.n_steps)


def _close_envs() -> None:
    for envs in _PROCESS_ENVS.values():
        for env in envs:
            env.close()
    _PROCESS_ENVS.clear()


@contextlib.contextmanager
def _group_results(tasks: list, workers: int, run: Callable = _run_task) -> Iterator[Iterator]:
    """`run(task)` of each task (by default a GroupTask's episodes), in task order, computed here
    (workers <= 1) or by a spawned pool of `workers` processes (one torch thread each). Either way, the
    same arrays."""
    workers = min(workers, len(tasks))
    if workers <= 1:
        threads = torch.get_num_threads()
        _init_worker()
        try:
            yield map(run, tasks)
        finally:
            torch.set_num_threads(threads)
            _close_envs()
    else:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            yield pool.imap(run, tasks)  # the pool is terminated on leaving, even on an error


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------

class _EpisodeWriter:
    """Appends episodes to a new, empty HDF5 Minari dataset, as `HDF5Storage.update_episodes` lays them
    out (group `episode_<id>` with int64 attributes id, seed and total_steps and one dataset per field),
    at under a third of its cost: h5py's low-level API, and contiguous datasets instead of resizable
    chunked ones (Minari resizes only to extend an existing episode in place; the chunk indexes also
    made the files about 3.5x larger). `minari.load_dataset` reads the result like any Minari dataset.
    A dict field (PointMaze's observations) is a group with one dataset per key, as Minari lays it out;
    an episode whose `seed` is None (it continues the one before, without a reset) gets no seed attribute."""

    FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")

    def __init__(self, storage) -> None:
        if getattr(storage, "FORMAT", None) != "hdf5":
            raise TypeError(f"expected an HDF5 Minari storage, got {type(storage).__name__}")
        self.path = Path(storage.data_path) / hdf5_storage._MAIN_FILE_NAME
        self.episodes, self.steps = 0, 0

    def __enter__(self) -> Self:
        self.file = h5py.File(self.path, "a")
        if len(self.file):
            self.file.close()
            raise ValueError(f"{self.path} already holds episodes")
        self._types: dict[np.dtype, h5py.h5t.TypeID] = {}
        self._int64, self._scalar = h5py.h5t.py_create(np.dtype(np.int64)), h5py.h5s.create(h5py.h5s.SCALAR)
        # No modification times in the object headers (as h5py's high-level API): the same episodes, the same bytes.
        self._gcpl, self._dcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE), h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        self._gcpl.set_obj_track_times(False)
        self._dcpl.set_obj_track_times(False)
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def write(self, ep: Episode | maze.Episode) -> None:
        group = h5py.h5g.create(self.file.id, f"episode_{self.episodes}".encode(), gcpl=self._gcpl)
        for name, value in ((b"id", self.episodes), (b"seed", ep.seed), (b"total_steps", len(ep))):
            if value is not None:
                h5py.h5a.create(group, name, self._int64, self._scalar).write(np.array(value, np.int64))
        for name in self.FIELDS:
            self._write_field(group, name, getattr(ep, name))
        if getattr(ep, "infos", None):  # the behaviour's action probabilities (maze episodes have none)
            self._write_field(group, "infos", ep.infos)
        self.episodes += 1
        self.steps += len(ep)

    def _write_field(self, group, name: str, value: np.ndarray | dict) -> None:
        if isinstance(value, dict):
            subgroup = h5py.h5g.create(group, name.encode(), gcpl=self._gcpl)
            for key in sorted(value):
                self._write_field(subgroup, key, value[key])
            return
        data = np.ascontiguousarray(value)
        tid = self._types.get(data.dtype)
        if tid is None:
            tid = self._types[data.dtype] = h5py.h5t.py_create(data.dtype, logical=True)
        h5py.h5d.create(group, name.encode(), tid, h5py.h5s.create_simple(data.shape), dcpl=self._dcpl).write(
            h5py.h5s.ALL, h5py.h5s.ALL, data)


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------

def _plan(level: str, manifest: dict, policy_dir: Path, n_steps: int | None,
          level_steps: int = STEPS_PER_LEVEL) -> list[tuple[str, Path | None, int]]:
    """The streams a level is made of: (stream name, policy file or None for uniform, steps).
    n_steps: steps per level (medium-replay: its prefix to keep); None: `level_steps` (medium-replay: all)."""
    full = level_steps if n_steps is None else n_steps
    if level == "random":
        return [("random", None, full)]
    if level in ("medium", "expert"):
        return [(level, policy_dir / manifest[level]["file"], full)]
    if level == "medium-expert":
        return (_plan("medium", manifest, policy_dir, n_steps, level_steps)
                + _plan("expert", manifest, policy_dir, n_steps, level_steps))
    # medium-replay: the warm-up, then each snapshot for the steps since the one before it.
    plan = [("medium-replay/warmup", None, manifest["learning_starts"])]
    previous = manifest["learning_starts"]
    for entry in sorted(manifest["replay"], key=lambda e: e["step"]):
        plan.append((f"medium-replay/{entry['step']}", policy_dir / entry["file"], entry["step"] - previous))
        previous = entry["step"]
    if n_steps is not None:  # keep a prefix of n_steps steps
        budget, plan_cut = n_steps, []
        for stream, policy, steps in plan:
            plan_cut.append((stream, policy, min(steps, max(budget, 0))))
            budget -= steps
        plan = plan_cut
    return [(stream, policy, steps) for stream, policy, steps in plan if steps > 0]


def _stream_epsilons(plan: list[tuple[str, Path | None, int]], manifest: dict) -> dict[str, float]:
    """stream -> epsilon of its DQN policy: `behaviour_epsilon` for medium and expert, and for each
    medium-replay snapshot the mean epsilon of the DQN's schedule over the steps it stands for."""
    replay = {f"medium-replay/{e['step']}": e["epsilon"] for e in manifest["replay"]}
    return {stream: replay.get(stream, manifest["behaviour_epsilon"]) for stream, policy, _ in plan
            if policy is not None}


def _policy_label(level: str, manifest: dict) -> str:
    algo = manifest.get("algorithm", "SAC")
    greedy = f", ε-greedy (ε = {manifest['behaviour_epsilon']:g})" if is_discrete(manifest) else ""
    if level == "random":
        return "uniform random actions"
    if level in ("medium", "expert"):
        return f"{algo} step {manifest[level]['step']:,} ({manifest[level]['file']}){greedy}"
    if level == "medium-expert":
        return (f"medium ({algo} step {manifest['medium']['step']:,}) + expert ({algo} step "
                f"{manifest['expert']['step']:,}){greedy}")
    steps = sorted(e["step"] for e in manifest["replay"])
    label = (f"{manifest['learning_starts']:,} uniform steps + {len(steps)} {algo} snapshots, steps "
             f"{steps[0]:,}-{steps[-1]:,} (every {manifest['snapshot_every']:,})")
    if is_discrete(manifest):
        eps = [e["epsilon"] for e in sorted(manifest["replay"], key=lambda e: e["step"])]
        label += f", ε-greedy with the training schedule's ε ({eps[0]:.2f} to {eps[-1]:.2f})"
    return label


def dataset_dir(dataset_id: str) -> Path:
    """Where Minari keeps `dataset_id` in the current root ($MINARI_DATASETS_PATH)."""
    return Path(get_dataset_path(dataset_id))


def is_built(dataset_id: str) -> bool:
    return (dataset_dir(dataset_id) / "data" / "metadata.json").is_file()


def default_workers() -> int:
    return min(os.cpu_count() or 1, 2)


@contextlib.contextmanager
def _new_dataset(dataset_id: str, *, force: bool, **create_kwargs) -> Iterator:
    """The storage of a new, empty HDF5 dataset (`minari.create_dataset_from_buffers(dataset_id, buffer=[],
    **create_kwargs)`), made in a hidden temporary root inside the real one (Minari skips hidden folders)
    and moved under its id with one rename when the block completes; on an error nothing is left behind, and a
    build killed outright leaves its temporary root (named with its process id), which the next build removes."""
    target = dataset_dir(dataset_id)
    if target.exists() and not force:
        raise FileExistsError(f"{dataset_id} already exists at {target}; pass force=True (--force) to rebuild it")
    root = dataset_dir("")
    root.mkdir(parents=True, exist_ok=True)
    for orphan in remove_orphans(root, r"\.stitch-build-(?P<pid>\d+)-.*"):  # left by a build that was killed
        print(f"[stitch] removed {orphan}, left behind by an interrupted build", flush=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".stitch-build-{os.getpid()}-", dir=root))
    saved_root = os.environ.get("MINARI_DATASETS_PATH")
    try:
        os.environ["MINARI_DATASETS_PATH"] = str(tmp_root)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="`author_email` is set to None")
                storage = minari.create_dataset_from_buffers(
                    dataset_id, buffer=[], author="Stitch", code_permalink=CODE_PERMALINK, data_format="hdf5",
                    **create_kwargs).storage
        finally:
            if saved_root is None:
                del os.environ["MINARI_DATASETS_PATH"]
            else:
                os.environ["MINARI_DATASETS_PATH"] = saved_root
        yield storage
        namespace = dataset_id.rsplit("/", 1)[0]
        if namespace not in list_local_namespaces():
            create_namespace(namespace)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # force: park the old dataset in the temporary root, deleted below
            os.rename(target, tmp_root / "replaced")
        os.rename(tmp_root / dataset_id, target)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _return_stats(returns: list[float]) -> dict:
    r = np.array(returns)
    return {"return_mean": float(r.mean()), "return_std": float(r.std()), "return_min": float(r.min()),
            "return_max": float(r.max())}


def build(dataset_id: str, *, progress: bool = True, n_steps: int | None = None,
          policy_dir: str | Path | None = None, seed: int = 0, force: bool = False,
          workers: int | None = None) -> None:
    """Build `dataset_id` (one of SUITE_IDS) into the current Minari root.

    n_steps: steps per level instead of 1M (medium-expert: per half; medium-replay: keep only its
    first n_steps steps; pointmaze: the dataset's steps). policy_dir: the policies to use instead of
    the shipped ones (not used by pointmaze). force: replace an existing dataset (otherwise
    FileExistsError). workers: processes running the lockstep groups or maze segments (default
    min(cpu count, 2); 1 runs them in this process); the arrays are the same whatever the number.
    """
    env_name, level = parse_id(dataset_id)
    if n_steps is not None and n_steps < 1:
        raise ValueError(f"n_steps must be a positive number of steps, got {n_steps}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if env_name == "pointmaze":
        return _build_maze(dataset_id, progress=progress, n_steps=n_steps, seed=seed, force=force, workers=workers)
    suite_env = ENVS[env_name]
    policy_dir = Path(policy_dir) if policy_dir is not None else suite_env.policy_dir
    manifest = load_manifest(policy_dir)
    if manifest["env_id"] != suite_env.env_id:
        raise ValueError(f"{policy_dir}/manifest.json is for {manifest['env_id']}, not {suite_env.env_id}")
    target = dataset_dir(dataset_id)
    if target.exists() and not force:
        raise FileExistsError(f"{dataset_id} already exists at {target}; pass force=True (--force) to rebuild it")

    plan = _plan(level, manifest, policy_dir, n_steps, suite_env.steps)
    discrete = is_discrete(manifest)
    for policy_file in {policy_file for _, policy_file, _ in plan if policy_file is not None}:
        meta = policy_meta(policy_file)
        if meta["env_id"] != suite_env.env_id:
            raise ValueError(f"{policy_file} is a policy for {meta['env_id']}, not {suite_env.env_id}")
        if (meta.get("kind") == "dqn") != discrete:
            raise ValueError(f"{policy_file} is not a {manifest.get('algorithm', 'SAC')} policy as "
                             f"{policy_dir}/manifest.json says")
    epsilons = _stream_epsilons(plan, manifest) if discrete else None
    tasks = _group_tasks(suite_env.env_id, plan, seed, epsilons)
    env = make_envs(suite_env.env_id, 1)[0]
    space = env.observation_space
    env.close()
    observation_space = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), space.shape,
                                       np.float32)
    label = _policy_label(level, manifest)
    acting = "epsilon-greedy actions from the DQN's Q-values" if discrete else "actions sampled from the policies"
    description = (f"Stitch suite, D4RL-style {level} level on {suite_env.env_id}: {label}; "
                   f"{acting}, episodes capped at the {suite_env.env_id} time limit, "
                   f"seed {seed}. Reference scores: mean returns of uniform random actions (ref_min) and of the "
                   f"expert acting as in the data (ref_max).")
    env_spec = gym.spec(suite_env.env_id)

    # Episodes are written as their groups arrive; the dataset appears under its id only when complete.
    with _new_dataset(dataset_id, force=force, env=env_spec, eval_env=env_spec,
                      algorithm_name=label if level == "random" else f"{manifest.get('algorithm', 'SAC')}: {label}",
                      observation_space=observation_space, ref_min_score=float(manifest["ref_min_score"]),
                      ref_max_score=float(manifest["ref_max_score"]), description=description) as storage:
        stream_steps = {stream: steps for stream, _, steps in plan}
        written = dict.fromkeys(stream_steps, 0)
        returns, ends = [], {"terminated": 0, "time_limit": 0, "cut": 0}
        with (_EpisodeWriter(storage) as writer, _group_results(tasks, workers) as results,
              tqdm(total=sum(stream_steps.values()), desc=dataset_id, unit="step", disable=not progress,
                   dynamic_ncols=True) as bar):
            for task, episodes in zip(tasks, results):
                for ep in episodes:  # up to the stream's budget; its last episode is cut there
                    left = stream_steps[task.stream] - written[task.stream]
                    if left == 0:
                        break
                    cut = len(ep) > left
                    if cut:
                        ep = ep.cut(left)
                    ends["cut" if cut else "terminated" if ep.terminations[-1] else "time_limit"] += 1
                    writer.write(ep)
                    written[task.stream] += len(ep)
                    returns.append(ep.rewards.sum())
                    bar.update(len(ep))
        assert written == stream_steps, (written, stream_steps)

        stats = {"level": level, "policy": label, "seed": seed, "episodes": writer.episodes, "steps": writer.steps,
                 **_return_stats(returns), "behavior_infos": BEHAVIOR_KEY[discrete]}
        if discrete:  # how the episodes end, and the epsilon of each stream's policy
            stats.update(episode_ends=ends, epsilons=epsilons, algorithm="DQN")
        storage.update_metadata({"total_steps": writer.steps, "total_episodes": writer.episodes,
                                 "dataset_size": storage.get_size(), "stitch": stats})


def _build_maze(dataset_id: str, *, progress: bool, n_steps: int | None, seed: int, force: bool,
                workers: int) -> None:
    """Build a `stitch/pointmaze/...` id (see benchmarks/suite/maze.py): the reference episodes first, then the
    data segments, all in the pool; the dataset stores the evaluation env (goal and reset cell fixed)."""
    target = dataset_dir(dataset_id)
    if target.exists() and not force:
        raise FileExistsError(f"{dataset_id} already exists at {target}; pass force=True (--force) to rebuild it")
    task_maze, dense = maze.parse_id(dataset_id)
    n_steps = maze.STEPS if n_steps is None else n_steps
    spec = maze.env_spec(task_maze, dense)
    env = make_env(spec)
    observation_space = env.observation_space
    env.close()
    tasks = maze.build_tasks(task_maze, dense, seed, n_steps, maze.REF_EPISODES)
    ref_tasks = [t for t in tasks if t.kind != "data"]
    label, description = maze.describe(task_maze, dense)

    ref: dict[str, list[float]] = {"random": [], "planner": []}
    returns, reached, abandoned = [], [], 0
    ref_steps = sum(t.n for t in ref_tasks) * task_maze.episode_steps
    with (_group_results(tasks, workers, run=maze.run_task) as results,
          tqdm(total=ref_steps + n_steps, desc=dataset_id, unit="step", disable=not progress,
               dynamic_ncols=True) as bar):
        results = iter(results)
        for task in ref_tasks:  # they come first
            ref[task.kind] += next(results)
            bar.update(task.n * task_maze.episode_steps)
        with _new_dataset(dataset_id, force=force, env=spec, eval_env=spec, algorithm_name=label,
                          observation_space=observation_space, ref_min_score=float(np.mean(ref["random"])),
                          ref_max_score=float(np.mean(ref["planner"])), description=description) as storage:
            with _EpisodeWriter(storage) as writer:
                for segment in results:
                    for ep in segment.episodes:
                        writer.write(ep)
                        returns.append(ep.rewards.sum())
                        bar.update(len(ep))
                    reached += segment.goals_reached
                    abandoned += segment.goals_abandoned
            assert writer.steps == n_steps, (writer.steps, n_steps)
            stats = {"level": dataset_id.split("/")[-1].rsplit("-v", 1)[0], "policy": label, "seed": seed,
                     "episodes": writer.episodes, "steps": writer.steps, **_return_stats(returns),
                     "maze": task_maze.name, "reward": "dense" if dense else "sparse",
                     "episode_steps": task_maze.episode_steps, "goal_cell": list(task_maze.goal_cell),
                     "reset_cell": list(task_maze.reset_cell), "goals_reached": len(reached),
                     "goal_cells_reached": len(set(reached)), "open_cells": len(task_maze.open_cells),
                     "goals_abandoned": abandoned,
                     "ref_random": {"episodes": len(ref["random"]), **_return_stats(ref["random"])},
                     "ref_planner": {"episodes": len(ref["planner"]), **_return_stats(ref["planner"])}}
            storage.update_metadata({"total_steps": writer.steps, "total_episodes": writer.episodes,
                                     "dataset_size": storage.get_size(), "stitch": stats})


# ----------------------------------------------------------------------------------------------
# Listing and cards
# ----------------------------------------------------------------------------------------------

def info(dataset_id: str) -> dict:
    """What `--list` and `--cards` show for one suite id: built or not, size, episodes, steps, scores."""
    env_name, _ = parse_id(dataset_id)
    row = {"id": dataset_id, "built": is_built(dataset_id)}
    if row["built"]:
        path = dataset_dir(dataset_id)
        meta = json.loads((path / "data" / "metadata.json").read_text())
        row.update(meta.get("stitch", {}))
        row.update(ref_min_score=meta.get("ref_min_score"), ref_max_score=meta.get("ref_max_score"),
                   episodes=meta["total_episodes"], steps=meta["total_steps"],
                   size_mb=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6)
    elif env_name in ENVS:  # pointmaze's reference scores are measured when it is built
        manifest_path = ENVS[env_name].policy_dir / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            row.update(ref_min_score=manifest["ref_min_score"], ref_max_score=manifest["ref_max_score"])
    return row


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def write_cards(path: str | Path = CARDS_PATH) -> Path:
    """Write the markdown table of every built suite id (from the datasets' metadata) to `path`."""
    from benchmarks.speed import cpu_name  # the machine, named like the speed files name it
    unrecorded = [row for row in map(info, SUITE_IDS) if row["built"] and not row["id"].startswith("stitch/pointmaze/")
                  and "behavior_infos" not in row]
    lines = ["# Stitch datasets", "",
             ("Generated by `python benchmarks/suite/build.py --cards` from the datasets built in the local Minari "
              "root; do not edit by hand. Returns are undiscounted episode returns over all episodes of the dataset "
              "(the last, cut episode of each stream included); normalized = 100 * (return - ref_min) / "
              "(ref_max - ref_min). How each level is made: `benchmarks/suite/build.py`."), "",
             ("A build is byte-identical on one machine and torch build, not across CPUs: the levels a SAC snapshot "
              "logs differ in a few episodes per million steps where the policy network's arithmetic rounds "
              "differently, and MuJoCo amplifies it (the statistics agree within noise). The random, discrete and "
              "PointMaze levels do not run a SAC network. This card was written on (and its datasets built on, "
              f"unless copied in): {cpu_name()}."),
             "",
             ("Every episode of the hopper, halfcheetah, walker2d, cartpole and acrobot datasets records in its infos "
              "how likely its behaviour policy was to take each logged action, one row per action, for off-policy "
              "evaluation (`algorithms/ope.py`; `common.data.load_behavior` reads it): `behavior_log_prob` (Box "
              "actions) is the log-density of the action, the tanh-Gaussian's with the tanh correction for SAC "
              "snapshots and -act_dim log 2 (uniform on [-1, 1]^act_dim) for uniform actions; `behavior_probs` "
              "(Discrete actions) is the ε-greedy probability of every action. PointMaze datasets record none (the "
              "controller's waypoints are not in the observation)."), "",
             *(["Built before the suite recorded them (rebuild with `--force` to add them): "
                + ", ".join(f"`{row['id']}`" for row in unrecorded) + ".", ""] if unrecorded else []),
             "| dataset | policy | episodes | steps | return (mean ± std) | normalized | ref_min | ref_max |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in map(info, SUITE_IDS):
        if not row["built"]:
            continue
        lo, hi = row["ref_min_score"], row["ref_max_score"]
        norm = 100 * (row["return_mean"] - lo) / (hi - lo)
        lines.append(f"| `{row['id']}` | {row['policy']} | {row['episodes']:,} | {row['steps']:,} | "
                     f"{row['return_mean']:.1f} ± {row['return_std']:.1f} | {norm:.1f} | {lo:.1f} | {hi:.1f} |")
    lines += ["", "## Behaviour policies", "",
              "Measured by `python benchmarks/suite/select_policies.py` (written to each policy folder's "
              "manifest.json); returns over the manifest's `episodes` episodes.", "",
              "| env | policy | training step | return, as in the data (SAC: sampled; DQN: ε-greedy) | normalized | "
              "return, deterministic (DQN: greedy) |",
              "|---|---|---:|---:|---:|---:|"]
    notes = []
    for name, env in ENVS.items():
        try:
            manifest = load_manifest(env.policy_dir)
        except FileNotFoundError:
            continue
        lo, hi = manifest["ref_min_score"], manifest["ref_max_score"]
        algo = manifest.get("algorithm", "SAC")
        acting = f", ε = {manifest['behaviour_epsilon']:g}" if is_discrete(manifest) else ""
        for role in ("expert", "medium"):
            m = manifest[role]
            norm = 100 * (m["stochastic"]["mean"] - lo) / (hi - lo)
            lines.append(f"| {name} | {role} ({algo}{acting}) | {m['step']:,} | {m['stochastic']['mean']:.1f} ± "
                         f"{m['stochastic']['std']:.1f} | {norm:.1f} | {m['deterministic']['mean']:.1f} ± "
                         f"{m['deterministic']['std']:.1f} |")
        r = manifest["random"]
        lines.append(f"| {name} | uniform random | - | {r['mean']:.1f} ± {r['std']:.1f} | 0.0 | - |")
        if env.expert_target is not None:
            got = manifest["expert"]["stochastic"]["mean"]
            notes.append(f"**{name} expert target:** a return of at least {env.expert_target:,.0f} over "
                         f"{manifest['expert']['stochastic']['episodes']} episodes acting as in the data; measured "
                         f"{got:.1f}: {'met' if got >= env.expert_target else 'NOT MET'}.")
        medium = manifest["medium"]
        if medium.get("in_band") is False and not medium.get("candidates"):
            notes.append(f"**{name} medium is outside D4RL's 40-55% band** ({100 * medium['normalized']:.1f}): "
                         f"it was chosen by hand (`--medium-step`).")
        elif medium.get("in_band") is False:
            measured = ", ".join(f"step {c['step']:,}: {100 * c['normalized']:.1f}" for c in medium["candidates"])
            notes.append(f"**{name} medium is outside D4RL's 40-55% band:** no snapshot taken before the {algo} run "
                         f"first reached the expert's level lies inside it ({measured}; "
                         f"{manifest['episodes']} episodes each, acting as in the data), so the one nearest the band "
                         f"is used.")
        if manifest.get("note"):
            notes.append(f"**{name}:** {manifest['note']}")
        if manifest.get("provisional"):
            notes.append(f"**{name} is provisional:** {manifest['provisional']}")
    for note in notes:  # one paragraph each
        lines += ["", note]
    discrete = [row for row in map(info, SUITE_IDS) if row["built"] and row.get("algorithm") == "DQN"]
    if discrete:
        lines += ["", "## Discrete tasks", "",
                  "Built from DQN snapshots (`benchmarks/suite/dqn.py`, picked by "
                  "`benchmarks/suite/select_policies.py`) acting ε-greedily: the greedy action of the snapshot's "
                  "Q-values with probability 1 - ε, a uniform action otherwise. `medium` and `expert` use the ε the "
                  "DQN ended its exploration with; each `medium-replay` snapshot uses the mean ε of the DQN's "
                  "schedule over the training steps it stands for; `random` is uniform (ε = 1). Actions are int64 "
                  "in [0, n). Episodes end at a termination (pole or arm condition), at the 500-step time limit (a "
                  "truncation, not a termination), or where a stream reaches its step budget (cut, marked "
                  "truncated).", "",
                  "| dataset | ε | episodes terminated | at the time limit | cut at the budget |",
                  "|---|---|---:|---:|---:|"]
        for row in discrete:
            eps = sorted(set(row["epsilons"].values()))
            eps_text = "1 (uniform)" if not eps else f"{eps[0]:.2f}" if len(eps) == 1 else \
                f"{eps[0]:.2f}-{eps[-1]:.2f} (+ uniform warm-up)"
            ends = row["episode_ends"]
            lines.append(f"| `{row['id']}` | {eps_text} | {ends['terminated']:,} | {ends['time_limit']:,} | "
                         f"{ends['cut']:,} |")
    mazes = [row for row in map(info, maze.MAZE_IDS) if row["built"]]
    if mazes:
        lines += ["", "## PointMaze", "",
                  "Built by `benchmarks/suite/maze.py` (see its docstring): the behaviour drives to uniformly "
                  "random open cells, not to the evaluation goal. Reference scores are mean returns over 100 "
                  "evaluation episodes (start at the reset cell, goal cell fixed): uniform random actions "
                  "(ref_min), the planner + PD controller driving to the goal without noise (ref_max). Cells are "
                  "(row, col).", "",
                  "| dataset | reward | episode steps | reset -> goal | goals reached (cells of open) | "
                  "ref_min (random) | ref_max (planner) |", "|---|---|---:|---|---:|---:|---:|"]
        for row in mazes:
            lo, hi = row["ref_random"], row["ref_planner"]
            lines.append(f"| `{row['id']}` | {row['reward']} | {row['episode_steps']} | {tuple(row['reset_cell'])} -> "
                         f"{tuple(row['goal_cell'])} | {row['goals_reached']:,} ({row['goal_cells_reached']} of "
                         f"{row['open_cells']}) | {lo['return_mean']:.1f} ± {lo['return_std']:.1f} | "
                         f"{hi['return_mean']:.1f} ± {hi['return_std']:.1f} |")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Datasets go into the Minari root "
                                     "($MINARI_DATASETS_PATH, default ~/.minari/datasets).")
    parser.add_argument("ids", nargs="*", metavar="ID", help="suite ids to build")
    parser.add_argument("--all", action="store_true", help="build every suite id")
    parser.add_argument("--force", action="store_true", help="rebuild ids that already exist")
    parser.add_argument("--seed", type=int, default=0, help="build seed (the suite's datasets use 0)")
    parser.add_argument("--policy-dir", help="behaviour policies to build the MuJoCo levels from (default: the "
                                             "shipped ones; pointmaze needs none)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="processes running the rollouts (default: %(default)s); the data does not depend on it")
    instead = parser.add_mutually_exclusive_group()
    instead.add_argument("--list", action="store_true",
                         help="every suite id, built or not, with size, episodes, steps and reference scores")
    instead.add_argument("--list-ids", action="store_true", help="every suite id, one per line")
    instead.add_argument("--cards", nargs="?", const=str(CARDS_PATH), metavar="FILE",
                         help="write the dataset table to FILE (default: benchmarks/suite/DATASETS.md)")
    args = parser.parse_args(argv)
    if args.list or args.list_ids or args.cards is not None:
        if args.ids or args.all:
            parser.error("--list, --list-ids and --cards build nothing: give them without ids or --all")
    elif args.all == bool(args.ids):
        parser.error("give the suite ids to build, or --all (not both); --list shows them")

    if args.list_ids:
        print("\n".join(SUITE_IDS))
    elif args.list:
        print(f"Minari root: {dataset_dir('')}")
        print(f"{'id':36} {'size':>9} {'episodes':>9} {'steps':>10} {'ref_min':>9} {'ref_max':>9}")
        for row in map(info, SUITE_IDS):
            size = f"{row['size_mb']:.1f} MB" if row["built"] else "not built"
            print(f"{row['id']:36} {size:>9} {row.get('episodes', '-'):>9} {row.get('steps', '-'):>10} "
                  f"{_fmt(row.get('ref_min_score')):>9} {_fmt(row.get('ref_max_score')):>9}")
    elif args.cards is not None:
        print(f"wrote {write_cards(args.cards)}")
    else:
        ids = SUITE_IDS if args.all else args.ids
        try:
            for dataset_id in ids:
                parse_id(dataset_id)  # fail on a typo before spending time on the ids before it
            for dataset_id in ids:
                if is_built(dataset_id) and not args.force:
                    print(f"{dataset_id}: already built at {dataset_dir(dataset_id)} (--force rebuilds it)")
                    continue
                build(dataset_id, seed=args.seed, force=args.force, policy_dir=args.policy_dir, workers=args.workers)
                print(f"{dataset_id}: built at {dataset_dir(dataset_id)}")
        except (ValueError, OSError) as e:  # an unknown id, missing behaviour policies, a full disk, ...
            raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    # run as the importable module benchmarks.suite.build, whose tasks the worker processes can unpickle
    from benchmarks.suite import build as importable
    importable.main()
