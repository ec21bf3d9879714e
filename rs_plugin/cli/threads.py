"""``--threads``: how many torch threads a command runs on, and the line that says why."""

from __future__ import annotations

import sys
from typing import NamedTuple

from rs_plugin._validation import MAX_THREADS, RSValueError
from rs_plugin.certification.threads import available_cores, busy_cores, threads_for_load

__all__ = ["Threads", "announce_threads", "parse_threads"]


class Threads(NamedTuple):
    """The torch thread count ``--threads`` chose, and why."""

    number: int
    why: str


def parse_threads(value: str) -> Threads:
    """``--threads``: ``auto`` (the cores other work leaves free now) or an integer >= 1."""
    if value == "auto":
        cores = available_cores()
        busy = busy_cores(cores)
        count = threads_for_load(cores=cores, load=busy)
        return Threads(count, f"auto: {busy:.1f} of {cores} cores busy with other work now")
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_THREADS:
        raise RSValueError("--threads", f"auto or an integer in [1, {MAX_THREADS}]", value)
    return Threads(count, f"--threads {count}")


def announce_threads(command: str, threads: Threads) -> None:
    """Once every input is checked, before the work: the thread count --threads chose."""
    print(
        f"{command}: {threads.number} torch thread(s) ({threads.why})", file=sys.stderr, flush=True
    )
