"""Data sets and a batch iterator, as plain numpy arrays.

* `digits`: scikit-learn's bundled 8x8 handwritten digits (1797 real images, no download),
  split into train/validation/test.
* `fashion_mnist`: Fashion-MNIST read from its four IDX files in a local directory, split
  the way Géron's book (Hands-On Machine Learning, ch. 11) does it (the first 5000
  training images are the validation set).
* `read_idx`: a strict reader for the IDX format those files use.
* `synthetic_classification`: Gaussian blobs for tests.
* `batches` / `num_batches`: mini-batches with shuffling that is reproducible per
  (seed, epoch).

Images are scaled to [0, 1] and labels are int32, so a batch goes straight into a jitted
train step.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from stablejax._checks import check_range, index, non_negative
from stablejax._extras import require as require_extra

__all__ = [
    "Split",
    "Splits",
    "digits",
    "fashion_mnist",
    "read_idx",
    "synthetic_classification",
    "synthetic_splits",
    "batches",
    "epoch_order",
    "num_batches",
]


class Split(NamedTuple):
    """Inputs `x` and integer labels `y` of one part of a data set."""

    x: np.ndarray
    y: np.ndarray


class Splits(NamedTuple):
    """A data set's training, validation and test parts."""

    train: Split
    valid: Split
    test: Split


def _float_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a NumPy floating-point dtype, got {dtype!r}") from None
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def _flag(name: str, value: object) -> None:
    """Raises ``TypeError`` unless ``value`` is a bool (``"no"`` would read as True)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _path(name: str, value: object) -> None:
    """Raises ``TypeError`` unless ``value`` is a ``str`` or ``os.PathLike`` (an int would
    be opened as a file descriptor)."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}")


def digits(
    *,
    validation: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    flatten: bool = False,
    dtype: npt.DTypeLike = np.float32,
) -> Splits:
    """scikit-learn's handwritten digits, split into train/validation/test.

    The 1797 8x8 images (pixel values 0..16, read from the CSV file that ships inside
    scikit-learn) are scaled to ``x = pixels / 16`` in [0, 1]; the labels 0..9 are
    int32. The split is stratified (each class within one sample of its share in every
    part) and shuffled, deterministic for a given `seed` (a ``numpy.random.default_rng``
    seed):
    ``round(n * test)`` images go to the test set, ``round(n * validation)`` to the
    validation set, the rest to training (defaults 10% / 20% / 70%).

    Args:
      validation: fraction of all images in the validation set, in [0, 1).
      test: fraction of all images in the test set, in [0, 1); `validation + test` < 1.
      seed: seed of the split (non-negative integer).
      flatten: if True, images have shape ``(n, 64)`` instead of ``(n, 8, 8)``.
      dtype: floating dtype of the images.

    Every argument is checked before the file is read: ``ValueError`` for a value out of
    its range (NaN included), ``TypeError`` for a `flatten` that is not a bool or a
    `dtype` NumPy does not know. Without scikit-learn (the ``data`` extra: ``pip
    install 'stablejax[data]'``), an ``ImportError`` names the extra.

    Returns:
      `Splits(train, valid, test)`, each a `Split(x, y)`.

    Reference: Alpaydin and Kaynak, "Optical Recognition of Handwritten Digits",
    UCI Machine Learning Repository (1998).
    """
    for name, value in (("validation", validation), ("test", test)):
        check_range(name, value, 0.0, 1.0, high_open=True)
    if validation + test >= 1.0:
        raise ValueError(
            f"validation + test must be < 1 to leave training data, got {validation} + {test}"
        )
    seed = index("seed", seed, 0)
    _flag("flatten", flatten)
    dtype = _float_dtype(dtype)

    pixels = np.loadtxt(_digits_file(), delimiter=",")
    x = (pixels[:, :-1].reshape(-1, 8, 8) / 16.0).astype(dtype)
    if flatten:
        x = x.reshape(len(x), -1)
    y = pixels[:, -1].astype(np.int32)
    rng = np.random.default_rng(seed)

    def carve(x, y, size):
        """Splits off `size` stratified samples: returns (rest, carved)."""
        rest, part = _stratified_split(y, size, rng)
        return Split(x[rest], y[rest]), Split(x[part], y[part])

    n = len(y)
    rest, test_split = carve(x, y, round(n * test))
    train, valid = carve(rest.x, rest.y, round(n * validation))
    return Splits(train, valid, test_split)


def _digits_file() -> str:
    """The digits CSV that ships inside scikit-learn (the ``data`` extra).

    Found without importing scikit-learn, which takes over a second, most of a short
    run's start; when it is not installed, ``stablejax._extras.require`` raises the ``ImportError``
    that names the extra to install.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        folder = list(require_extra("sklearn", "the digits set").__path__)[0]
    else:
        folder = os.path.dirname(spec.origin)
    path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"scikit-learn's digits file is missing: {path}")
    return path


def _stratified_split(
    y: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(rest, part)`` with ``len(part) == size`` and the classes' proportions.

    Class ``c`` with ``n_c`` of the ``n`` samples gives ``floor(size * n_c / n)`` samples
    to ``part``, plus one for the classes with the largest remainders until ``size`` is
    reached (ties to the smaller class label), so each class is within one sample of its
    exact share. The samples of each class are drawn by ``rng``; both index arrays are
    shuffled.
    """
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * size / len(y)
    quota = np.floor(exact).astype(np.int64)
    extra = size - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:extra]] += 1
    rest, part = [], []
    for c, k in zip(classes, quota, strict=True):
        members = rng.permutation(np.flatnonzero(y == c))
        part.append(members[:k])
        rest.append(members[k:])
    return rng.permutation(np.concatenate(rest)), rng.permutation(np.concatenate(part))


# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzip-compressed or not) into a numpy array.

    Format: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes, then ``prod(sizes)`` big-endian values in C order. Compression is
    detected from the gzip magic bytes, not the file name.

    Raises:
      TypeError if `path` is not a ``str`` or ``os.PathLike``.
      ValueError naming the file for a bad magic number, an unknown type code, or a data
      length that does not match the sizes (a truncated or padded file).
    """
    _path("path", path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: unknown IDX type code 0x{code:02X}, "
            f"expected one of {', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: sizes {shape} need {expected} data bytes, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def fashion_mnist(
    path: str | os.PathLike, *, validation: int = 5000, dtype: npt.DTypeLike = np.float32
) -> Splits:
    """Fashion-MNIST from the four standard IDX files in the directory `path`.

    Reads ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (or the same names
    without ``.gz``). Images are scaled to ``x = pixels / 255`` in [0, 1], labels are
    int32. As in Géron's book (Hands-On Machine Learning, ch. 11), the *first*
    `validation` training images are the
    validation set: ``valid = train_full[:validation]``, ``train = train_full[validation:]``
    (default 5000 of 60000); the 10000 t10k images are the test set.

    Raises:
      TypeError if `path` is not a ``str`` or ``os.PathLike``, or `dtype` not a dtype.
      FileNotFoundError listing every missing file and the directory to put it in.
      ValueError naming the file if an images file does not hold uint8 images of shape
      ``(n, 28, 28)`` or a labels file uint8 labels of shape ``(n,)`` in 0..9 (a swapped
      or foreign file); if `validation` is not in [0, number of training images) or the
      files disagree on the number of images.

    Reference: Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
    Benchmarking Machine Learning Algorithms", arXiv:1708.07747 (2017).
    """
    _path("path", path)
    validation = index("validation", validation, 0)
    dtype = _float_dtype(dtype)
    directory = os.path.abspath(path)
    found, missing = [], []
    for name in _FASHION_FILES:
        candidates = [os.path.join(directory, name + ".gz"), os.path.join(directory, name)]
        existing = [c for c in candidates if os.path.isfile(c)]
        if existing:
            found.append(existing[0])
        else:
            missing.append(name + ".gz")
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files missing: {', '.join(missing)}. Download them from "
            f"https://github.com/zalandoresearch/fashion-mnist (data/fashion) and put them "
            f"in {directory}"
        )
    x_full, y_full, x_test, y_test = (read_idx(f) for f in found)
    for array, file in zip((x_full, y_full, x_test, y_test), found, strict=True):
        _check_fashion_file(array, file, images="images" in os.path.basename(file))
    for (images, labels), (image_file, label_file) in (
        ((x_full, y_full), found[:2]),
        ((x_test, y_test), found[2:]),
    ):
        if len(images) != len(labels):
            raise ValueError(
                f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels"
            )
    if validation >= len(x_full):
        raise ValueError(
            f"validation must be in [0, {len(x_full)}) (the number of training images), "
            f"got {validation}"
        )

    def split(images, labels):
        return Split((images / 255.0).astype(dtype), labels.astype(np.int32))

    return Splits(
        train=split(x_full[validation:], y_full[validation:]),
        valid=split(x_full[:validation], y_full[:validation]),
        test=split(x_test, y_test),
    )


def _check_fashion_file(array: np.ndarray, path: str, *, images: bool) -> None:
    """Checks that a Fashion-MNIST file holds what its name says, naming the file."""
    role = "images" if images else "labels"
    if array.dtype != np.uint8:
        raise ValueError(f"{path}: Fashion-MNIST {role} are unsigned bytes (IDX type 0x08), "
                         f"this file holds {array.dtype}")
    if images and (array.ndim != 3 or array.shape[1:] != (28, 28)):
        hint = " (a labels file under an images name?)" if array.ndim == 1 else ""
        raise ValueError(f"{path}: Fashion-MNIST images have shape (n, 28, 28), this file "
                         f"holds shape {array.shape}{hint}")
    if not images:
        if array.ndim != 1:
            hint = " (an images file under a labels name?)" if array.ndim == 3 else ""
            raise ValueError(f"{path}: Fashion-MNIST labels have shape (n,), this file holds "
                             f"shape {array.shape}{hint}")
        bad = np.flatnonzero(array > 9)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{path}: Fashion-MNIST labels are 0..9, this file holds "
                             f"{array[i]} at index {i} ({bad.size} labels out of range)")


def synthetic_classification(
    n: int = 1000,
    *,
    num_features: int = 20,
    num_classes: int = 2,
    seed: int = 0,
    noise: float = 0.1,
) -> Split:
    """Gaussian blobs around random unit-norm class centres, for tests.

    ``x_i = c_{y_i} + noise * e_i`` with centres ``c_k = z_k / ||z_k||``,
    ``z_k, e_i ~ N(0, I)``. The labels are balanced (``i mod num_classes``, shuffled).
    With the default ``noise=0.1`` the classes are almost linearly separable; raise
    `noise` towards 1 to make them overlap. Deterministic in `seed`; x is float32,
    y int32. The centres are drawn from `seed` too, so two calls with different seeds
    are two different problems: use :func:`synthetic_splits` for train/validation/test
    sets of one problem.

    Checked before any drawing (``ValueError`` naming the argument and the range):
    `n` and `num_features` integers >= 1, `num_classes` an integer >= 2, `seed` an
    integer >= 0, `noise` a finite number >= 0 (an infinite one would make every
    sample infinite) whose samples fit float32 (checked once drawn).
    """
    rng, centres = _centres(("n", n), num_features, num_classes, seed, noise)
    return _blobs(rng, centres, n, noise)


def synthetic_splits(
    train: int = 2000,
    valid: int = 500,
    test: int = 500,
    *,
    num_features: int = 20,
    num_classes: int = 2,
    seed: int = 0,
    noise: float = 0.1,
) -> Splits:
    """Train, validation and test sets of one :func:`synthetic_classification` problem.

    The class centres are drawn once from `seed`; each split's samples are drawn after
    them from the same generator, in the order train, validation, test. The training
    split equals ``synthetic_classification(train, ...)`` with the same arguments, which
    are checked as there; `train`, `valid` and `test` are integers >= 1.

    Example::

        >>> from stablejax.data import synthetic_splits
        >>> splits = synthetic_splits(100, 20, 20, num_classes=3, seed=1)
        >>> [len(s.y) for s in splits]
        [100, 20, 20]
    """
    for name, size in (("valid", valid), ("test", test)):
        index(name, size, 1)
    rng, centres = _centres(("train", train), num_features, num_classes, seed, noise)
    parts = [_blobs(rng, centres, size, noise) for size in (train, valid, test)]
    return Splits(*parts)


def _centres(
    size: tuple[str, int], num_features: int, num_classes: int, seed: int, noise: float
) -> tuple[np.random.Generator, np.ndarray]:
    """Checks the arguments (``size``: the sample count and its argument's name), then
    draws the class centres."""
    index(*size, 1)
    num_features = index("num_features", num_features, 1)
    num_classes = index("num_classes", num_classes, 2)
    seed = index("seed", seed, 0)
    non_negative("noise", noise)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, num_features))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return rng, centres


def _blobs(rng: np.random.Generator, centres: np.ndarray, n: int, noise: float) -> Split:
    y = rng.permutation(np.arange(n) % len(centres))
    x = centres[y] + noise * rng.standard_normal((n, centres.shape[1]))
    largest = float(np.finfo(np.float32).max)
    if not np.all(np.abs(x) <= largest):
        raise ValueError(f"noise={noise!r} overflows float32 (max {largest:.3g}); use a "
                         "smaller noise")
    return Split(x.astype(np.float32), y.astype(np.int32))


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Number of batches `batches` yields for `n` samples.

    ``n // batch_size`` if `drop_last`, else ``ceil(n / batch_size)``. `n` must be an
    integer >= 0, `batch_size` >= 1, `drop_last` a bool.
    """
    n = index("n", n, 0)
    batch_size = index("batch_size", batch_size, 1)
    _flag("drop_last", drop_last)
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_order(n: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0) -> np.ndarray:
    """The sample order of one epoch: ``np.random.default_rng([seed, epoch]).permutation(n)``.

    ``arange(n)`` without `shuffle`. Each (seed, epoch) has its own order and always the
    same one, so a resumed run sees the batches it would have seen. `n`, `seed` and
    `epoch` must be integers >= 0, `shuffle` a bool.
    """
    n = index("n", n, 0)
    seed = index("seed", seed, 0)
    epoch = index("epoch", epoch, 0)
    _flag("shuffle", shuffle)
    return np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)


def batches(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates over `(x_batch, y_batch)` mini-batches of one epoch.

    The order is `epoch_order`'s. The last batch has ``n mod batch_size`` samples unless
    `drop_last` drops it; `num_batches` gives the count. Arguments are checked when
    called, not at the first batch: `x` and `y` arrays of equal length, the others as
    in `epoch_order` and `num_batches`.
    """
    batch_size = index("batch_size", batch_size, 1)
    x, y = np.asarray(x), np.asarray(y)
    for name, array in (("x", x), ("y", y)):
        if array.ndim == 0:
            raise ValueError(f"{name} must have a first (sample) axis, got a scalar")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    n = len(x)
    order = epoch_order(n, shuffle=shuffle, seed=seed, epoch=epoch)
    count = num_batches(n, batch_size, drop_last)

    def generate():
        for b in range(count):
            idx = order[b * batch_size : (b + 1) * batch_size]
            yield x[idx], y[idx]

    return generate()
