"""The papers' recipe, and training that resumes from its checkpoint to the weights of an
uninterrupted run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rs_plugin import Gaussian, RSValueError
from rs_plugin.data import LeNet, build_lenet
from rs_plugin.training import Consistency, SGDRecipe, published_recipe
from rs_plugin.training.resumable import load_checkpoint, save_checkpoint, train_resumable


def _load(path, config) -> dict:
    state = load_checkpoint(path, config)
    assert state is not None
    return state


def _data(count: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand((count, 1, 28, 28), generator=generator), torch.arange(count) % 10


def test_published_recipe_drops_the_rate_tenfold_at_one_and_two_thirds():
    recipe = published_recipe()
    assert (recipe.epochs, recipe.step_size, recipe.batch_size) == (90, 30, 256)
    optimizer = recipe.optimizer(nn.Linear(2, 2).parameters())
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 1e-4
    scheduler = recipe.scheduler(optimizer)
    rates = []
    for _ in range(recipe.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == rates[29] == pytest.approx(0.01)
    assert rates[30] == rates[59] == pytest.approx(0.001)
    assert rates[60] == rates[89] == pytest.approx(0.0001)
    assert published_recipe(150).step_size == 50 and published_recipe(10).step_size == 4
    with pytest.raises(RSValueError, match="^momentum"):
        SGDRecipe(momentum=1.0)


def test_build_lenet_is_the_papers_network_seeded():
    model = build_lenet(3)
    assert isinstance(model, LeNet)
    assert sum(p.numel() for p in model.parameters()) == 431_080
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    state = torch.random.get_rng_state()
    again, other = build_lenet(3), build_lenet(4)
    assert torch.equal(torch.random.get_rng_state(), state)
    pairs = zip(model.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not torch.equal(next(model.parameters()), next(other.parameters()))


class _Crash(Exception):
    pass


def test_a_run_stopped_after_a_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path):
    """Stopped during its second epoch (the checkpoint holds the first), the run resumes with a
    fresh model and optimiser and ends with the uninterrupted run's weights, optimiser state and
    generators (same process, so exact equality)."""
    x, y = _data(64)
    recipe = SGDRecipe(batch_size=32, epochs=3, step_size=2)
    objective = Consistency(Gaussian(0.25), num_noise_vec=2)
    config = {"run": "test"}

    def run(folder: str, crash_at: int | None = None) -> tuple[nn.Module, list]:
        def on_epoch(model: nn.Module, epoch: int) -> dict:
            if epoch == crash_at:
                raise _Crash
            return {"seen": epoch}

        return train_resumable(
            build_lenet(0), objective, x, y, recipe=recipe, checkpoint=tmp_path / folder / "c.pt",
            config=config, seed=7, on_epoch=on_epoch,
        )  # fmt: skip

    whole, log = run("whole")
    with pytest.raises(_Crash):
        run("stopped", crash_at=1)
    assert _load(tmp_path / "stopped" / "c.pt", config)["epoch"] == 1
    resumed, resumed_log = run("stopped")
    assert [e["epoch"] for e in resumed_log] == [e["epoch"] for e in log] == [1, 2, 3]
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    first = _load(tmp_path / "whole" / "c.pt", config)
    second = _load(tmp_path / "stopped" / "c.pt", config)
    assert torch.equal(first["noise_rng"], second["noise_rng"])
    assert torch.equal(first["shuffle_rng"], second["shuffle_rng"])
    assert first["scheduler"] == second["scheduler"]
    assert sorted(p.name for p in (tmp_path / "stopped").iterdir()) == ["c.pt"]


def test_a_checkpoint_of_other_arguments_is_refused(tmp_path):
    x, y = _data(32)
    recipe = SGDRecipe(batch_size=32, epochs=1)
    objective = Consistency(Gaussian(0.25), num_noise_vec=2)
    path = tmp_path / "c.pt"
    train_resumable(
        build_lenet(0), objective, x, y, recipe=recipe, checkpoint=path, config={"sigma": 0.25}
    )
    with pytest.raises(RSValueError, match=r"^workdir: .*other values of \['sigma'\]"):
        train_resumable(
            build_lenet(0), objective, x, y, recipe=recipe, checkpoint=path, config={"sigma": 0.5}
        )


def test_save_checkpoint_replaces_the_file_whole(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": 1, "config": "{}", "value": torch.ones(3)})
    save_checkpoint(path, {"format": 1, "config": "{}", "value": torch.zeros(3)})
    assert torch.equal(_load(path, {})["value"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
