"""Fixtures shared by the test packages.

* ``in_tmp_path``: run the test in its own temporary directory, so nothing a command writes by
  default (``results.jsonl``, ``out/``) lands in the working tree.
* ``digits``: the embedded demo CNN with the first 30 test digits, ``(model, x, y)``, loaded
  once per session; every test gets its own copies, so a test that changes them changes nothing
  for the next.

Tests marked ``slow`` (``@pytest.mark.slow``: the bench, Ray, kill loops, training and long
audits) run in ``make test`` and are left out by ``make test-fast`` (``pytest -m "not slow"``).
"""

from __future__ import annotations

import copy

import pytest
import torch

DIGITS_INPUTS = 30


@pytest.fixture
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def _digits_once() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from rs_plugin.data import load_demo_model, load_digits

    x, y = load_digits("test")
    return load_demo_model(), x[:DIGITS_INPUTS], y[:DIGITS_INPUTS]


@pytest.fixture
def digits(_digits_once) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = _digits_once
    return copy.deepcopy(model), x.clone(), y.clone()
