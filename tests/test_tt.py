"""algorithms/tt.py: the discretizer's round trip, values by hand, the causal model, beam search on a tiny model whose
best plan is known, smoke run, bad flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms import tt
from conftest import check_bad_flag, check_finished_run, docstring_loop_return
from common.data import load_dataset
from common.evaluation import eval_seed, evaluate

# flags that keep a run small on a CPU: short windows and a small planner (planning costs a forward pass per token)
SMALL = dict(sequence_length=3, max_context_transitions=1, hidden_dim=32, n_layers=2, beam_width=4, horizon=2,
             n_bins=20)


# ----------------------------------------------------------------------------------------------
# Discretization, values
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["quantile", "uniform"])
def test_discretizer_round_trip_is_within_the_bin_width(kind):
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(size=5000), rng.exponential(size=5000) * 100, rng.uniform(-1, 1, 5000)], 1)
    disc = tt.Discretizer.fit(data.astype(np.float32), 50, kind)
    x = torch.as_tensor(data, dtype=torch.float32)
    tokens = disc.discretize(x)
    assert tokens.shape == x.shape and tokens.min() >= 0 and tokens.max() < 50
    recon = disc.reconstruct(tokens)
    width = (disc.edges[1:] - disc.edges[:-1]).gather(0, tokens)  # the width of each value's bin
    # the centre of its bin: within half its width (to float32 round-off)
    assert torch.all((recon - x).abs() <= width / 2 + 1e-6 * (1 + x.abs()))
    assert torch.all(disc.edges[:-1].gather(0, tokens) <= x) and torch.all(x <= disc.edges[1:].gather(0, tokens))
    if kind == "quantile":  # every bin holds about as many values
        counts = torch.stack([torch.bincount(tokens[:, d], minlength=50) for d in range(3)])
        assert counts.min() >= 5000 / 50 - 2 and counts.max() <= 5000 / 50 + 2
    else:
        widths = disc.edges[1:] - disc.edges[:-1]  # evenly spaced from min to max
        torch.testing.assert_close(widths, widths[:1].expand(50, 3), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(disc.edges[[0, -1]], torch.as_tensor(np.stack([data.min(0), data.max(0)]),
                                                                         dtype=torch.float32))
    # outside the data's range: the first and last bins
    out = disc.discretize(torch.tensor([[-1e6, -1e6, -1e6], [1e6, 1e6, 1e6]]))
    assert out.tolist() == [[0, 0, 0], [49, 49, 49]]


def test_expectation_of_bin_probabilities():
    disc = tt.Discretizer(torch.tensor([[0.0, -1.0], [2.0, 1.0], [4.0, 3.0]]))  # centres: dim 0: 1, 3; dim 1: 0, 2
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    torch.testing.assert_close(disc.expectation(probs, 0), torch.tensor([0.25 * 1 + 0.75 * 3, 1.0]))
    torch.testing.assert_close(disc.expectation(probs, 1), torch.tensor([1.5, 0.0]))


def test_values_after_restart_at_trajectory_ends():
    # trajectories [0, 1, 2] (ends by a terminal) and [3, 4] (a timeout); gamma 0.5; V_t sums the rewards after t
    rewards = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    starts, lengths = tt.trajectory_bounds(np.array([0, 0, 1, 0, 0]), np.array([0, 0, 0, 0, 1]), np.array([0]), 5)
    assert starts.tolist() == [0, 3] and lengths.tolist() == [3, 2]
    np.testing.assert_allclose(tt.values_after(rewards, starts, lengths, 0.5), [2 + 0.5 * 4, 4, 0, 16, 0])
    # trajectories of mixed lengths against the sum written out
    r = np.random.default_rng(0).normal(size=20)
    starts, lengths = np.array([0, 3, 4, 11]), np.array([3, 1, 7, 9])
    by_sum = [sum(0.9 ** (k - 1) * r[t + k] for k in range(1, s + n - t)) for s, n in zip(starts, lengths)
              for t in range(s, s + n)]
    np.testing.assert_allclose(tt.values_after(r, starts, lengths, 0.9), by_sum)


def test_top_cdf_keeps_the_most_likely_tokens_holding_the_probability():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert torch.isfinite(tt.top_cdf_logits(logits, 0.6)).tolist() == [[True, True, False]]  # 0.5 < 0.6 <= 0.8
    assert torch.isfinite(tt.top_cdf_logits(logits, 0.5)).tolist() == [[True, False, False]]
    assert torch.isfinite(tt.top_cdf_logits(logits, 1.0)).all()


def test_model_is_causal_and_reads_whole_transitions():
    torch.manual_seed(0)
    model = tt.TrajectoryGPT(transition_dim=4, n_bins=10, block_size=15, dim=16, n_layers=2, n_heads=2,
                             dropout=0.0).eval()
    x = torch.randint(0, 10, (3, 15))
    x[0, 12:] = 10  # the end token
    with torch.no_grad():
        logits = model(x)
        y = x.clone()
        y[:, 9] = (y[:, 9] + 1) % 10
        later = model(y)
        torch.testing.assert_close(model(x, last_only=True)[:, 0], logits[:, -1])
    assert logits.shape == (3, 15, 11)
    torch.testing.assert_close(later[:, :9], logits[:, :9], rtol=0, atol=0)  # nothing before token 9 sees it
    assert not torch.allclose(later[:, 9:], logits[:, 9:])


def test_window_starts_at_a_transition_and_holds_the_context():
    model = tt.TrajectoryGPT(transition_dim=16, n_bins=4, block_size=159, dim=8, n_layers=1, n_heads=1, dropout=0.0)
    for length in range(1, 300):
        start, partial = tt.window_start(model, length, 5), length % 16
        assert start % 16 == 0 and 0 <= start < length  # never mid-transition (a negative slice start once was)
        assert length - start == min(length, 5 * 16 + partial)  # the current transition and up to 5 before it
        assert length - tt.window_start(model, length, 0) == min(length, 9 * 16 + partial)  # 0: what the block holds


# ----------------------------------------------------------------------------------------------
# Beam search on a model whose best plan is known
# ----------------------------------------------------------------------------------------------
class KnownModel(torch.nn.Module):
    """Transitions (s, a, r, V) of one token each, two bins: any action is equally likely; r = 1 after action 1, else
    0; V = 5 after action 0 in the second transition, else 0; the next state is always bin 0. Logits are +-1e4
    (probabilities 0 or 1)."""

    n_bins, transition_dim, block_size = 2, 4, 1000

    def forward(self, x: torch.Tensor, last_only: bool = False, cache: tt.KVCache | None = None) -> torch.Tensor:
        if cache is not None:  # the cache holds the tokens themselves (as one head's keys): x is only the new ones
            tokens = x[:, None, :, None].float()
            x = cache.extend(0, tokens, tokens)[0][:, 0, :, 0].long()
            cache.length = x.shape[1]
        nxt, step = x.shape[1] % 4, x.shape[1] // 4  # the dimension of the token to predict, and its transition
        logits = torch.full((len(x), 3), -1e4)
        rows = torch.arange(len(x))
        if nxt == 1:  # action: uniform over the two bins
            logits[:, :2] = 0.0
        elif nxt == 2:  # reward: bin 1 (r = 1) after action 1
            logits[rows, x[:, -1]] = 1e4
        elif nxt == 3:  # value: bin 1 (V = 5) after action 0 in the second transition
            logits[rows, (1 - x[:, -2]) if step == 1 else 0] = 1e4
        else:
            logits[:, 0] = 1e4
        return logits[:, None]


def brute_force_best(gamma: float) -> tuple[tuple[int, int], float]:
    """The best of the four action sequences under KnownModel: r0 + gamma r1 + gamma^2 V1."""
    scores = {(a0, a1): a0 + gamma * a1 + gamma**2 * (5.0 if a1 == 0 else 0.0) for a0 in (0, 1) for a1 in (0, 1)}
    best = max(scores, key=scores.get)
    return best, scores[best]


@pytest.mark.parametrize("cache", [True, False])
def test_beam_search_returns_the_best_scoring_plan(cache):
    # bin centres: state 0/1, action -0.5/0.5, reward 0/1, value 0/5
    disc = tt.Discretizer(torch.tensor([[-0.5, -1.0, -0.5, -2.5], [0.5, 0.0, 0.5, 2.5], [1.5, 1.0, 1.5, 7.5]]))
    prefix = torch.zeros(3, 1, dtype=torch.long)  # three episodes, each at state bin 0 with no context
    plan, score = tt.beam_plan(KnownModel(), disc, prefix, obs_dim=1, act_dim=1, horizon=2, beam_width=2,
                               n_expand=8, gamma=0.5, cdf_act=1.0, max_context=0,
                               generator=torch.Generator().manual_seed(0), cache=cache)
    # (1, 0): 1 + 0 + 0.25 * 5 = 2.25 beats (1, 1) 1.5, (0, 0) 1.25, (0, 1) 0.5: the value at the horizon decides
    # the last action, the first reward the first
    (a0, a1), best = brute_force_best(0.5)
    assert (a0, a1) == (1, 0) and best == 2.25
    assert plan.shape == (3, 2, 4)
    assert plan[:, :, 1].tolist() == [[a0, a1]] * 3  # the actions
    assert plan[:, :, 2].tolist() == [[1, 0]] * 3 and plan[:, :, 0].tolist() == [[0, 0]] * 3  # rewards, states
    torch.testing.assert_close(score, torch.full((3,), best))
    # the policy acts with the first action of the best plan, as its bin centre
    planner = tt.Planner.__new__(tt.Planner)
    torch.nn.Module.__init__(planner)
    planner.model, planner.disc, planner.obs_dim, planner.act_dim = KnownModel(), disc, 1, 1
    planner.settings = dict(horizon=2, beam_width=2, n_expand=8, gamma=0.5, cdf_act=1.0, max_context=0)
    planner.generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(planner(prefix), torch.full((3, 1), 0.5))


def test_cached_logits_match_the_whole_window_read_again():
    torch.manual_seed(0)
    model = tt.TrajectoryGPT(transition_dim=5, n_bins=10, block_size=29, dim=32, n_layers=2, n_heads=2,
                             dropout=0.1).eval()
    x = torch.randint(0, 11, (6, 29))
    rows = torch.tensor([2, 2, 0, 5, 1, 3, 3])  # beams reordered, duplicated and dropped after the first tokens
    with torch.no_grad():
        cache = tt.KVCache(29)
        cache.reset(0)
        torch.testing.assert_close(model(x[:, :7], cache=cache), model(x[:, :7]), rtol=0, atol=1e-5)
        cache.select(rows[:4])
        cache.select(torch.tensor([0, 1, 2, 3, 3, 1, 0]))  # selections compose
        y = x[rows[:4]][[0, 1, 2, 3, 3, 1, 0]]
        whole = model(y)
        torch.testing.assert_close(model(y[:, 7:10], cache=cache), whole[:, 7:10], rtol=0, atol=1e-5)  # a chunk
        for i in range(10, 29):  # then token by token
            torch.testing.assert_close(model(y[:, i:i + 1], last_only=True, cache=cache), whole[:, i:i + 1], rtol=0,
                                       atol=1e-5)
        with pytest.raises(ValueError):  # past the window's room
            model(y[:, :1], cache=cache)


@pytest.mark.parametrize("max_context", [1, 2, 0])
def test_beam_search_plans_alike_with_and_without_the_cache(max_context):
    # an untrained model; the window moves once per planned transition (max_context 1, 2) or never (0: the block)
    torch.manual_seed(0)
    model = tt.TrajectoryGPT(transition_dim=5, n_bins=10, block_size=44, dim=32, n_layers=2, n_heads=2,
                             dropout=0.0).eval()
    disc = tt.Discretizer(torch.linspace(-1, 1, 11)[:, None].repeat(1, 5))
    prefix = torch.randint(0, 10, (3, 2 * 5 + 2))  # two transitions of context and a two-dimensional state
    plans = [tt.beam_plan(model, disc, prefix, obs_dim=2, act_dim=1, horizon=4, beam_width=3, n_expand=2, gamma=0.9,
                          cdf_act=0.6, max_context=max_context, generator=torch.Generator().manual_seed(1),
                          cache=cache) for cache in (True, False)]
    assert torch.equal(plans[0][0], plans[1][0])
    torch.testing.assert_close(plans[0][1], plans[1][1], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Smoke: end to end, in-process, on a small planner
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = tt.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                   checkpoint_every=100, batch_size=16, runs_dir=str(tmp_path / "runs"), progress=False, **SMALL)
    result = tt.train(args)
    run_dir, records, _ = check_finished_run(tt, args, result, loss_key="loss/model", networks=("model",),
                                       finite=("loss/model", "loss/actor"))
    plan_times = [r for r in records if "plan_s_per_step" in r]
    assert [r["step"] for r in plan_times] == [100, 200] and all(r["plan_s_per_step"] > 0 for r in plan_times)
    assert result["plan_s_per_step"] > 0 and result["device"] == "cpu"
    # the loop load_policy's docstring shows a user acts as evaluation does (one episode, its seed)
    env_spec = load_dataset(tiny_hopper).env_spec
    first = evaluate(tt.load_policy(run_dir), env_spec, 1, seed=args.seed)
    assert docstring_loop_return(tt, run_dir, env_spec, eval_seed(args.seed, 0)) == float(first[0])


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("sequence_length", 1, "--sequence-length"), ("n_bins", 1, "--n-bins"),
    ("discretizer", "log", "--discretizer"), ("n_heads", 3, "--n-heads"), ("beam_width", 0, "--beam-width"),
    ("horizon", 0, "--horizon"), ("n_expand", 0, "--n-expand"), ("cdf_act", 0.0, "--cdf-act"),
    ("max_context_transitions", 10, "--max-context-transitions"), ("gamma", 1.0, "--gamma"),
    ("dropout", -0.1, "--dropout"), ("action_weight", -1.0, "--action-weight"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(tt, field, value, flag, tmp_path)
