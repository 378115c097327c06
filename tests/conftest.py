"""Shared fixtures: every test runs against a private, temporary Minari root."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import write_rollout_dataset as make_dataset  # noqa: E402,F401 -- used by the tests


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def tiny_hopper(minari_root):
    """A few short random-action Hopper episodes under a test id."""
    make_dataset("test/hopper/tiny-v0", episodes=6, max_steps=100)
    return "test/hopper/tiny-v0"
