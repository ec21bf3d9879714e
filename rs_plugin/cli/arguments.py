"""The command line's arguments: every sub-command's parser, built without importing torch (so
``rs-plugin --help`` answers at once); the commands themselves load lazily."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any

from rs_plugin.auditing.defaults import BUDGETS

__all__ = [
    "AUDIT_DEFAULTS",
    "Parser",
    "add_audit_parser",
    "add_bench_parser",
    "add_certify_parser",
    "add_plugins_parser",
    "batch_size_text",
]

# Defaults of the audit options a certificate file's own configuration may fill in.
AUDIT_DEFAULTS = {"model": "demo", "data": "digits", "smoothing": "gaussian"}


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default unless its help already states one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class Parser(argparse.ArgumentParser):
    """The command line's parser: shows defaults in ``--help``, and a misspelt option is reported
    by the sub-command it was given to, with its usage and the closest option it has."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            # A sub-command's parser sees its unknown arguments first: refuse them here, with
            # this parser's usage, rather than letting the top-level parser print its own.
            hints = []
            for extra in extras:
                close = difflib.get_close_matches(
                    extra.partition("=")[0], list(self._option_string_actions), n=1
                )
                if extra.startswith("-") and close:
                    hints.append(f"{extra} (did you mean {close[0]}?)")
                else:
                    hints.append(extra)
            self.error("unrecognized arguments: " + " ".join(hints))
        return parsed, extras


def batch_size_text(text: str) -> int | str:
    """``--batch-size``'s text: an integer as an int, anything else as typed (the run checks
    it and names the flag, what it accepts and what it received)."""
    try:
        return int(text)
    except ValueError:
        return text


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        default="auto",
        help="torch threads: a number, or auto (default): the cores not busy with other work "
        "now (CPU use over 0.1 s), so a busy machine does not stall parallel operations",
    )


def _add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        default=None,
        help="a state-dict file (torch.save(model.state_dict())) loaded into --model, e.g. "
        "--model mypackage.nets:build --weights net.pt (read as data, never code)",
    )


def _add_denoiser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--denoiser",
        default=None,
        help="denoised smoothing: smooth the model behind this denoiser, called as "
        "denoiser(x, sigma): 'demo' or 'mse' (shipped for fashion-mnist, with --model clean), "
        "a TorchScript file or 'package.module:factory' (default: none)",
    )


