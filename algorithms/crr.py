"""CRR: Critic Regularized Regression.

Wang, Novikov, Zolna, Springenberg, Reed, Shahriari, Siegel, Merel, Gulcehre, Heess, de Freitas.
"Critic Regularized Regression." NeurIPS 2020. arXiv:2006.15134. No standalone authors' code; DeepMind's
reference is github.com/google-deepmind/acme (acme/agents/jax/crr, JAX).

CRR trains a critic of the current policy by TD learning and the policy by regression on the dataset's
actions, filtered by the critic: an action is imitated in proportion to f(A), A its advantage over the
policy's own actions, so the policy never maximizes Q directly:

    L_Q(theta) = 1/2 E_(s,a,r,s')~D [ ( r + gamma (1 - d) Qbar(s', a') - Q_theta(s, a) )^2 ],
                 a' = the dataset's next action (--backup sarsa, default) or a' ~ pibar(.|s') (--backup policy)
    A(s, a)    = Q(s, a) - 1/m sum_j Q(s, a_j)   (CRR mean; CRR max: max_j),  a_j ~ pi(.|s), m = 4
    L_pi(phi)  = -E_(s,a)~D [ f(A(s, a)) log pi_phi(a | s) ]
    --filter exp:    f = min(exp(A / beta), 20)         (Eq. 4)
             binary: f = 1[A > 0]                       (Eq. 3)

Implementation details (from acme unless marked "deviation"):
 1. One update: both losses from the networks as they are at the start of the update (the advantage
    uses the current critic and the current policy's samples, the backup the target critic at the
    dataset's next action or the target policy's sample), then one Adam step each; every 100 updates both
    targets are hard-copied from the online networks (`target_update_period=100`).
 2. Deviation: a scalar critic (as acme); the paper uses a distributional (categorical) critic.
 3. The backup's a' is the dataset's next action by default (`--backup sarsa`), as in acme's D4RL example
    (examples/offline/run_crr_jax.py, `use_sarsa_target=True`): Q then evaluates the behaviour policy, as in
    one-step RL, and only in-sample actions are ever backed up. The paper and acme's CRRConfig default sample
    a' from the target policy (`--backup policy`); with this script's scalar critic (item 2; the paper's
    categorical critic bounds Q by its fixed support) that diverged on stitch/hopper/medium-replay-v0:
    Q(s, a) on the data doubled every ~1,000 updates, 26 -> 1.4e5 by update 12,000 (rewards are ~3 per step,
    so |Q| < 400), and the policy scored 1-2 (benchmarks/results/crr_backup/: the metrics of
    `python algorithms/crr.py --backup {policy,sarsa} --total-steps 12000 --log-every 1000 --eval-every 6000`).
    Transitions at a timeout have no next action in the data; with
    `--backup sarsa` they are never sampled (terminal ones are: their a' is never used).
 4. Policy: tanh-squashed Gaussian, state-dependent scale = softplus(x) + 1e-3 (acme's
    NormalTanhDistribution). log pi(a|s) of a dataset action clips it to +-0.999; at the clip it uses
    the Gaussian's tail mass beyond atanh(0.999) divided by 1 - 0.999, as acme does. Evaluation uses
    the mode tanh(loc) of the online policy (acme evaluates the target policy, the same network
    whenever the step is a multiple of 100, as every evaluation here is by default).
 5. Networks: policy and critic 2x256 ReLU MLPs, VarianceScaling(1.0, fan_in, uniform) init
    (W ~ U(+-sqrt(3 / fan_in))), zero biases, for every layer including the outputs.
 6. No reward scaling, no observation normalization.
 7. Deviation: evaluation runs 10 episodes every 5,000 updates; the score is the final evaluation.

Defaults: temperature beta 1, ratio bound 20, m = 4, mean advantage, exp filter (the paper's Eq. 3-4 and acme's
losses.py), SARSA backup (acme's D4RL example, item 3), Adam lr 3e-4 for both networks and hard target
updates every 100 steps (acme's CRRConfig), gamma 0.99, batch 256, 1M updates. The paper reports no D4RL
Gym-MuJoCo results (it evaluates on RL Unplugged); acme's D4RL example uses a policy lr of 3e-5 and batch 64.

Usage:
    python algorithms/crr.py                                         # stitch/hopper/medium-replay-v0
    python algorithms/crr.py --filter binary --advantage max --dataset stitch/hopper/medium-v0
    python algorithms/crr.py --backup policy                         # the paper's backup (see item 3)
    python algorithms/crr.py --resume runs/crr__stitch-hopper-medium-replay-v0__s0__20261121-120000
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Literal

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
    """Seed for network init, minibatch sampling, policy samples and evaluation."""
    total_steps: int = 1_000_000
    """Number of gradient updates."""
    batch_size: int = 256
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the two hidden layers of every network."""
    actor_lr: float = 3e-4
    """Policy learning rate."""
    critic_lr: float = 3e-4
    """Learning rate of Q."""
    gamma: float = 0.99
    """Discount factor."""
    target_update_every: int = 100
    """Updates between hard copies of the policy and critic into their targets."""
    filter: Literal["exp", "binary"] = "exp"
    """Policy filter f(A): min(exp(A / beta), max_weight), or the indicator 1[A > 0]."""
    backup: Literal["sarsa", "policy"] = "sarsa"
    """Next action a' in the TD target: the dataset's (acme's D4RL setting) or a sample of the target policy
    (the paper's; diverges with this scalar critic on Hopper, see the docstring)."""
    advantage: Literal["mean", "max"] = "mean"
    """Baseline of the advantage over the m sampled actions: their mean Q (CRR) or max Q (CRR max)."""
    num_action_samples: int = 4
    """Actions m sampled from the policy per state to estimate the baseline."""
    temperature: float = 1.0
    """Temperature beta of the exp filter exp(A / beta): larger is flatter, closer to behaviour cloning."""
    max_weight: float = 20.0
    """Clip on the exp filter (acme's ratio_upper_bound)."""
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
    require(isinstance(args.target_update_every, int) and args.target_update_every > 0, "target_update_every",
            "must be a positive integer", args.target_update_every)
    require(args.filter in ("exp", "binary"), "filter", "must be exp or binary", args.filter)
    require(args.backup in ("sarsa", "policy"), "backup", "must be sarsa or policy", args.backup)
    require(args.advantage in ("mean", "max"), "advantage", "must be mean or max", args.advantage)
    require(isinstance(args.num_action_samples, int) and args.num_action_samples >= 1, "num_action_samples",
            "must be an integer >= 1", args.num_action_samples)
    require(math.isfinite(args.temperature) and args.temperature > 0.0, "temperature", "must be positive",
            args.temperature)
    require(args.max_weight > 0.0, "max_weight", "must be positive", args.max_weight)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
