"""Image data sets (flattened, in [0, 1]) and the corruptions used to test reconstruction."""

from amlab.data.corrupt import (
    CORRUPTIONS,
    block_mask,
    corrupt,
    gaussian_noise,
    random_mask,
    salt_and_pepper,
)
from amlab.data.images import DATASETS, ImageSet, digits, load, load_cifar10, load_mnist

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "ImageSet",
    "block_mask",
    "corrupt",
    "digits",
    "gaussian_noise",
    "load",
    "load_cifar10",
    "load_mnist",
    "random_mask",
    "salt_and_pepper",
]
