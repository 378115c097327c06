"""algorithms/dt.py: the causal mask, returns-to-go and trajectory windows by hand, the loss, the acting history,
smoke run with several target returns, bad flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from algorithms import dt
from conftest import check_bad_flag, check_finished_run, docstring_loop_return
from common.data import load_dataset
from common.evaluation import eval_seed, evaluate


def tiny_model(dropout: float = 0.0, n_heads: int = 2) -> dt.DecisionTransformer:
    torch.manual_seed(0)
    return dt.DecisionTransformer(obs_dim=3, act_dim=2, dim=16, n_layers=2, n_heads=n_heads, dropout=dropout,
                                  max_timestep=50).eval()


def window(b: int = 2, k: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, k, generator=g), torch.randn(b, k, 3, generator=g), torch.rand(b, k, 2, generator=g) * 2 - 1,
            torch.randint(0, 50, (b, k), generator=g), torch.ones(b, k, dtype=torch.bool))


# ----------------------------------------------------------------------------------------------
# The causal mask: no token sees the future
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["rtg", "obs", "action"])
@pytest.mark.parametrize("j", [0, 2, 4])
def test_a_later_token_does_not_change_earlier_predictions(token, j):
    model = tiny_model()
    rtg, obs, act, t, mask = window()
    with torch.no_grad():
        before = model(rtg, obs, act, t, mask)
        rtg2, obs2, act2 = rtg.clone(), obs.clone(), act.clone()
        {"rtg": rtg2, "obs": obs2, "action": act2}[token][:, j] += 5.0  # perturb step j's token only
        after = model(rtg2, obs2, act2, t, mask)
    # a^_i reads the tokens up to s_i: R_j and s_j reach a^_j on; a_j comes after s_j and reaches a^_{j+1} on
    first_changed = j + 1 if token == "action" else j
    torch.testing.assert_close(after[:, :first_changed], before[:, :first_changed], rtol=0, atol=0)
    if first_changed < after.shape[1]:
        assert (after[:, first_changed:] - before[:, first_changed:]).abs().amax(-1).min() > 1e-6


def test_attention_mask_is_causal_and_hides_padding():
    mask = torch.tensor([[False, True, True]])  # step 0 is left padding
    allowed = dt.attention_mask(mask)[0, 0]  # [9, 9] over tokens R0 s0 a0 R1 s1 a1 R2 s2 a2
    assert allowed.shape == (9, 9)
    assert not torch.triu(allowed, diagonal=1).any()  # nothing after itself
    assert allowed.diagonal().all()  # every token sees itself (padding too: no empty softmax row)
    assert not allowed[3:, :3].any()  # real tokens never see the padding
    assert allowed[3:, 3:].equal(torch.ones(6, 6, dtype=torch.bool).tril())


def test_padding_does_not_change_the_real_steps():
    model = tiny_model()
    rtg, obs, act, t, mask = window()
    mask[:, :2] = False
    with torch.no_grad():
        before = model(rtg, obs, act, t, mask)
        obs2, act2, rtg2 = obs.clone(), act.clone(), rtg.clone()
        obs2[:, :2], act2[:, :2], rtg2[:, :2] = 9.0, -9.0, 100.0
        after = model(rtg2, obs2, act2, t, mask)
    torch.testing.assert_close(after[:, 2:], before[:, 2:], rtol=0, atol=1e-6)
    assert torch.isfinite(after).all()


def test_gpt2_init():
    model = dt.DecisionTransformer(obs_dim=3, act_dim=2, dim=128, n_layers=3, n_heads=1, dropout=0.1, max_timestep=9)
    block = model.blocks[0]
    assert abs(block.attn.qkv.weight.std().item() - 0.02) < 0.002
    assert abs(block.mlp[2].weight.std().item() - 0.02 / 6**0.5) < 0.001  # residual projection: 0.02 / sqrt(2 * 3)
    assert abs(block.attn.proj.weight.std().item() - 0.02 / 6**0.5) < 0.001
    assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.ln1.weight == 1)


# ----------------------------------------------------------------------------------------------
# Trajectories and returns-to-go, by hand
# ----------------------------------------------------------------------------------------------
def test_returns_to_go_restart_at_episode_ends_terminals_and_timeouts():
    # two logged episodes (starts 0 and 5); inside the first, a terminal at row 1 and a timeout at row 3 also end
    # a trajectory: trajectories are rows [0, 1], [2, 3], [4], [5, 6, 7]
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    terminals = np.array([0, 1, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    timeouts = np.array([0, 0, 0, 1, 0, 0, 0, 1], dtype=np.float32)
    starts, lengths = dt.trajectory_bounds(terminals, timeouts, np.array([0, 5]), 8)
    assert starts.tolist() == [0, 2, 4, 5] and lengths.tolist() == [2, 2, 1, 3]
    # R_t = sum of the rewards from t to the end of its trajectory
    rtg = dt.returns_to_go(rewards, starts, lengths)
    np.testing.assert_allclose(rtg, [1 + 2, 2, 3 + 4, 4, 5, 6 + 7 + 8, 7 + 8, 8])
    assert dt.timesteps_in_trajectory(starts, lengths).tolist() == [0, 1, 0, 1, 0, 0, 1, 2]
    # a flag on the last row of an episode adds no empty trajectory
    starts, lengths = dt.trajectory_bounds(np.zeros(3), np.array([0, 0, 1]), np.array([0]), 3)
    assert starts.tolist() == [0] and lengths.tolist() == [3]


def test_windows_stay_inside_their_trajectory_and_pad_on_the_left():
    # trajectories [0, 1, 2] and [3 .. 9]; observations are the row index, so a window shows where it came from
    n = 10
    obs = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 2)
    act = -obs[:, :1]
    rtg, steps = torch.arange(n, dtype=torch.float32) * 10, torch.tensor([0, 1, 2, 0, 1, 2, 3, 4, 5, 6])
    traj_end = torch.tensor([3, 3, 3, 10, 10, 10, 10, 10, 10, 10])
    g = torch.Generator().manual_seed(0)
    rtg_w, obs_w, act_w, t_w, mask = dt.sample_windows(obs, act, rtg, steps, traj_end, 500, 4, g)
    assert obs_w.shape == (500, 4, 2) and act_w.shape == (500, 4, 1) and mask.shape == (500, 4)
    starts = set()
    for b in range(500):
        real = obs_w[b, mask[b], 0].long()
        assert mask[b].tolist() == sorted(mask[b].tolist())  # padding (False) first, then the real steps
        assert real.tolist() == list(range(real[0], real[0] + len(real)))  # consecutive rows
        assert int(traj_end[real[0]]) == int(traj_end[real[-1]])  # one trajectory
        assert len(real) == min(4, int(traj_end[real[0]]) - int(real[0]))  # as long as it can be, at most K
        torch.testing.assert_close(rtg_w[b, mask[b]], rtg[real])
        torch.testing.assert_close(t_w[b, mask[b]], steps[real])
        torch.testing.assert_close(act_w[b, mask[b], 0], -real.float())
        assert (obs_w[b, ~mask[b]] == 0).all() and (rtg_w[b, ~mask[b]] == 0).all()
        starts.add(int(real[0]))
    assert starts == set(range(n))  # every transition starts windows: trajectories drawn in proportion to length


def test_action_loss_ignores_padding():
    pred = torch.tensor([[[0.5, 0.0], [1.0, 1.0]]], requires_grad=True)
    act = torch.tensor([[[9.0, 9.0], [0.0, 3.0]]])
    mask = torch.tensor([[False, True]])
    # only step 1: ((1 - 0)^2 + (1 - 3)^2) / 2 = 2.5
    loss = dt.action_loss(pred, act, mask)
    torch.testing.assert_close(loss, torch.tensor(2.5))
    loss.backward()
    torch.testing.assert_close(pred.grad, torch.tensor([[[0.0, 0.0], [1.0, -2.0]]]))  # 2 (a^ - a) / 2


# ----------------------------------------------------------------------------------------------
# Acting: the history each episode keeps
# ----------------------------------------------------------------------------------------------
class Recorder(torch.nn.Module):
    """Stands in for DTPolicy: records its inputs, acts with the step's return-to-go."""

    def __init__(self):
        super().__init__()
        self.obs_mean = torch.zeros(2)
        self.model = torch.nn.Module()
        self.model.predict_action = torch.nn.Sequential(torch.nn.Linear(1, 1))
        self.calls = []

    def forward(self, rtg, obs, actions, timesteps, mask):
        self.calls.append([x.clone() for x in (rtg, obs, actions, timesteps, mask)])
        return rtg[:, -1:] / 1000