MIN_SCALE = 1e-3  # acme's NormalTanhDistribution min_scale
ACTION_CLIP = 0.999  # acme's TanhTransformedDistribution threshold for log-probabilities


def lecun_uniform(layer: nn.Linear) -> nn.Linear:
    """VarianceScaling(1.0, fan_in, uniform): W ~ U(+-sqrt(3 / fan_in)), b = 0 (acme's init)."""
    bound = math.sqrt(3.0 / layer.in_features)
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(lecun_uniform(nn.Linear(in_dim, hidden)), nn.ReLU(), lecun_uniform(nn.Linear(hidden, hidden)),
                         nn.ReLU(), lecun_uniform(nn.Linear(hidden, out_dim)))


class Critic(nn.Module):
    """Q(s, a); returns [B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


class TanhGaussianPolicy(nn.Module):
    """tanh(z), z ~ N(loc(s), scale(s)^2), scale = softplus + 1e-3 (acme's NormalTanhDistribution)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.trunk = nn.Sequential(lecun_uniform(nn.Linear(obs_dim, hidden)), nn.ReLU(),
                                   lecun_uniform(nn.Linear(hidden, hidden)), nn.ReLU())
        self.loc = lecun_uniform(nn.Linear(hidden, act_dim))
        self.scale = lecun_uniform(nn.Linear(hidden, act_dim))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.loc(h), F.softplus(self.scale(h)) + MIN_SCALE

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log pi(a|s); actions clipped to +-0.999, where the tail mass beyond atanh(0.999) / 0.001 is used."""
        loc, scale = self(obs)
        a = act.clamp(-ACTION_CLIP, ACTION_CLIP)
        z = torch.atanh(a)
        inner = -0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi) - torch.log(1 - a**2)
        u, log_eps = math.atanh(ACTION_CLIP), math.log(1.0 - ACTION_CLIP)
        left = torch.special.log_ndtr((-u - loc) / scale) - log_eps  # log P(z < -u) - log(1 - threshold)
        right = torch.special.log_ndtr((loc - u) / scale) - log_eps  # log P(z > u) - log(1 - threshold)
        return torch.where(a <= -ACTION_CLIP, left, torch.where(a >= ACTION_CLIP, right, inner)).sum(-1)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """a = tanh(loc + scale eps); n samples per state -> [n, B, A] (else [B, A])."""
        loc, scale = self(obs)
        eps = torch.randn(loc.shape if n is None else (n, *loc.shape), device=loc.device)
        return torch.tanh(loc + scale * eps)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.loc(self.trunk(obs)))


def sarsa_rows(episode_starts: np.ndarray, episode_lengths: np.ndarray, terminals: np.ndarray):
    """(rows, next_rows): the transitions usable with the dataset's next action, and that action's row.
    An episode's last transition has no a' in the data: kept if terminal (a' is never used), else dropped."""
    n = len(terminals)
    last = np.zeros(n, dtype=bool)
    last[episode_starts + episode_lengths - 1] = True
    next_rows = np.where(last, np.arange(n), np.arange(n) + 1)
    rows = np.flatnonzero(~last | (terminals > 0))
    return rows, next_rows


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def q_loss(q: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """L_Q = 1/2 E[(r + gamma (1 - d) Qbar(s', a') - Q(s, a))^2]  (TD policy evaluation, scalar critic);
    next_q = Qbar(s', a') with a' the dataset's next action or a sample of the target policy."""
    target = (rew + gamma * (1.0 - done) * next_q).detach()
    return 0.5 * ((q - target) ** 2).mean()


def advantage(q_data: torch.Tensor, q_samples: torch.Tensor, mode: str) -> torch.Tensor:
    """A(s, a) = Q(s, a) - 1/m sum_j Q(s, a_j)  (mean) or - max_j Q(s, a_j)  (max), a_j ~ pi(.|s)  (CRR);
    q_data: [B], q_samples: [m, B]. No gradient."""
    baseline = q_samples.mean(0) if mode == "mean" else q_samples.max(0).values
    return (q_data - baseline).detach()


def crr_filter(adv: torch.Tensor, kind: str, beta: float, max_weight: float) -> torch.Tensor:
    """f = min(exp(A / beta), max_weight)  (exp, Eq. 4) or f = 1[A > 0]  (binary, Eq. 3)."""
    if kind == "exp":
        return torch.exp(adv.detach() / beta).clamp(max=max_weight)
    return (adv.detach() > 0).float()


def actor_loss(log_prob: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L_pi = -E[f(A(s, a)) log pi(a|s)]  (CRR's filtered regression); no gradient
    through the filter."""
    return -(weight.detach() * log_prob).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "crr")
        args = resumed_args(Args, args, "crr", state)  # the run continues with its own saved settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: raw rewards, raw observations, like acme.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "crr")  # says at start if it cannot evaluate or score
    if data.actions.dtype.kind != "f":
        raise DatasetError(f"dataset {args.dataset!r} has discrete actions; crr.py needs continuous actions")
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed)
    rows, next_rows = sarsa_rows(data.episode_starts, data.episode_lengths, data.terminals)
    rows, next_actions = torch.as_tensor(rows, device=device), buffer.actions[torch.as_tensor(next_rows, device=device)]
    m = args.num_action_samples

    q = Critic(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target = Critic(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    policy = TanhGaussianPolicy(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    policy_target = TanhGaussianPolicy(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    policy_target.load_state_dict(policy.state_dict())
    policy_target.requires_grad_(False)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    pi_opt = adam(policy.parameters(), args.actor_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("q", q), ("q_target", q_target), ("policy", policy), ("policy_target", policy_target),
                              ("q_opt", q_opt), ("pi_opt", pi_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("crr", args.dataset, args.seed)
    run = Run(run_dir, args, "crr", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def sample(batch_size: int):
        """A minibatch (s, a, r, s', a', d), drawn with the buffer's own (checkpointed) generator; a' is the
        dataset's next action, from the transitions that have one, with --backup sarsa (else unused)."""
        if args.backup == "policy":
            return *buffer.sample(batch_size), None
        i = rows[torch.randint(0, len(rows), (batch_size,), device=device, generator=buffer.generator)]
        return buffer.obs[i], buffer.actions[i], buffer.rewards[i], buffer.next_obs[i], buffer.dones[i], next_actions[i]

    def update(copy_targets: bool) -> dict[str, torch.Tensor]:
        obs, act, rew, next_obs, done, next_act = sample(args.batch_size)
        B = obs.shape[0]
        with torch.no_grad():  # every quantity below from the networks as they are before this update
            next_q = q_target(next_obs, next_act if next_act is not None else policy_target.sample(next_obs))
            q_samples = q(obs.repeat(m, 1), policy.sample(obs, m).reshape(m * B, -1)).view(m, B)
        q_data = q(obs, act)
        adv = advantage(q_data, q_samples, args.advantage)
        weight = crr_filter(adv, args.filter, args.temperature, args.max_weight)
        qf_loss = q_loss(q_data, rew, done, next_q, args.gamma)
        q_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        q_opt.step()

        # after the critic's step, which it does not depend on (the weights are fixed above): under --compile, two
        # losses from one compiled forward share one backward, which can run only once
        pi_loss = actor_loss(policy.log_prob(obs, act), weight)
        pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()
        pi_opt.step()

        if copy_targets:  # every target_update_every updates
            with torch.no_grad():
                for target, online in ((q_target, q), (policy_target, policy)):
                    torch._foreach_copy_(list(target.parameters()), list(online.parameters()))
        return {"loss/q": qf_loss, "loss/actor": pi_loss, "adv_mean": adv.mean(), "weight_mean": weight.mean(),
                "q_data": q_data.mean().detach()}

    policy_fn = policy_function(policy, device)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "q": q.state_dict(), "q_target": q_target.state_dict(), "policy": policy.state_dict(),
            "policy_target": policy_target.state_dict(), "q_opt": q_opt.state_dict(),
            "pi_opt": pi_opt.state_dict(), "buffer": buffer.state_dict(),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "crr", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim})

    update_fn = fast_update(update, device, args.compile, generators=[buffer.generator])  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            metrics = update_fn(copy_targets=(step + 1) % args.target_update_every == 0)
            step += 1
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
    result = {"algo": "crr", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"crr {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class DeterministicPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> the policy's mean actions
    [n, act_dim], clipped to [-1, 1]. Its forward is the whole policy, so it exports as it is (benchmarks/export.py)."""

    def __init__(self, policy: TanhGaussianPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act(obs).clamp(-1, 1)


def policy_function(policy: TanhGaussianPolicy, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
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
    state = load_policy_checkpoint(run_dir, "crr")
    args = Args(**upgrade_args("crr", json.loads(state["args"])))
    policy = TanhGaussianPolicy(state["obs_dim"], state["act_dim"], args.hidden_dim).to(device)
    policy.load_state_dict(state["policy"])
    return policy_function(policy.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
