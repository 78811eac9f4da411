"""Data loaders and corruptions, checked against files and arrays written here."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from amlab.data import (
    ImageSet,
    block_mask,
    corrupt,
    digits,
    gaussian_noise,
    load,
    load_cifar10,
    load_mnist,
    random_mask,
    salt_and_pepper,
)
from amlab.errors import AmlabError

MNIST_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(
    path: Path, array: np.ndarray, gz: bool = False, magic: bytes | None = None, cut: int = 0
) -> None:
    """Write uint8 ``array`` as an IDX file (header + payload), dropping ``cut`` final bytes."""
    header = (magic or bytes((0, 0, 0x08, array.ndim))) + np.array(array.shape, ">i4").tobytes()
    data = (header + array.astype(np.uint8).tobytes())[: len(header) + array.size - cut]
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


def write_mnist(
    directory: Path,
    split: str,
    n: int = 5,
    gz: bool = False,
    seed: int = 0,
    n_labels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n if n_labels is None else n_labels, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    image_stem, label_stem = MNIST_STEMS[split]
    write_idx(directory / (image_stem + suffix), images, gz)
    write_idx(directory / (label_stem + suffix), labels, gz)
    return images, labels


def write_cifar(path: Path, labels: list[int], seed: int = 0) -> np.ndarray:
    """Write a CIFAR-10 binary batch; returns its pixels (n, 3, 32, 32) uint8."""
    pixels = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), np.uint8)
    records = np.concatenate([np.array(labels, np.uint8)[:, None], pixels.reshape(-1, 3072)], 1)
    path.write_bytes(records.tobytes())
    return pixels


# ---------------------------------------------------------------- digits and ImageSet


def test_digits_equals_sklearn_over_16():
    d, ref = digits(), load_digits()
    assert (len(d), d.images.shape, d.shape, d.name) == (1797, (1797, 64), (8, 8), "digits")
    assert d.images.dtype == torch.float32 and d.labels.dtype == torch.int64
    assert 0 <= d.images.min() and d.images.max() <= 1
    assert torch.equal(d.images, torch.tensor(ref.data / 16, dtype=torch.float32))
    assert torch.equal(d.labels, torch.tensor(ref.target))
    assert load().images.equal(d.images)
    assert digits(dtype=torch.float64).images.dtype == torch.float64


def test_subset_first_and_seeded_sample():
    s = ImageSet(torch.arange(20.0)[:, None].repeat(1, 4), torch.arange(20), (2, 2), "toy")
    assert torch.equal(s.subset(3, seed=None).labels, torch.arange(3))
    a, b = s.subset(10, seed=1), s.subset(10, seed=1)
    assert torch.equal(a.labels, b.labels) and a.labels.unique().numel() == 10
    assert not torch.equal(a.labels, s.subset(10, seed=2).labels)
    assert torch.equal(a.images[:, 0], a.labels.float()) and a.shape == (2, 2)
    assert sorted(s.subset(20).labels.tolist()) == list(range(20))
    for n in (0, 21, 2.5):
        with pytest.raises(AmlabError):
            s.subset(n)


# ---------------------------------------------------------------- MNIST IDX files


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_round_trip(tmp_path, split, gz):
    images, labels = write_mnist(tmp_path, split, n=7, gz=gz)
    s = load_mnist(tmp_path, split)
    expected = torch.from_numpy(images.reshape(7, 784).astype(np.float32)) / 255
    assert s.shape == (28, 28) and s.name == "mnist" and s.images.dtype == torch.float32
    assert torch.equal(s.images, expected)
    assert torch.equal(s.labels, torch.from_numpy(labels.astype(np.int64)))
    assert torch.equal(s.images.view(7, 28, 28)[3, 5], expected.view(7, 28, 28)[3, 5])


def test_load_dispatches_mnist_and_fashion(tmp_path):
    images, _ = write_mnist(tmp_path, "test", gz=True)
    fashion = load("fashion_mnist", tmp_path, split="test")
    assert fashion.name == "fashion_mnist" and len(fashion) == len(images)
    assert torch.equal(load("mnist", str(tmp_path), "test").images, fashion.images)
    with pytest.raises(AmlabError, match="--data-dir"):
        load("mnist")
    with pytest.raises(AmlabError, match="choose one of"):
        load("imagenet", tmp_path)


def test_mnist_missing_directory_and_file(tmp_path):
    with pytest.raises(AmlabError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    write_mnist(tmp_path, "test")
    with pytest.raises(AmlabError, match=r"train-images-idx3-ubyte\[\.gz\].*download"):
        load_mnist(tmp_path, "train")
    with pytest.raises(AmlabError, match="split"):
        load_mnist(tmp_path, "valid")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_wrong_magic_and_mismatch(tmp_path, gz):
    images = np.zeros((4, 28, 28), np.uint8)
    labels = np.zeros(4, np.uint8)
    stem = ".gz" if gz else ""
    image_path = tmp_path / ("t10k-images-idx3-ubyte" + stem)
    write_idx(tmp_path / ("t10k-labels-idx1-ubyte" + stem), labels, gz)

    write_idx(image_path, images, gz, cut=10)
    with pytest.raises(AmlabError, match="truncated"):
        load_mnist(tmp_path, "test")
    for magic in (b"\x01\x00\x08\x03", b"\x00\x00\x0d\x03", b"\x00\x00\x08\x02"):
        write_idx(image_path, images, gz, magic=magic)
        with pytest.raises(AmlabError, match="not an IDX file"):
            load_mnist(tmp_path, "test")
    image_path.write_bytes(b"\x00\x00")
    with pytest.raises(AmlabError):
        load_mnist(tmp_path, "test")
    write_idx(image_path, images[:3], gz)
    with pytest.raises(AmlabError, match="3 images but .* 4 labels"):
        load_mnist(tmp_path, "test")


def test_mnist_damaged_gzip(tmp_path):
    write_mnist(tmp_path, "test", gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    for damaged in (path.read_bytes()[:-30], b"not gzip at all"):  # truncated, not gzip
        path.write_bytes(damaged)
        with pytest.raises(AmlabError, match="damaged"):
            load_mnist(tmp_path, "test")


# ---------------------------------------------------------------- CIFAR-10 binary


def test_cifar_channel_layout(tmp_path):
    r = np.arange(1024, dtype=np.uint8).reshape(32, 32)  # known R plane, row-major
    record = np.concatenate([[7], r.ravel(), np.full(1024, 100), np.full(1024, 200)])
    (tmp_path / "test_batch.bin").write_bytes(record.astype(np.uint8).tobytes())
    s = load_cifar10(tmp_path, "test")
    assert (s.shape, s.name, s.images.shape, s.labels.tolist()) == (
        (3, 32, 32),
        "cifar10",
        (1, 3072),
        [7],
    )
    pic = s.images.view(1, 3, 32, 32)[0]
    assert torch.equal(pic[0], torch.from_numpy(r.astype(np.float32)) / 255)
    assert pic[0, 1, 0] == 32 / 255  # row 1, column 0
    assert torch.all(pic[1] == 100 / 255) and torch.all(pic[2] == 200 / 255)


def test_cifar_train_concatenates_batches_in_order(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    labels = [[i % 10, (i + 3) % 10] for i in range(5)]
    pixels = [write_cifar(folder / f"data_batch_{i + 1}.bin", labels[i], seed=i) for i in range(5)]
    s = load_cifar10(tmp_path)  # the parent of cifar-10-batches-bin/
    expected = torch.from_numpy(np.concatenate(pixels).reshape(10, 3072).astype(np.float32))
    assert torch.equal(s.images, expected / 255)
    assert s.labels.tolist() == [v for batch in labels for v in batch]
    assert torch.equal(load("cifar10", folder).images, s.images)


def test_cifar_bad_files(tmp_path):
    with pytest.raises(AmlabError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(AmlabError, match=r"test_batch\.bin.*cifar-10-binary"):
        load_cifar10(tmp_path, "test")
    path = tmp_path / "test_batch.bin"
    write_cifar(path, [1, 2])
    for cut in (path.read_bytes()[:-1], b""):  # a record short of a byte, no record at all
        path.write_bytes(cut)
        with pytest.raises(AmlabError, match="multiple"):
            load_cifar10(tmp_path, "test")
    write_cifar(path, [1, 10])
    with pytest.raises(AmlabError, match="label 10"):
        load_cifar10(tmp_path, "test")
    write_cifar(tmp_path / "data_batch_1.bin", [0])
    with pytest.raises(AmlabError, match="data_batch_2"):
        load_cifar10(tmp_path, "train")


# ---------------------------------------------------------------- corruptions


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(16, 64, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
def test_random_mask_hides_exact_count(x, fraction):
    y, observed = random_mask(x, fraction, seed=3, fill=-1.0)
    hidden = ~observed
    assert observed.dtype == torch.bool and observed.shape == x.shape
    assert hidden.sum(1).tolist() == [round(fraction * 64)] * 16
    assert torch.all(y[hidden] == -1.0) and torch.equal(y[observed], x[observed])


def test_random_mask_seeds(x):
    same = random_mask(x, 0.3, seed=5)[1], random_mask(x, 0.3, seed=5)[1]
    assert torch.equal(*same)
    assert not torch.equal(same[0], random_mask(x, 0.3, seed=6)[1])
    assert not torch.equal(same[0][0], same[0][1])  # rows get their own masks
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(random_mask(x, 0.3, g1)[1], random_mask(x, 0.3, g2)[1])
    # chosen uniformly: every position hidden with frequency near the fraction
    freq = (~random_mask(torch.zeros(4000, 64), 0.25, seed=0)[1]).float().mean(0)
    assert torch.all((freq - 0.25).abs() < 0.04)


@pytest.mark.parametrize(
    "block, rows, cols",
    [
        ("lower_half", slice(4, 8), slice(0, 8)),
        ("upper_half", slice(0, 4), slice(0, 8)),
        ("left_half", slice(0, 8), slice(0, 4)),
        ("right_half", slice(0, 8), slice(4, 8)),
        ((1, 2, 3, 5), slice(1, 4), slice(2, 7)),
    ],
)
def test_block_mask_rectangles(x, block, rows, cols):
    y, observed = block_mask(x, (8, 8), block, fill=0.5)
    expected = torch.ones(8, 8, dtype=torch.bool)
    expected[rows, cols] = False
    assert torch.equal(observed, expected.reshape(64).expand(16, 64))
    assert torch.all(y[~observed] == 0.5) and torch.equal(y[observed], x[observed])


def test_block_mask_every_channel():
    x = torch.rand(2, 3 * 4 * 6)
    y, observed = block_mask(x, (3, 4, 6))
    obs = observed.view(2, 3, 4, 6)
    assert torch.all(~obs[:, :, 2:]) and torch.all(obs[:, :, :2])
    assert torch.equal(corrupt(x, "block", 0.9, shape=(3, 4, 6))[0], y)


def test_gaussian_noise_statistics():
    x = torch.full((400, 500), 0.5)
    y, observed = gaussian_noise(x, 0.3, seed=1, clip=False)
    noise = y - x
    assert abs(noise.mean()) < 0.005 and abs(noise.std() - 0.3) < 0.005
    assert not observed.any() and observed.shape == x.shape
    assert torch.equal(y, gaussian_noise(x, 0.3, seed=1, clip=False)[0])
    clipped = gaussian_noise(x, 0.3, seed=1)[0]
    assert clipped.min() == 0 and clipped.max() == 1
    assert torch.equal(clipped, y.clamp(0, 1))
    assert torch.equal(gaussian_noise(x, 0.0)[0], x)


def test_salt_and_pepper(x):
    y, observed = salt_and_pepper(x, 0.4, seed=2)
    hidden = ~observed
    assert hidden.sum(1).tolist() == [round(0.4 * 64)] * 16
    assert set(y[hidden].tolist()) == {0.0, 1.0}
    assert torch.equal(y[observed], x[observed])
    assert abs(y[hidden].mean() - 0.5) < 0.1
    assert torch.equal(y, salt_and_pepper(x, 0.4, seed=2)[0])


@pytest.mark.parametrize(
    "kind, level", [("mask", 0.3), ("noise", 0.2), ("salt_pepper", 0.3), ("block", 0.0)]
)
def test_corrupt_dispatch_keeps_observed_exact(x, kind, level):
    y, observed = corrupt(x, kind, level, seed=4, shape=(8, 8))
    assert y.shape == x.shape and y.dtype == x.dtype and observed.dtype == torch.bool
    assert torch.equal(y[observed], x[observed])
    assert not torch.equal(y, x)
    direct = {
        "mask": lambda: random_mask(x, level, 4),
        "noise": lambda: gaussian_noise(x, level, 4),
        "salt_pepper": lambda: salt_and_pepper(x, level, 4),
        "block": lambda: block_mask(x, (8, 8)),
    }[kind]()
    assert torch.equal(direct[0], y) and torch.equal(direct[1], observed)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: random_mask(x, 1.5), r"\[0, 1\]"),
        (lambda x: random_mask(x, -0.1), "fraction"),
        (lambda x: salt_and_pepper(x, 2), r"\[0, 1\]"),
        (lambda x: gaussian_noise(x, -1.0), "sigma"),
        (lambda x: random_mask(x[0], 0.5), r"\(batch, D\)"),
        (lambda x: random_mask(x.view(16, 8, 8), 0.5), r"\(batch, D\)"),
        (lambda x: random_mask(torch.full((2, 3), float("nan")), 0.5), "NaN"),
        (lambda x: random_mask(x, 0.5, fill=float("inf")), "fill"),
        (lambda x: random_mask(x, 0.5, seed=-1), "seed"),
        (lambda x: block_mask(x, (4, 4)), "shape"),
        (lambda x: block_mask(x, (8, 8, 1, 1)), "shape"),
        (lambda x: block_mask(x, "middle"), "shape"),
        (lambda x: block_mask(x, (8, 8), "middle"), "choose one of"),
        (lambda x: block_mask(x, (8, 8), (6, 0, 3, 8)), "inside"),
        (lambda x: block_mask(x, (8, 8), (0, 0, 0, 8)), "inside"),
        (lambda x: block_mask(x, (8, 8), (0, 0, 4)), "inside"),
        (lambda x: corrupt(x, "blur", 1.0), "mask, block, noise, salt_pepper"),
        (lambda x: corrupt(x, "block", 0.0), "shape="),
        (lambda x: digits(dtype=torch.int64), "dtype"),
    ],
)
def test_bad_inputs_raise_amlab_error(x, call, message):
    with pytest.raises(AmlabError, match=message):
        call(x)
