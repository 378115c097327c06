"""Where a trained BCQ policy's actions come from: its acting rule taken apart, each part evaluated.

    python benchmarks/bcq_probe.py runs/bcq__stitch-hopper-medium-replay-v0__s0__.../ \
        --out benchmarks/results/bcq_probe_hopper_mr_s0.json

Evaluates, on the run's dataset environment with the evaluation seeds, the policy as the script acts
(`load_policy`: 100 fixed latents, perturbed, the best by Q_1), the same with other fixed latent sets, with fresh
latents at every step (the authors' acting), and the VAE's decoder at z = 0 alone (no perturbation, no Q); then the
two halves of the rule apart: the best by Q_1 of the unperturbed VAE candidates, and the perturbed decoder at z = 0
(no choice by Q). If only the rules that choose by Q fail, the critic's choice among the candidates is what fails,
not the latents. Also Q_1 of the script's action at each episode's first state beside the discounted return that
episode earned from there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import algorithms.bcq as bcq  # noqa: E402
from benchmarks.probes import first_state_values, load_run, mean_return, parse, write  # noqa: E402


def main() -> None:
    args = parse(__doc__, "bcq.py")
    saved, data = load_run(args.run)
    m = bcq.load_policy(args.run).module
    n = saved["num_eval_action_samples"]

    def on_arrays(policy):  # observations [n, obs_dim] (numpy) -> actions in [-1, 1] (numpy)
        def act(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return policy(torch.as_tensor(obs, dtype=torch.float32)).clamp(-1, 1).numpy()
        return act

    def returns(policy) -> float:
        return mean_return(on_arrays(policy), data, args.episodes, saved["seed"])

    def fresh(obs: torch.Tensor) -> torch.Tensor:  # new latents at every step
        rep, act = bcq.candidates(obs, m.vae.sample_latent(len(obs) * n, obs.device), m.vae, m.perturb)
        return bcq.select_action(m.q(rep, act)[0].view(-1, n), act.view(-1, n, act.shape[-1]))

    def unperturbed(obs: torch.Tensor) -> torch.Tensor:  # the script's latents, no perturbation, the best by Q_1
        rep = obs.repeat_interleave(n, 0)
        act = m.vae.decode(rep, m.z.repeat(obs.shape[0], 1))
        return bcq.select_action(m.q(rep, act)[0].view(-1, n), act.view(-1, n, act.shape[-1]))

    def perturbed_z0(obs: torch.Tensor) -> torch.Tensor:  # one candidate, z = 0, perturbed: no choice by Q
        return m.perturb(obs, m.vae.decode(obs, torch.zeros(len(obs), m.vae.latent_dim)))

    def q1(obs: np.ndarray, act: np.ndarray) -> float:
        with torch.no_grad():
            return float(m.q(torch.as_tensor(obs), torch.as_tensor(act, dtype=torch.float32))[0, 0])

    torch.manual_seed(0)
    write({"run": Path(args.run).name, "episodes": args.episodes, "returns": {
        "as_the_script_acts": returns(m),
        **{f"fixed_latents_seed_{s}": returns(bcq.BCQPolicy(m.vae, m.perturb, m.q, n, s).eval())
           for s in (1000, 1001, 1002)},
        "fresh_latents_per_step": returns(fresh),
        "vae_decoder_at_z0": returns(lambda obs: m.vae.decode(obs, torch.zeros(len(obs), m.vae.latent_dim))),
        "unperturbed_candidates_best_by_q1": returns(unperturbed),
        "perturbed_decoder_at_z0": returns(perturbed_z0),
    }, **first_state_values(on_arrays(m), q1, data, args.episodes, saved["seed"], saved["gamma"])}, data, args.out)


if __name__ == "__main__":
    main()