def test_history_policy_tracks_returns_to_go_and_drops_ended_episodes():
    module = Recorder()
    policy = dt.HistoryPolicy(module, context=3, target_return=100.0, device=torch.device("cpu"))
    policy.reset(2)
    a0 = policy(np.array([[1, 1], [2, 2]], np.float32))
    np.testing.assert_allclose(a0, [[0.1], [0.1]])
    policy.observe(np.array([10.0, 20.0]), np.array([False, False]))
    policy(np.array([[3, 3], [4, 4]], np.float32))
    policy.observe(np.array([5.0, 1.0]), np.array([True, False]))  # episode 0 ends
    a2 = policy(np.array([[5, 5]], np.float32))
    np.testing.assert_allclose(a2, [[0.079]])  # 100 - 20 - 1
    rtg, obs, actions, timesteps, mask = module.calls[-1]
    assert mask.tolist() == [[True, True, True]]
    assert rtg.tolist() == [[100.0, 80.0, 79.0]] and timesteps.tolist() == [[0, 1, 2]]
    assert obs[0, :, 0].tolist() == [2.0, 4.0, 5.0]
    assert actions[0, :2, 0].tolist() == pytest.approx([0.1, 0.08]) and actions[0, 2, 0] == 0  # current: zero
    rtg, obs, actions, timesteps, mask = module.calls[0]
    assert mask.tolist() == [[False, False, True]] * 2 and rtg[:, -1].tolist() == [100.0, 100.0]
    policy(np.array([[6, 6]], np.float32))  # a fourth step: only the last K = 3 are kept
    assert module.calls[-1][1][0, :, 0].tolist() == [4.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="call reset"):
        policy(np.zeros((2, 2), np.float32))
    policy.reset(3)
    policy(np.zeros((3, 2), np.float32))
    assert module.calls[-1][4].tolist() == [[False, False, True]] * 3


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process, with the paper's two Hopper targets
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = dt.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                   checkpoint_every=100, batch_size=16, hidden_dim=32, runs_dir=str(tmp_path / "runs"),
                   progress=False)
    result = dt.train(args)
    run_dir, _, ckpt = check_finished_run(dt, args, result, loss_key="loss/actor", networks=("model",),
                                          finite=("loss/actor",))
    assert result["target_returns"] == [3600.0, 1800.0]  # Hopper's, from the paper
    for record in result["evals"]:
        assert [t["target"] for t in record["targets"]] == [3600.0, 1800.0]
        assert record["targets"][0]["score"] == record["score"]
    # each target's score is what load_policy conditioned on that target scores
    env_spec = load_dataset(tiny_hopper).env_spec
    second = result["evals"][-1]["targets"][1]
    returns = evaluate(dt.load_policy(run_dir, target_return=1800.0), env_spec, args.eval_episodes, seed=args.seed)
    assert float(returns.mean()) == second["return"]
    # the loop load_policy's docstring shows a user acts as evaluation does (one episode, its seed)
    first = evaluate(dt.load_policy(run_dir), env_spec, 1, seed=args.seed)
    assert docstring_loop_return(dt, run_dir, env_spec, eval_seed(args.seed, 0)) == float(first[0])
    # AdamW with its warm-up: lr = 1e-4 * 200 / 10000 after 200 updates
    assert ckpt["opt"]["param_groups"][0]["decoupled_weight_decay"] is True
    assert float(ckpt["opt"]["param_groups"][0]["lr"]) == pytest.approx(1e-4 * 201 / 10_000)


