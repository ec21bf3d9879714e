"""Append-only JSON Lines result store: one record per input, written as soon as it exists.

Every record carries the run configuration it was produced under. Opening an existing file
without ``resume`` is refused (nothing written is ever overwritten); resuming checks every record
against the configuration and reports which indices are done.

Why a JSON Lines file and not SQLite behind it: the file users read *is* the store, so there is
one copy of every record and nothing to keep in step. SQLite would give transactions, but the
JSON Lines file users read would then be a second copy written after the commit, and a crash
between the two needs the very reconciliation that byte-exact JSON Lines handling already is.
What makes the one file safe is small:

- each record is one ``os.write`` of ``json + newline`` on a descriptor opened with
  ``O_APPEND`` (no buffer in this process, so a killed process loses nothing it had appended;
  ``fsync`` at most once a second and at close bounds what a power cut can take);
- an exclusive ``flock`` on the file, held from open to close: a second writer is refused
  (records are never interleaved or duplicated). Where Python has no ``fcntl`` (Windows) the
  file is not locked: opening it warns (:class:`~rs_plugin.RSWarning`) that two runs writing
  the same file are not refused there;
- the file is parsed as bytes, line by line (``\\n`` or ``\\r\\n``), so offsets are exact;
- what follows the last newline is parsed, never discarded blindly: a whole record (only its
  newline missing) is checked like any other and kept; the beginning of a record as this store
  writes them (``{"index": ...``, not valid JSON), i.e. a write cut short by a crash, is dropped;
  anything else is an error that leaves the file untouched. Every check runs before the first
  byte is changed.

Resume reads the file once: linear in its size.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rs_plugin._validation import RSValueError, RSWarning
from rs_plugin.cli.outputs import refuse_irregular

__all__ = ["JsonLines", "ResultStore", "read_json_lines"]


def _fcntl() -> ModuleType | None:
    """The ``fcntl`` module, or None on a platform without it (Windows): imported here, not at
    module level, so that the command line imports everywhere."""
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


# The first bytes of every record this store writes (json.dumps of a dict whose first key is
# index), and a record cut short after them.
_RECORD_START = b'{"index": '
_CUT_RECORD = re.compile(rb'\{"index": \d')
# Longest time a record may sit in the page cache before it is forced to disk.
_SYNC_INTERVAL = 1.0


@dataclass
class JsonLines:
    """A parsed JSON Lines file.

    Attributes:
        records: (line number, record) for every whole record, in file order.
        complete_bytes: length of the file up to and including its last whole record's line
            (a record that lacked only its newline counts, without the newline).
        cut: bytes after the last newline that begin a record cut short by a crash.
        completion: what the last line lacks to end like the others (empty, or the newline of
            a whole record whose newline was never written).
        newline: the line ending the file uses (``\\n`` or ``\\r\\n``).
    """

    records: list[tuple[int, dict[str, Any]]]
    complete_bytes: int
    cut: bytes
    completion: bytes
    newline: bytes


def _parse_line(raw: bytes, number: int, path: Path, parameter: str) -> dict[str, Any] | None:
    """A record from one line (without its newline), None for a blank line."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RSValueError(
            parameter,
            "a UTF-8 JSON Lines file of records",
            f"{path} line {number}: byte {error.start} ({raw[error.start : error.start + 1]!r}) "
            "is not UTF-8",
        ) from error
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise RSValueError(
            parameter,
            "a JSON Lines file of records (one JSON object per line)",
            f"{path} line {number}: {error.msg} at column {error.colno}: {_excerpt(text)}",
        ) from error
    except (RecursionError, ValueError) as error:  # nesting too deep, an integer too long
        raise RSValueError(
            parameter,
            "a JSON Lines file of records (flat objects of numbers, text and short lists)",
            f"{path} line {number}: {type(error).__name__}: {str(error)[:120]}",
        ) from error
    index = record.get("index") if isinstance(record, dict) else None
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2**63:
        raise RSValueError(
            parameter,
            "records: JSON objects with an integer 'index' in [0, 2**63)",
            f"{path} line {number}: {_excerpt(text)}",
        )
    return record


