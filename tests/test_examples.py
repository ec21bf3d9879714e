"""Every script in examples/ runs and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_certify_digits_example_runs():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "certify_digits.py"), "--inputs", "4", "-n", "300"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0].split() == ["index", "label", "prediction", "radius", "p_lower"]
    assert len(lines) == 1 + 4 + 1
    assert lines[-1].startswith("certified accuracy at l2 radius 0.25:")


def test_art_swap_in_example_runs():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "art_swap_in.py"), "--epochs", "2", "-n", "300"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "smoothed accuracy",
        "certified accuracy at l2 radius 0.25",
        "soft smoothed accuracy under l2 PGD, eps 0.25",
    ]
    values = [float(line.rsplit(":", 1)[1]) for line in lines]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values[0] > 0.5
