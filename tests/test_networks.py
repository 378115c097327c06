"""The batched critic ensembles every script defines: one module, n independent MLPs."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

ALGORITHMS = Path(__file__).resolve().parents[1] / "algorithms"
# every script that defines the batched critic ensemble, so that a new script is covered without listing it
WITH_ENSEMBLE = sorted(p.stem for p in ALGORITHMS.glob("*.py") if "class EnsembleQ(" in p.read_text())


def test_the_ensemble_scripts_are_found():
    assert {"iql", "td3_bc", "cql"} <= set(WITH_ENSEMBLE)


@pytest.mark.parametrize("algo", WITH_ENSEMBLE)
def test_ensemble_q_members_are_independent_mlps(algo):
    module = importlib.import_module(f"algorithms.{algo}")
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
