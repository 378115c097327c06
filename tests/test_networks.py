"""The batched critic ensembles every script defines: one module, n independent MLPs."""

from __future__ import annotations

import pytest
import torch

from algorithms import cql, iql, td3_bc


@pytest.mark.parametrize("module", [iql, td3_bc, cql], ids=lambda m: m.__name__.split(".")[-1])
def test_ensemble_q_members_are_independent_mlps(module):
    torch.manual_seed(0)
    q = module.EnsembleQ(obs_dim=3, act_dim=2, hidden=8, n=2)
    obs, act = torch.randn(4, 3), torch.randn(4, 2)
    out = q(obs, act)
    assert out.shape == (2, 4)
    layers = [m for m in q.net if isinstance(m, module.EnsembleLinear)]
    x = torch.cat([obs, act], -1)
    for i in range(2):  # member i computed as a plain MLP: ReLU after every layer but the last
        h = x
        for k, layer in enumerate(layers):
            h = h @ layer.weight[i] + layer.bias[i]
            h = torch.relu(h) if k < len(layers) - 1 else h
        torch.testing.assert_close(out[i], h.squeeze(-1))
    assert not torch.equal(out[0], out[1])
