"""A false certificate from floating-point rounding, and the sound mode that refuses it.

python examples/fp_counterexample.py [-n 10000]

The base classifier below reads the rounding residue of its input (Voráček & Hein, "Sound
randomized smoothing in floating-point arithmetic", ICLR 2023): class 0 when some coordinate z
has 0 < |z| < 2⁻⁸ and is not a multiple of 2⁻³⁰, else class 1. Around x0 = 0 the float32 noisy
input is the noise itself, whose tiny coordinates have bits below 2⁻³⁰: class 0. Around
x1 = 0.016·1 a tiny sum 0.016 + ε is exact and a multiple of 2⁻³⁰: class 1. Gaussian smoothing
in float32 certifies class 0 at x0 with a radius larger than ‖x1 − x0‖₂ = 0.448, and PREDICT at
x1 says class 1. The sound mode (inputs on the 1/255 grid, integer noise, exact sums) gives the
model only values fl(j/255): the residue is gone and its certificate agrees with x1.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from rs_plugin import Gaussian, SmoothedClassifier, SoundGaussian


class RoundingResidue(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        scaled = z * 2.0**30  # exact: a power of two
        tiny = (z != 0) & (z.abs() < 2.0**-8) & (scaled != torch.round(scaled))
        reads = tiny.any(dim=1).to(x.dtype)
        return torch.stack([reads, 1.0 - reads], dim=1).mul_(8.0).sub_(4.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10_000)
    args = parser.parse_args(argv)

    offset = 0.016
    x0 = torch.zeros(1, 1, 28, 28)
    x1 = torch.full_like(x0, offset)
    distance = offset * math.sqrt(x0.numel())
    print(f"distance ||x1 - x0||_2: {distance:.3f}")
    modes = {
        "float": Gaussian(0.25),
        "sound": SoundGaussian(0.25, grid="1/255", round_inputs=True),
    }
    for mode, smoothing in modes.items():
        smoothed = SmoothedClassifier(RoundingResidue().eval(), smoothing, num_classes=2)
        cert = smoothed.certify(x0, n0=100, n=args.n, alpha=0.001, batch_size=2000, seed=0)
        predicted = int(smoothed.predict(x1, n=1000, alpha=0.001, seed=1).prediction[0])
        certified, radius = int(cert.prediction[0]), float(cert.radius[0])
        false = radius > distance and predicted != certified
        print(
            f"{mode}: certify x0 -> class {certified} radius {radius:.3f}; "
            f"predict x1 -> class {predicted}; false certificate: {'yes' if false else 'no'}"
        )


if __name__ == "__main__":
    main()
