"""Datasets and reference models; nothing here downloads anything."""

from rs_plugin.data._datasets import (
    FASHION_MNIST_DIR,
    load_dataset,
    load_digits,
    load_idx,
    load_npz,
)
from rs_plugin.data._lenet import LeNet, build_lenet
from rs_plugin.data._models import (
    DEMO_SIGMA,
    DEMO_WEIGHTS,
    FASHION_SIGMA,
    FASHION_WEIGHTS,
    DemoCNN,
    FashionCNN,
    load_demo_model,
    load_fashion_model,
    load_model,
    load_model_for,
)

__all__ = [
    "DEMO_SIGMA",
    "DEMO_WEIGHTS",
    "FASHION_MNIST_DIR",
    "FASHION_SIGMA",
    "FASHION_WEIGHTS",
    "DemoCNN",
    "FashionCNN",
    "LeNet",
    "build_lenet",
    "load_dataset",
    "load_demo_model",
    "load_digits",
    "load_fashion_model",
    "load_idx",
    "load_model",
    "load_model_for",
    "load_npz",
]