def test_target_returns_from_the_flag_or_the_data(tiny_hopper, tmp_path):
    args = dt.Args(dataset=tiny_hopper, total_steps=10, eval_every=10, eval_episodes=1, log_every=10,
                   batch_size=8, hidden_dim=16, n_layers=1, target_return=[50.0, 5.0, 500.0],
                   runs_dir=str(tmp_path / "runs"), progress=False)
    result = dt.train(args)
    assert [t["target"] for t in result["evals"][0]["targets"]] == [50.0, 5.0, 500.0]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert dt.load_policy(run_dir).target_return == 50.0
    assert json.loads((run_dir / "args.json").read_text())["target_return"] == [50.0, 5.0, 500.0]

    class NoPaperEnv:  # an environment the paper did not evaluate: the data's best episode return
        env_spec = None

        @staticmethod
        def episode_returns():
            return np.array([3.0, 7.5, 1.0])
    assert dt.default_target_returns(NoPaperEnv) == [7.5]


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("context_length", 0, "--context-length"), ("hidden_dim", 0, "--hidden-dim"),
    ("n_layers", 0, "--n-layers"), ("n_heads", 3, "--n-heads"), ("dropout", 1.0, "--dropout"),
    ("weight_decay", -1e-4, "--weight-decay"), ("lr_warmup_steps", -1, "--lr-warmup-steps"),
    ("grad_clip", 0.0, "--grad-clip"), ("return_scale", 0.0, "--return-scale"), ("target_return", [],
                                                                                  "--target-return"),
    ("target_return", [float("nan")], "--target-return"), ("actor_lr", 0.0, "--actor-lr"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(dt, field, value, flag, tmp_path)
