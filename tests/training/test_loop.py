"""The training loop: seeded, checks its data before the first step, one step per chunk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rs_plugin import Gaussian, RSValueError
from rs_plugin.data import load_digits
from rs_plugin.training import (
    CATRS,
    MACER,
    Consistency,
    NoiseAugmentation,
    SmoothAdv,
    SmoothMix,
    TrainingGenerators,
    train,
)


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _data(count: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits("train")
    return x[:count], y[:count]


def _train(seed: int, count: int = 200, **options) -> nn.Module:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data(count)
    options = {"epochs": 2, "batch_size": 32, **options}
    return train(
        model,
        NoiseAugmentation(Gaussian(0.25)),
        x,
        y,
        optimizer=optimizer,
        generators=seed,
        **options,
    )


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_the_seed_decides_the_weights_and_the_global_rng_is_untouched():
    state = torch.get_rng_state()
    first = _train(0)
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(first, _train(0))
    assert not _same(first, _train(1))
    assert not first.training


def test_generators_continue_across_calls():
    """Two calls of one epoch with kept generators equal one call of two epochs."""
    x, y = _data()
    objective = NoiseAugmentation(Gaussian(0.25))
    once = _model()
    train(
        once,
        objective,
        x,
        y,
        optimizer=torch.optim.SGD(once.parameters(), lr=0.1),
        epochs=2,
        generators=4,
    )
    twice = _model()
    optimizer = torch.optim.SGD(twice.parameters(), lr=0.1)
    generators = TrainingGenerators.from_seed(4)
    for _ in range(2):
        train(twice, objective, x, y, optimizer=optimizer, epochs=1, generators=generators)
    assert _same(once, twice)


@pytest.mark.parametrize(
    ("x", "y", "parameter"),
    [
        (torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.int64), "x"),
        (torch.zeros(4, 1, 8, 8), torch.zeros(4), "y"),
        (torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.int64), "y"),
        (torch.zeros(4, 1, 8, 8), -torch.ones(4, dtype=torch.int64), "y"),
    ],
)
def test_bad_data_is_refused_before_the_first_step(x, y, parameter):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RSValueError, match=f"^{parameter}: expected "):
        train(
            model,
            NoiseAugmentation(Gaussian(0.25)),
            x,
            y,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        )
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_one_step_per_chunk_and_one_scheduler_step_per_epoch():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    x, y = _data(100)
    # 100 inputs in batches of 40: 3 batches, each split into m = 2 chunks.
    train(
        model,
        Consistency(Gaussian(0.25)),
        x,
        y,
        optimizer=optimizer,
        epochs=2,
        batch_size=40,
        scheduler=scheduler,
    )
    assert len(steps) == 2 * 3 * 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)
    steps.clear()
    train(
        model,
        NoiseAugmentation(Gaussian(0.25)),
        x,
        y,
        optimizer=optimizer,
        batch_size=40,
        drop_last=True,
    )
    assert len(steps) == 2


@pytest.mark.slow
def test_training_lowers_the_loss_on_noisy_inputs():
    x, y = _data(600)
    model = _train(0, count=600, epochs=10)
    generator = torch.Generator().manual_seed(9)
    noisy = Gaussian(0.25).perturb(x, generator)
    with torch.no_grad():
        trained = nn.functional.cross_entropy(model(noisy), y)
        untrained = nn.functional.cross_entropy(_model()(noisy), y)
    assert float(trained) < 0.5 * float(untrained)


@pytest.mark.parametrize(
    "objective",
    [
        SmoothAdv(Gaussian(0.25), epsilon=0.5, num_noise_vec=2, num_steps=2),
        MACER(Gaussian(0.25), num_noise_samples=4),
        Consistency(Gaussian(0.25)),
        SmoothMix(Gaussian(0.25), num_noise_vec=2, num_steps=2),
        CATRS(Gaussian(0.25), num_noise_vec=2, num_steps=2),
    ],
    ids=lambda objective: objective.name,
)
def test_every_objective_trains_reproducibly_from_the_seed(objective):
    x, y = _data(48)

    def run(seed: int) -> nn.Module:
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return train(model, objective, x, y, optimizer=optimizer, batch_size=16, generators=seed)

    first = run(0)
    assert _same(first, run(0))
    assert not _same(first, run(1))


class _EpochRecorder(NoiseAugmentation):
    """Noise augmentation that records the epoch index the loop passes."""

    def __init__(self) -> None:
        super().__init__(Gaussian(0.25))
        self.epochs: list[int] = []

    def loss(self, model, x, y, *, generator, epoch):
        self.epochs.append(epoch)
        return super().loss(model, x, y, generator=generator, epoch=epoch)


def test_first_epoch_is_the_index_objectives_see():
    """Epoch by epoch from first_epoch = e continues the warm-up schedules of one long call."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    objective = _EpochRecorder()
    x, y = _data(20)
    train(model, objective, x, y, optimizer=optimizer, epochs=2, batch_size=10, first_epoch=5)
    assert objective.epochs == [5, 5, 6, 6]
    with pytest.raises(RSValueError, match="^first_epoch"):
        train(model, objective, x, y, optimizer=optimizer, first_epoch=-1)
