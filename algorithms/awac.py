"""AWAC: Advantage-Weighted Actor-Critic (offline, then optionally online).

Nair, Gupta, Dalal, Levine. "AWAC: Accelerating Online Reinforcement Learning with Offline Datasets."
arXiv:2006.09359, 2020. Authors' code: github.com/rail-berkeley/rlkit (rlkit/torch/sac/awac_trainer.py,
examples/awac/mujoco/awac1.py; PyTorch).

AWAC evaluates the current policy with twin Q-functions trained off-policy (SAC's critic update without
the entropy bonus) and improves it by advantage-weighted maximum likelihood on the dataset's actions,
an implicit KL-constrained step that never queries Q on actions outside the data for the actor:

    L_Q(theta) = E_(s,a,r,s')~D [ sum_i ( r + gamma (1 - d) min_j Qbar_j(s', a') - Q_theta_i(s, a) )^2 ],
                 a' ~ pi(.|s')
    A(s, a)    = min_i Q_i(s, a) - min_i Q_i(s, a~),   a~ ~ pi(.|s)   (one sample: V^pi(s) ~ Q(s, a~))
    L_pi(phi)  = -E_(s,a)~D [ B softmax_batch(A(s, a) / lambda) log pi_phi(a | s) ]
                 (the paper's exp(A / lambda) / Z(s), with Z estimated over the minibatch of B samples)

Implementation details (all from the authors' code unless marked "deviation"):
 1. One update: the critic targets, advantages and both losses are computed from the networks as they
    are at the start of the update; then the critics step, the policy steps, and the target critics
    are Polyak-averaged (tau = 0.005) every update.
 2. alpha = 0, as in the AWAC configs (`alpha=0`, no automatic entropy tuning): the Bellman target has
    no entropy term and the actor has no SAC term (`reparam_weight=0`, `awr_weight=1`).
 3. Weights: softmax over the minibatch of A / lambda, times the batch size (`normalize_over_batch=True`),
    detached; no clipping (`clip_score=None`). The advantage uses the min of the twin critics for both
    the data action and the sampled action (`awr_min_q=True`, `vf_K=1`), all from the current critics.
 4. Policy: Gaussian, mean tanh(linear), state-independent log-std = -6 + 6 sigmoid(w), w initialized at
    0 (`std_architecture="values"`, log-std in [-6, 0]); not tanh-squashed, so dataset actions need no
    clipping. Sampled actions (a', a~) are not clipped. Evaluation uses the mean.
 5. Networks: policy 4x256, each Q 2x256, ReLU. rlkit init: hidden W ~ U(+-1/sqrt(fan_in)), b = 0; last
    layer W ~ U(+-3e-3) (Q) or U(+-1e-3) (policy mean), b = 0. Deviation: fan_in is the layer's input
    width; rlkit's `fanin_init` reads size[0] of PyTorch's [out, in] weight, i.e. the OUTPUT width. Only
    the first layers differ (the others are square): rlkit's are 1/16 instead of 1/sqrt(|S| + |A|), and
    with them the critic of the InvertedPendulum learning test is still linear in the action after 10k
    updates, and its spurious slope drives the policy off (the test fails with rlkit's values, passes with these).
 6. Adam, lr 3e-4 for both; policy weight decay 1e-4 (L2 added to the gradient, as torch's Adam does).
    The twin Q-functions are one batched ensemble module (weights [2, in, out]) with one Adam (identical
    to the code's two: Adam is elementwise and each loss term touches one critic).
 7. No reward scaling, no observation normalization (rlkit's `reward_scale=1`).
 8. Deviation: batch 1024 as configured (`batch_size=1024`); rlkit's offline pretraining loop
    (`pretrain_q_with_bc_data`) actually draws `bc_batch_size` = 128 samples per update.
 9. Offline to online (`--online-steps N`, 0 by default: offline only, which then runs exactly as without the
    flag). Deviation: rlkit pretrains 50k updates (`q_num_pretrain2_steps`); this script trains offline for
    `total_steps` (1M, the D4RL convention) and then, as rlkit and CORL's AWAC fine-tuning, takes N environment
    steps, each with a ~ pi(.|s) sampled (its own generator, saved in checkpoints) and clipped to [-1, 1] (rlkit's
    environment wrapper clips), appending the transition to the same buffer as the data (`Buffer.add`; rlkit loads
    the data into its replay buffer too), then `--utd-ratio` updates (rlkit: 1 per step) on minibatches drawn
    uniformly from data and online rows together. Only terminations stop bootstrapping; time limits end the episode.
    Evaluation goes on every --eval-every updates (each record also has `env_step`); each finished online episode
    logs `online/return`, `online/score` and `online/regret` (CORL's cumulative regret, common/online.py). Resume is
    exact across the switch and inside the online phase: the checkpoint holds the online rows, the generator and the
    running episode's actions, replayed from the episode's seeded reset (common/online.py). `--compile` applies to
    the offline updates; the online ones run eager.
10. Deviation: evaluation runs 10 episodes every 5,000 updates; the score is the final evaluation.

Default hyperparameters are rlkit's AWAC MuJoCo settings (examples/awac/mujoco/awac1.py) with lambda = 1.0,
the trainer's default and the value of the D4RL reproductions (d3rlpy, CORL); awac1.py's sweep uses 2.

Usage:
    python algorithms/awac.py                                        # stitch/hopper/medium-replay-v0
    python algorithms/awac.py --dataset stitch/hopper/medium-v0 --temperature 0.3 --seed 1
    python algorithms/awac.py --online-steps 250000                  # then fine-tune online (detail 9)
    python algorithms/awac.py --resume runs/awac__stitch-hopper-medium-replay-v0__s0__20261121-120000
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
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
from common.online import OnlineEnv, require_environment  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling, policy samples and evaluation."""
    total_steps: int = 1_000_000
    """Number of offline gradient updates (before the online phase, if any)."""
    online_steps: int = 0
    """Environment steps of online fine-tuning after the offline updates, each followed by --utd-ratio updates
    (0: offline only)."""
    utd_ratio: int = 1
    """Updates per online environment step (update-to-data ratio; rlkit's AWAC: 1)."""
    batch_size: int = 1024
    """Minibatch size (also the number of samples the weights are normalized over)."""
    hidden_dim: int = 256
    """Width of the hidden layers of every network (4 in the policy, 2 in each Q)."""
    actor_lr: float = 3e-4
    """Policy learning rate."""
    critic_lr: float = 3e-4
    """Learning rate of the Q-functions."""
    actor_weight_decay: float = 1e-4
    """L2 weight decay of the policy's Adam."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target Q-functions."""
    temperature: float = 1.0
    """Temperature lambda of the advantage weights exp(A / lambda) (rlkit's `beta`): larger is closer to cloning."""
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
    require(math.isfinite(args.temperature) and args.temperature > 0.0, "temperature", "must be positive",
            args.temperature)
    require(args.actor_weight_decay >= 0.0, "actor_weight_decay", "must be >= 0", args.actor_weight_decay)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)
    require(isinstance(args.online_steps, int) and args.online_steps >= 0, "online_steps", "must be an integer >= 0",
            args.online_steps)
    require(isinstance(args.utd_ratio, int) and args.utd_ratio >= 1, "utd_ratio", "must be an integer >= 1",
            args.utd_ratio)
    require(args.online_steps == 0 or args.eval_episodes == 0 or args.total_steps % args.eval_every == 0,
            "eval_every", "must divide --total-steps with --online-steps (the offline score is the evaluation at "
            "the switch)", args.eval_every)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -6.0, 0.0


