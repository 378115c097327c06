"""d3rlpy's BC, TD3+BC, IQL, CQL, BCQ and BEAR (and DiscreteBC, DiscreteBCQ, DiscreteCQL) on a Stitch dataset,
evaluated and recorded the way our scripts are.

Runs in d3rlpy's own virtual environment (.venv-d3rlpy/, made by benchmarks/peers/make_d3rlpy_venv.py), on
a dataset exported with our loader (benchmarks/peers/export.py): it imports d3rlpy, gymnasium, numpy and
torch, never minari or our common/. Usually started by benchmarks/peers/run_d3rlpy.py (which exports first)
or by the grid (`--algos d3rlpy_iql`); by hand:

    python benchmarks/peers/export.py stitch/hopper/medium-replay-v0 --out /tmp/mr.npz
    .venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_train.py --algo iql --data /tmp/mr.npz --seed 0 \
        --total-steps 50000
    .venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_train.py --resume runs/d3rlpy_iql__... --data /tmp/mr.npz
    .venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_train.py --evaluate-run runs/d3rlpy_iql__... --data /tmp/mr.npz
        # no training: the final policy's episodes (returns, lengths, endings) as JSON, for benchmarks/coverage.py

Data. Discrete actions stay integer indices (one column), the MDPDataset is made with ActionSpace.DISCRETE and the
export's n_actions, and evaluation steps the environment with int actions. d3rlpy's MDPDataset is built from the
exported flat arrays, one episode per exported episode: it ends at
a terminal (true termination: no bootstrap) or else at a timeout (bootstrapped), never both (d3rlpy 2.8.1
asserts they never overlap; a terminal wins). d3rlpy stores T observations per episode and, for an episode that
did not terminate, uses its last row only as the next observation of the one before, so such an episode gets
its final next_observation appended as one more row (with a repeated action and zero reward, which no sampled
transition uses): d3rlpy then samples exactly our N transitions, which is checked at start. Actions are
rescaled to [-1, 1] with the environment's bounds, as our Buffer does (the identity for MuJoCo locomotion).

Settings (d3rlpy's D4RL reproduction scripts, reproductions/offline/<algo>.py at v2.8.1, and d3rlpy's config
defaults for what they leave out; `--batch-size` overrides a batch size; d3rlpy's names, with our scripts' flag
in brackets where the names differ):
  bc      there is no BC reproduction script: BCConfig with our bc.py's settings (CORL's) so the two match:
          batch 256 (d3rlpy's default is 100), Adam lr 3e-4 (default 1e-3), deterministic policy (default),
          observations standardized (StandardObservationScaler; d3rlpy's default has none); 2x256 MLP (default).
  td3_bc  td3_plus_bc.py: actor and critic lr 3e-4, batch 256, target smoothing sigma 0.2 clip 0.5, alpha 2.5
          [--q-weight], actor every 2 updates, StandardObservationScaler; gamma 0.99, tau 0.005, 2 critics
          (defaults).
  iql     iql.py: lr 3e-4 (actor and critic), actor Adam with a cosine schedule over the whole run (T_max =
          the reproduction's n_steps, so here --total-steps), batch 256, weight_temp 3.0 [--inverse-temperature],
          max_weight 100, expectile 0.7, ReturnBasedRewardScaler(multiplier=1000); gamma 0.99, tau 0.005, 2 critics
          (defaults).
  cql     cql.py: 3x256 actor and critic encoders, actor lr 1e-4, critic lr 3e-4, temperature lr 1e-4, batch 256,
          10 action samples [--num-action-samples], alpha lr 0 (a fixed alpha of 1), conservative weight
          [--regularizer-weight] 10 on "medium-v0" datasets and 5 on the others; gamma 0.99, tau 0.005, 2 critics,
          initial temperature 1 (defaults).
  bcq     bcq.py: actor (perturbation) and critic encoders [400, 300], imitator (VAE) encoder [750, 750], lr 1e-3 for
          all three, batch 100, lam 0.75 [--target-min-weight], action_flexibility 0.05 [--max-perturbation], 100
          action samples [--num-eval-action-samples]; gamma 0.99, tau 0.005, 2 critics, VAE KL weight (beta) 0.5
          (defaults). d3rlpy's one n_action_samples serves its targets and its acting (ours: 10 and 100):
          `--n-action-samples 10` matches our targets (and BCQ's authors'), and costs a tenth of the default's
          candidate passes per update.
  bear    bear.py: actor lr 1e-4, critic lr 3e-4, imitator (VAE) lr 3e-4 with a [750, 750] encoder, alpha lr 1e-3
          [--lagrange-lr], temperature lr 0 with initial temperature 1e-20 (no entropy term), batch 256, mmd_sigma
          20 [--mmd-sigma], kernel "gaussian" on halfcheetah datasets and "laplacian" on the others [--kernel], 4 MMD
          samples [--num-divergence-samples], alpha threshold 0.05 [--lagrange-threshold], 10 target samples
          [--num-action-samples], 100 action samples [--num-eval-action-samples], warmup 40,000 updates [--bc-steps];
          actor and critic encoders 2x256, gamma 0.99, tau 0.005, 2 critics, lam 0.75, initial alpha 1 (defaults).
Discrete actions (stitch/cartpole, stitch/acrobot; there are no d3rlpy reproduction scripts for these, so each is
matched to our script's defaults where d3rlpy's config allows):
  bc_discrete   DiscreteBCConfig as bc_discrete.py: batch 256, lr 3e-4, beta (logit penalty) 0 (d3rlpy's default
                0.5), observations standardized; 2x256 MLP (default).
  bcq_discrete  DiscreteBCQConfig as bcq_discrete.py (the authors' non-Atari settings): lr 3e-4, batch 64, gamma
                0.99, action_flexibility 0.3 [--threshold], beta 0.01 [--logit-penalty], separate Q and imitation
                networks (share_encoder False), observations standardized. d3rlpy only copies its target network:
                a hard copy every 200 updates stands in for our Polyak average with tau 0.005 (its time constant).
  cql_discrete  DiscreteCQLConfig as cql_discrete.py: QR-DQN critic with 200 quantiles (QRQFunctionFactory), lr 5e-5,
                Adam eps 3.125e-4, batch 32, gamma 0.99, a target copy every 2000 updates, alpha 1.0
                [--regularizer-weight], observations standardized. d3rlpy's target picks a' with the online
                network (Double DQN); ours, as the authors', with the target network.

Training is d3rlpy's own step, the inner loop of its `fitter`: `dataset.sample_transition_batch(batch_size)`
then `algo.update(batch)` (without fitter's per-step logger and progress bar). Evaluation is our protocol,
replicated from common/evaluation.py (tests/test_peers.py checks they agree): every --eval-every updates and at
the end, --eval-episodes deterministic episodes (algo.predict) in copies of the dataset's environment, reset
with seeds EVAL_SEED_OFFSET + 10000 * seed + i, the score normalized with the dataset's reference returns.
`updates_per_s` counts training time only (sampling and updates, not evaluation or checkpoints);
`updates_per_s_with_eval` is wall time from start to end, as our scripts measure theirs.

Checkpoints (checkpoint.pt: d3rlpy's networks, optimizers and learning-rate schedules via save_model, the
gradient step, the torch, numpy and Python RNG states, the evaluations) are written atomically every
--checkpoint-every updates and at the end. `--resume RUN_DIR` continues from the last one with the run's own
settings; d3rlpy's randomness all comes from those three RNGs, so on the CPU a resumed run continues as the
uninterrupted one would have (d3rlpy's own save_model keeps no RNG state nor step).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np

EVAL_SEED_OFFSET = 1_000_000_007  # as common/evaluation.py: far from the seeds builders and trainers use
ALGOS = ("bc", "td3_bc", "iql", "cql", "bcq", "bear", "bc_discrete", "bcq_discrete", "cql_discrete")
FORMAT_VERSION = 1  # of the export (benchmarks/peers/export.py)


# ----------------------------------------------------------------------------------------------
# Evaluation: common/evaluation.py's protocol, replicated (this side cannot import our code's dependencies)
# ----------------------------------------------------------------------------------------------
def eval_seeds(seed: int, episodes: int, max_envs: int = 50) -> list[list[int]]:
    """The reset seeds of each lockstep batch of evaluation episodes (as common/evaluation.evaluate)."""
    return [[EVAL_SEED_OFFSET + 10_000 * seed + first + i for i in range(min(max_envs, episodes - first))]
            for first in range(0, episodes, max_envs)]


def flatten_obs(obs) -> np.ndarray:
    """One observation as a flat float32 vector (dict observations: parts concatenated in key order)."""
    if isinstance(obs, dict):
        return np.concatenate([flatten_obs(obs[k]) for k in sorted(obs)])
    return np.asarray(obs, dtype=np.float32).reshape(-1)


def evaluate(policy: Callable[[np.ndarray], np.ndarray], env_spec, episodes: int, seed: int = 0,
             max_envs: int = 50, episode_info: dict | None = None) -> np.ndarray:
    """Undiscounted return of `episodes` episodes, run up to `max_envs` at a time in lockstep.

    `policy` maps a float32 batch of observations to actions in [-1, 1], mapped to the Box's bounds here.
    `episode_info`, when given a dict, receives each episode's "length" and whether it "terminated" (rather
    than reaching the time limit), in episode order."""
    import gymnasium as gym

    returns: list[float] = []
    lengths: list[int] = []
    terminated: list[bool] = []
    for seeds in eval_seeds(seed, episodes, max_envs):
        n = len(seeds)
        envs = [gym.make(env_spec) for _ in range(n)]
        obs = [flatten_obs(env.reset(seed=s)[0]) for env, s in zip(envs, seeds)]
        space = envs[0].action_space
        rescale = isinstance(space, gym.spaces.Box) and not (np.all(space.low == -1) and np.all(space.high == 1))
        totals, running = np.zeros(n), list(range(n))
        steps, ended_by_term = np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
        while running:
            actions = np.asarray(policy(np.stack([obs[i] for i in running]).astype(np.float32)))
            if rescale:
                actions = space.low + (np.clip(actions, -1.0, 1.0) + 1.0) * 0.5 * (space.high - space.low)
            still = []
            for i, a in zip(running, actions):
                if isinstance(space, gym.spaces.Discrete):  # an integer index, as common/evaluation.py passes it
                    a = int(np.asarray(a).reshape(-1)[0])
                o, r, term, trunc, _ = envs[i].step(a)
                totals[i] += float(r)
                steps[i] += 1
                obs[i] = flatten_obs(o)
                if not (term or trunc):
                    still.append(i)
                else:
                    ended_by_term[i] = bool(term)
            running = still
        for env in envs:
            env.close()
        returns.extend(totals.tolist())
        lengths.extend(steps.tolist())
        terminated.extend(ended_by_term.tolist())
    if episode_info is not None:
        episode_info.update(length=lengths, terminated=terminated)
    return np.asarray(returns)


def acting(algo, data: dict) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: d3rlpy's greedy action, clipped to [-1, 1] if continuous, an int index if discrete."""
    if data.get("n_actions", 0):
        return lambda obs: np.asarray(algo.predict(obs)).astype(np.int64).reshape(len(obs))
    return lambda obs: np.clip(algo.predict(obs), -1.0, 1.0)


