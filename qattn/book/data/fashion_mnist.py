"""Fashion-MNIST read offline from Debian's ``dataset-fashion-mnist`` package.

The package installs the original IDX files (gzip-compressed) under
``/usr/share/datasets/fashion-mnist/``: 60,000 training and 10,000 test images of 28×28 grey
pixels (uint8) in 10 balanced classes. They are read with :mod:`gzip` and :mod:`numpy` only.

Validation data come from the training set (:func:`train_val_split`, stratified by seed); the
test set is never used for model selection.

>>> data = load_fashion_mnist()
>>> data.train_images.shape, data.test_labels.shape
((60000, 28, 28), (10000,))
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qattn.book.data.common import MissingDataError, stratified_split

__all__ = ["CLASSES", "DEFAULT_ROOT", "DEBIAN_PACKAGE", "FashionMNIST", "read_idx", "load_fashion_mnist", "train_val_split"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class FashionMNIST:
    """The four arrays of Fashion-MNIST.

    Attributes
    ----------
    train_images : (60000, 28, 28) uint8
    train_labels : (60000,) int64 in 0..9
    test_images : (10000, 28, 28) uint8
    test_labels : (10000,) int64 in 0..9
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def read_idx(path: str | Path) -> np.ndarray:
    """Read one (gzip-compressed) IDX file of unsigned bytes into an array of its stated shape."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values")
    return data.reshape(shape)


def load_fashion_mnist(root: str | Path | None = None) -> FashionMNIST:
    """Load Fashion-MNIST from ``root`` (default: where the Debian package installs it).

    Raises
    ------
    MissingDataError
        If a file is missing; the message names the Debian package to install.
    """
    root = DEFAULT_ROOT if root is None else Path(root)
    paths = {key: root / name for key, name in _FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise MissingDataError(
            f"Fashion-MNIST not found ({', '.join(missing)} missing). Install the Debian package "
            f"{DEBIAN_PACKAGE}: apt-get install {DEBIAN_PACKAGE} (or run `make setup` as root)."
        )
    arrays = {key: read_idx(p) for key, p in paths.items()}
    return FashionMNIST(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
    )


def train_val_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of the TRAINING set into training and validation indices.

    Parameters
    ----------
    labels : (n,) int array of the training set
    val_size : number of validation examples (about ``val_size / 10`` per class)
    seed : split seed

    Returns
    -------
    train_idx, val_idx : sorted, disjoint int64 arrays
    """
    if not 0 < val_size < len(labels):
        raise ValueError(f"val_size must be in (0, {len(labels)}), got {val_size}")
    train_idx, val_idx = stratified_split(labels, (1 - val_size / len(labels),), seed)
    return train_idx, val_idx
