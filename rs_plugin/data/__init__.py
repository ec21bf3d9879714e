"""Datasets and reference models; nothing here downloads anything.

What lives here: the loaders of the embedded digits (scikit-learn's, the ``digits`` extra), IDX
files such as Debian's Fashion-MNIST, ``.npz`` and ``.npy`` files and PNG folders, with or
without labels
(:mod:`~rs_plugin.data._datasets`), with
their containers checked before anything is allocated (:mod:`~rs_plugin.data._containers`); the
reference models shipped for each dataset (:mod:`~rs_plugin.data._models`) and the papers' LeNet
(:mod:`~rs_plugin.data._lenet`); the denoised-smoothing pair shipped for Fashion-MNIST, a LeNet
trained on clean images and noise-conditional denoisers (:mod:`~rs_plugin.data._denoised`); the
scripts that trained the shipped weights (:mod:`~rs_plugin.data.train_demo`,
:mod:`~rs_plugin.data.train_fashion`, :mod:`~rs_plugin.data.train_denoised`).
"""

from rs_plugin.data._datasets import (
    FASHION_MNIST_DIR,
    UNLABELED,
    is_labeled,
    load_dataset,
    load_digits,
    load_idx,
    load_npy,
    load_npz,
    load_png_folder,
)
from rs_plugin.data._denoised import (
    CLEAN_WEIGHTS,
    DENOISER_WEIGHTS,
    SHIPPED_DENOISERS,
    load_clean_classifier,
    load_shipped_denoiser,
)
from rs_plugin.data._lenet import LeNet, build_lenet
from rs_plugin.data._models import (
    DEMO_SIGMA,
    DEMO_WEIGHTS,
    FASHION_LENETS,
    FASHION_SIGMA,
    FASHION_WEIGHTS,
    DemoCNN,
    FashionCNN,
    fashion_lenet_sigma,
    load_demo_model,
    load_fashion_lenet,
    load_fashion_model,
    shipped_model,
)

__all__ = [
    "CLEAN_WEIGHTS",
    "DEMO_SIGMA",
    "DEMO_WEIGHTS",
    "DENOISER_WEIGHTS",
    "FASHION_LENETS",
    "FASHION_MNIST_DIR",
    "FASHION_SIGMA",
    "FASHION_WEIGHTS",
    "SHIPPED_DENOISERS",
    "UNLABELED",
    "DemoCNN",
    "FashionCNN",
    "LeNet",
    "build_lenet",
    "fashion_lenet_sigma",
    "is_labeled",
    "load_clean_classifier",
    "load_dataset",
    "load_demo_model",
    "load_digits",
    "load_fashion_lenet",
    "load_fashion_model",
    "load_idx",
    "load_npy",
    "load_npz",
    "load_png_folder",
    "load_shipped_denoiser",
    "shipped_model",
]
