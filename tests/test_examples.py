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
