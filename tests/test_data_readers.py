"""CIFAR-10 and MNIST readers on small files written here in the real formats, and the
built-in generated data set."""

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest

from graphc.data import CIFAR10, MNIST, SyntheticCIFAR
from graphc.data.safe_pickle import UnsafePickleError, loads_plain_data
from graphc.data.synthetic import generate
from graphc.errors import DataError

# ---- writing CIFAR-10 batches as Python 2's cPickle did ------------------------------------


def py2_pickle(obj) -> bytes:
    """Protocol 2, as the CIFAR-10 python batches were written by Python 2: str values as
    BINSTRING, arrays through numpy.core.multiarray._reconstruct plus BUILD."""
    out = bytearray(b"\x80\x02")

    def string(b: bytes) -> None:
        if len(b) < 256:
            out.extend(b"U" + bytes([len(b)]) + b)
        else:
            out.extend(b"T" + struct.pack("<i", len(b)) + b)

    def emit(o) -> None:
        if o is None:
            out.extend(b"N")
        elif o is True or o is False:
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, bytes):
            string(o)
        elif isinstance(o, tuple):
            out.extend(b"(")
            for v in o:
                emit(v)
            out.extend(b"t")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                emit(v)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                emit(k)
                emit(v)
            out.extend(b"u")
        elif isinstance(o, np.ndarray):
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n")
            out.extend(b"cnumpy\nndarray\n")
            emit((0,))
            string(b"b")
            out.extend(b"\x87R")  # TUPLE3, REDUCE
            out.extend(b"(")
            emit(1)
            emit(tuple(o.shape))
            out.extend(b"cnumpy\ndtype\n")
            emit((o.dtype.str[1:].encode(), False, True))
            out.extend(b"R")
            emit((3, b"|", None, None, None, -1, -1, 0))
            out.extend(b"b")  # BUILD the dtype
            emit(False)
            string(o.tobytes())
            out.extend(b"tb")  # the array's state tuple, BUILD
        else:
            raise TypeError(type(o))

    emit(obj)
    out.extend(b".")
    return bytes(out)


def cifar_batch(n: int, seed: int) -> tuple[dict, np.ndarray, list]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return batch, data, labels


def write_cifar(root, sizes=(3, 4, 2, 5, 3), test=4, writer=py2_pickle):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    expected = {"train": ([], []), "test": ([], [])}
    for i, n in enumerate(sizes, 1):
        batch, data, labels = cifar_batch(n, i)
        (folder / f"data_batch_{i}").write_bytes(writer(batch))
        expected["train"][0].append(data)
        expected["train"][1].extend(labels)
    batch, data, labels = cifar_batch(test, 99)
    (folder / "test_batch").write_bytes(writer(batch))
    expected["test"][0].append(data)
    expected["test"][1].extend(labels)
    return folder, expected


def test_py2_writer_matches_real_pickle_semantics():
    batch, data, labels = cifar_batch(3, 0)
    plain = pickle.loads(py2_pickle(batch), encoding="bytes")  # our own bytes: safe here
    np.testing.assert_array_equal(plain[b"data"], data)
    assert plain[b"labels"] == labels


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_reads_python_batches(tmp_path, train):
    _, expected = write_cifar(tmp_path)
    ds = CIFAR10(tmp_path, train=train)
    data, labels = expected["train" if train else "test"]
    data = np.concatenate(data)
    assert len(ds) == len(data) == (17 if train else 4)
    np.testing.assert_array_equal(ds.images, data.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(ds.labels, labels)
    image, label = ds[1]
    assert image.shape == (3, 32, 32) and label == labels[1]
    np.testing.assert_allclose(image.numpy(), data[1].reshape(3, 32, 32) / 255, rtol=1e-6)
    x, y = ds.get_batch(np.array([2, 0]))
    assert x.shape == (2, 3, 32, 32) and y.numpy().tolist() == [labels[2], labels[0]]


def test_cifar10_accepts_the_folder_itself_and_python3_pickles(tmp_path):
    folder, expected = write_cifar(tmp_path, writer=lambda b: pickle.dumps(b, protocol=4))
    ds = CIFAR10(folder, train=False)
    np.testing.assert_array_equal(ds.labels, expected["test"][1])
    for protocol in (2, 5):
        batch, data, _ = cifar_batch(2, 1)
        loaded = loads_plain_data(pickle.dumps(batch, protocol=protocol))
        np.testing.assert_array_equal(loaded[b"data"], data)


def test_cifar10_reads_the_original_archive(tmp_path):
    src = tmp_path / "src"
    folder, expected = write_cifar(src)
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    for root in (archive.parent, archive):
        ds = CIFAR10(root, train=True)
        np.testing.assert_array_equal(ds.labels, expected["train"][1])
    truncated = tmp_path / "bad.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(DataError, match="bad.tar.gz.*truncated"):
        CIFAR10(truncated)


class RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_cifar10_refuses_a_pickle_that_runs_code(tmp_path):
    folder, _ = write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": RunsCode(marker), b"labels": [1]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3 was refused.*asks for (io|builtins)\.open"):
        CIFAR10(tmp_path, train=True)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError):
        loads_plain_data(pickle.dumps(RunsCode(marker)))
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(np.array([object()], dtype=object), protocol=2),
        pickle.dumps({b"x": np.ma.masked_array([1, 2])}, protocol=2),
        b"cos\nsystem\n(S'echo hi'\ntR.",
    ],
)
def test_safe_pickle_refuses_objects(payload):
    with pytest.raises(UnsafePickleError):
        loads_plain_data(payload)