def _excerpt(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def read_json_lines(path: str | Path, parameter: str) -> JsonLines:
    """Parse ``path`` byte-exactly (see the module docstring); errors name ``parameter``.

    Each index may appear once. Nothing is changed on disk.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RSValueError(parameter, "a readable file", f"{path}: {error.strerror}") from error
    return _parse(data, path, parameter)


def _parse(data: bytes, path: Path, parameter: str) -> JsonLines:
    records: list[tuple[int, dict[str, Any]]] = []
    seen: dict[int, int] = {}
    newline = b"\n"
    lines = data.split(b"\n")
    tail = lines.pop()
    for number, raw in enumerate(lines, start=1):
        if number == 1 and raw.endswith(b"\r"):
            newline = b"\r\n"
        record = _parse_line(raw, number, path, parameter)
        if record is not None:
            _add(records, seen, number, record, path, parameter)
    complete = len(data) - len(tail)
    cut, completion = b"", b""
    if tail.strip():
        number = len(lines) + 1
        try:
            record = _parse_line(tail, number, path, parameter)
        except RSValueError:
            stripped = tail.rstrip(b"\r")
            if not (_RECORD_START.startswith(stripped) or _CUT_RECORD.match(stripped)):
                raise RSValueError(
                    parameter,
                    "a file ending in a newline, a whole record, or a record cut short by a "
                    "crash (the file is left as it is)",
                    f"{path} line {number} (after the last newline): {_excerpt(repr(tail))}",
                ) from None
            cut = tail
        else:
            assert record is not None  # tail.strip() is not empty
            _add(records, seen, number, record, path, parameter)
            complete = len(data)
            completion = b"\n" if tail.endswith(b"\r") else newline
    elif tail:
        # Whitespace after the last newline: not a record, and nothing of value to keep.
        cut = tail
    return JsonLines(records, complete, cut, completion, newline)


def _add(
    records: list[tuple[int, dict[str, Any]]],
    seen: dict[int, int],
    number: int,
    record: dict[str, Any],
    path: Path,
    parameter: str,
) -> None:
    index = record["index"]
    if index in seen:
        raise RSValueError(
            parameter,
            "each index at most once",
            f"{path}: index {index} on lines {seen[index]} and {number}",
        )
    seen[index] = number
    records.append((number, record))


class ResultStore:
    """JSON Lines file of certificates keyed by ``index`` under one run configuration.

    Args:
        path: the ``.jsonl`` file.
        config: the run configuration (JSON-serialisable); stored in every record and compared,
            field by field, with every record of the file on resume.
        resume: continue an existing file instead of refusing to touch it.
        provenance: further fields stored in every record but not compared on resume (how the
            run named its inputs, e.g. a data path given relative or absolute).
        mismatch: (parameter, accepted) of the error a record of another configuration raises:
            what the user should change (``rs-plugin audit`` has no ``--resume``; it reuses the
            certificates in its ``--out`` folder).
        validate: called with (line number, record) for every stored record on resume, after
            its configuration is compared; raises to refuse the file (a forged or corrupt record,
            see :func:`rs_plugin.auditing.plausibility.record_validator`).
    """

    def __init__(
        self,
        path: str | Path,
        config: Mapping[str, Any],
        *,
        resume: bool,
        provenance: Mapping[str, Any] | None = None,
        mismatch: tuple[str, str] = (
            "--resume",
            "the same configuration as the run that wrote the file",
        ),
        validate: Callable[[int, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.validate = validate
        self.mismatch = mismatch
        self.config = dict(config)
        self.provenance = dict(provenance or {})
        self.resume = resume
        self.records: dict[int, dict[str, Any]] = {}
        self._fd: int | None = None
        self._newline = b"\n"
        self._synced = 0.0
        self._unsynced = False  # written since the last fsync

    def open(self) -> ResultStore:
        """Lock the file, check every record in it against the configuration, open to append."""
        if self.path.is_dir():
            raise RSValueError("--out", "a file path, not a folder", str(self.path))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Non-blocking: opening a FIFO must not wait for a reader (it is refused below).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK, 0o644)
        except OSError as error:
            raise RSValueError(
                "--out", "a file this process may create and write", f"{self.path}: {error}"
            ) from error
        try:
            refuse_irregular(fd, self.path, "--out")
            self._lock(fd)
            self._load_existing(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._synced = time.monotonic()
        return self

    def _lock(self, fd: int) -> None:
        fcntl = _fcntl()
        if fcntl is None:
            warnings.warn(
                f"{self.path} is not locked: this platform has no fcntl (flock), so a second run "
                "writing the same file at the same time is not refused; run one writer per file",
                RSWarning,
                stacklevel=3,
            )
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RSValueError(
                    "--out",
                    "a file on a file system that supports locks (flock)",
                    f"{self.path}: {error}",
                ) from error
            raise RSValueError(
                "--out",
                "a file no other run is writing (one writer per file)",
                f"{self.path}, locked by another process",
            ) from error

    def _read_all(self, fd: int) -> bytes:
        size = os.fstat(fd).st_size
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def _load_existing(self, fd: int) -> None:
        data = self._read_all(fd)
        if not data:
            return
        if not self.resume:
            raise RSValueError(
                "--out",
                "a new file, or --resume to continue this one (nothing is overwritten)",
                f"{self.path}, which already holds {len(data)} bytes",
            )
        parsed = _parse(data, self.path, "--out")
        for number, record in parsed.records:
            self._check_config(number, record)
            if self.validate is not None:
                self.validate(number, record)
        # Every record is checked: only now may the file change.
        if parsed.cut:
            os.ftruncate(fd, parsed.complete_bytes)
            self._unsynced = True
        self._newline = parsed.newline
        if parsed.completion:
            self._write(fd, parsed.completion)
            self._unsynced = True
        self.records = {record["index"]: record for _, record in parsed.records}

    def _check_config(self, number: int, record: Mapping[str, Any]) -> None:
        missing = object()

        def stored(key: str) -> Any:
            # Files written before sequential runs stored their budget as `n_max` hold it as `n`.
            if key == "n_max" and key not in record:
                return record.get("n", missing)
            return record.get(key, missing)

        diff = {
            key: (record.get(key), wanted)
            for key, wanted in self.config.items()
            if stored(key) != wanted
        }
        if diff:
            shown = "; ".join(
                f"{key}: stored {stored!r}, requested {wanted!r}"
                for key, (stored, wanted) in diff.items()
            )
            if "model_sha256" in diff and "model" not in diff:
                shown += (
                    " (the same model name now computes something else: retrained weights, "
                    "or a shipped model replaced by a newer release; records of one model are "
                    "not resumed with another)"
                )
            if "noise_version" in diff:
                shown += (
                    " (written with another definition of the noise: records of an earlier "
                    "release, whose noise blocks of one input could repeat on CPU; certify "
                    "again into a new file)"
                )
            parameter, accepted = self.mismatch
            raise RSValueError(parameter, accepted, f"{self.path} line {number} differs in {shown}")

    def done(self) -> set[int]:
        """Indices already in the file."""
        return set(self.records)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (with the configuration) in a single write to the file."""
        if self._fd is None:
            raise RuntimeError("ResultStore.append called before open()")
        index = int(record["index"])
        if index in self.records:
            raise RuntimeError(f"index {index} is already stored in {self.path}")
        # index first: a line cut short by a crash is then recognisable by its start.
        full = {"index": index, **record, **self.provenance, **self.config}
        line = json.dumps(full, allow_nan=False).encode("utf-8") + self._newline
        self._write(self._fd, line)
        self.records[index] = full
        self._unsynced = True
        if time.monotonic() - self._synced >= _SYNC_INTERVAL:
            self._sync(self._fd)

    def _sync(self, fd: int) -> None:
        os.fsync(fd)
        self._synced, self._unsynced = time.monotonic(), False

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def close(self) -> None:
        """Force the records to disk and release the lock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._unsynced:
                    self._sync(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> ResultStore:
        return self if self._fd is not None else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
