"""Progress of every long command (certify, audit, the Ray engine) on standard error: a bar on
a terminal, plain lines elsewhere.

The bar is tqdm's (the ``cli`` extra); without tqdm a terminal gets the plain lines too.

A log file or CI job gets a line at the first step, then at most one every few seconds, and
always the last one, each with the steps done out of the total, the elapsed time and an
estimate of what is left, so a slow run on a busy machine shows where it is instead of printing
nothing until its summary.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "duration"]

# Shortest interval between two lines for steps that complete quickly.
_LINE_EVERY = 5.0


def duration(seconds: float) -> str:
    """``42 s``, ``12 min 5 s`` or ``3 h 20 min``: a duration as people read it."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


class Progress:
    """Steps of one stage of work (``total`` of them, counted in ``unit``).

    Args:
        stage: what the steps are, e.g. ``"certify"`` or ``"attacks"``.
        total: the number of steps.
        unit: what a step is, e.g. ``"input"``.
        enabled: False shows nothing.
        stream: where to write (default standard error); a bar when it is a terminal.
    """

    def __init__(
        self,
        stage: str,
        total: int,
        unit: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.stage = stage
        self.total = total
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.done = 0
        self.started = time.perf_counter()
        self._last_line = -_LINE_EVERY
        self._bar: Any = None
        if enabled and self.stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # without the cli extra a terminal gets the plain lines too
                pass
            else:
                self._bar = tqdm(total=total, desc=stage, unit=unit, file=self.stream)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, steps: int = 1, detail: str = "") -> None:
        """``steps`` more steps are done; ``detail`` says what was just done."""
        self.done += steps
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(detail, refresh=False)
            self._bar.update(steps)
            return
        now = self.elapsed
        if self.done < self.total and now - self._last_line < _LINE_EVERY:
            return
        self._last_line = now
        left = self.total - self.done
        eta = f", about {duration(now / self.done * left)} left" if self.done and left else ""
        what = f" ({detail})" if detail else ""
        print(
            f"{self.stage}: {self.done}/{self.total} {self.unit}s{what}; {duration(now)} "
            f"elapsed, {left} {self.unit}s left{eta}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