def normalized_score(returns, ref_min: float, ref_max: float) -> np.ndarray:
    """D4RL-style normalized score x 100 (as common/data.Dataset.normalized_score)."""
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)


# ----------------------------------------------------------------------------------------------
# Data: the export -> d3rlpy's episode layout (numpy only, so tests run it without d3rlpy)
# ----------------------------------------------------------------------------------------------
class DataError(ValueError):
    """An export file that is missing, of another format, or inconsistent."""


def load_export(path: str | Path) -> dict:
    """The arrays and metadata of an export file (benchmarks/peers/export.py)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the exported dataset {path} ({e}); make it with benchmarks/peers/export.py")
    if int(data.get("format_version", -1)) != FORMAT_VERSION:
        raise DataError(f"{path} is not a version-{FORMAT_VERSION} export; make it again with "
                        "benchmarks/peers/export.py")
    for k in ("dataset_id", "env_id", "env_spec", "content_sha1"):
        data[k] = str(data[k])
    for k in ("ref_min_score", "ref_max_score"):
        data[k] = float(data[k])
    data["n_actions"] = int(data.get("n_actions", 0))  # 0: continuous (also exports written before discrete ones)
    return data


def to_d3rlpy_arrays(data: dict) -> dict[str, np.ndarray]:
    """Rows for d3rlpy's MDPDataset: per episode its observations, and for an episode that did not terminate
    one more row holding its final next_observation (see the module docstring); actions scaled to [-1, 1]."""
    obs, next_obs, lengths = data["observations"], data["next_observations"], data["episode_lengths"]
    n = len(data["rewards"])
    if int(lengths.sum()) != n or np.any(lengths <= 0):
        raise DataError(f"episode lengths add up to {int(lengths.sum())} but there are {n} transitions")
    if data.get("n_actions", 0):  # discrete: integer indices, one column
        actions = data["actions"].astype(np.int64).reshape(n, 1)
    else:
        low, high, actions = data["action_low"], data["action_high"], data["actions"].astype(np.float32)
        if not (np.all(low == -1) and np.all(high == 1)):  # as common/buffer.py: [low, high] -> [-1, 1]
            actions = (2.0 * (actions - low) / (high - low) - 1.0).astype(np.float32)
    ends = np.cumsum(lengths) - 1
    terminated = data["terminals"][ends] > 0
    # each episode's rows: its transitions, then (unless it terminated) one extra row
    extra = (~terminated).astype(np.int64)
    starts_out = np.concatenate([[0], np.cumsum(lengths + extra)[:-1]])
    rows = int((lengths + extra).sum())
    episode_of = np.repeat(np.arange(len(lengths)), lengths)
    dest = np.arange(n) + starts_out[episode_of] - (np.cumsum(lengths) - lengths)[episode_of]
    out_obs = np.empty((rows, obs.shape[1]), np.float32)
    out_act = np.empty((rows, actions.shape[1]), actions.dtype)
    out_rew = np.zeros((rows, 1), np.float32)
    out_obs[dest], out_act[dest], out_rew[dest, 0] = obs, actions, data["rewards"]
    extra_rows = starts_out[~terminated] + lengths[~terminated]
    out_obs[extra_rows] = next_obs[ends[~terminated]]
    out_act[extra_rows] = actions[ends[~terminated]]  # never an action of a sampled transition
    terminals, timeouts = np.zeros(rows, np.float32), np.zeros(rows, np.float32)
    terminals[dest[ends[terminated]]] = 1.0
    timeouts[extra_rows] = 1.0
    return {"observations": out_obs, "actions": out_act, "rewards": out_rew, "terminals": terminals,
            "timeouts": timeouts, "transition_rows": dest}


def make_dataset(data: dict):
    """d3rlpy's MDPDataset of the export, checked to hold exactly the exported transitions."""
    import d3rlpy

    arrays = to_d3rlpy_arrays(data)
    discrete = data.get("n_actions", 0) > 0
    dataset = d3rlpy.dataset.MDPDataset(
        observations=arrays["observations"], actions=arrays["actions"], rewards=arrays["rewards"],
        terminals=arrays["terminals"], timeouts=arrays["timeouts"],
        action_space=d3rlpy.ActionSpace.DISCRETE if discrete else d3rlpy.ActionSpace.CONTINUOUS,
        action_size=data["n_actions"] if discrete else arrays["actions"].shape[1])
    n = len(data["rewards"])
    if dataset.transition_count != n or len(dataset.episodes) != len(data["episode_lengths"]):
        raise DataError(f"d3rlpy sees {dataset.transition_count} transitions in {len(dataset.episodes)} episodes; "
                        f"the export has {n} in {len(data['episode_lengths'])}")
    # d3rlpy's i-th transition must be our i-th: check every episode's first and last and 1000 others
    ends = np.cumsum(data["episode_lengths"]) - 1
    check = np.unique(np.concatenate([ends, ends - data["episode_lengths"] + 1,
                                      np.random.default_rng(0).integers(0, n, 1000)]))
    scaled = arrays["actions"][arrays["transition_rows"]]
    for i in check:
        episode, j = dataset.buffer[int(i)]
        t = dataset.transition_picker(episode, j)
        terminal = bool(data["terminals"][i] > 0) and i in ends
        same = (np.array_equal(t.observation, data["observations"][i]) and np.array_equal(t.action, scaled[i])
                and float(t.reward[0]) == float(data["rewards"][i]) and bool(t.terminal) == terminal
                and (terminal or np.array_equal(t.next_observation, data["next_observations"][i])))
        if not same:
            raise DataError(f"d3rlpy's transition {i} differs from the export's (a bug in to_d3rlpy_arrays)")
    return dataset


