"""ART code with one import changed: train, predict, certify and attack a smoothed classifier.

python examples/art_swap_in.py [--epochs 5] [-n 2000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent

# from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
from rs_plugin.adapters.art import PyTorchRandomizedSmoothing
from rs_plugin.data import DemoCNN, load_digits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--inputs", type=int, default=20)
    args = parser.parse_args(argv)

    torch.manual_seed(0)  # the fresh network's initial weights
    x_train, y_train = (t.numpy() for t in load_digits("train"))
    x_test, y_test = (t.numpy() for t in load_digits("test"))
    x_test, y_test = x_test[: args.inputs], y_test[: args.inputs]

    model = DemoCNN()
    classifier = PyTorchRandomizedSmoothing(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        input_shape=(1, 8, 8),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        sample_size=100,
        scale=0.25,
        alpha=0.001,
        device_type="cpu",
    )
    classifier.fit(x_train, y_train, nb_epochs=args.epochs, batch_size=64)
    accuracy = (classifier.predict(x_test).argmax(1) == y_test).mean()
    prediction, radius = classifier.certify(x_test, n=args.n, batch_size=1000)
    certified = (prediction == y_test) & (radius >= 0.25)
    print(f"smoothed accuracy: {accuracy:.3f}")
    print(f"certified accuracy at l2 radius 0.25: {certified.mean():.3f}")

    # ART's PGD on the soft smoothed classifier (log-probability outputs for scores).
    classifier.set_params(outputs="log_probabilities")
    attack = ProjectedGradientDescent(
        classifier, norm=2, eps=0.25, eps_step=0.05, max_iter=10, verbose=False
    )
    x_adv = attack.generate(x_test, y=np.eye(10, dtype=np.float32)[y_test])
    robust = (classifier.predict(x_adv).argmax(1) == y_test).mean()
    print(f"soft smoothed accuracy under l2 PGD, eps 0.25: {robust:.3f}")


if __name__ == "__main__":
    main()