def add_certify_parser(commands: Any) -> None:
    p = commands.add_parser(
        "certify",
        help="certify a dataset with CERTIFY (Cohen et al. 2019); one JSON line per input",
        description="Certify inputs and write one JSON line per input as soon as it is done.",
    )
    p.add_argument(
        "--model",
        default="demo",
        help="'demo' (the model shipped for --data; for fashion-mnist the LeNet trained for the "
        "--sigma nearest), a TorchScript file, or 'package.module:factory' (default: demo); "
        "'clean': fashion-mnist's LeNet trained without noise (for --denoiser)",
    )
    _add_weights(p)
    _add_denoiser(p)
    p.add_argument(
        "--data",
        default="digits",
        help="'digits', 'fashion-mnist', an IDX directory, an .npz file with images x and "
        "optionally labels y, an .npy file of images or a folder of PNG images (without "
        "labels: records hold the prediction and radius only)",
    )
    p.add_argument(
        "--smoothing",
        default="gaussian",
        help="registered smoothing: gaussian, laplace, uniform, exp_inf, anisotropic_gaussian, "
        "... (see rs-plugin plugins)",
    )
    p.add_argument(
        "--certifier",
        default="cohen",
        help="registered certifier: cohen (fixed n), sequential (staged n) or anytime (checked "
        "every batch), both needing --radius or --tolerance, ddrs or ancer (sigma chosen per "
        "input, certified through a memory; inputs in index order) (default: cohen)",
    )
    p.add_argument(
        "--radius",
        type=float,
        default=None,
        help="sequential/anytime decision mode: stop once 'certified at this radius?' is decided",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="sequential/anytime radius mode: stop when more samples would add at most this radius",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="standard deviation of additive noise, in input units (default 0.25); a semantic "
        "transform takes its scale in its own unit instead, e.g. --smoothing-param degrees=15 "
        "(rotation, default 10), pixels=2 (translation), fraction=0.1 (scaling), step=0.1 "
        "(brightness), log_factor=0.1 (contrast), pixels=1 (blur), beta=... (fog), "
        "sigma_darkness=... (shadow)",
    )
    p.add_argument(
        "--semantics",
        choices=("parametric", "input"),
        default=None,
        help="semantic transforms: certify the transform's parameters around the clean input "
        "(parametric, default) or the image the model receives (input; exact for brightness, "
        "contrast and Fourier translation, a grid certificate for rotation and scaling)",
    )
    p.add_argument(
        "--smoothing-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="further keyword of the smoothing, repeatable, e.g. degrees=15, additive_sigma=0.25, "
        "input_range=30, grid_step=0.5, noise=uniform, interpolation=nearest, padding=border",
    )
    p.add_argument(
        "--sound",
        action="store_true",
        help="sound in floating point: the smoothing's sound mode (gaussian, laplace, uniform): "
        "inputs on --grid, noise drawn exactly on it, sums in integers; records say sound_fp",
    )
    p.add_argument(
        "--grid",
        default=None,
        help="with --sound: the inputs' grid step, e.g. 1/255 (default) or 1/16 (digits)",
    )
    p.add_argument("--n0", type=int, default=100, help="selection samples (default 100)")
    p.add_argument("-n", "--n", type=int, default=10_000, help="estimation samples")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability")
    p.add_argument(
        "--batch-size",
        type=batch_size_text,
        default="auto",
        help="samples per forward pass: an integer, or auto (default: the fastest size, "
        "measured on the run's first samples, which count as votes)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="certify only the first K inputs (default: all)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of all noise (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    _add_threads(p)
    p.add_argument(
        "--precision",
        default="float32",
        help="float32, bfloat16 or float16: autocast for the votes (certifies the "
        "reduced-precision classifier; default float32)",
    )
    p.add_argument(
        "--channels-last", action="store_true", help="count votes in channels-last layout"
    )
    p.add_argument("--compile", action="store_true", help="count votes with torch.compile(model)")
    p.add_argument(
        "--out",
        default="results.jsonl",
        help="JSON Lines output file, one line per input, written as inputs complete (in "
        "completion order, not index order: sort by 'index')",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing --out file, skipping indices already in it",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (in-process, default) or ray (shards across Ray actors)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray actors, one per GPU or CPU slot (default: GPUs if any, else CPUs)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="address of an existing Ray cluster (default: start one locally)",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --engine ray: seconds without a finished shard before the run is declared "
        "stalled and stopped, its records kept (default 600; raise it when one input takes "
        "longer)",
    )


def add_audit_parser(commands: Any) -> None:
    p = commands.add_parser(
        "audit",
        help="attack every certificate and check the candidates with PREDICT; exit 1 if the "
        "certificates are significantly violated",
        description="Certify (or read --certificates), attack every certified input at budgets "
        "up to and beyond its radius, check each candidate with a fresh PREDICT, and write "
        "report.json, report.md, curves.png and distances.png to --out.",
    )
    p.add_argument(
        "--certificates",
        default=None,
        help="JSON Lines file of certificates to audit (from rs-plugin certify, or converted: "
        "index, prediction (-1 = abstain), radius, alpha per line); default: certify first",
    )
    p.add_argument(
        "--model",
        default=None,
        help="'demo', a TorchScript file or 'package.module:factory' (default: demo; a "
        "certificate file naming another model needs it named here: a file never chooses code)",
    )
    _add_weights(p)
    p.add_argument(
        "--certifier",
        default=None,
        help="the certifier the --certificates file names, when it is a third-party plugin "
        "(the audit imports only what the command line names)",
    )
    for flag, text in (
        ("--data", "'digits', 'fashion-mnist', an IDX or PNG directory, an .npz or .npy file"),
        ("--smoothing", "registered smoothing (see rs-plugin plugins)"),
    ):
        p.add_argument(
            flag,
            default=None,
            help=f"{text} (default: the certificate file's, else {AUDIT_DEFAULTS[flag[2:]]})",
        )
    _add_denoiser(p)
    p.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="additive noise's standard deviation (default: the file's, else 0.25); a semantic "
        "transform's scale is a --smoothing-param (e.g. degrees=15)",
    )
    p.add_argument(
        "--semantics",
        choices=("parametric", "input"),
        default=None,
        help="semantic transforms: parametric or input-domain certificates",
    )
    p.add_argument(
        "--smoothing-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="further keyword of the smoothing, repeatable",
    )
    p.add_argument("--n0", type=int, default=100, help="CERTIFY selection samples (default 100)")
    p.add_argument(
        "-n", "--n", type=int, default=10_000, help="CERTIFY estimation samples (default 10000)"
    )
    p.add_argument("--alpha", type=float, default=0.001, help="CERTIFY failure probability")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="audit the first K inputs (default: 100 when certifying, every record of "
        "--certificates)",
    )
    p.add_argument(
        "--attacks",
        default=None,
        help="comma-separated names from rs_plugin.attacks (default: pgd,autoattack,deepfool,"
        "cw_l2 for input-space noises; semantic_grid,semantic_random for transforms)",
    )
    p.add_argument(
        "--budgets",
        default=",".join(f"{b:g}" for b in BUDGETS),
        help="global budget levels as fractions of the largest certified radius; each input is "
        "also attacked at its own radius (default %(default)s)",
    )
    p.add_argument(
        "--predict-n", type=int, default=1000, help="PREDICT samples per check (default 1000)"
    )
    p.add_argument(
        "--predict-alpha", type=float, default=0.001, help="PREDICT level per check (default 0.001)"
    )
    p.add_argument(
        "--significance",
        type=float,
        default=0.01,
        help="level of the verdict's one-sided binomial test (default 0.01)",
    )
    p.add_argument(
        "--probe-fp",
        action="store_true",
        help="also probe whether the model's prediction changes with the last bits of its "
        "noisy input (the floating-point counterexample's idea); a finding in report.md",
    )
    p.add_argument(
        "--noise-samples",
        type=int,
        default=16,
        help="noise draws of the soft smoothed classifier the attacks use (default 16)",
    )
    p.add_argument(
        "--batch-size",
        type=batch_size_text,
        default="auto",
        help="samples per forward pass: an integer, or auto (default: the fastest size, "
        "measured on the run's first samples, which count as votes)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of certification, attacks and checks")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    _add_threads(p)
    p.add_argument("--out", default="out/audit", help="report folder (default out/audit)")


