"""Datasets: the embedded digits split, IDX files (Fashion-MNIST from Debian), ``.npz`` and
``.npy`` files.

Every loader returns ``(x, y)``: float32 images of shape (N, C, H, W) scaled to [0, 1] and int64
labels of shape (N,). Inputs without labels (an ``.npy`` file, an ``.npz`` file without ``y``,
a folder of PNG images) get the label :data:`UNLABELED` (−1) each: a run certifies them and
records the prediction and radius only. Nothing is downloaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from rs_plugin._validation import RSValueError, import_extra
from rs_plugin.data._containers import (
    UNREADABLE,
    check_npy_header,
    check_npz_members,
    read_idx,
)

__all__ = [
    "FASHION_MNIST_DIR",
    "UNLABELED",
    "is_labeled",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_npy",
    "load_npz",
    "load_png_folder",
]

# The label of an input that has none.
UNLABELED = -1

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_SIZE = 360
_DIGITS_SPLIT_SEED = 2019
_SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise RSValueError("split", "'train' or 'test'", split)


def load_digits(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's handwritten digits (1797 images, 8×8, 10 classes), scaled to [0, 1].

    The split is fixed: a permutation from ``numpy.random.default_rng(2019)`` puts the last 360
    images in ``"test"`` and the other 1437 in ``"train"``. Needs scikit-learn (the ``digits``
    extra).
    """
    _check_split(split)
    datasets = import_extra("sklearn.datasets", "digits", "the digits dataset")
    bunch = datasets.load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(y))
    cut = len(y) - DIGITS_TEST_SIZE
    chosen = order[cut:] if split == "test" else order[:cut]
    return torch.from_numpy(x[chosen].copy()), torch.from_numpy(y[chosen].copy())


def _read_idx(path: Path) -> np.ndarray:
    return read_idx(path)


