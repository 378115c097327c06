"""Where a trained BEAR policy's actions go wrong: its acting rule taken apart, each part evaluated.

    python benchmarks/bear_probe.py runs/bear__stitch-hopper-medium-replay-v0__s0__.../ \
        --out benchmarks/results/bear_probe_hopper_mr_s0.json

Evaluates, on the run's dataset environment with the evaluation seeds, the policy as the script acts (`load_policy`:
100 fixed samples of pi, the best by Q_1, as the authors' D4RL script), the best of 10 (their trainer's default), one
sample, and the mean action tanh(mu(s)) with no critic at all. Also Q_1 of the script's action at each episode's
first state beside the discounted return that episode earned from there: a critic far above it ranks actions by
values the policy does not reach. If only the rules that choose by Q fail, the critic's choice is what fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import algorithms.bear as bear  # noqa: E402
from common.checkpoints import load_policy_checkpoint  # noqa: E402
from common.data import load_dataset  # noqa: E402
from common.evaluation import env_actions, eval_seed, evaluate, flatten_obs, make_env  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a bear.py run folder")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.episodes < 1:
        raise SystemExit("error: --episodes must be at least 1")

    state = load_policy_checkpoint(args.run, "bear")
    saved = bear.Args(**upgrade_args("bear", json.loads(state["args"])))
    data = load_dataset(saved.dataset)
    script = bear.load_policy(args.run)
    policy, q = script.module.policy, script.module.q

    def returns(act) -> float:
        return float(evaluate(act, data.env_spec, args.episodes, seed=saved.seed).mean())

    def best_of(n: int):
        m = bear.BEARPolicy(policy, q, n, data.act_dim, saved.seed).eval()
        return lambda obs: m(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    def mean_action(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.tanh(policy(torch.as_tensor(obs, dtype=torch.float32))[0]).numpy()

    # Q_1 at each evaluation episode's first state, and the discounted return the script's acting earned from there
    q_start, discounted = [], []
    for i in range(args.episodes):
        env = make_env(data.env_spec)
        obs = flatten_obs(env.reset(seed=eval_seed(saved.seed, i))[0])
        total, discount, done = 0.0, 1.0, False
        while not done:
            act = script(obs[None].astype(np.float32))
            if discount == 1.0:
                with torch.no_grad():
                    q_start.append(float(q(torch.as_tensor(obs[None], dtype=torch.float32),
                                           torch.as_tensor(act, dtype=torch.float32))[0, 0]))
            obs, reward, term, trunc, _ = env.step(env_actions(act, env.action_space)[0])
            obs = flatten_obs(obs)
            total += discount * float(reward)
            discount *= saved.gamma
            done = term or trunc
        discounted.append(total)
        env.close()

    out = {"run": Path(args.run).name, "episodes": args.episodes, "returns": {
        "as_the_script_acts": returns(script),
        "best_of_10_by_q1": returns(best_of(10)),
        "one_policy_sample": returns(best_of(1)),
        "policy_mean_tanh_mu": returns(mean_action),
    }, "q1_at_first_state": q_start, "discounted_return_from_first_state": discounted}
    out["scores"] = {k: float(data.normalized_score([v])[0]) for k, v in out["returns"].items()}
    tmp = Path(args.out).with_name(Path(args.out).name + ".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(args.out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
