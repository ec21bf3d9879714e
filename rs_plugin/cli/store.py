"""Append-only JSON Lines result store: one record per input, flushed as soon as it exists.

Every record carries the run configuration it was produced under. Opening an existing file
without ``resume`` is refused (nothing written is ever overwritten); resuming checks that the
configuration matches and reports which indices are done. A line cut short by a crash (no final
newline) is dropped on resume, so the file always holds whole records, each index at most once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from rs_plugin._validation import RSValueError

__all__ = ["ResultStore"]


class ResultStore:
    """JSON Lines file of certificates keyed by ``index`` under one run configuration.

    Args:
        path: the ``.jsonl`` file.
        config: the run configuration (JSON-serialisable); stored in every record.
        resume: continue an existing file instead of refusing to touch it.
    """

    def __init__(self, path: str | Path, config: Mapping[str, Any], *, resume: bool) -> None:
        self.path = Path(path)
        self.config = dict(config)
        self.resume = resume
        self.records: dict[int, dict[str, Any]] = {}
        self._handle: IO[str] | None = None

    def open(self) -> ResultStore:
        """Validate the existing file (if any) against the configuration, then open to append."""
        if self.path.exists() and self.path.stat().st_size > 0:
            if not self.resume:
                raise RSValueError(
                    "--out",
                    "a new file, or --resume to continue this one (nothing is overwritten)",
                    f"{self.path}, which already holds results",
                )
            self._load_existing()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        return self

    def _load_existing(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]
        for number, line in enumerate(complete.splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RSValueError(
                    "--out",
                    "a JSON Lines file of certificates",
                    f"{self.path} line {number}: {error}",
                ) from error
            stored = {key: record.get(key) for key in self.config}
            if stored != self.config:
                diff = {
                    k: (stored[k], self.config[k])
                    for k in self.config
                    if stored[k] != self.config[k]
                }
                raise RSValueError(
                    "--resume",
                    "the same configuration as the run that wrote the file",
                    f"{self.path} line {number} differs as (stored, requested): {diff}",
                )
            self.records[int(record["index"])] = record
        if len(complete) != len(text):
            # The last line was cut short by a crash: drop it (only once every whole record has
            # been checked, so a refused resume leaves the file untouched).
            with self.path.open("r+", encoding="utf-8") as handle:
                handle.truncate(len(complete.encode("utf-8")))

    def done(self) -> set[int]:
        """Indices already in the file."""
        return set(self.records)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (with the configuration) and flush it to the operating system."""
        if self._handle is None:
            raise RuntimeError("ResultStore.append called before open()")
        index = int(record["index"])
        if index in self.records:
            raise RuntimeError(f"index {index} is already stored in {self.path}")
        full = {**record, **self.config}
        self._handle.write(json.dumps(full) + "\n")
        self._handle.flush()
        self.records[index] = full

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ResultStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
