import gzip
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablejax import data

# IDX type code -> dtype, written out independently of the reader's table.
IDX_CODES = [
    (0x08, np.uint8),
    (0x09, np.int8),
    (0x0B, np.int16),
    (0x0C, np.int32),
    (0x0D, np.float32),
    (0x0E, np.float64),
]


def idx_bytes(array, code):
    """An IDX file built from the format description: 0, 0, code, ndim, sizes, data."""
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, payload, compress):
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("code,dtype", IDX_CODES)
def test_read_idx_round_trip(tmp_path, code, dtype, compress):
    rng = np.random.default_rng(code)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 4, 5), dtype=dtype, endpoint=True)
    else:
        array = rng.standard_normal((3, 4, 5)).astype(dtype)
    f = write(tmp_path / "a.idx", idx_bytes(array, code), compress)
    out = data.read_idx(f)
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_labels_one_dimension(tmp_path):
    labels = np.array([9, 0, 0, 3, 0, 2], np.uint8)
    # A 1-d IDX file spelled out byte by byte: magic 0x00000801, size 6, then the labels.
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 6, 9, 0, 0, 3, 0, 2])
    np.testing.assert_array_equal(data.read_idx(write(tmp_path / "l", raw, False)), labels)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated(tmp_path, compress):
    raw = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5), 0x08)
    f = write(tmp_path / "short.idx", raw[:-7], compress)
    with pytest.raises(ValueError, match="short.idx"):
        data.read_idx(f)


def test_read_idx_truncated_header(tmp_path):
    raw = idx_bytes(np.zeros((3, 4, 5), np.uint8), 0x08)
    f = write(tmp_path / "head.idx", raw[:9], False)
    with pytest.raises(ValueError, match="head.idx"):
        data.read_idx(f)


def test_read_idx_trailing_bytes(tmp_path):
    raw = idx_bytes(np.zeros((2, 3), np.uint8), 0x08) + b"\x00"
    with pytest.raises(ValueError, match="long.idx"):
        data.read_idx(write(tmp_path / "long.idx", raw, False))


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_bad_magic(tmp_path, compress):
    raw = bytearray(idx_bytes(np.zeros((2, 3), np.uint8), 0x08))
    raw[0] = 0x01
    with pytest.raises(ValueError, match="magic.idx"):
        data.read_idx(write(tmp_path / "magic.idx", bytes(raw), compress))


def test_read_idx_unknown_type_code(tmp_path):
    raw = bytearray(idx_bytes(np.zeros((2, 3), np.uint8), 0x08))
    raw[2] = 0x0A
    with pytest.raises(ValueError, match=r"code.idx.*0x0A"):
        data.read_idx(write(tmp_path / "code.idx", bytes(raw), False))


def test_read_idx_corrupt_gzip(tmp_path):
    payload = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8), 0x08))
    f = tmp_path / "cut.gz"
    f.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match="cut.gz"):
        data.read_idx(f)


# ---------------------------------------------------------------- fashion_mnist


