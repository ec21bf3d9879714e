"""Bounded waits on Ray: every wait on another process ends, with a message that says why.

Ray retries for ever in two places a user meets: ``ray.init`` on an address whose port is open
but is not Ray (an HTTP server, a database), and a driver whose cluster lost a process of its
control plane (the GCS server or the raylet killed), whose ``ray.wait`` never returns. Here:

* :func:`check_ray_protocol` refuses an address that does not speak gRPC (Ray's protocol,
  HTTP/2) within a timeout, before ``ray.init`` is called: a gRPC server answers the HTTP/2
  connection preface with a SETTINGS frame at once;
* :class:`Watchdog` bounds the time without progress: when no shard finished for
  ``stall_timeout`` seconds, or a Ray control-plane process this driver started has died, it
  prints one line (what is missing, where the records so far are, how to resume) and ends the
  process with exit status 3. Records already delivered were written to the store before, so
  nothing completed is lost.

Only the Ray engine imports this module; it imports no Ray itself.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable

from rs_plugin._validation import RSValueError

__all__ = [
    "STALLED_EXIT",
    "STALL_TIMEOUT",
    "Watchdog",
    "check_ray_protocol",
    "dead_processes",
]

STALLED_EXIT = 3
STALL_TIMEOUT = 600.0  # seconds without a finished shard, by default, before a run is stalled
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04


def check_ray_protocol(host: str, port: int, timeout: float, address: str) -> None:
    """Refuse ``host:port`` unless a gRPC (HTTP/2) server answers there within ``timeout``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_PREFACE)
            deadline = time.monotonic() + timeout
            head = b""
            while len(head) < 9 and time.monotonic() < deadline:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError as error:
        raise RSValueError(
            "address",
            f"the address of a running Ray cluster that answers within {timeout:g} s",
            f"{address}: {error}",
        ) from error
    if len(head) < 9 or head[3] != _SETTINGS:
        raise RSValueError(
            "address",
            f"the address of a Ray cluster's GCS (a gRPC server answering within {timeout:g} s)",
            f"{address}, where something answered that is not Ray "
            f"(first bytes {head[:9]!r}; is this the dashboard or another service's port?)",
        )


def _command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def _alive(pid: int, start: str) -> bool:
    """Running with that start time (a killed child of this driver stays a zombie, ``Z``)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return False
    return len(fields) > 19 and fields[19] == start and fields[0] not in ("Z", "X")


def dead_processes(watched: list[tuple[int, str, str]]) -> list[str]:
    """``name (pid)`` of each watched (pid, start time, name) process no longer running."""
    return [f"{name} (pid {pid})" for pid, start, name in watched if not _alive(pid, start)]


def control_plane(processes: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """The Ray control-plane processes (GCS server, raylet) among (pid, start time) pairs."""
    found = []
    for pid, start in processes:
        name = _command_name(pid)
        if name.startswith(("gcs_server", "raylet")):
            found.append((pid, start, name))
    return found


class Watchdog:
    """A thread that ends the process when the run makes no progress.

    Args:
        stall_timeout: seconds without :meth:`progress` before the run is declared stalled.
        missing: called when it fires: a sentence on what is not done yet (inputs left).
        hint: what the user should do (where the records are, how to resume).
        watched: control-plane processes (pid, start time, name) whose death ends the run at
            once (checked every ``poll`` seconds).
    """

    def __init__(
        self,
        *,
        stall_timeout: float,
        missing: Callable[[], str],
        hint: str,
        watched: list[tuple[int, str, str]] | None = None,
        poll: float = 1.0,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.stall_timeout = stall_timeout
        self.missing = missing
        self.hint = hint
        self.watched = list(watched or [])
        self.poll = poll
        self._exit = exit
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rs-plugin-ray-watchdog")
        self._thread.daemon = True

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def progress(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            dead = dead_processes(self.watched)
            idle = time.monotonic() - self._last
            if dead:
                why = f"Ray's control plane lost {', '.join(dead)}"
            elif idle > self.stall_timeout:
                why = f"no shard finished for {idle:.0f} s (limit {self.stall_timeout:g} s)"
            else:
                continue
            print(
                f"rs-plugin certify: error: the Ray run stopped: {why}; {self.missing()}. "
                f"{self.hint}",
                file=sys.stderr,
                flush=True,
            )
            self._exit(STALLED_EXIT)
            return
