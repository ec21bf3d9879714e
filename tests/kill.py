"""SIGKILL a running ``rs-plugin`` command once it has written some records (the kill tests).

A CPU fast enough to finish the whole run between two polls defeats a kill "after k records":
:func:`kill_before_the_end` then tries again at an earlier moment, and its last try kills as soon
as the process exists, which is always before its first record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["kill_after_records", "kill_before_the_end", "line_count"]


def line_count(path: Path) -> int:
    """Complete lines (records) in ``path``; 0 if it does not exist yet."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def kill_after_records(
    args: list[str], out: Path, after: int, delay: float, cwd: Path, stderr: Path | None = None
) -> tuple[int, int]:
    """Start ``rs-plugin *args --out out``, SIGKILL it ``delay`` seconds after ``after`` records
    exist; return (complete lines it left, its return code). ``stderr`` receives its standard
    error (discarded when None)."""
    with open(stderr if stderr is not None else os.devnull, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "rs_plugin.cli", *args, "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=cwd,
        )
        try:
            deadline = time.monotonic() + 180
            while line_count(out) < after and process.poll() is None:
                assert time.monotonic() < deadline, "no records appeared"
                time.sleep(0.002)
            time.sleep(delay)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=30)
    return line_count(out), process.returncode


def kill_before_the_end(
    args: list[str],
    out: Path,
    limit: int,
    after: int,
    delay: float,
    cwd: Path,
    stderr: Path | None = None,
) -> tuple[int, int]:
    """Kill a run of ``limit`` records after ``after`` records and ``delay`` seconds, retrying
    earlier (after // 4 records, then at once) while the run finished first; return (lines
    written, the ``after`` of the try that stopped it). Asserts that some try killed the run."""
    for attempt in range(3):
        out.unlink(missing_ok=True)
        written, code = kill_after_records(args, out, after, delay, cwd, stderr)
        if written < limit:
            assert code == -signal.SIGKILL, f"the run ended with {code} before it was killed"
            return written, after
        after, delay = after // 4 if attempt == 0 else 0, 0.0
    raise AssertionError(f"the run finished before it was killed ({written} of {limit} records)")