def fake_fashion(directory, n_train=12, n_test=4, side=28, compress=True):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write(directory / (name + ".gz" if compress else name), idx_bytes(array, 0x08), compress)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_splits_like_the_book(tmp_path, compress):
    arrays = fake_fashion(tmp_path, compress=compress)
    splits = data.fashion_mnist(tmp_path, validation=3)
    images = arrays["train-images-idx3-ubyte"]
    labels = arrays["train-labels-idx1-ubyte"]
    # X_valid, X_train = X_train_full[:3] / 255., X_train_full[3:] / 255.
    np.testing.assert_array_equal(splits.valid.x, (images[:3] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(splits.train.x, (images[3:] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(splits.valid.y, labels[:3])
    np.testing.assert_array_equal(splits.train.y, labels[3:])
    np.testing.assert_array_equal(
        splits.test.x, (arrays["t10k-images-idx3-ubyte"] / 255.0).astype(np.float32)
    )
    np.testing.assert_array_equal(splits.test.y, arrays["t10k-labels-idx1-ubyte"])
    assert splits.train.x.dtype == np.float32 and splits.train.y.dtype == np.int32
    assert splits.test.y.dtype == np.int32


def test_fashion_mnist_dtype_and_no_validation(tmp_path):
    arrays = fake_fashion(tmp_path)
    splits = data.fashion_mnist(tmp_path, validation=0, dtype=np.float64)
    assert splits.valid.x.shape == (0, 28, 28)
    assert splits.train.x.dtype == np.float64
    np.testing.assert_array_equal(splits.train.x, arrays["train-images-idx3-ubyte"] / 255.0)


def test_fashion_mnist_missing_files(tmp_path):
    fake_fashion(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        data.fashion_mnist(tmp_path)
    message = str(info.value)
    assert "train-labels-idx1-ubyte.gz" in message
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "train-images-idx3-ubyte" not in message
    assert str(tmp_path) in message


def test_fashion_mnist_empty_directory_lists_all(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.fashion_mnist(tmp_path / "nowhere")
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in str(info.value)


def test_fashion_mnist_count_mismatch(tmp_path):
    fake_fashion(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(3, np.uint8), 0x08), True)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        data.fashion_mnist(tmp_path)


@pytest.mark.parametrize("validation", [-1, 12, 2.5])
def test_fashion_mnist_bad_validation(tmp_path, validation):
    fake_fashion(tmp_path)
    with pytest.raises(ValueError, match="validation"):
        data.fashion_mnist(tmp_path, validation=validation)


# ---------------------------------------------------------------- digits


def rows(x, y):
    """Rows of (pixels, label) sorted lexicographically, to compare data sets as multisets."""
    table = np.concatenate([x.reshape(len(x), -1), y[:, None]], axis=1)
    return table[np.lexsort(table.T[::-1])]


def test_digits_is_a_stratified_partition_of_sklearn_digits():
    from sklearn.datasets import load_digits

    reference = load_digits()
    splits = data.digits()
    n = len(reference.target)
    assert [len(s.y) for s in splits] == [n - round(0.2 * n) - round(0.1 * n),
                                          round(0.1 * n), round(0.2 * n)]
    for s in splits:
        assert s.x.shape[1:] == (8, 8)
        assert s.x.dtype == np.float32 and s.y.dtype == np.int32
        assert s.x.min() >= 0.0 and s.x.max() <= 1.0
    x_all = np.concatenate([s.x for s in splits])
    y_all = np.concatenate([s.y for s in splits])
    np.testing.assert_array_equal(
        rows(x_all.astype(np.float64) * 16, y_all), rows(reference.images, reference.target)
    )
    overall = np.bincount(reference.target, minlength=10) / n
    for s in splits:
        counts = np.bincount(s.y, minlength=10)
        assert np.all(np.abs(counts - overall * len(s.y)) <= 1)


def test_digits_is_deterministic_per_seed():
    a, b, c = data.digits(seed=3), data.digits(seed=3), data.digits(seed=4)
    for sa, sb in zip(a, b, strict=True):
        np.testing.assert_array_equal(sa.x, sb.x)
        np.testing.assert_array_equal(sa.y, sb.y)
    assert not np.array_equal(a.test.x, c.test.x)


def test_digits_flatten_dtype_and_empty_validation():
    splits = data.digits(validation=0.0, test=0.5, flatten=True, dtype=np.float64)
    assert splits.train.x.shape[1:] == (64,)
    assert splits.train.x.dtype == np.float64
    assert len(splits.valid.y) == 0
    assert len(splits.train.y) + len(splits.test.y) == 1797


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"validation": -0.1}, "validation"),
        ({"validation": 1.0}, "validation"),
        ({"test": 1.5}, "test"),
        ({"validation": 0.5, "test": 0.5}, "validation \\+ test"),
        ({"seed": -1}, "seed"),
        ({"dtype": np.int32}, "dtype"),
    ],
)
def test_digits_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        data.digits(**kwargs)


# ---------------------------------------------------------------- synthetic_classification


def test_synthetic_classification_is_gaussian_blobs():
    n, d, k, noise = 3000, 6, 3, 0.1
    x, y = data.synthetic_classification(n, num_features=d, num_classes=k, seed=1, noise=noise)
    assert x.shape == (n, d) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y), [n // k] * k)
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    # Centres have unit norm; the residuals are N(0, noise^2) per feature.
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 1.0, atol=0.02)
    residual = x - means[y]
    np.testing.assert_allclose(residual.std(), noise, rtol=0.05)
    # A least-squares one-vs-rest linear classifier separates them.
    features = np.concatenate([x, np.ones((n, 1), np.float32)], axis=1)
    w, *_ = np.linalg.lstsq(features, np.eye(k)[y], rcond=None)
    assert np.mean(np.argmax(features @ w, axis=1) == y) > 0.99


