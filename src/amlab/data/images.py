"""Image data sets as flattened float tensors in [0, 1].

Sources: scikit-learn's bundled 8x8 digits, MNIST-format IDX files (MNIST, Fashion-MNIST)
and the binary version of CIFAR-10. Nothing is downloaded: file loaders read the directory
the user names and say what to fetch when something is missing.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from amlab.errors import AmlabError, check_choice, check_positive_int

SPLITS = ("train", "test")
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_HINT = (
    "download the four IDX files of MNIST (https://yann.lecun.com/exdb/mnist/, mirror "
    "https://ossci-datasets.s3.amazonaws.com/mnist/) or Fashion-MNIST "
    "(https://github.com/zalandoresearch/fashion-mnist) and pass their directory"
)
_CIFAR_HINT = (
    "download the binary version cifar-10-binary.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass the directory "
    "holding cifar-10-batches-bin/ (or that folder itself)"
)
_CIFAR_RECORD = 1 + 3 * 32 * 32


@dataclass(frozen=True)
class ImageSet:
    """Labelled images: ``images`` (N, D) in [0, 1], ``labels`` (N,) int64.

    ``shape`` is the shape of one image, (H, W) or channel-first (C, H, W), with
    prod(shape) == D; ``images.reshape(-1, *shape)`` recovers the pictures.
    """

    images: torch.Tensor
    labels: torch.Tensor
    shape: tuple[int, ...]
    name: str

    def __post_init__(self) -> None:
        n = self.images.shape[0] if self.images.dim() == 2 else -1
        if n < 0 or self.labels.shape != (n,) or math.prod(self.shape) != self.images.shape[1]:
            raise AmlabError(
                f"ImageSet {self.name!r}: images {tuple(self.images.shape)}, labels "
                f"{tuple(self.labels.shape)} and image shape {self.shape} do not fit; pass "
                "images (N, prod(shape)) and labels (N,)."
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: int, seed: int | None = 0) -> ImageSet:
        """``n`` images drawn without replacement with ``seed``; the first ``n`` if seed is None."""
        n = check_positive_int(n, "n")
        if n > len(self):
            raise AmlabError(
                f"asked for {n} images but {self.name!r} holds only {len(self)}; "
                f"pass n <= {len(self)}."
            )
        if seed is None:
            index = torch.arange(n)
        else:
            g = torch.Generator().manual_seed(check_positive_int(seed, "seed", allow_zero=True))
            index = torch.randperm(len(self), generator=g)[:n]
        index = index.to(self.images.device)
        return ImageSet(self.images[index], self.labels[index], self.shape, self.name)


def _image_set(
    pixels: np.ndarray, labels: np.ndarray, scale: float, name: str, dtype: torch.dtype
) -> ImageSet:
    """ImageSet from pixels (N, *shape) with values in [0, scale] and labels (N,)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise AmlabError(
            f"dtype must be a floating torch dtype such as torch.float32; got {dtype!r}."
        )
    images = torch.from_numpy(pixels.reshape(len(pixels), -1).copy()).to(dtype) / scale
    return ImageSet(
        images,
        torch.from_numpy(labels.astype(np.int64)),
        tuple(int(s) for s in pixels.shape[1:]),
        name,
    )


def _directory(directory: str | Path, what: str, hint: str) -> Path:
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise AmlabError(f"{what} directory {str(path)!r} does not exist; {hint}.")
    return path