def add_bench_parser(commands: Any) -> None:
    p = commands.add_parser(
        "bench",
        help="time certify against the floor, ART and the papers' loop, idle and under load",
        description="Time certification on real model sizes (the digits CNN, a LeNet, a CIFAR "
        "ResNet-20; random weights where none ship: speed does not depend on them) against the "
        "floor (fresh noise + forward + argmax), a reused-batch forward, the papers' per-input "
        "loop and ART's certify, in interleaved repeats (median, min-max) at each thread count, "
        "and beside a busy-loop process with --under-load.",
    )
    p.add_argument(
        "--models",
        default="digits,lenet,resnet20",
        help="comma-separated: digits, lenet, resnet20, resnet50 (default %(default)s)",
    )
    p.add_argument(
        "--inputs", type=int, default=None, help="inputs per model (default: per model, 1-10)"
    )
    p.add_argument("--n0", type=int, default=100, help="selection samples per input")
    p.add_argument(
        "-n", "--n", type=int, default=None, help="samples per input (default: per model)"
    )
    p.add_argument(
        "--batch-sizes",
        default=None,
        help="comma-separated batch sizes the floor and ART's certify are swept over (default: "
        "the engine's candidates, 16 to 1024 on a CPU; ART's 32 is always added)",
    )
    p.add_argument("--sigma", type=float, default=0.25, help="Gaussian noise level")
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved repeats of every timed method"
    )
    p.add_argument(
        "--threads", default="1,2", help="torch thread counts to time at (default %(default)s)"
    )
    p.add_argument(
        "--under-load",
        action="store_true",
        help="also time every method beside a busy-loop process of the bench's own",
    )
    p.add_argument("--no-art", action="store_true", help="skip ART's certify and the swap-in")
    p.add_argument(
        "--memory-n",
        type=int,
        default=200_000,
        help="samples for the swap-in peak-memory comparison (default 200000)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="autocast precision of the engine's and the floors' forwards (default float32)",
    )
    p.add_argument(
        "--channels-last", action="store_true", help="run the forwards in channels-last layout"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the engine's and the floors' forwards through torch.compile (compiled first)",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="also compare fixed-n CERTIFY with both sequential certifiers (model evaluations)",
    )
    p.add_argument("--sequential-n", type=int, default=100_000, help="fixed n / budget")
    p.add_argument(
        "--sequential-inputs", type=int, default=100, help="digits inputs for --sequential"
    )
    p.add_argument(
        "--sequential-radii",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 1.0],
        help="decision-mode radii for --sequential (default 0.25 0.5 1.0)",
    )
    p.add_argument("--tolerance-sigmas", type=float, default=0.04, help="radius tolerance / σ")
    p.add_argument(
        "--fashion-inputs",
        type=int,
        default=60,
        help="Fashion-MNIST inputs for --sequential (0 to skip; needs dataset-fashion-mnist)",
    )
    p.add_argument(
        "--sequential-plot",
        default=None,
        help="write the radius-mode frontier (samples vs radius lost) to this PNG",
    )
    p.add_argument(
        "--sound",
        action="store_true",
        help="also time the sound-in-floating-point mode against the float mode on --models "
        "and compare certified accuracy and ACR of both on the shipped digits and Fashion models",
    )
    p.add_argument("--sound-n", type=int, default=10_000, help="samples per input for --sound")
    p.add_argument(
        "--sound-inputs", type=int, default=100, help="test inputs per shipped model for --sound"
    )
    p.add_argument(
        "--radii",
        action="store_true",
        help="also compare every family's radii with the best sound radii in the literature",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_plugins_parser(commands: Any) -> None:
    commands.add_parser(
        "plugins",
        help="list installed smoothings, attacks and certifiers",
        description="List the smoothings, attacks and certifiers installed through the "
        "rs_plugin.* entry-point groups, with the distribution that provides each.",
    )