def load_idx(directory: str | Path, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-style IDX files (gzipped or not) in ``directory``, e.g. Debian's Fashion-MNIST.

    Reads ``t10k-images-idx3-ubyte[.gz]`` / ``t10k-labels-idx1-ubyte[.gz]`` for ``"test"`` and
    ``train-*`` for ``"train"``; pixels are divided by 255.
    """
    _check_split(split)
    directory = Path(directory)
    prefix = "t10k" if split == "test" else "train"

    def find(kind: str) -> Path:
        for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz"):
            if (directory / name).is_file():
                return directory / name
        hint = (
            " (install Debian's package: apt-get install dataset-fashion-mnist)"
            if directory == FASHION_MNIST_DIR
            else ""
        )
        raise RSValueError(
            "data", f"a directory holding {prefix}-{kind}[.gz]{hint}", str(directory)
        )

    images = _read_idx(find("images-idx3-ubyte"))
    labels = _read_idx(find("labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise RSValueError(
            "data", "N images (N, H, W) with N labels", f"{images.shape}, {labels.shape}"
        )
    if len(labels) == 0:
        raise RSValueError(
            "data", "IDX files holding at least one image", f"0 images in {directory}"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None, :, :]
    return x, torch.from_numpy(labels.astype(np.int64))


def is_labeled(y: torch.Tensor) -> bool:
    """True unless the inputs came without labels (every label :data:`UNLABELED`)."""
    return bool(len(y) == 0 or int(y.max()) != UNLABELED)


def _check_images(x: np.ndarray, path: Path, accepted: str) -> torch.Tensor:
    """Real images (N, C, H, W), or (N, H, W) as one channel, finite, in [0, 1]."""
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        # complex values would lose their imaginary part on the way to float32
        raise RSValueError("data", f"{accepted} of real values", f"x of dtype {x.dtype} in {path}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise RSValueError(
            "data", "images x of shape (N, C, H, W) or (N, H, W)", f"x {x.shape} in {path}"
        )
    if len(x) == 0:
        raise RSValueError("data", "at least one input", f"an empty dataset in {path}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise RSValueError(
            "data",
            "finite x values in [0, 1] (divide 8-bit images by 255)",
            f"range [{x.min()}, {x.max()}] in {path}",
        )
    return torch.from_numpy(x)


def load_npz(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """An ``.npz`` file with arrays ``x`` (N, C, H, W) or (N, H, W), values in [0, 1], and,
    optionally, integer labels ``y`` (N,) (without ``y`` every label is :data:`UNLABELED`).

    Data only: arrays of Python objects (which NumPy would unpickle, running code) are refused.
    """
    path = Path(path)
    accepted = "an .npz file (numpy.savez) with a numeric array 'x' and, optionally, 'y'"
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size if path.is_file() else 0
        raise RSValueError(
            "data", accepted, f"{path} ({size} bytes), not a zip archive as numpy.savez writes"
        )
    check_npz_members(path, ("x", "y"), accepted)
    try:
        archive = np.load(path, allow_pickle=False)
    except UNREADABLE as error:
        raise RSValueError("data", accepted, f"{path}: {type(error).__name__}: {error}") from error
    with archive:
        if "x" not in archive:
            raise RSValueError(
                "data",
                "an .npz file with an array 'x' (and, optionally, labels 'y')",
                f"{path} with arrays {sorted(archive.files)}",
            )
        try:
            x = archive["x"]
            y = archive["y"] if "y" in archive else None
        except UNREADABLE as error:
            raise RSValueError(
                "data", accepted, f"{path}: {type(error).__name__}: {error}"
            ) from error
    images = _check_images(x, path, accepted)
    if y is None:
        return images, torch.full((len(images),), UNLABELED, dtype=torch.int64)
    if not np.issubdtype(y.dtype, np.number) or y.ndim != 1 or len(y) != len(images):
        raise RSValueError(
            "data",
            "labels y of shape (N,), one per image",
            f"y {y.shape} of dtype {y.dtype}, x {tuple(images.shape)} in {path}",
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise RSValueError(
            "data",
            "non-negative integer labels y",
            f"y of dtype {y.dtype}, min {y.min()} in {path}",
        )
    return images, torch.from_numpy(y.astype(np.int64))


def load_npy(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """An ``.npy`` file (numpy.save) of images (N, C, H, W) or (N, H, W) with values in [0, 1]:
    inputs without labels (each :data:`UNLABELED`). Data only (no pickled objects)."""
    path = Path(path)
    accepted = "an .npy file (numpy.save) of numeric images"
    check_npy_header(path, accepted)
    try:
        x = np.load(path, allow_pickle=False)
    except UNREADABLE as error:
        raise RSValueError("data", accepted, f"{path}: {type(error).__name__}: {error}") from error
    images = _check_images(x, path, accepted)
    return images, torch.full((len(images),), UNLABELED, dtype=torch.int64)


def load_png_folder(directory: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``*.png`` images of ``directory``, in file-name order (input i is the i-th name),
    all of one size, scaled to [0, 1]: one channel when every image is grey, else RGB. Without
    labels (each :data:`UNLABELED`). Reading PNG needs Pillow (the ``plots`` extra)."""
    directory = Path(directory)
    image_module = import_extra("PIL.Image", "plots", "a folder of PNG images")
    files = sorted(directory.glob("*.png"))
    if not files:
        raise RSValueError("data", "a folder holding *.png images", str(directory))
    arrays = []
    for file in files:
        try:
            with image_module.open(file) as image:
                arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except (*UNREADABLE, image_module.DecompressionBombError) as error:
            raise RSValueError(
                "data", "readable PNG images", f"{file}: {type(error).__name__}: {error}"
            ) from error
        if arrays[-1].shape != arrays[0].shape:
            raise RSValueError(
                "data",
                f"PNG images of one size ({arrays[0].shape[1]}×{arrays[0].shape[0]}, as "
                f"{files[0].name})",
                f"{file.name}: {arrays[-1].shape[1]}×{arrays[-1].shape[0]}",
            )
    x = np.stack(arrays).transpose(0, 3, 1, 2)  # (N, 3, H, W)
    grey = bool((x[:, :1] == x[:, 1:]).all())
    images = torch.from_numpy((x[:, :1] if grey else x).astype(np.float32) / 255.0)
    return images, torch.full((len(files),), UNLABELED, dtype=torch.int64)


def load_dataset(spec: str, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """``digits``, ``fashion-mnist``, a directory of IDX files or of PNG images, or an ``.npz``
    or ``.npy`` path."""
    if spec == "digits":
        return load_digits(split)
    if spec == "fashion-mnist":
        return load_idx(FASHION_MNIST_DIR, split)
    path = Path(spec)
    if path.is_dir():
        if not any(path.glob("*-idx?-ubyte*")) and any(path.glob("*.png")):
            return load_png_folder(path)
        return load_idx(path, split)
    if path.suffix == ".npz" and path.is_file():
        return load_npz(path)
    if path.suffix == ".npy" and path.is_file():
        return load_npy(path)
    raise RSValueError(
        "data",
        "'digits', 'fashion-mnist', a directory of IDX files or PNG images, or an existing .npz "
        "or .npy file",
        spec,
    )
