"""Foolbox attacks against a smoothed classifier, directly and through the audit.

    python examples/foolbox_attacks.py --inputs 20

Needs ``pip install 'rs-plugin[foolbox]'``. First a Foolbox attack (ℓ2 PGD) runs on the soft
smoothed classifier wrapped as a ``foolbox.PyTorchModel``; for each budget it prints Foolbox's
success rate and how many of its adversarials the certified (Monte-Carlo) classifier's PREDICT
also gets wrong. Then the audit certifies the same digits and attacks every certificate with the
Foolbox attacks registered under ``rs_plugin.attacks`` and prints its verdict.
"""

from __future__ import annotations

import argparse

import foolbox as fb

from rs_plugin import Gaussian, SmoothedClassifier, audit
from rs_plugin.adapters.foolbox import foolbox_model
from rs_plugin.data import load_demo_model, load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=20)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("-n", type=int, default=2000, help="CERTIFY and PREDICT samples")
    parser.add_argument("--budgets", default="0.25,0.5,1.0", help="ℓ2 budgets of the PGD run")
    parser.add_argument(
        "--attacks", default="foolbox_pgd,foolbox_ddn", help="registered attacks for the audit"
    )
    args = parser.parse_args()

    x, y = load_digits("test")
    x, y = x[: args.inputs], y[: args.inputs]
    model = load_demo_model()
    smoothed = SmoothedClassifier(
        model, Gaussian(args.sigma), 10, num_noise_samples=16, clip_values=(0.0, 1.0), seed=1
    )
    fmodel = foolbox_model(smoothed)
    budgets = [float(b) for b in args.budgets.split(",")]
    # Started at x (no random start), the run is deterministic.
    _, clipped, success = fb.attacks.L2PGD(steps=20, rel_stepsize=0.1, random_start=False)(
        fmodel, x, fb.criteria.Misclassification(y), epsilons=budgets
    )
    print("budget foolbox_success predict_wrong")
    for budget, x_adv, won in zip(budgets, clipped, success, strict=True):
        hard = smoothed.predict(x_adv, n=args.n, seed=2).prediction
        print(f"{budget:g} {won.float().mean():.2f} {(hard != y).float().mean():.2f}")

    report = audit(
        model, Gaussian(args.sigma), x, y, num_classes=10, n=args.n, attacks=args.attacks.split(",")
    )
    print(report.verdict["summary"])
    for row in report.attacks:
        print(f"{row['name']}: {row['adversarial_inputs']} inputs with an adversarial")


if __name__ == "__main__":
    main()
