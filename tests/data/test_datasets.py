"""Dataset loaders: the fixed digits split, IDX files (and Debian's Fashion-MNIST), .npz files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch

from rs_plugin import RSValueError
from rs_plugin.data import (
    UNLABELED,
    is_labeled,
    load_dataset,
    load_digits,
    load_idx,
    load_npy,
    load_npz,
)

# ---------------------------------------------------------------------------------------------
# digits


@pytest.mark.parametrize(("split", "size"), [("train", 1437), ("test", 360)])
def test_digits_shapes_dtypes_and_range(split, size):
    x, y = load_digits(split)
    assert x.shape == (size, 1, 8, 8)
    assert y.shape == (size,)
    assert x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert float(x.min()) == 0.0
    assert float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))


def test_digits_split_is_fixed():
    for split in ("train", "test"):
        x1, y1 = load_digits(split)
        x2, y2 = load_digits(split)
        assert torch.equal(x1, x2)
        assert torch.equal(y1, y2)


def test_digits_split_follows_the_documented_permutation_and_is_disjoint():
    bunch = sklearn.datasets.load_digits()
    total = len(bunch.target)
    assert total == 1797
    order = np.random.default_rng(2019).permutation(total)
    test_idx, train_idx = order[-360:], order[:-360]
    # The index sets partition the dataset: disjoint and together everything.
    assert set(test_idx.tolist()).isdisjoint(train_idx.tolist())
    assert set(test_idx.tolist()) | set(train_idx.tolist()) == set(range(total))
    for split, idx in (("test", test_idx), ("train", train_idx)):
        x, y = load_digits(split)
        expected_x = torch.from_numpy((bunch.images[idx] / 16.0).astype(np.float32))[:, None]
        assert torch.equal(x, expected_x)
        assert torch.equal(y, torch.from_numpy(bunch.target[idx].astype(np.int64)))


def test_digits_unknown_split_is_rejected():
    with pytest.raises(RSValueError, match="split"):
        load_digits("validation")


# ---------------------------------------------------------------------------------------------
# IDX files


def _idx_bytes(array: np.ndarray, *, magic: bytes | None = None) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = magic if magic is not None else struct.pack(">HBB", 0, 0x08, array.ndim)
    dims = struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + dims + array.tobytes()


def _write_idx(path: Path, array: np.ndarray, *, magic: bytes | None = None) -> None:
    data = _idx_bytes(array, magic=magic)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def _tiny_images(n: int, h: int = 4, w: int = 3, seed: int = 0) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    return images


def _write_pair(
    directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True
) -> None:
    suffix = ".gz" if gz else ""
    _write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
    _write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def test_idx_header_matches_the_mnist_magic_numbers():
    # Our writer must produce the real format: 0x00000803 for images, 0x00000801 for labels.
    assert _idx_bytes(np.zeros((2, 4, 3)))[:4] == struct.pack(">I", 0x00000803)
    assert _idx_bytes(np.zeros(2))[:4] == struct.pack(">I", 0x00000801)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "uncompressed"])
def test_idx_round_trip(tmp_path, gz):
    test_images, test_labels = _tiny_images(5), np.array([3, 0, 9, 1, 3], dtype=np.uint8)
    train_images, train_labels = _tiny_images(7, seed=1), np.arange(7, dtype=np.uint8)
    _write_pair(tmp_path, "t10k", test_images, test_labels, gz=gz)
    _write_pair(tmp_path, "train", train_images, train_labels, gz=gz)

    for split, images, labels in (
        ("test", test_images, test_labels),
        ("train", train_images, train_labels),
    ):
        x, y = load_idx(tmp_path, split)
        assert x.shape == (len(images), 1, 4, 3)
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        expected = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
        assert torch.allclose(x, expected, rtol=0, atol=1e-7)
        assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
        assert float(x.min()) >= 0.0
        assert float(x.max()) <= 1.0

    x, _ = load_idx(tmp_path, "test")
    assert float(x[0, 0, 0, 0]) == 0.0
    assert float(x[0, 0, 0, 1]) == 1.0
    # load_dataset accepts the directory too.
    x2, y2 = load_dataset(str(tmp_path), "test")
    assert torch.equal(x2, x)
    assert torch.equal(y2, torch.tensor([3, 0, 9, 1, 3]))


def test_idx_missing_file_names_data(tmp_path):
    # Only the images are there.
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", _tiny_images(3))
    with pytest.raises(RSValueError, match="data") as info:
        load_idx(tmp_path, "test")
    assert info.value.parameter == "data"
    with pytest.raises(RSValueError, match="data"):
        load_idx(tmp_path / "does-not-exist", "test")


@pytest.mark.parametrize(
    "magic",
    [struct.pack(">I", 0x12340803), struct.pack(">I", 0x00000D03), struct.pack(">I", 0x00000903)],
    ids=["nonzero-prefix", "float-dtype", "signed-byte-dtype"],
)
def test_idx_corrupted_magic_is_rejected(tmp_path, magic):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", _tiny_images(3), magic=magic)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(RSValueError, match="data"):
        load_idx(tmp_path, "test")


def test_idx_size_and_count_mismatches_are_rejected(tmp_path):
    # Payload shorter than the header announces.
    data = _idx_bytes(_tiny_images(3))[:-5]
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(RSValueError, match="data"):
        load_idx(tmp_path, "test")
    # Three images, two labels.
    _write_pair(tmp_path, "train", _tiny_images(3), np.zeros(2, dtype=np.uint8), gz=False)
    with pytest.raises(RSValueError, match="data"):
        load_idx(tmp_path, "train")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from Debian's dataset-fashion-mnist


@pytest.mark.fashion_mnist
@pytest.mark.parametrize(("split", "size"), [("test", 10_000), ("train", 60_000)])
def test_real_fashion_mnist(split, size):
    x, y = load_dataset("fashion-mnist", split)
    assert x.shape == (size, 1, 28, 28)
    assert y.shape == (size,)
    assert x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert float(x.min()) == 0.0
    assert float(x.max()) == 1.0
    # Fashion-MNIST is balanced: 10 classes with size / 10 images each.
    assert torch.equal(torch.bincount(y), torch.full((10,), size // 10))


# ---------------------------------------------------------------------------------------------
# .npz files


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((6, 2, 5, 4))  # float64 in [0, 1)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0
    y = np.array([0, 1, 2, 3, 4, 5], dtype=np.int32)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    for loaded in (load_npz(path), load_npz(str(path)), load_dataset(str(path))):
        xt, yt = loaded
        assert xt.dtype == torch.float32
        assert yt.dtype == torch.int64
        assert xt.shape == (6, 2, 5, 4)
        assert torch.equal(xt, torch.from_numpy(x.astype(np.float32)))
        assert torch.equal(yt, torch.from_numpy(y.astype(np.int64)))


def _npz_cases() -> list[tuple[str, dict[str, np.ndarray]]]:
    x = np.full((3, 1, 4, 4), 0.5, dtype=np.float32)
    y = np.array([0, 1, 2])
    too_high, negative, nan = x.copy(), x.copy(), x.copy()
    too_high[1, 0, 2, 2] = 1.5
    negative[2, 0, 0, 0] = -0.01
    nan[0, 0, 1, 1] = np.nan
    return [
        ("missing-x", {"y": y}),
        ("wrong-names", {"images": x, "labels": y}),
        ("x-rank-2", {"x": x[:, 0, 0], "y": y}),
        ("y-rank-2", {"x": x, "y": y[:, None]}),
        ("length-mismatch", {"x": x, "y": y[:2]}),
        ("above-one", {"x": too_high, "y": y}),
        ("negative", {"x": negative, "y": y}),
        ("nan", {"x": nan, "y": y}),
        ("float-labels", {"x": x, "y": y.astype(np.float32)}),
        ("fractional-labels", {"x": x, "y": np.array([0.5, 1.0, 2.0])}),
    ]


@pytest.mark.parametrize(("name", "arrays"), _npz_cases(), ids=[c[0] for c in _npz_cases()])
def test_npz_bad_contents_name_data(tmp_path, name, arrays):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    with pytest.raises(RSValueError, match="data") as info:
        load_npz(path)
    assert info.value.parameter == "data"
    with pytest.raises(RSValueError, match="data"):
        load_dataset(str(path))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_inputs_without_labels_load_with_the_unlabeled_label(tmp_path, suffix):
    x = np.linspace(0.0, 1.0, 3 * 16, dtype=np.float32).reshape(3, 4, 4)  # (N, H, W)
    path = tmp_path / f"inputs{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    else:
        np.savez(path, x=x)
    images, labels = load_dataset(str(path))
    assert images.shape == (3, 1, 4, 4) and images.dtype == torch.float32
    torch.testing.assert_close(images[:, 0], torch.from_numpy(x))
    assert labels.tolist() == [UNLABELED] * 3 and not is_labeled(labels)
    assert is_labeled(load_npz(_labelled(tmp_path))[1])


def _labelled(tmp_path):
    path = tmp_path / "labelled.npz"
    np.savez(path, x=np.zeros((2, 1, 2, 2), np.float32), y=np.array([0, 1]))
    return path


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("uint8-pixels", np.full((2, 1, 3, 3), 255, dtype=np.uint8)),
        ("rank-2", np.zeros((2, 9), dtype=np.float32)),
        ("empty", np.zeros((0, 1, 3, 3), dtype=np.float32)),
        ("objects", np.array([None, 1], dtype=object)),
    ],
)
def test_npy_bad_contents_name_data(tmp_path, name, array):
    path = tmp_path / f"{name}.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(RSValueError, match="^data: ") as info:
        load_dataset(str(path))
    assert info.value.parameter == "data"


def test_npy_header_claiming_more_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "lying.npy"
    np.save(path, np.zeros((2, 1, 3, 3), dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data.replace(b"(2, 1, 3, 3)", b"(9, 1, 9, 9)"))
    with pytest.raises(RSValueError, match="no larger than the bytes it holds"):
        load_npy(path)


@pytest.mark.parametrize(
    "spec", ["mnist", "cifar10", "/nonexistent/dir", "/nonexistent/file.npz", "digits.csv", ""]
)
def test_unknown_dataset_spec_names_data(spec):
    with pytest.raises(RSValueError, match="data") as info:
        load_dataset(spec)
    assert info.value.parameter == "data"


def test_load_dataset_digits_is_load_digits():
    x, y = load_dataset("digits", "train")
    x2, y2 = load_digits("train")
    assert torch.equal(x, x2)
    assert torch.equal(y, y2)


@pytest.mark.parametrize(
    ("x", "y", "accepted"),
    [
        (np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64), "at least one input"),
        (np.zeros((2, 1, 4, 4), np.float32), np.array([-1, 0]), "non-negative integer labels"),
    ],
)
def test_npz_rejects_empty_data_and_negative_labels(tmp_path, x, y, accepted):
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(RSValueError, match=f"^data: expected {accepted}"):
        load_npz(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("t10k-images-idx3-ubyte.gz", b"not gzip at all"), ("t10k-images-idx3-ubyte", b"\x00\x00")],
)
def test_broken_idx_files_are_named(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(RSValueError, match="^data: expected"):
        load_idx(tmp_path, "test")


def test_a_folder_of_png_images_loads_in_name_order_without_labels(tmp_path):
    from PIL import Image

    grey = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    for i, name in enumerate(["b.png", "a.png", "c.png"]):
        Image.fromarray(grey + i).save(tmp_path / name)  # a.png holds grey + 1
    x, y = load_dataset(str(tmp_path))
    assert x.shape == (3, 1, 2, 2) and not is_labeled(y)
    torch.testing.assert_close(x[0, 0], torch.from_numpy((grey + 1) / 255.0).float())
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "d.png")
    colour, _ = load_dataset(str(tmp_path))
    assert colour.shape == (4, 3, 2, 2) and float(colour[3, 0].min()) == 1.0
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "e.png")
    with pytest.raises(RSValueError, match="^data: expected PNG images of one size"):
        load_dataset(str(tmp_path))
