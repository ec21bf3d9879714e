"""Containers read before allocation: IDX headers, ``.npy`` files and ``.npz`` members checked
against the bytes they hold and the machine's memory, so a corrupt or hostile file is one error,
never a crash.

A header is a claim: an IDX header's dimensions (whose product may overflow a 64-bit integer), an
``.npy`` member's shape and dtype (which may claim terabytes). Each claim is compared with the
bytes actually present (the member's uncompressed size in the zip directory, the IDX payload read
with a bound) and with physical memory before anything of that size is allocated; corrupt
compressed data (a CRC or deflate error) is reported like any other unreadable file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from rs_plugin._validation import RSValueError

__all__ = ["check_npy_header", "check_npz_members", "memory_limit", "read_idx"]

UNREADABLE = (OSError, EOFError, ValueError, zlib.error, zipfile.BadZipFile, MemoryError)


def memory_limit() -> int:
    """Bytes of physical memory (the most any one array may claim)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or not), its claimed size checked first."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4:
                raise RSValueError("data", "an IDX file with a complete header", f"{path}")
            zero, dtype_code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or dtype_code != 0x08:
                raise RSValueError(
                    "data", "IDX files of unsigned bytes (magic 0x0000 08 ..)", str(path)
                )
            dims = handle.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise RSValueError("data", "an IDX file with a complete header", f"{path}")
            shape = struct.unpack(">" + "I" * ndim, dims)
            size = math.prod(shape)  # Python integers: no overflow
            if size > memory_limit():
                raise RSValueError(
                    "data",
                    f"an IDX file whose dimensions fit in memory ({memory_limit()} bytes)",
                    f"{path} claiming {shape} = {size} bytes",
                )
            data = _read_at_most(handle, size + 1)
    except RSValueError:
        raise
    except UNREADABLE as error:
        raise RSValueError(
            "data", "a readable (gzipped) IDX file", f"{path}: {type(error).__name__}: {error}"
        ) from error
    if len(data) != size:
        raise RSValueError("data", f"an IDX file holding {shape} bytes", f"{path} ({len(data)})")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _read_at_most(handle: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes, read in chunks: memory follows the bytes present, not the claim."""
    chunks, total = [], 0
    while total < limit:
        chunk = handle.read(min(1 << 22, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _claimed_bytes(member: Any) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, bytes) an ``.npy`` header claims, read from an open binary handle."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    return shape, dtype, math.prod(shape) * dtype.itemsize


def check_npy_header(path: Path, accepted: str) -> None:
    """An ``.npy`` file's header must describe no more bytes than the file holds and fit in
    memory; checked from the header alone."""
    try:
        with open(path, "rb") as handle:
            shape, dtype, claimed = _claimed_bytes(handle)
            size = path.stat().st_size
    except UNREADABLE as error:
        raise RSValueError("data", accepted, f"{path}: {type(error).__name__}: {error}") from error
    if claimed > size or claimed > memory_limit():
        raise RSValueError(
            "data",
            f"{accepted}, no larger than the bytes it holds and memory",
            f"{path} claims shape {shape} of {dtype} = {claimed} bytes in {size} bytes",
        )


def check_npz_members(path: Path, names: tuple[str, ...], accepted: str) -> None:
    """Each ``name.npy`` member's header must describe no more bytes than the member holds
    and fit in memory; checked from the headers alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in names:
                try:
                    info = archive.getinfo(f"{name}.npy")
                except KeyError:
                    continue
                with archive.open(info) as member:
                    shape, dtype, claimed = _claimed_bytes(member)
                if claimed > info.file_size or claimed > memory_limit():
                    raise RSValueError(
                        "data",
                        f"{accepted}, each array no larger than the bytes it holds and memory",
                        f"{path}: {name!r} claims shape {shape} of {dtype} = {claimed} bytes in "
                        f"a member of {info.file_size} bytes",
                    )
    except RSValueError:
        raise
    except UNREADABLE as error:
        raise RSValueError("data", accepted, f"{path}: {type(error).__name__}: {error}") from error
