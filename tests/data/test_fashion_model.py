"""The shipped Fashion-MNIST model: the script that trains it, the weights, ``--model demo``."""

from __future__ import annotations

import pytest
import torch

from rs_plugin import Gaussian, RSValueError
from rs_plugin.cli import main
from rs_plugin.cli.models import load_model_for
from rs_plugin.data import (
    FASHION_MNIST_DIR,
    FASHION_SIGMA,
    FASHION_WEIGHTS,
    DemoCNN,
    FashionCNN,
    load_fashion_model,
    load_idx,
    shipped_model,
)
from rs_plugin.data.train_fashion import TRAINERS, fashion_objective, train_fashion_model
from rs_plugin.data.train_fashion import main as train_main
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
    """The shipped model, trained for σ = FASHION_SIGMA, on 1000 noisy test images (one draw
    each): far above chance; docs/art.md gives its certified figures."""
    assert FASHION_WEIGHTS.is_file()
    model = load_fashion_model()
    x, y = load_idx(FASHION_MNIST_DIR, "test")
    noisy = Gaussian(FASHION_SIGMA).perturb(x[:1000], torch.Generator().manual_seed(0))
    with torch.no_grad():
        accuracy = float((model(noisy).argmax(1) == y[:1000]).double().mean())
    assert accuracy > 0.7


def test_demo_means_the_model_shipped_for_the_data():
    assert isinstance(shipped_model("fashion-mnist"), FashionCNN)
    assert isinstance(shipped_model("digits"), DemoCNN)
    assert isinstance(load_model_for("demo", "fashion-mnist"), FashionCNN)
    assert isinstance(load_model_for("demo", "digits"), DemoCNN)


@pytest.mark.fashion_mnist
def test_certify_fashion_mnist_works_with_the_default_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "fashion.jsonl"
    args = ["certify", "--data", "fashion-mnist", "--limit", "3", "--n0", "20", "-n", "200"]
    assert main([*args, "--out", str(out)]) == 0
    assert "certified accuracy" in capsys.readouterr().out
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
