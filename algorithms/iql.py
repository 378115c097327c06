"""IQL: Implicit Q-Learning.

Kostrikov, Nair, Levine. "Offline Reinforcement Learning with Implicit Q-Learning." ICLR 2022.
arXiv:2110.06169. Authors' code: github.com/ikostrikov/implicit_q_learning (JAX).

IQL never queries the critic on actions outside the dataset. It fits a state value V(s) as an
upper expectile of Q(s, a) over the dataset's actions, so V approximates the best in-sample action
value, backs Q up through V, and extracts a policy by advantage-weighted regression:

    L_V(psi)   = E_(s,a)~D [ L2^tau( min_i Qbar_i(s, a) - V_psi(s) ) ],  L2^tau(u) = |tau - 1(u < 0)| u^2
    L_Q(theta) = E_(s,a,r,s')~D [ sum_i ( r + gamma (1 - d) V_psi(s') - Q_theta_i(s, a) )^2 ]
    L_pi(phi)  = -E_(s,a)~D [ min(exp(beta (min_i Qbar_i(s, a) - V_psi(s))), 100) log pi_phi(a | s) ]

Implementation details (all from the authors' code unless marked "deviation"):
 1. Update order per step: V, then the actor, then Q (backed up through the freshly updated V), then
    Polyak averaging of the target Q (tau = 0.005). Only Q has a target network.
 2. Rewards are rescaled per dataset: r <- 1000 r / (max episode return - min episode return).
    Observations are not normalized.
 3. Dataset actions are clipped to +-(1 - 1e-5) before computing log-probabilities.
 4. Policy: Gaussian with mean tanh(linear) and a state-independent log-std parameter (init 0,
    clipped to [-5, 2]); not a tanh-squashed distribution. Evaluation uses the mean action.
 5. All layers (outputs too) use orthogonal init with gain sqrt(2), zero bias; 2x256 ReLU MLPs.
    `--init torch` keeps PyTorch's default nn.Linear init instead (what CORL's and d3rlpy's IQL use; see
    benchmarks/RESULTS.md, "IQL against d3rlpy on hopper-medium-replay").
 6. Exponentiated advantages are clipped at 100. The actor's learning rate follows a cosine decay
    to 0 over `total_steps`; V and Q use a constant learning rate.
 7. The twin Q-functions are one batched ensemble module (weights [2, in, out]): one matmul per layer.
 8. Deviation: evaluation runs 10 episodes every 5,000 updates like the paper, but the score is the
    final evaluation, not an average over the last evaluations.
 9. Offline to online (`--online-steps N`, 0 by default: offline only, which then runs exactly as without the
    flag), as the paper fine-tunes on AntMaze and CORL's IQL fine-tuning does: after the offline updates, N
    environment steps, each taking a ~ N(tanh(mu(s)), std^2) clipped to [-1, 1] (sampled with its own generator,
    saved in checkpoints) in the dataset's environment, appending the transition (reward scaled as the data's, action
    clipped as in 3) to the same buffer as the data (`Buffer.add`), then `--utd-ratio` updates on minibatches drawn
    uniformly from data and online rows together. With an online phase the actor's cosine decay runs over all the
    run's updates (offline and online), so its learning rate is not 0 when fine-tuning starts. Only terminations stop
    bootstrapping; time limits end the episode. Evaluation goes on every --eval-every updates (each record also has
    `env_step`); each finished online episode logs `online/return`, `online/score` and `online/regret` (CORL's
    cumulative regret, common/online.py). Resume is exact across the switch and inside the online phase: the
    checkpoint holds the online rows, the generator and the running episode's actions, replayed from the episode's
    seeded reset (common/online.py). `--compile` applies to the offline updates; the online ones run eager.

Default hyperparameters are the paper's Gym-MuJoCo settings (configs/mujoco_config.py): expectile
0.7, inverse temperature 3.0, lr 3e-4, batch 256, gamma 0.99, 1M updates.

Usage:
    python algorithms/iql.py                                         # stitch/hopper/medium-replay-v0
    python algorithms/iql.py --dataset stitch/hopper/medium-v0 --seed 1 --total-steps 200000
    python algorithms/iql.py --online-steps 250000                   # then fine-tune online (detail 9)
    python algorithms/iql.py --resume runs/iql__stitch-hopper-medium-replay-v0__s0__20261121-120000
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
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from common.buffer import Buffer  # noqa: E402
from common.checkpoints import (CheckpointError, load_policy_checkpoint, load_run_checkpoint,  # noqa: E402
                                resumed_args, rng_state, save_checkpoint, set_rng_state)
from common.config import ArgumentError, check_common, require, resolve_device  # noqa: E402
from common.data import DatasetError, load_dataset, return_range_scale  # noqa: E402
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
    """Seed for network init, minibatch sampling and evaluation."""
    total_steps: int = 1_000_000
    """Number of offline gradient updates (before the online phase, if any)."""
    online_steps: int = 0
    """Environment steps of online fine-tuning after the offline updates, each followed by --utd-ratio updates
    (0: offline only)."""
    utd_ratio: int = 1
    """Updates per online environment step (update-to-data ratio; CORL's fine-tuning: 1)."""
    batch_size: int = 256
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the two hidden layers of every network."""
    actor_lr: float = 3e-4
    """Actor learning rate (cosine-decayed to 0 over total_steps)."""
    critic_lr: float = 3e-4
    """Learning rate of Q and V."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target Q."""
    expectile: float = 0.7
    """Expectile of Q that V regresses to, in (0, 1); 0.5 is the mean (SARSA), near 1 the max."""
    inverse_temperature: float = 3.0
    """Inverse temperature beta of the advantage weights exp(beta * A): 0 is behaviour cloning."""
    max_weight: float = 100.0
    """Clip on the exponentiated advantage."""
    init: Literal["orthogonal", "torch"] = "orthogonal"
    """Weight init: orthogonal (gain sqrt 2, zero bias; the authors' code) or torch (nn.Linear's default)."""
    reward_scale: bool = True
    """Rescale rewards by 1000 / (max - min episode return), as the paper does for locomotion."""
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
    require(0.0 < args.expectile < 1.0, "expectile", "must be in (0, 1)", args.expectile)
    require(args.inverse_temperature >= 0.0, "inverse_temperature", "must be >= 0", args.inverse_temperature)
    require(args.max_weight > 0.0, "max_weight", "must be positive", args.max_weight)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)
    require(args.init in ("orthogonal", "torch"), "init", "must be 'orthogonal' or 'torch'", args.init)
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
def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    """Every Linear layer of `module`: orthogonal weights with `gain`, zero bias (the authors' default_init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain)
            nn.init.zeros_(m.bias)


class EnsembleLinear(nn.Module):
    """`n` independent linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int, orthogonal: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_dim))
        for i in range(n):  # each member initialized as a separate layer would be
            if orthogonal:
                nn.init.orthogonal_(self.weight.data[i].T, math.sqrt(2))
            else:
                layer = nn.Linear(in_dim, out_dim)
                self.weight.data[i], self.bias.data[i, 0] = layer.weight.data.T, layer.bias.data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """Q_1..Q_n(s, a) as one module; returns [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n: int = 2, orthogonal: bool = True):
        super().__init__()
        self.n = n
        self.net = nn.Sequential(EnsembleLinear(n, obs_dim + act_dim, hidden, orthogonal), nn.ReLU(),
                                 EnsembleLinear(n, hidden, hidden, orthogonal), nn.ReLU(),
                                 EnsembleLinear(n, hidden, 1, orthogonal))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1).unsqueeze(0).expand(self.n, -1, -1)
        return self.net(x).squeeze(-1)


def mlp(in_dim: int, hidden: int, out_dim: int, orthogonal: bool = True) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                        nn.Linear(hidden, out_dim))
    if orthogonal:
        orthogonal_init(net)
    return net


class GaussianPolicy(nn.Module):
    """N(tanh(mu(s)), exp(log_std)^2) with a state-independent log-std (IQL's NormalTanhPolicy)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, log_std_min: float = -5.0, log_std_max: float = 2.0,
                 orthogonal: bool = True):
        super().__init__()
        self.mu = mlp(obs_dim, hidden, act_dim, orthogonal)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        mean = torch.tanh(self.mu(obs))
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return (-0.5 * ((act - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mu(obs))


# ----------------------------------------------------------------------------------------------
# Losses (one per equation of the paper)
# ----------------------------------------------------------------------------------------------
def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """L2^tau(u) = |tau - 1(u < 0)| u^2, elementwise; u = target - prediction."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def value_loss(v: torch.Tensor, q_min: torch.Tensor, expectile: float) -> torch.Tensor:
    """L_V = E[L2^tau(min_i Qbar_i(s, a) - V(s))]  (Eq. 5); v = V(s), q_min = min_i Qbar_i(s, a)."""
    return expectile_loss(q_min - v, expectile).mean()


def q_loss(q: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """L_Q = E[sum_i (r + gamma (1 - d) V(s') - Q_i(s, a))^2]  (Eq. 6); q = [n, B] Q_i(s, a), next_v = V(s')."""
    target = (rew + gamma * (1.0 - done) * next_v).detach()
    return ((q - target) ** 2).mean(1).sum()


def actor_loss(log_prob: torch.Tensor, adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """L_pi = -E[min(exp(beta A(s, a)), max_weight) log pi(a|s)]  (Eq. 7); adv = min_i Qbar_i(s, a) - V(s)."""
    weight = torch.exp(beta * adv.detach()).clamp(max=max_weight)
    return -(weight * log_prob).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "iql")
        args = resumed_args(Args, args, "iql", state,  # the run continues with its own saved settings
                            fixed_length="its actor's learning rate decays to 0 over --total-steps")
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)

    # Data: rewards rescaled by the return range, dataset actions clipped inside (-1, 1).
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    if args.online_steps > 0:
        require_environment(data)  # before anything else is said about the data
    total_updates = args.total_steps + args.online_steps * args.utd_ratio  # offline, then online (detail 9)
    evaluator = Evaluator(data, dataclasses.replace(args, total_steps=total_updates), "iql")  # says what it cannot do
    scale = return_range_scale(data) if args.reward_scale else 1.0
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed, rewards=data.rewards * scale,
                                 capacity=len(data) + args.online_steps if args.online_steps else None)
    buffer.actions.clamp_(-1 + 1e-5, 1 - 1e-5)
    env = explore_gen = None
    if args.online_steps > 0:  # the environment and the generator of the exploring actions (detail 9)
        env = OnlineEnv(data, args.seed, evaluator.score)
        explore_gen = torch.Generator(device=device)
        explore_gen.manual_seed(args.seed + 2)

    ortho = args.init == "orthogonal"
    q = EnsembleQ(data.obs_dim, data.act_dim, args.hidden_dim, orthogonal=ortho).to(device)
    q_target = EnsembleQ(data.obs_dim, data.act_dim, args.hidden_dim, orthogonal=ortho).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    value = mlp(data.obs_dim, args.hidden_dim, 1, ortho).to(device)
    policy = GaussianPolicy(data.obs_dim, data.act_dim, args.hidden_dim, orthogonal=ortho).to(device)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    v_opt = adam(value.parameters(), args.critic_lr, device)
    pi_opt = adam(policy.parameters(), args.actor_lr, device)
    pi_sched = torch.optim.lr_scheduler.CosineAnnealingLR(pi_opt, T_max=total_updates)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("q", q), ("q_target", q_target), ("value", value), ("policy", policy), ("q_opt", q_opt),
                              ("v_opt", v_opt), ("pi_opt", pi_opt), ("pi_sched", pi_sched), ("buffer", buffer)):
                obj.load_state_dict(state[name])
            if env is not None:
                explore_gen.set_state(state["explore_rng"])
                env.load_state_dict(state["online_env"])  # replays the running episode: the env as it was
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("iql", args.dataset, args.seed)
    run = Run(run_dir, args, "iql", total_updates, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def update() -> dict[str, torch.Tensor]:  # one whole update; the loop below steps the actor's schedule
        obs, act, rew, next_obs, done = buffer.sample(args.batch_size)
        with torch.no_grad():
            q_min = q_target(obs, act).min(0).values  # fixed until the target update at the end
        v_loss = value_loss(value(obs).squeeze(-1), q_min, args.expectile)
        v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        v_opt.step()

        with torch.no_grad():  # the actor and Q use the freshly updated V
            adv = q_min - value(obs).squeeze(-1)
            next_v = value(next_obs).squeeze(-1)
        pi_loss = actor_loss(policy.log_prob(obs, act), adv, args.inverse_temperature, args.max_weight)
        pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()
        pi_opt.step()

        qf_loss = q_loss(q(obs, act), rew, done, next_v, args.gamma)
        q_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        q_opt.step()

        with torch.no_grad():
            torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
        return {"loss/value": v_loss, "loss/actor": pi_loss, "loss/q": qf_loss, "adv_mean": adv.mean()}

    def env_step() -> None:
        """One online step: a ~ N(tanh(mu(s)), std^2) clipped to [-1, 1], the transition appended to the buffer."""
        with torch.no_grad():
            mean = torch.tanh(policy.mu(torch.as_tensor(env.obs, device=device).unsqueeze(0)))
            std = policy.log_std.clamp(policy.log_std_min, policy.log_std_max).exp()
            eps = torch.randn(mean.shape, device=device, generator=explore_gen)
            action = (mean + std * eps).clamp(-1, 1)[0].cpu().numpy()
        obs, reward, next_obs, terminated, ended = env.step(action)
        buffer.add(obs, action.clip(-1 + 1e-5, 1 - 1e-5), reward * scale, next_obs, terminated)
        if ended is not None:
            run.log(step, {"online/return": ended["return"], "env_step": env.env_steps}
                    | ({} if ended["score"] is None else {"online/score": ended["score"]})
                    | ({} if env.regret() is None else {"online/regret": env.regret()}))

    policy_fn = policy_function(policy, device)

    def save() -> None:
        online = {} if env is None else {"explore_rng": explore_gen.get_state(), "online_env": env.state_dict()}
        save_checkpoint(run_dir / "checkpoint.pt", {
            "q": q.state_dict(), "q_target": q_target.state_dict(), "value": value.state_dict(),
            "policy": policy.state_dict(), "q_opt": q_opt.state_dict(), "v_opt": v_opt.state_dict(),
            "pi_opt": pi_opt.state_dict(), "pi_sched": pi_sched.state_dict(),
            "buffer": buffer.state_dict(rows_from=len(data) if env is not None else None),  # + the online rows
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "iql", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "reward_scale": scale} | online)

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
            pi_sched.step()
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
    result = {"algo": "iql", "dataset": args.dataset, "seed": args.seed, "steps": step,
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
    print(f"iql {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
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
    state = load_policy_checkpoint(run_dir, "iql")
    args = Args(**upgrade_args("iql", json.loads(state["args"])))
    policy = GaussianPolicy(state["obs_dim"], state["act_dim"], args.hidden_dim,
                            orthogonal=args.init == "orthogonal").to(device)
    policy.load_state_dict(state["policy"])
    return policy_function(policy.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
