"""Where a trained BEAR policy's actions go wrong: its acting rule taken apart, each part evaluated.

    python benchmarks/bear_probe.py runs/bear__stitch-hopper-medium-replay-v0__s0__.../ \
        --out benchmarks/results/bear_probe_hopper_mr_s0.json

Evaluates, on the run's dataset environment with the evaluation seeds, the policy as the script acts (`load_policy`:
100 fixed samples of pi, the best by Q_1, as the authors' D4RL script), the best of 10 (their trainer's default), one
sample, and the mean action tanh(mu(s)) with no critic at all. Also Q_1 of the script's action at each episode's
first state beside the discounted return that episode earned from there: a critic far above it ranks actions by
values the policy does not reach. If only the rules that choose by Q fail, the critic's choice is what fails.

And the constraint the Lagrange multiplier enforces, at 2,048 random dataset states: the MMD between n samples of
the VAE and n of pi (what training computes), beside the MMD between two independent draws of n VAE samples, which
is what the estimator gives a policy that matched the behaviour model exactly (above 0: every pair is counted, as in
the authors' estimator). If that floor is below epsilon and pi's MMD is not, the constraint could hold and pi does
not meet it; with the run's log, when the multiplier first reached its clamp and the lowest MMD logged.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import algorithms.bear as bear  # noqa: E402
from benchmarks.probes import first_state_values, load_run, mean_return, parse, write  # noqa: E402
from common.checkpoints import load_policy_checkpoint  # noqa: E402


def constraint(run: str, saved: dict, data, states: int = 2048) -> dict:
    """MMD of pi against the VAE and of the VAE against itself (mean over `states` dataset states), the threshold and
    the checkpoint's multiplier."""
    state = load_policy_checkpoint(run, "bear")
    vae = bear.VAE(data.obs_dim, data.act_dim, saved["vae_hidden_dim"], saved["max_latent"])
    vae.load_state_dict(state["vae"])
    policy = bear.TanhGaussianPolicy(data.obs_dim, data.act_dim, saved["hidden_dim"])
    policy.load_state_dict(state["policy"])
    sigma = bear.KERNEL_SIGMA[saved["kernel"]] if saved["mmd_sigma"] is None else saved["mmd_sigma"]
    n = saved["num_divergence_samples"]
    torch.manual_seed(saved["seed"])
    idx = torch.randint(0, len(data.observations), (states,))
    obs = torch.as_tensor(data.observations[idx.numpy()], dtype=torch.float32)
    # the training's log: when the multiplier first reached its clamp, and the lowest MMD it logged
    logged = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in logged if "lagrange_multiplier" in r]
    clamp = math.exp(bear.LOG_ALPHA_MAX)
    at_clamp = next((r["step"] for r in logged if r["lagrange_multiplier"] >= clamp * (1 - 1e-6)), None)
    with torch.no_grad():
        behaviour, again = vae.sample(obs, n)[1], vae.sample(obs, n)[1]
        pi = policy.sample(obs, n)[1]
        return {"samples": n, "kernel": saved["kernel"], "sigma": sigma, "threshold": saved["lagrange_threshold"],
                "multiplier": float(state["log_alpha"].exp()), "states": states,
                "mmd_policy_vs_vae": float(bear.mmd(behaviour, pi, saved["kernel"], sigma).mean()),
                "mmd_vae_vs_itself": float(bear.mmd(behaviour, again, saved["kernel"], sigma).mean()),
                "policy_std": float(policy(obs)[1].exp().mean()),
                "log": {"multiplier_first_at_clamp": at_clamp,
                        "lowest_mmd_logged": min(r["divergence"] for r in logged),
                        "log_every": logged[1]["step"] - logged[0]["step"] if len(logged) > 1 else None}}


def main() -> None:
    args = parse(__doc__, "bear.py")
    saved, data = load_run(args.run)
    script = bear.load_policy(args.run)
    policy, q = script.module.policy, script.module.q

    def best_of(n: int):
        m = bear.BEARPolicy(policy, q, n, data.act_dim, saved["seed"]).eval()
        return lambda obs: m(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    def mean_action(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.tanh(policy(torch.as_tensor(obs, dtype=torch.float32))[0]).numpy()

    def q1(obs: np.ndarray, act: np.ndarray) -> float:
        with torch.no_grad():
            return float(q(torch.as_tensor(obs), torch.as_tensor(act, dtype=torch.float32))[0, 0])

    write({"run": Path(args.run).name, "episodes": args.episodes, "constraint": constraint(args.run, saved, data),
           "returns": {
        name: mean_return(act, data, args.episodes, saved["seed"]) for name, act in (
            ("as_the_script_acts", script), ("best_of_10_by_q1", best_of(10)), ("one_policy_sample", best_of(1)),
            ("policy_mean_tanh_mu", mean_action))},
        **first_state_values(script, q1, data, args.episodes, saved["seed"], saved["gamma"])}, data, args.out)


if __name__ == "__main__":
    main()
