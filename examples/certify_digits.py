"""Certify the embedded digits model with Gaussian smoothing, from Python.

python examples/certify_digits.py [--inputs 20] [-n 10000]
"""

from __future__ import annotations

import argparse

from rs_plugin import Gaussian, SmoothedClassifier
from rs_plugin.data import load_demo_model, load_digits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("-n", type=int, default=10_000)
    args = parser.parse_args(argv)

    x, y = load_digits("test")
    x, y = x[: args.inputs], y[: args.inputs]
    smoothed = SmoothedClassifier(load_demo_model(), Gaussian(sigma=0.25), num_classes=10)
    certificates = smoothed.certify(x, n0=100, n=args.n, alpha=0.001, batch_size=1000, seed=0)

    print(f"{'index':>5} {'label':>5} {'prediction':>10} {'radius':>8} {'p_lower':>8}")
    for i in range(len(certificates)):
        print(
            f"{int(certificates.index[i]):>5} {int(y[i]):>5} "
            f"{int(certificates.prediction[i]):>10} {float(certificates.radius[i]):>8.3f} "
            f"{float(certificates.p_lower[i]):>8.4f}"
        )
    correct = certificates.prediction == y
    print(
        f"certified accuracy at l2 radius 0.25: "
        f"{float((correct & (certificates.radius >= 0.25)).double().mean()):.1%}"
    )


if __name__ == "__main__":
    main()
