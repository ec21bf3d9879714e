"""Re-train the shipped denoised-smoothing pair: ``python -m rs_plugin.data.train_denoised``.

Two steps, each checkpointed after every epoch in ``--workdir`` and resumed when run again:

* ``classifier``: the papers' LeNet (:func:`~rs_plugin.data.build_lenet`) trained on clean
  Fashion-MNIST images only (all 60 000), Adam with a cosine schedule, batch 128;
* ``denoiser``: a :class:`~rs_plugin.denoising.ConditionalDenoiser` trained with one of the
  :class:`~rs_plugin.training.DenoiserObjective` losses for Gaussian noise with σ ~ U[0, 1]
  (or one fixed σ with ``--sigma``), from scratch or from ``--init`` weights, the classifier
  frozen.

The shipped files: ``fashion_clean_lenet.pt`` (``classifier``), ``fashion_denoiser_mse.pt``
(``denoiser --loss mse``) and ``fashion_denoiser.pt`` (``denoiser --loss stability+mse --init
fashion_denoiser_mse.pt``, Salman et al.'s recipe: MSE first, then stability + MSE). Every
random draw comes from ``--seed``; the global RNG state is restored afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from rs_plugin._validation import RSValueError
from rs_plugin.data._datasets import FASHION_MNIST_DIR, load_idx
from rs_plugin.data._lenet import build_lenet
from rs_plugin.denoising.denoiser import build_denoiser
from rs_plugin.smoothings.gaussian import Gaussian
from rs_plugin.training.denoising import DENOISER_LOSSES, DenoiserObjective
from rs_plugin.training.loop import TrainingGenerators, train
from rs_plugin.training.resumable import load_checkpoint, save_checkpoint

__all__ = ["denoised_accuracy", "main", "train_clean_classifier", "train_denoiser"]


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        hits = sum(int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum()) for i in
                   range(0, len(x), 1000))  # fmt: skip
    return hits / len(x)


def train_clean_classifier(
    workdir: Path,
    *,
    epochs: int,
    seed: int,
    data_dir: Path,
    lr: float = 1e-3,
    stop_after: int | None = None,
) -> torch.nn.Module:
    """LeNet on clean training images, one checkpoint per epoch in ``workdir``; with
    ``stop_after`` k, the weights after the first k epochs of the ``epochs``-epoch schedule."""
    x, y = load_idx(data_dir, "train")
    xt, yt = load_idx(data_dir, "test")
    model = build_lenet(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    shuffle = torch.Generator().manual_seed(seed + 1)
    config = {"step": "classifier", "epochs": epochs, "seed": seed, "lr": lr}
    path = workdir / "classifier.ckpt"
    state = load_checkpoint(path, config)
    first, log = 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        shuffle.set_state(state["shuffle_rng"])
        first, log = int(state["epoch"]), json.loads(state["log"])
    for epoch in range(first, epochs if stop_after is None else min(stop_after, epochs)):
        cpu = time.process_time()
        model.train()
        order = torch.randperm(len(x), generator=shuffle)
        for start in range(0, len(x), 128):
            batch = order[start : start + 128]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        model.eval()
        log.append({"epoch": epoch + 1, "cpu_seconds": time.process_time() - cpu,
                    "test_accuracy": _accuracy(model, xt, yt)})  # fmt: skip
        print(json.dumps(log[-1]), flush=True)
        save_checkpoint(path, {
            "format": 1, "config": json.dumps(config, sort_keys=True), "epoch": epoch + 1,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(), "shuffle_rng": shuffle.get_state(),
            "log": json.dumps(log),
        })  # fmt: skip
    return model.eval()


def train_denoiser(
    workdir: Path,
    *,
    loss: str,
    classifier_weights: Path | None,
    init: Path | None,
    sigma: float | None,
    epochs: int,
    seed: int,
    data_dir: Path,
    lr: float = 1e-3,
    name: str = "denoiser",
    stop_after: int | None = None,
) -> torch.nn.Module:
    """A denoiser trained with ``loss``, one checkpoint per epoch in ``workdir`` (``stop_after``
    as for :func:`train_clean_classifier`)."""
    x, y = load_idx(data_dir, "train")
    sigma_range = (0.0, 1.0) if sigma is None else (sigma, sigma)
    denoiser = build_denoiser(seed, sigma_range=sigma_range)
    if init is not None:
        denoiser.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    classifier = None
    if loss != "mse":
        if classifier_weights is None:
            raise RSValueError("--classifier", f"the frozen classifier's weights for {loss}", None)
        classifier = build_lenet()
        classifier.load_state_dict(
            torch.load(classifier_weights, map_location="cpu", weights_only=True)
        )
        classifier.eval()
    # Gaussian(1) draws unit noise; DenoiserObjective rescales it to each input's σ.
    objective = DenoiserObjective(
        Gaussian(sigma if sigma is not None else 1.0), loss=loss, classifier=classifier,
        sigma_range=None if sigma is not None else sigma_range,
    )  # fmt: skip
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generators = TrainingGenerators.from_seed(seed)
    config: dict[str, Any] = {
        "step": name, "loss": loss, "init": str(init), "sigma": sigma, "epochs": epochs,
        "seed": seed, "lr": lr, "classifier": str(classifier_weights),
    }  # fmt: skip
    path = workdir / f"{name}.ckpt"
    state = load_checkpoint(path, config)
    first, log = 0, []
    if state is not None:
        denoiser.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        generators.noise.set_state(state["noise_rng"])
        generators.shuffle.set_state(state["shuffle_rng"])
        first, log = int(state["epoch"]), json.loads(state["log"])
    for epoch in range(first, epochs if stop_after is None else min(stop_after, epochs)):
        cpu = time.process_time()
        train(denoiser, objective, x, y, optimizer=optimizer, epochs=1, batch_size=128,
              generators=generators, scheduler=schedule, first_epoch=epoch)  # fmt: skip
        log.append({"epoch": epoch + 1, "cpu_seconds": time.process_time() - cpu})
        print(json.dumps(log[-1]), flush=True)
        save_checkpoint(path, {
            "format": 1, "config": json.dumps(config, sort_keys=True), "epoch": epoch + 1,
            "model": denoiser.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(), "noise_rng": generators.noise.get_state(),
            "shuffle_rng": generators.shuffle.get_state(), "log": json.dumps(log),
        })  # fmt: skip
    return denoiser.eval()


def denoised_accuracy(
    classifier: torch.nn.Module,
    denoiser: torch.nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    *,
    seed: int = 0,
) -> float:
    """The classifier's accuracy on x + N(0, σ²I), one draw per image (seeded), behind the
    denoiser when one is given: a quick proxy of how much a denoiser helps, not a certificate."""
    generator = torch.Generator().manual_seed(seed)
    hits = 0
    with torch.no_grad():
        for start in range(0, len(x), 1000):
            batch = x[start : start + 1000]
            noisy = batch + sigma * torch.randn(batch.shape, generator=generator)
            if denoiser is not None:
                noisy = denoiser(noisy, sigma)
            hits += int((classifier(noisy).argmax(1) == y[start : start + 1000]).sum())
    return hits / len(x)


def _evaluate(args: argparse.Namespace) -> None:
    """``evaluate``: denoised_accuracy of each ``--denoiser`` file on the test set."""
    x, y = load_idx(args.data_dir, "test")
    classifier = build_lenet()
    classifier.load_state_dict(torch.load(args.classifier, map_location="cpu", weights_only=True))
    classifier.eval()
    loaded = {}
    for path in args.denoiser:
        denoiser = build_denoiser()  # the trained σ range comes with the weights
        denoiser.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        loaded[str(path)] = denoiser.eval()
    for sigma in args.sigmas:
        accuracy = denoised_accuracy(classifier, None, x, y, sigma, seed=args.seed)
        print(json.dumps({"sigma": sigma, "denoiser": None, "accuracy": accuracy}))
        for name, denoiser in loaded.items():
            low, high = denoiser.sigma_range
            if low <= sigma <= high:
                accuracy = denoised_accuracy(classifier, denoiser, x, y, sigma, seed=args.seed)
                print(json.dumps({"sigma": sigma, "denoiser": name, "accuracy": accuracy}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("classifier", "denoiser", "evaluate"))
    parser.add_argument("--out", type=Path, default=None, help="where to save the weights")
    parser.add_argument("--workdir", type=Path, default=None, help="checkpoints (resumed)")
    parser.add_argument(
        "--denoiser", type=Path, action="append", default=[], help="evaluate: denoiser weights"
    )
    parser.add_argument(
        "--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="evaluate: noise levels"
    )
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--loss", choices=DENOISER_LOSSES, default="mse")
    parser.add_argument("--classifier", type=Path, default=None, help="frozen classifier")
    parser.add_argument("--init", type=Path, default=None, help="initial denoiser weights")
    parser.add_argument("--sigma", type=float, default=None, help="one σ (default U[0, 1])")
    parser.add_argument("--name", default="denoiser", help="checkpoint name in --workdir")
    parser.add_argument(
        "--stop-after", type=int, default=None, help="stop after this many epochs of the schedule"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data-dir", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.step == "evaluate":
        if args.classifier is None:
            parser.error("evaluate needs --classifier")
        _evaluate(args)
        return
    if args.out is None or args.workdir is None:
        parser.error(f"{args.step} needs --out and --workdir")
    args.workdir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        if args.step == "classifier":
            model = train_clean_classifier(
                args.workdir, epochs=args.epochs, seed=args.seed, data_dir=args.data_dir,
                lr=args.lr, stop_after=args.stop_after,
            )  # fmt: skip
        else:
            model = train_denoiser(
                args.workdir, loss=args.loss, classifier_weights=args.classifier,
                init=args.init, sigma=args.sigma, epochs=args.epochs, seed=args.seed,
                data_dir=args.data_dir, lr=args.lr, name=args.name, stop_after=args.stop_after,
            )  # fmt: skip
    torch.save(model.state_dict(), args.out)
    print(f"saved {args.out}", flush=True)


if __name__ == "__main__":
    main()
