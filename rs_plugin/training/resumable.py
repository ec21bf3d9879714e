"""Training that survives a kill: a checkpoint after every epoch, resumed on the next call.

The checkpoint holds everything the next epoch depends on: the model's and the optimiser's
state, the scheduler's, both generators of :class:`~rs_plugin.training.loop.TrainingGenerators`,
the number of finished epochs and the run's configuration. It is written to a temporary file in
the same folder, flushed to disk and moved over the previous one with ``os.replace``, so a kill
at any moment leaves either the previous checkpoint or the new one, never a partial file.

Resuming from epoch e takes the same steps as an uninterrupted run (the loop is called one epoch
at a time with ``first_epoch`` = e and the restored generators), so on the same torch build and
thread count the weights come out identical.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rs_plugin._validation import RSValueError
from rs_plugin.training.loop import TrainingGenerators, train
from rs_plugin.training.objective import Objective
from rs_plugin.training.recipe import SGDRecipe

__all__ = ["load_checkpoint", "save_checkpoint", "train_resumable"]

FORMAT = 1


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (temporary file, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load_checkpoint(path: str | Path, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None when there is none), refused unless it was written
    under ``config``."""
    path = Path(path)
    if not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    stored = json.loads(state.get("config", "null"))
    wanted = json.loads(json.dumps(dict(config)))
    if state.get("format") != FORMAT or stored != wanted:
        differences = sorted(
            key
            for key in set(stored or {}) | set(wanted)
            if (stored or {}).get(key) != wanted.get(key)
        )
        raise RSValueError(
            "workdir",
            "a folder whose checkpoint was written with the same arguments (or a new folder)",
            f"{path}, written with other values of {differences}",
        )
    return state


def train_resumable(
    model: nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    recipe: SGDRecipe,
    checkpoint: str | Path,
    config: Mapping[str, Any],
    seed: int = 0,
    on_epoch: Callable[[nn.Module, int], Mapping[str, Any]] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train ``model`` with ``recipe`` for ``recipe.epochs`` epochs, checkpointing after each.

    A checkpoint at ``checkpoint`` written under the same ``config`` (a JSON-serialisable
    mapping: the arguments that define the run) is resumed; one written under another is
    refused with an :class:`RSValueError` before any step. After each epoch ``on_epoch(model,
    epoch)`` may return figures (e.g. a test accuracy) that are logged with the epoch's process
    CPU time and wall time. Returns the model (eval mode) and the log of every epoch.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    optimizer = recipe.optimizer(model.parameters())
    scheduler = recipe.scheduler(optimizer)
    generators = TrainingGenerators.from_seed(seed, device)
    state = load_checkpoint(checkpoint, config)
    log: list[dict[str, Any]] = []
    first = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generators.noise.set_state(state["noise_rng"])
        generators.shuffle.set_state(state["shuffle_rng"])
        first = int(state["epoch"])
        log = json.loads(state["log"])
    for epoch in range(first, recipe.epochs):
        cpu, wall = time.process_time(), time.perf_counter()
        train(
            model,
            objective,
            x,
            y,
            optimizer=optimizer,
            epochs=1,
            batch_size=recipe.batch_size,
            generators=generators,
            scheduler=scheduler,
            first_epoch=epoch,
        )
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "cpu_seconds": time.process_time() - cpu,
            "wall_seconds": time.perf_counter() - wall,
            "lr": optimizer.param_groups[0]["lr"],
        }
        if on_epoch is not None:
            entry.update(on_epoch(model, epoch))
        log.append(entry)
        save_checkpoint(
            checkpoint,
            {
                "format": FORMAT,
                "config": json.dumps(dict(config), sort_keys=True),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "noise_rng": generators.noise.get_state(),
                "shuffle_rng": generators.shuffle.get_state(),
                "log": json.dumps(log),
            },
        )
    return model.eval(), log
