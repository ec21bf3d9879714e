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

__all__ = ["check_report_folder", "refuse_irregular"]


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


def check_report_folder(path: str | Path, files: tuple[str, ...]) -> None:
    """``path`` must be a folder or absent, and each of ``files`` in it absent or a regular
    file this process may write; checked before an audit attacks anything."""
    folder = Path(path)
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
