"""Audit certificates from Python: certify digits, attack every certificate, write the report.

    python examples/audit_digits.py --inputs 20 --out out/audit_example

Prints the verdict line and the smallest adversarial distance found per certified input.
"""

from __future__ import annotations

import argparse

from rs_plugin import Gaussian, audit
from rs_plugin.data import load_demo_model, load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("-n", type=int, default=10_000, help="CERTIFY estimation samples")
    parser.add_argument("--attacks", default="pgd,deepfool", help="comma-separated attacks")
    parser.add_argument("--out", default="out/audit_example")
    args = parser.parse_args()

    x, y = load_digits("test")
    x, y = x[: args.inputs], y[: args.inputs]
    report = audit(
        load_demo_model(),
        Gaussian(0.25),
        x,
        y,
        num_classes=10,
        n=args.n,
        attacks=args.attacks.split(","),
    )
    report.write(args.out)
    print(report.verdict["summary"])
    print("index radius smallest_adversarial_distance")
    for row in report.inputs:
        if row["certified"]:
            distance = row["smallest_adversarial_distance"]
            shown = "none found" if distance is None else f"{distance:.3f}"
            print(f"{row['index']} {row['radius']:.3f} {shown}")


if __name__ == "__main__":
    main()