def test_cifar10_truncated_and_wrong_contents(tmp_path):
    folder, _ = write_cifar(tmp_path)
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_2 is truncated or corrupt.*cifar-10-python"):
        CIFAR10(tmp_path)

    bad = tmp_path / "bad"
    folder, _ = write_cifar(bad)
    batch, _, _ = cifar_batch(3, 0)
    batch[b"data"] = batch[b"data"][:, :100]
    (folder / "test_batch").write_bytes(py2_pickle(batch))
    with pytest.raises(DataError, match="test_batch.*100 values, expected 3072"):
        CIFAR10(bad, train=False)
    batch, _, _ = cifar_batch(3, 0)
    batch[b"labels"] = [1, 2]
    (folder / "test_batch").write_bytes(py2_pickle(batch))
    with pytest.raises(DataError, match="test_batch: 2 labels for 3 images"):
        CIFAR10(bad, train=False)


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist.*cifar-10-python.tar.gz"):
        CIFAR10(tmp_path / "nowhere")
    with pytest.raises(DataError, match="has no cifar-10-batches-py"):
        CIFAR10(tmp_path)
    folder, _ = write_cifar(tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5 is missing"):
        CIFAR10(tmp_path, train=True)
    with pytest.raises(DataError, match="never downloads"):
        CIFAR10(tmp_path, download=True)


# ---- MNIST ---------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=5, n_test=3, gz=False, dotted=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for train, n in ((True, n_train), (False, n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        prefix = "train" if train else "t10k"
        for kind, arr, dims in (("images", images, 3), ("labels", labels, 1)):
            sep = "." if dotted else "-"
            name = f"{prefix}-{kind}{sep}idx{dims}-ubyte"
            raw = idx_bytes(arr)
            if gz:
                name += ".gz"
                raw = gzip.compress(raw)
            (folder / name).write_bytes(raw)
        out[train] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision", "dotted"])
def test_mnist_reads_idx_files(tmp_path, gz, layout):
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    expected = write_mnist(folder, gz=gz, dotted=layout == "dotted")
    for train in (True, False):
        ds = MNIST(tmp_path, train=train)
        images, labels = expected[train]
        np.testing.assert_array_equal(ds.images[:, 0], images)
        np.testing.assert_array_equal(ds.labels, labels)
        image, label = ds[0]
        assert image.shape == (1, 28, 28) and label == labels[0]


def test_mnist_gzip_told_by_content_not_name(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(path.read_bytes()))  # gzipped under the plain name
    assert len(MNIST(tmp_path)) == 5


def test_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="MNIST not found.*does not exist.*train-images"):
        MNIST(tmp_path / "none")
    write_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated.*header promises"):
        MNIST(tmp_path)
    images.write_bytes(b"\x1f\x8b" + raw[:50])
    with pytest.raises(DataError, match="could not be read or decompressed"):
        MNIST(tmp_path)
    images.write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(DataError, match="not an IDX file"):
        MNIST(tmp_path)
    images.write_bytes(idx_bytes(np.zeros((4, 28, 28))))
    with pytest.raises(DataError, match="4 images but .* 5 labels"):
        MNIST(tmp_path)
    images.write_bytes(idx_bytes(np.zeros((5, 784))))
    with pytest.raises(DataError, match="expected an IDX file with 3 dimensions, found 2"):
        MNIST(tmp_path)


# ---- the built-in data set -----------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_and_split():
    a = SyntheticCIFAR(train=True, size=300, seed=1)
    b = SyntheticCIFAR(train=True, size=300, seed=1)
    test = SyntheticCIFAR(train=False, size=300, seed=1)
    other = SyntheticCIFAR(train=True, size=300, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, test.images)
    assert not np.array_equal(a.images, other.images)
    assert a.images.shape == (300, 3, 32, 32) and a.images.dtype == np.uint8
    assert np.bincount(a.labels).tolist() == [30] * 10
    assert a.num_classes == 10 and a.sample_shape == (3, 32, 32)
    assert len(SyntheticCIFAR(train=False, size=0)) == 0


def test_synthetic_chunked_generation_is_consistent():
    small, _ = generate(50, seed=3)
    big, _ = generate(3000, seed=3)  # spans two render chunks
    assert big.shape == (3000, 3, 32, 32)
    # colour is uninformative: per-class mean colours are close to the overall mean
    images, labels = generate(2000, seed=4)
    means = np.stack([images[labels == c].mean(axis=(0, 2, 3)) for c in range(10)])
    assert np.abs(means - images.mean(axis=(0, 2, 3))).max() < 15
    assert small.std() > 40  # not blank


def test_stdlib_pickle_bytes_io_is_not_used_for_loading():
    # the reader is the restricted one: a stream naming any other global fails before running
    with pytest.raises(UnsafePickleError, match="io.BytesIO"):
        loads_plain_data(pickle.dumps(io.BytesIO(b"x")))