def test_synthetic_classification_is_deterministic():
    a = data.synthetic_classification(50, seed=7)
    b = data.synthetic_classification(50, seed=7)
    c = data.synthetic_classification(50, seed=8)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"n": 0}, "n"), ({"num_features": 0}, "num_features"),
     ({"num_classes": 1}, "num_classes"), ({"noise": -0.5}, "noise"), ({"seed": 1.5}, "seed")],
)
def test_synthetic_classification_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        data.synthetic_classification(**kwargs)


# Values outside an argument's range, NaN and infinity included: each a ValueError naming
# the argument and the value, raised at the call (before any data is drawn or read).
OUT_OF_RANGE = [
    (data.synthetic_classification, {"noise": math.inf}, "noise=inf"),
    (data.synthetic_classification, {"noise": -math.inf}, "noise=-inf"),
    (data.synthetic_classification, {"noise": math.nan}, "noise=nan"),
    (data.synthetic_classification, {"noise": "0.1"}, "noise must be a real number.*'0.1'"),
    (data.synthetic_classification, {"n": math.inf}, "n must be an integer >= 1, got inf"),
    (data.synthetic_classification, {"num_classes": 2.5}, "num_classes .* got 2.5"),
    (data.synthetic_splits, {"train": 0}, "train must be an integer >= 1, got 0"),
    (data.synthetic_splits, {"test": -1}, "test must be an integer >= 1, got -1"),
    (data.synthetic_splits, {"noise": math.inf}, "noise=inf"),
    (data.synthetic_classification, {"noise": 1e39}, "noise=1e.39 overflows float32"),
    (data.digits, {"validation": math.nan}, r"validation=nan .* \[0.0, 1.0\)"),
    (data.digits, {"test": math.inf}, r"test=inf .* \[0.0, 1.0\)"),
    (data.digits, {"validation": "0.1"}, "validation must be a real number.*'0.1'"),
    (data.num_batches, {"n": 10, "batch_size": math.inf}, "batch_size .* got inf"),
    (data.epoch_order, {"n": 4, "epoch": math.nan}, "epoch .* got nan"),
    (data.batches, {"x": 3.0, "y": 2.0, "batch_size": 1}, "x must have a first .* axis"),
]


@pytest.mark.parametrize("fn, kwargs, match", OUT_OF_RANGE,
                         ids=[f"{fn.__name__}-{kw}" for fn, kw, _ in OUT_OF_RANGE])
def test_data_functions_refuse_values_out_of_range(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


# Arguments of the wrong kind, which used to be read as something else: a TypeError
# naming the argument and the value.
WRONG_KIND = [
    (data.digits, {"flatten": "no"}, "flatten must be True or False, got 'no'"),  # was True
    (data.digits, {"dtype": "no-such-type"}, "dtype must be .* got 'no-such-type'"),
    (data.read_idx, {"path": 0}, "path must be a str or os.PathLike, got int"),  # was stdin
    (data.fashion_mnist, {"path": None}, "path must be a str or os.PathLike, got NoneType"),
    (data.num_batches, {"n": 10, "batch_size": 3, "drop_last": "yes"}, "drop_last .* 'yes'"),
    (data.epoch_order, {"n": 4, "shuffle": None}, "shuffle must be True or False, got None"),
    (data.batches, {"x": np.zeros(4), "y": np.zeros(4), "batch_size": 2, "shuffle": "no"},
     "shuffle must be True or False, got 'no'"),
]


@pytest.mark.parametrize("fn, kwargs, match", WRONG_KIND,
                         ids=[f"{fn.__name__}-{kw}" for fn, kw, _ in WRONG_KIND])
def test_data_functions_refuse_arguments_of_the_wrong_kind(fn, kwargs, match):
    with pytest.raises(TypeError, match=match):
        fn(**kwargs)


def test_noise_zero_puts_every_sample_on_its_unit_norm_class_centre():
    x, y = data.synthetic_classification(40, num_features=3, num_classes=4, noise=0.0)
    assert len(np.unique(x, axis=0)) == 4
    np.testing.assert_array_equal(x[y == 2], np.repeat(x[y == 2][:1], 10, axis=0))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)


