"""Fixtures shared by the test packages.

* ``in_tmp_path``: run the test in its own temporary directory, so nothing a command writes by
  default (``results.jsonl``, ``out/``) lands in the working tree.
* ``digits``: the embedded demo CNN with the first 30 test digits, ``(model, x, y)``, loaded
  once per session; every test gets its own copies, so a test that changes them changes nothing
  for the next.

Tests marked ``slow`` (``@pytest.mark.slow``: the bench, Ray, kill loops, training and long
audits) run in ``make test`` and are left out by ``make test-fast`` (``pytest -m "not slow"``).

``make test`` and ``make test-fast`` run the suite in two processes (pytest-xdist,
``PYTEST_WORKERS``; ``--dist worksteal``): a test may run beside any other, so it writes only
under its own ``tmp_path``, starts its own Ray and labels a timing by the load it measured
(``rs_plugin.bench.timing``), never by the load it expects.

Tests marked ``fashion_mnist`` read Debian's ``dataset-fashion-mnist`` (which ``make test``
installs, with root or sudo): where it is missing they are skipped with a message naming the
package, except under CI (the ``CI`` environment variable set), where a missing dataset fails
them, so that no CI run passes without them.
"""

from __future__ import annotations

import copy
import os

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


FASHION_MNIST_MISSING = (
    "needs Debian's package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist): "
    "apt-get install dataset-fashion-mnist, as root or with sudo (make test installs it)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fashion_mnist: reads Debian's dataset-fashion-mnist (skipped where missing)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("fashion_mnist") is None:
        return
    from rs_plugin.data import FASHION_MNIST_DIR

    if (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(FASHION_MNIST_MISSING)
    pytest.skip(FASHION_MNIST_MISSING)
