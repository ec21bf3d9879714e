"""What the command line may write to: regular files and folders only, checked before any work.

A FIFO, a terminal or a device named as ``--out`` would block a run forever (a FIFO without a
reader) or swallow its records (``/dev/null``); both are refused when the file is opened, and an
audit's ``--out`` folder is checked before the first attack, so no work is lost to a path that
cannot hold the report.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rs_plugin._validation import RSValueError

__all__ = ["check_out_file", "check_report_folder", "refuse_irregular"]


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def refuse_irregular(fd: int, path: str | Path, parameter: str) -> None:
    """Refuse an open ``fd`` that is not a regular file (named ``path`` in the error)."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise RSValueError(parameter, "a regular file", f"{path}, which is {_kind(mode)}")


def _existing_ancestor(path: Path) -> Path:
    absolute = path.absolute()
    # os.path.exists, not Path.exists: a name too long for the file system is "not there"
    return next(p for p in (absolute, *absolute.parents) if os.path.exists(p))


def _check_names(path: Path, parameter: str) -> None:
    """Refuse a path the file system cannot hold: a name longer than it allows (NAME_MAX,
    commonly 255 bytes) or a whole path longer than PATH_MAX."""
    base = _existing_ancestor(path)
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
        path_max = os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # not reported, or no pathconf (Windows)
        name_max, path_max = 255, 4096
    for part in path.absolute().parts:
        if len(os.fsencode(part)) > name_max:
            raise RSValueError(
                parameter,
                f"a path whose every name has at most {name_max} bytes (this file system's limit)",
                f"a name of {len(os.fsencode(part))} bytes: {part[:40]}...",
            )
    if len(os.fsencode(str(path.absolute()))) >= path_max:
        raise RSValueError(
            parameter, f"a path shorter than {path_max} bytes", f"{str(path)[:40]}..."
        )


def check_out_file(path: str | Path) -> None:
    """``certify --out`` must be a file path the file system can hold, not a folder, and a new
    file must be in a folder this process may create and write; checked before the model and
    data are loaded (an existing file is opened, locked and checked by the store)."""
    target = Path(path)
    _check_names(target, "--out")
    if target.is_dir():
        raise RSValueError("--out", "a file path, not a folder", str(target))
    if os.path.lexists(target):  # an existing file (or device, FIFO): the store checks it
        return
    base = _existing_ancestor(target.parent)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise RSValueError(
            "--out", "a file in a folder this process may create and write", str(target)
        )


def check_report_folder(path: str | Path, files: tuple[str, ...]) -> None:
    """``path`` must be a folder or absent, and each of ``files`` in it absent or a regular
    file this process may write; checked before an audit attacks anything."""
    folder = Path(path)
    _check_names(folder / max(files, key=len), "--out")
    if folder.exists() and not folder.is_dir():
        raise RSValueError(
            "--out", "a folder for the report (new or existing)", f"{folder}, which is a file"
        )
    for name in files:
        target = folder / name
        if target.exists() or target.is_symlink():
            mode = os.stat(target).st_mode if target.exists() else 0
            if not stat.S_ISREG(mode):
                raise RSValueError(
                    "--out",
                    f"a folder whose {name} is absent or a regular file",
                    f"{target}, which is {_kind(mode) if mode else 'a dangling link'}",
                )
            if not os.access(target, os.W_OK):
                raise RSValueError("--out", f"a folder whose {name} may be written", str(target))
    parent = folder if folder.exists() else next(p for p in folder.absolute().parents if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RSValueError("--out", "a folder this process may create and write", str(folder))