# ---------------------------------------------------------------- batches


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 40),
    batch_size=st.integers(1, 12),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 100),
)
def test_batches_cover_each_sample_once(n, batch_size, drop_last, shuffle, seed, epoch):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int32)
    out = list(data.batches(x, y, batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                            drop_last=drop_last))
    expected_count = n // batch_size if drop_last else -(-n // batch_size)
    assert len(out) == expected_count == data.num_batches(n, batch_size, drop_last)
    sizes = [len(b) for _, b in out]
    assert all(s == batch_size for s in sizes[:-1])
    if out:
        assert sizes[-1] == (batch_size if drop_last or n % batch_size == 0 else n % batch_size)
    seen = np.concatenate([b for _, b in out]) if out else np.zeros(0, np.int32)
    assert len(seen) == len(set(seen.tolist()))
    assert len(seen) == (n // batch_size * batch_size if drop_last else n)
    for xb, yb in out:
        np.testing.assert_array_equal(xb, x[yb])
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(len(seen)))


def test_batches_reproducible_per_seed_and_epoch():
    x = np.arange(100, dtype=np.float32)
    y = np.arange(100)

    def order(**kwargs):
        return np.concatenate([b for _, b in data.batches(x, y, 16, **kwargs)])

    np.testing.assert_array_equal(order(seed=1, epoch=2), order(seed=1, epoch=2))
    assert not np.array_equal(order(seed=1, epoch=2), order(seed=1, epoch=3))
    assert not np.array_equal(order(seed=1, epoch=2), order(seed=2, epoch=2))
    assert not np.array_equal(order(seed=1, epoch=0), np.arange(100))


def test_num_batches_closed_form():
    assert data.num_batches(55000, 32) == 1719
    assert data.num_batches(55000, 32, True) == 1718
    assert data.num_batches(64, 32) == data.num_batches(64, 32, True) == 2
    assert data.num_batches(0, 5) == 0


@pytest.mark.parametrize(
    "args,kwargs,name",
    [
        ((np.zeros(4), np.zeros(4), 0), {}, "batch_size"),
        ((np.zeros(4), np.zeros(4), 2.0), {}, "batch_size"),
        ((np.zeros(4), np.zeros(3), 2), {}, "x and y"),
        ((np.zeros(4), np.zeros(4), 2), {"epoch": -1}, "epoch"),
        ((np.zeros(4), np.zeros(4), 2), {"seed": -3}, "seed"),
    ],
)
def test_batches_validation_is_eager(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        data.batches(*args, **kwargs)


def test_num_batches_validation():
    with pytest.raises(ValueError, match="batch_size"):
        data.num_batches(10, 0)
    with pytest.raises(ValueError, match="n must"):
        data.num_batches(-1, 2)


def test_synthetic_splits_share_one_problem():
    splits = data.synthetic_splits(300, 100, 100, num_features=5, num_classes=3, seed=4,
                                   noise=0.1)
    alone = data.synthetic_classification(300, num_features=5, num_classes=3, seed=4,
                                          noise=0.1)
    np.testing.assert_array_equal(splits.train.x, alone.x)
    np.testing.assert_array_equal(splits.train.y, alone.y)
    # Nearest class mean of the training split classifies the other splits: same centres.
    means = np.stack([splits.train.x[splits.train.y == k].mean(axis=0) for k in range(3)])
    for split in (splits.valid, splits.test):
        nearest = np.argmin(((split.x[:, None] - means) ** 2).sum(-1), axis=1)
        assert np.mean(nearest == split.y) > 0.95
    other = data.synthetic_classification(100, num_features=5, num_classes=3, seed=5)
    nearest = np.argmin(((other.x[:, None] - means) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == other.y) < 0.8  # another seed is another problem
