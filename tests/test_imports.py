"""The core imports neither ART nor Ray; only the adapters that need them do."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import sys
import rs_plugin, rs_plugin.cli, rs_plugin.data, rs_plugin.training
from rs_plugin.cli import main
assert main(["certify", "--limit", "1", "-n", "50", "--n0", "5", "--out", sys.argv[1]]) == 0
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"art", "ray"})
print(",".join(loaded) or "none")
"""


def test_core_and_local_engine_import_neither_art_nor_ray(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", _CHECK, str(tmp_path / "r.jsonl")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "none"


def test_adapters_are_importable_under_the_package_name():
    import rs_plugin.adapters
    import rs_plugin.adapters.ray

    assert rs_plugin.adapters.ray.RayCertifier.__module__ == "rs_plugin.adapters.ray"