def rlkit_init(layer: nn.Linear, last_bound: float | None = None) -> nn.Linear:
    """Hidden: W ~ U(+-1/sqrt(in_features)), b = 0; last: W ~ U(+-last_bound), b = 0 (rlkit's Mlp init, with the
    true fan-in: see implementation detail 5)."""
    bound = 1.0 / math.sqrt(layer.in_features) if last_bound is None else last_bound
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
    return layer


class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int, last_bound: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        for i in range(n):  # each member initialized as rlkit initializes a separate nn.Linear
            layer = rlkit_init(nn.Linear(in_dim, out_dim), last_bound)
            self.weight.data[i] = layer.weight.data.T
            self.bias.data[i, 0] = layer.bias.data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """Q_1..Q_n(s, a) as one module; returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2):
        super().__init__()
        self.n = n
        self.net = nn.Sequential(EnsembleLinear(n, obs_dim + act_dim, hidden), nn.ReLU(),
                                 EnsembleLinear(n, hidden, hidden), nn.ReLU(),
                                 EnsembleLinear(n, hidden, 1, last_bound=3e-3))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


class GaussianPolicy(nn.Module):
    """N(tanh(mu(s)), exp(log_std)^2), log_std = -6 + 6 sigmoid(w) state-independent (rlkit's GaussianPolicy)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int = 4):
        super().__init__()
        layers, d = [], obs_dim
        for _ in range(n_hidden):
            layers += [rlkit_init(nn.Linear(d, hidden)), nn.ReLU()]
            d = hidden
        self.mu = nn.Sequential(*layers, rlkit_init(nn.Linear(hidden, act_dim), last_bound=1e-3))
        self.log_std_logits = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_std = LOG_STD_MIN + torch.sigmoid(self.log_std_logits) * (LOG_STD_MAX - LOG_STD_MIN)
        return torch.tanh(self.mu(obs)), log_std.expand(obs.shape[0], -1)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        mean, log_std = self(obs)
        return (-0.5 * ((act - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        mean, log_std = self(obs)
        return mean + log_std.exp() * torch.randn_like(mean)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mu(obs))


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def q_loss(q: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """L_Q = E[sum_i (r + gamma (1 - d) min_j Qbar_j(s', a') - Q_i(s, a))^2]  (SAC's critic, alpha = 0);
    q = [n, B] Q_i(s, a), next_q = min_j Qbar_j(s', a'), a' ~ pi(.|s')."""
    target = (rew + gamma * (1.0 - done) * next_q).detach()
    return ((q - target) ** 2).mean(1).sum()


def advantage(q_data: torch.Tensor, q_pi: torch.Tensor) -> torch.Tensor:
    """A(s, a) = min_i Q_i(s, a) - min_i Q_i(s, a~), a~ ~ pi(.|s)  (A^pi with V^pi(s) ~ Q(s, a~));
    q_data, q_pi: [n, B] Q_i at the dataset and the sampled actions. No gradient."""
    return (q_data.min(0).values - q_pi.min(0).values).detach()


def awac_weights(adv: torch.Tensor, awac_lambda: float) -> torch.Tensor:
    """w = B softmax_batch(A / lambda): exp(A / lambda) / Z with Z the minibatch mean of exp(A / lambda)."""
    return adv.shape[0] * torch.softmax(adv.detach() / awac_lambda, dim=0)


def actor_loss(log_prob: torch.Tensor, adv: torch.Tensor, awac_lambda: float) -> torch.Tensor:
    """L_pi = -E[B softmax_batch(A(s, a) / lambda) log pi(a|s)]  (the paper's actor update, rlkit's
    normalize_over_batch)."""
    return -(awac_weights(adv, awac_lambda) * log_prob).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "awac")
        online_run = json.loads(state["args"]).get("online_steps", 0) > 0
        args = resumed_args(Args, args, "awac", state,  # the run continues with its own saved settings
                            fixed_length="the online phase starts after --total-steps updates" if online_run else None)
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: raw rewards, raw observations, like rlkit.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    if args.online_steps > 0:
        require_environment(data)  # before anything else is said about the data
    total_updates = args.total_steps + args.online_steps * args.utd_ratio  # offline, then online (detail 9)
    evaluator = Evaluator(data, dataclasses.replace(args, total_steps=total_updates), "awac")  # says what it cannot do
    if data.actions.dtype.kind != "f":
        raise DatasetError(f"dataset {args.dataset!r} has discrete actions; awac.py needs continuous actions")
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed,
                                 capacity=len(data) + args.online_steps if args.online_steps else None)
    env = explore_gen = None
    if args.online_steps > 0:  # the environment and the generator of the exploring actions (detail 9)
        env = OnlineEnv(data, args.seed, evaluator.score)
        explore_gen = torch.Generator(device=device)
        explore_gen.manual_seed(args.seed + 2)

    q = EnsembleQ(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target = EnsembleQ(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    policy = GaussianPolicy(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    pi_opt = adam(policy.parameters(), args.actor_lr, device, args.actor_weight_decay)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("q", q), ("q_target", q_target), ("policy", policy), ("q_opt", q_opt),
                              ("pi_opt", pi_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
            if env is not None:
                explore_gen.set_state(state["explore_rng"])
                env.load_state_dict(state["online_env"])  # replays the running episode: the env as it was
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("awac", args.dataset, args.seed)
    run = Run(run_dir, args, "awac", total_updates, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update() -> dict[str, torch.Tensor]:
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        with torch.no_grad():  # every quantity below from the networks as they are before this update
            next_q = q_target(next_obs, policy.sample(next_obs)).min(0).values
            q_pi = q(obs, policy.sample(obs))  # Q_i(s, a~), a~ ~ pi(.|s): V^pi(s) from one policy sample
        q_data = q(obs, act)
        adv = advantage(q_data, q_pi)
        qf_loss = q_loss(q_data, rew, done, next_q, args.gamma)
        q_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        q_opt.step()

        # after the critics' step, which it does not depend on (adv is fixed above): under --compile, two losses
        # from one compiled forward share one backward, which can run only once
        pi_loss = actor_loss(policy.log_prob(obs, act), adv, args.temperature)
        pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()
        pi_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
        return {"loss/q": qf_loss, "loss/actor": pi_loss, "adv_mean": adv.mean(), "adv_std": adv.std(),
                "weight_max": awac_weights(adv, args.temperature).max(), "q_data": q_data.mean().detach()}

    def env_step() -> None:
        """One online step: a ~ pi(.|s) clipped to [-1, 1], the transition appended to the buffer."""
        with torch.no_grad():
            mean, log_std = policy(torch.as_tensor(env.obs, device=device).unsqueeze(0))
            eps = torch.randn(mean.shape, device=device, generator=explore_gen)
            action = (mean + log_std.exp() * eps).clamp(-1, 1)[0].cpu().numpy()
        obs, reward, next_obs, terminated, ended = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated)
        if ended is not None:
            run.log(step, {"online/return": ended["return"], "env_step": env.env_steps}
                    | ({} if ended["score"] is None else {"online/score": ended["score"]})
                    | ({} if env.regret() is None else {"online/regret": env.regret()}))

    policy_fn = policy_function(policy, device)

    def save() -> None:
        online = {} if env is None else {"explore_rng": explore_gen.get_state(), "online_env": env.state_dict()}
        save_checkpoint(run_dir / "checkpoint.pt", {
            "q": q.state_dict(), "q_target": q_target.state_dict(), "policy": policy.state_dict(),
            "q_opt": q_opt.state_dict(), "pi_opt": pi_opt.state_dict(),
            "buffer": buffer.state_dict(rows_from=len(data) if env is not None else None),  # + the online rows
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "awac", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim} | online)

    def evaluate_now() -> dict:
        record = evaluator(policy_fn, step, run)
        return record if env is None else record | {"env_step": env.env_steps}

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < total_updates:
            if step < args.total_steps:
                metrics = update_fn()
            else:  # online: an environment step before every utd_ratio updates, then eager updates (detail 9)
                if (step - args.total_steps) % args.utd_ratio == 0:
                    env_step()
                metrics = update()
            step += 1
            if step % args.log_every == 0:
                run.log(step, {k: v.item() for k, v in metrics.items()}
                        | {"updates_per_s": (step - start_step) / (time.time() - start_time)})
                run.advance(args.log_every)
            if step == total_updates:
                save()  # the final checkpoint comes before the final evaluation: a failure there loses nothing
            if evaluator.due(step, evals):
                evals.append(evaluate_now())
            if run.checkpoint_due(step) or stop:
                save()
            if stop:
                run.close()
                raise stop.exit(resume_command(__file__, run_dir), step)
    if evaluator.due(step, evals):  # resumed from a final checkpoint whose evaluation did not finish
        evals.append(evaluate_now())
        save()
    run.advance(step - run.progress.n)
    final = evals[-1] if evals else {"score": None, "return": None}  # no evaluation: losses only
    result = {"algo": "awac", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    if env is not None:
        offline = next((e for e in evals if e["step"] == args.total_steps), None)
        result["online"] = {"env_steps": env.env_steps, "episodes": env.finished, "regret": env.regret(),
                            "offline_score": None if offline is None else offline["score"]}
        env.close()
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"awac {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class DeterministicPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> the policy's mean actions
    [n, act_dim], clipped to [-1, 1]. Its forward is the whole policy, so it exports as it is (benchmarks/export.py)."""

    def __init__(self, policy: GaussianPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act(obs).clamp(-1, 1)


def policy_function(policy: GaussianPolicy, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim] -> deterministic actions [n, act_dim] in [-1, 1]
    (`.module`: the same policy as one nn.Module on tensors, a DeterministicPolicy)."""
    module = DeterministicPolicy(policy)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: one nn.Module)."""
    state = load_policy_checkpoint(run_dir, "awac")
    args = Args(**upgrade_args("awac", json.loads(state["args"])))
    policy = GaussianPolicy(state["obs_dim"], state["act_dim"], args.hidden_dim).to(device)
    policy.load_state_dict(state["policy"])
    return policy_function(policy.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