# ----------------------------------------------------------------------------------------------
# Algorithms, with d3rlpy's reproduction settings (module docstring)
# ----------------------------------------------------------------------------------------------
def make_algo(algo: str, dataset_id: str, total_steps: int, batch_size: int | None, device,
              n_action_samples: int | None = None):
    """n_action_samples: BCQ's candidates per state (None: d3rlpy's default 100), in its targets and acting alike."""
    import d3rlpy

    std_obs = d3rlpy.preprocessing.StandardObservationScaler
    if algo == "bc":
        config = d3rlpy.algos.BCConfig(batch_size=batch_size or 256, learning_rate=3e-4,
                                       policy_type="deterministic", observation_scaler=std_obs())
    elif algo == "td3_bc":
        config = d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=batch_size or 256,
            target_smoothing_sigma=0.2, target_smoothing_clip=0.5, alpha=2.5, update_actor_interval=2,
            observation_scaler=std_obs())
    elif algo == "iql":
        config = d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=total_steps)),
            batch_size=batch_size or 256, weight_temp=3.0, max_weight=100.0, expectile=0.7,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0))
    elif algo == "cql":
        encoder = d3rlpy.models.encoders.VectorEncoderFactory([256, 256, 256])
        config = d3rlpy.algos.CQLConfig(
            actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4,
            actor_encoder_factory=encoder, critic_encoder_factory=encoder, batch_size=batch_size or 256,
            n_action_samples=10, alpha_learning_rate=0.0,
            conservative_weight=10.0 if "medium-v0" in dataset_id else 5.0)
    elif algo == "bcq":
        rl_encoder = d3rlpy.models.encoders.VectorEncoderFactory([400, 300])
        config = d3rlpy.algos.BCQConfig(
            actor_encoder_factory=rl_encoder, actor_learning_rate=1e-3, critic_encoder_factory=rl_encoder,
            critic_learning_rate=1e-3, imitator_encoder_factory=d3rlpy.models.encoders.VectorEncoderFactory([750, 750]),
            imitator_learning_rate=1e-3, batch_size=batch_size or 100, lam=0.75, action_flexibility=0.05,
            n_action_samples=n_action_samples or 100)
    elif algo == "bear":
        config = d3rlpy.algos.BEARConfig(
            actor_learning_rate=1e-4, critic_learning_rate=3e-4, imitator_learning_rate=3e-4, alpha_learning_rate=1e-3,
            imitator_encoder_factory=d3rlpy.models.encoders.VectorEncoderFactory([750, 750]), temp_learning_rate=0.0,
            initial_temperature=1e-20, batch_size=batch_size or 256, mmd_sigma=20.0,
            mmd_kernel="gaussian" if "halfcheetah" in dataset_id else "laplacian", n_mmd_action_samples=4,
            alpha_threshold=0.05, n_target_samples=10, n_action_samples=100, warmup_steps=40_000)
    elif algo == "bc_discrete":
        config = d3rlpy.algos.DiscreteBCConfig(batch_size=batch_size or 256, learning_rate=3e-4, beta=0.0,
                                               observation_scaler=std_obs())
    elif algo == "bcq_discrete":
        config = d3rlpy.algos.DiscreteBCQConfig(
            learning_rate=3e-4, batch_size=batch_size or 64, gamma=0.99, action_flexibility=0.3, beta=0.01,
            target_update_interval=200, share_encoder=False, observation_scaler=std_obs())
    elif algo == "cql_discrete":
        config = d3rlpy.algos.DiscreteCQLConfig(
            learning_rate=5e-5, optim_factory=d3rlpy.optimizers.AdamFactory(eps=3.125e-4),
            q_func_factory=d3rlpy.models.q_functions.QRQFunctionFactory(n_quantiles=200),
            batch_size=batch_size or 32, gamma=0.99, target_update_interval=2000, alpha=1.0,
            observation_scaler=std_obs())
    else:
        raise ValueError(f"unknown algorithm {algo!r} (choose from {', '.join(ALGOS)})")
    return config.create(device=device)


