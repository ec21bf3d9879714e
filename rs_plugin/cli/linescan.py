"""A JSON Lines file a user passes is scanned line by line before it is loaded: memory is
bounded by one line (at most ``MAX_LINE`` bytes), so a huge garbage file is refused at its first
bad line, with that line's number, without reading the rest."""

from __future__ import annotations

from pathlib import Path

from rs_plugin._validation import RSValueError
from rs_plugin.cli.store import _parse_line as parse_line

__all__ = ["MAX_LINE", "scan_json_lines"]

MAX_LINE = 16 << 20
_CHUNK = 1 << 20


def scan_json_lines(path: str | Path, parameter: str, max_line: int = MAX_LINE) -> None:
    """Refuse ``path`` at its first line that is longer than ``max_line`` bytes or is not a
    record; the last line may lack its newline (a cut record is judged when the file is read)."""
    path = Path(path)
    number, pending = 0, b""
    try:
        with path.open("rb") as handle:
            while True:
                chunk = handle.read(_CHUNK)
                if not chunk:
                    break
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for raw in lines:
                    number += 1
                    _check(raw, number, path, parameter, max_line)
                if len(pending) > max_line:
                    _too_long(number + 1, path, parameter, max_line)
    except OSError as error:
        raise RSValueError(parameter, "a readable file", f"{path}: {error.strerror}") from error


def _check(raw: bytes, number: int, path: Path, parameter: str, max_line: int) -> None:
    if len(raw) > max_line:
        _too_long(number, path, parameter, max_line)
    parse_line(raw, number, path, parameter)


def _too_long(number: int, path: Path, parameter: str, max_line: int) -> None:
    raise RSValueError(
        parameter,
        f"a JSON Lines file of records, each line at most {max_line} bytes",
        f"{path} line {number}: longer than {max_line} bytes (not a record; nothing more read)",
    )