def digits(*, dtype: torch.dtype = torch.float32) -> ImageSet:
    """scikit-learn's 1797 bundled 8x8 digits: images (1797, 64) = pixel counts / 16."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _image_set(bunch.images, bunch.target, 16.0, "digits", dtype)


def _read_idx(directory: Path, stem: str, ndim: int) -> np.ndarray:
    """The uint8 array (ndim dimensions) of the IDX file ``stem`` or ``stem.gz`` in directory."""
    path = next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)
    if path is None:
        raise AmlabError(f"expected {stem}[.gz] in {str(directory)!r}; {_MNIST_HINT}.")
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise AmlabError(
            f"cannot read {path} ({exc}); the file is damaged: download it again."
        ) from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes((0, 0, 0x08, ndim)):
        raise AmlabError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s) (magic "
            f"{raw[:4].hex()}, expected {bytes((0, 0, 0x08, ndim)).hex()}); pass the original "
            "MNIST-format file, decompressed or .gz."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    if len(raw) - header != math.prod(dims):
        raise AmlabError(
            f"{path} holds {len(raw) - header} data bytes but its header promises "
            f"{dims} = {math.prod(dims)}; the file is truncated or damaged: "
            "download it again."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def load_mnist(
    directory: str | Path,
    split: str = "train",
    *,
    name: str = "mnist",
    dtype: torch.dtype = torch.float32,
) -> ImageSet:
    """MNIST-format IDX files (raw or .gz) in ``directory``: images (N, H*W) = bytes / 255.

    Fashion-MNIST has the same files; pass ``name="fashion_mnist"`` to label the set.
    """
    check_choice(split, "split", SPLITS)
    root = _directory(directory, "MNIST", _MNIST_HINT)
    image_file, label_file = _MNIST_FILES[split]
    pixels, labels = _read_idx(root, image_file, 3), _read_idx(root, label_file, 1)
    if len(pixels) != len(labels):
        raise AmlabError(
            f"{image_file} holds {len(pixels)} images but {label_file} holds "
            f"{len(labels)} labels in {str(root)!r}; the two files come from "
            "different downloads: fetch both again."
        )
    return _image_set(pixels, labels, 255.0, name, dtype)


def _read_cifar_batch(path: Path) -> np.ndarray:
    """Records (n, 3073) of one CIFAR-10 binary batch: label byte, then R, G, B planes."""
    if not path.is_file():
        raise AmlabError(f"expected {path.name} in {str(path.parent)!r}; {_CIFAR_HINT}.")
    raw = path.read_bytes()
    if not raw or len(raw) % _CIFAR_RECORD:
        raise AmlabError(
            f"{path} has {len(raw)} bytes, not a positive multiple of the "
            f"{_CIFAR_RECORD}-byte record; the file is truncated or not a CIFAR-10 "
            "binary batch (the python/pickle version is not supported): "
            "download cifar-10-binary.tar.gz again."
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR_RECORD)
    if records[:, 0].max() > 9:
        raise AmlabError(
            f"{path} has label {records[:, 0].max()} > 9; it is not a CIFAR-10 "
            "batch (CIFAR-100 has two label bytes): pass the CIFAR-10 binary files."
        )
    return records


def load_cifar10(
    directory: str | Path, split: str = "train", *, dtype: torch.dtype = torch.float32
) -> ImageSet:
    """CIFAR-10 binary batches: images (N, 3072) = bytes / 255, shape (3, 32, 32) (R, G, B)."""
    check_choice(split, "split", SPLITS)
    root = _directory(directory, "CIFAR-10", _CIFAR_HINT)
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    records = np.concatenate([_read_cifar_batch(root / n) for n in names])
    return _image_set(records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0], 255.0, "cifar10", dtype)


def load(
    name: str = "digits",
    data_dir: str | Path | None = None,
    split: str = "train",
    *,
    dtype: torch.dtype = torch.float32,
) -> ImageSet:
    """The data set ``name`` (one of DATASETS); "digits" ignores ``data_dir`` and ``split``."""
    check_choice(name, "data set", DATASETS)
    if name == "digits":
        return digits(dtype=dtype)
    if data_dir is None:
        raise AmlabError(
            f"data set {name!r} is read from files on disk; pass --data-dir "
            "(data_dir=) naming the directory that holds them."
        )
    if name == "cifar10":
        return load_cifar10(data_dir, split, dtype=dtype)
    return load_mnist(data_dir, split, name=name, dtype=dtype)


def digits_split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) indices into the ``count`` embedded digits: a fixed shuffle (seed 0),
    its first fifth held out for testing."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(0))
    n_test = count // 5
    return order[n_test:], order[:n_test]


def image_splits(data: str, data_dir: str | None) -> tuple[ImageSet, ImageSet]:
    """(train, test). The embedded digits have no split: a fixed shuffle (seed 0) keeps
    a fifth of them for testing. File data sets use their own train and test files."""
    if data != "digits":
        return load(data, data_dir, split="train"), load(data, data_dir, split="test")
    full = load("digits")
    train_, test = digits_split(len(full.labels))
    return (
        ImageSet(full.images[train_], full.labels[train_], full.shape, "digits-train"),
        ImageSet(full.images[test], full.labels[test], full.shape, "digits-test"),
    )