# ----------------------------------------------------------------------------------------------
# Run folder, checkpoints
# ----------------------------------------------------------------------------------------------
def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except Exception:
        return None


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def save_checkpoint(path: Path, algo, step: int, evals: list, args: dict) -> None:
    """Everything to continue exactly, written atomically (torch.load(weights_only=True) can read it)."""
    import torch

    model = io.BytesIO()
    algo.impl.save_model(model)  # d3rlpy's Checkpointer: networks, optimizers, lr schedules
    np_state = np.random.get_state()
    state = {"model": torch.frombuffer(bytearray(model.getvalue()), dtype=torch.uint8), "step": step,
             "evals": json.dumps(evals), "args": json.dumps(args), "torch_rng": torch.get_rng_state(),
             "numpy_rng": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_rng_meta": json.dumps([np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]),
             "python_rng": json.dumps(random.getstate())}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, weights_only=True)
    except Exception as e:
        raise DataError(f"cannot read the checkpoint {path} ({type(e).__name__}: {e})") from e


def restore(state: dict, algo) -> tuple[int, list]:
    import torch

    algo.impl.load_model(io.BytesIO(state["model"].numpy().tobytes()))
    algo.set_grad_step(int(state["step"]))
    torch.set_rng_state(state["torch_rng"])
    kind, pos, has_gauss, gauss = json.loads(state["numpy_rng_meta"])
    np.random.set_state((kind, state["numpy_rng"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = json.loads(state["python_rng"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    return int(state["step"]), json.loads(state["evals"])


def keep_until(path: Path, step: int) -> None:
    """Drop metrics logged after `step` (a resumed run logs them again), atomically."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--algo", choices=ALGOS, default="iql", help="d3rlpy algorithm")
    p.add_argument("--data", required=True, help="the exported dataset (.npz from benchmarks/peers/export.py)")
    p.add_argument("--seed", type=int, default=0, help="seed for d3rlpy (networks, sampling) and evaluation")
    p.add_argument("--total-steps", type=int, default=1_000_000, help="number of gradient updates")
    p.add_argument("--batch-size", type=int, default=None, help="override the algorithm's batch size")
    p.add_argument("--n-action-samples", type=int, default=None,
                   help="bcq: candidate actions per state, in the targets and in acting (default: d3rlpy's 100)")
    p.add_argument("--eval-every", type=int, default=5_000, help="updates between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation (deterministic)")
    p.add_argument("--log-every", type=int, default=1_000, help="updates between training-metric logs")
    p.add_argument("--checkpoint-every", type=int, default=50_000, help="updates between checkpoints")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (auto: cuda if available)")
    p.add_argument("--runs-dir", default="runs", help="folder that holds run folders")
    p.add_argument("--resume", default=None, help="a run folder to continue (its own saved settings are used)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")
    p.add_argument("--evaluate-run", default=None,
                   help="no training: print (JSON) the returns, lengths and endings of --eval-episodes episodes of\n"
                        "this run folder's last checkpointed policy, with the run's seed")
    args = p.parse_args(argv)
    for name in ("total_steps", "eval_every", "eval_episodes", "log_every", "checkpoint_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.batch_size is not None and args.batch_size < 1:
        p.error(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.n_action_samples is not None and (args.n_action_samples < 1 or args.algo != "bcq"):
        p.error(f"--n-action-samples must be a positive integer, for --algo bcq; got {args.n_action_samples}"
                f" for {args.algo}")
    return args


def build(algo_name: str, data: dict, seed: int, total_steps: int, batch_size: int | None, device: str,
          n_action_samples: int | None = None):
    """d3rlpy's dataset and algorithm with its networks built, as d3rlpy's fitter does before its loop."""
    import d3rlpy
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    d3rlpy.seed(seed)
    dataset = make_dataset(data)
    algo = make_algo(algo_name, data["dataset_id"], total_steps, batch_size, False if device == "cpu" else device,
                     n_action_samples)
    build_scalers_with_transition_picker(algo, dataset)  # fit the scalers, then build the networks
    algo.create_impl((data["observations"].shape[1],), data["n_actions"] or data["actions"].shape[1])
    return algo, dataset


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """A run folder's saved settings (args.json) and its last checkpoint."""
    try:
        saved = json.loads((run_dir / "args.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{run_dir} is not a run folder of this script (args.json: {e})") from e
    return saved, load_checkpoint(run_dir / "checkpoint.pt")


def evaluate_run(args: argparse.Namespace) -> dict:
    """The episodes of a run's last checkpointed policy: --eval-episodes of them, with the run's seed (the
    episodes its own evaluations ran), each episode's return, length and ending. No training."""
    import gymnasium as gym

    run_dir = Path(args.evaluate_run)
    saved, state = read_run(run_dir)
    data = load_export(args.data)
    if saved.get("content_sha1") != data["content_sha1"]:
        raise DataError(f"{run_dir} was trained on other data ({saved.get('dataset')}) than {args.data} "
                        f"({data['dataset_id']})")
    algo, _ = build(saved["algo"], data, saved["seed"], saved["total_steps"], saved.get("batch_size"), "cpu",
                    saved.get("n_action_samples"))
    step, _ = restore(state, algo)
    info: dict = {}
    returns = evaluate(acting(algo, data),
                       gym.envs.registration.EnvSpec.from_json(data["env_spec"]), args.eval_episodes,
                       seed=saved["seed"], episode_info=info)
    return {"run": str(run_dir), "algo": f"d3rlpy_{saved['algo']}", "dataset": data["dataset_id"],
            "seed": saved["seed"], "step": step, "returns": returns.tolist(),
            "scores": normalized_score(returns, data["ref_min_score"], data["ref_max_score"]).tolist(), **info}


def train(args: argparse.Namespace) -> dict:
    import d3rlpy
    import gymnasium as gym
    import torch

    state = None
    if args.resume is not None:
        run_dir = Path(args.resume)
        saved, state = read_run(run_dir)
        args = argparse.Namespace(**{**saved, "data": args.data, "resume": args.resume, "progress": args.progress})
    data = load_export(args.data)
    env_spec = gym.envs.registration.EnvSpec.from_json(data["env_spec"])
    try:  # fail now, not at the first evaluation
        gym.make(env_spec).close()
    except Exception as e:
        raise DataError(f"environment {data['env_id']} of {data['dataset_id']} cannot be made in this venv "
                        f"({type(e).__name__}: {e}); it has gymnasium[mujoco] only") from e
    name = f"d3rlpy_{args.algo}"
    if state is None:
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"
        run_dir = Path(args.runs_dir) / f"{name}__{data['dataset_id'].replace('/', '-')}__s{args.seed}__{stamp}"
    elif json.loads(state["args"]).get("content_sha1") != data["content_sha1"]:
        print(f"warning: {args.data} differs from the data this run started on (rebuilt dataset?)", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_args = {k: v for k, v in vars(args).items() if k not in ("resume", "progress")}
    saved_args.update(dataset=data["dataset_id"], content_sha1=data["content_sha1"])
    write_json(run_dir / "args.json", saved_args)

    device = args.device
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    algo, dataset = build(args.algo, data, args.seed, args.total_steps, args.batch_size, device,
                          getattr(args, "n_action_samples", None))

    step, evals = 0, []
    if state is not None:
        step, evals = restore(state, algo)
    metrics_path = run_dir / "metrics.jsonl"
    keep_until(metrics_path, step)
    metrics = open(metrics_path, "a")

    def log(record: dict) -> None:
        metrics.write(json.dumps({"step": step, "time": time.time(), **record}) + "\n")
        metrics.flush()

    policy = acting(algo, data)

    batch_size = algo.config.batch_size
    start_step, start_time, train_time = step, time.time(), 0.0
    print(f"{name} on {data['dataset_id']} seed {args.seed}: {len(data['rewards'])} transitions, batch {batch_size}, "
          f"from step {step} of {args.total_steps} -> {run_dir}", flush=True)
    while step < args.total_steps:
        n = min(args.log_every - step % args.log_every, args.eval_every - step % args.eval_every,
                args.checkpoint_every - step % args.checkpoint_every, args.total_steps - step)
        t0 = time.perf_counter()
        for _ in range(n):  # d3rlpy's fitter loop, without its logger and progress bar
            loss = algo.update(dataset.sample_transition_batch(batch_size))
        train_time += time.perf_counter() - t0
        step += n
        if step % args.log_every == 0:
            log({**{f"loss/{k}": float(v) for k, v in loss.items()},
                 "updates_per_s": (step - start_step) / max(train_time, 1e-9)})
            if args.progress:
                print(f"step {step}/{args.total_steps}: {(step - start_step) / max(train_time, 1e-9):.1f} upd/s",
                      flush=True)
        if step % args.eval_every == 0 or step == args.total_steps:
            returns = evaluate(policy, env_spec, args.eval_episodes, seed=args.seed)
            score = float(normalized_score(returns, data["ref_min_score"], data["ref_max_score"]).mean())
            evals.append({"step": step, "return": float(returns.mean()), "score": score})
            log({"eval/return": float(returns.mean()), "eval/score": score})
            print(f"step {step}: return {returns.mean():.1f}, score {score:.1f}", flush=True)
        if step % args.checkpoint_every == 0 or step == args.total_steps:
            save_checkpoint(run_dir / "checkpoint.pt", algo, step, evals, saved_args)
    metrics.close()
    result = {"algo": name, "dataset": data["dataset_id"], "seed": args.seed, "steps": step,
              "final_score": evals[-1]["score"], "final_return": evals[-1]["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(train_time, 1e-9),
              "updates_per_s_with_eval": (step - start_step) / max(time.time() - start_time, 1e-9),
              "git_commit": git_commit(), "args": saved_args,
              "peer": {"library": "d3rlpy", "version": d3rlpy.__version__, "torch": torch.__version__,
                       "gymnasium": gym.__version__, "config": json.loads(algo.config.serialize()),
                       "batch_size": batch_size}}
    write_json(run_dir / "result.json", result)
    print(f"{name} {data['dataset_id']} seed {args.seed}: final score {result['final_score']:.1f} "
          f"(return {result['final_return']:.1f}) after {step} updates, "
          f"{result['updates_per_s']:.1f} upd/s -> {run_dir}", flush=True)
    return result


if __name__ == "__main__":
    try:
        parsed = parse_args()
        if parsed.evaluate_run is not None:
            print(json.dumps(evaluate_run(parsed)))
        else:
            train(parsed)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
