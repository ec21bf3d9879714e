"""Corrupt or hostile containers are one error, refused before anything of their claimed size
is allocated: IDX dimensions whose product overflows, .npy headers claiming terabytes, corrupt
compressed members."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rs_plugin import RSValueError
from rs_plugin.data import load_dataset


def _idx(path, shape, payload=b"", gz=False):
    data = struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(">" + "I" * len(shape), *shape)
    data += payload
    path.write_bytes(gzip.compress(data) if gz else data)


def _idx_dir(tmp_path, shape, payload=b"", gz=False):
    suffix = ".gz" if gz else ""
    _idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", shape, payload, gz)
    _idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", (shape[0],), bytes(min(shape[0], 64)), gz)
    return str(tmp_path)


@pytest.mark.parametrize(
    "shape",
    [(2**32 - 1,) * 3, (2**32 - 1,) * 4, (2**32 - 1,) * 8, (1 << 20, 1 << 20, 1 << 10)],
)
def test_idx_dimensions_claiming_more_than_memory_are_refused_before_reading(tmp_path, shape):
    folder = _idx_dir(tmp_path, shape, b"\x00" * 64)
    with pytest.raises(RSValueError, match=r"^data: expected an IDX file whose dimensions fit"):
        load_dataset(folder)


def test_a_corrupt_gzipped_idx_file_is_one_error(tmp_path):
    folder = _idx_dir(tmp_path, (2, 1, 2), bytes(4), gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the CRC
    path.write_bytes(bytes(data))
    with pytest.raises(RSValueError, match=r"^data: expected a readable \(gzipped\) IDX file"):
        load_dataset(folder)


def _npz_with_member(path, name, member: bytes, compress=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(2, dtype=np.int64))
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        archive.writestr(name, member)
        archive.writestr("y.npy" if name == "x.npy" else "x.npy", buffer.getvalue())
    return path


def _npy_header(shape, dtype="<f4") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


@pytest.mark.parametrize("shape", [(10**12, 1, 28, 28), (2**40, 2**40, 1, 1), (4, 1, 8, 8)])
def test_an_npz_header_claiming_more_than_its_bytes_is_refused(tmp_path, shape):
    path = _npz_with_member(tmp_path / "d.npz", "x.npy", _npy_header(shape) + bytes(16))
    with pytest.raises(RSValueError, match=r"^data: .*'x' claims shape"):
        load_dataset(str(path))


def test_a_corrupt_compressed_npz_member_is_one_error(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).random((4, 1, 8, 8)), y=np.arange(4))
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 40] = bytes(40)
    path.write_bytes(bytes(data))
    with pytest.raises(RSValueError, match=r"^data: expected"):
        load_dataset(str(path))


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    shape=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=6),
    payload=st.binary(max_size=64),
    gz=st.booleans(),
)
def test_any_idx_header_is_read_or_refused_with_one_error(tmp_path, shape, payload, gz):
    folder = tmp_path / f"f{abs(hash((tuple(shape), payload, gz)))}"
    folder.mkdir()
    try:
        load_dataset(_idx_dir(folder, tuple(shape), payload, gz))
    except RSValueError:
        pass
