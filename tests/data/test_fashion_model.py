"""The shipped Fashion-MNIST models: the reproduced LeNets that ``--model demo`` picks by
``--sigma``, and the earlier CNN with the script that trains it."""

from __future__ import annotations

import json

import pytest
import torch

from rs_plugin import Gaussian, RSValueError
from rs_plugin.cli import main
from rs_plugin.cli.models import load_model_for
from rs_plugin.data import (
    FASHION_LENETS,
    FASHION_MNIST_DIR,
    FASHION_SIGMA,
    FASHION_WEIGHTS,
    DemoCNN,
    FashionCNN,
    LeNet,
    fashion_lenet_sigma,
    load_fashion_lenet,
    load_fashion_model,
    load_idx,
    shipped_model,
)
from rs_plugin.data.train_fashion import TRAINERS, fashion_objective, train_fashion_model
from rs_plugin.data.train_fashion import main as train_main
from rs_plugin.runs.fingerprints import model_fingerprint
from rs_plugin.training import train


@pytest.fixture(scope="module")
def few_images() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_idx(FASHION_MNIST_DIR, "train")
    return x[:48], y[:48]


@pytest.mark.fashion_mnist
@pytest.mark.slow
@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_objective_of_the_table_trains_the_fashion_cnn(trainer, few_images):
    objective = fashion_objective(trainer, 0.5, epochs=3)
    assert objective.smoothing.config()["sigma"] == 0.5
    model = FashionCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    train(model, objective, *few_images, optimizer=optimizer, batch_size=24, generators=0)
    with torch.no_grad():
        assert torch.isfinite(model(few_images[0][:2])).all()


@pytest.mark.fashion_mnist
@pytest.mark.slow
def test_the_training_script_runs_and_reproduces_its_weights(tmp_path):
    out = tmp_path / "fashion.pt"
    tiny = ["--epochs", "1", "--train-size", "64", "--trainer", "consistency"]
    train_main(["--out", str(out), *tiny])
    loaded = load_fashion_model(out)
    again = train_fashion_model(trainer="consistency", epochs=1, train_size=64)
    pairs = zip(loaded.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_an_unknown_trainer_names_the_parameter():
    with pytest.raises(RSValueError, match="^trainer: expected one of"):
        fashion_objective("stability", 0.25, epochs=1)


@pytest.mark.fashion_mnist
def test_shipped_weights_classify_noisy_fashion_mnist():
    """The earlier Fashion-MNIST CNN, trained for σ = FASHION_SIGMA, on 1000 noisy test images
    (one draw each): far above chance; docs/art.md gives its certified figures."""
    assert FASHION_WEIGHTS.is_file()
    model = load_fashion_model()
    x, y = load_idx(FASHION_MNIST_DIR, "test")
    noisy = Gaussian(FASHION_SIGMA).perturb(x[:1000], torch.Generator().manual_seed(0))
    with torch.no_grad():
        accuracy = float((model(noisy).argmax(1) == y[:1000]).double().mean())
    assert accuracy > 0.7


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(p, q) for p, q in pairs)


def test_demo_means_the_model_shipped_for_the_data_and_sigma():
    assert isinstance(shipped_model("fashion-mnist"), LeNet)
    assert isinstance(shipped_model("digits", 0.5), DemoCNN)
    assert isinstance(load_model_for("demo", "digits"), DemoCNN)
    low, high = load_fashion_lenet(0.25), load_fashion_lenet(0.5)
    assert not _same_weights(low, high)
    assert _same_weights(load_model_for("demo", "fashion-mnist"), low)
    assert _same_weights(load_model_for("demo", "fashion-mnist", 0.5), high)
    assert _same_weights(shipped_model("fashion-mnist", 0.3), low)
    # The nearest σ trained for; the smaller one on a tie.
    assert [fashion_lenet_sigma(s) for s in (None, 0.1, 0.375, 0.38, 2.0)] == [
        0.25, 0.25, 0.25, 0.5, 0.5
    ]  # fmt: skip
    with pytest.raises(RSValueError, match="^sigma: expected"):
        fashion_lenet_sigma(-0.5)


@pytest.mark.fashion_mnist
@pytest.mark.parametrize("sigma", sorted(FASHION_LENETS))
def test_the_shipped_lenets_classify_noisy_fashion_mnist_at_their_sigma(sigma):
    """Each shipped LeNet on 1000 test images with one draw of its own σ's noise each
    (docs/reproduction.md: 88.7 % at σ = 0.25 and 84.0 % at σ = 0.5 in training's log) and,
    against a swap of the two files, the σ = 0.5 one ahead at σ = 0.5."""
    weights, _ = FASHION_LENETS[sigma]
    assert weights.is_file() and weights.stat().st_size <= 2_000_000
    x, y = load_idx(FASHION_MNIST_DIR, "test")
    noisy = Gaussian(sigma).perturb(x[:1000], torch.Generator().manual_seed(0))
    accuracy = {}
    for trained in FASHION_LENETS:
        with torch.no_grad():
            votes = load_fashion_lenet(trained)(noisy).argmax(1)
        accuracy[trained] = float((votes == y[:1000]).double().mean())
    assert accuracy[sigma] > 0.8
    if sigma == 0.5:
        assert accuracy[0.5] > accuracy[0.25]


@pytest.mark.fashion_mnist
def test_certify_with_sigma_runs_the_lenet_trained_for_it(tmp_path, capsys):
    for sigma in (0.25, 0.5):
        out = tmp_path / f"s{sigma}.jsonl"
        argv = ["certify", "--data", "fashion-mnist", "--sigma", str(sigma), "--limit", "1"]
        assert main([*argv, "--n0", "10", "-n", "50", "--out", str(out)]) == 0
        record = json.loads(out.read_text().splitlines()[0])
        assert record["model_sha256"] == model_fingerprint(load_fashion_lenet(sigma))


@pytest.mark.fashion_mnist
def test_certify_fashion_mnist_works_with_the_default_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "fashion.jsonl"
    args = ["certify", "--data", "fashion-mnist", "--limit", "3", "--n0", "20", "-n", "200"]
    assert main([*args, "--out", str(out)]) == 0
    assert "certified accuracy" in capsys.readouterr().out
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
