"""Text data: tokenizing, the vocabulary, reading `label<TAB>text` files (and what a broken
file gets), padding to a fixed length, batching, and the built-in task's promise that word
order, not word counts, decides the class."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.data import DataLoader, SyntheticText, TextClassification, Vocab, tokenize
from graphc.data.text import FILLERS, MARKERS, SYNTHETIC_CLASSES
from graphc.errors import DataError


def test_tokenize_splits_words_and_punctuation_in_lower_case():
    assert tokenize("Don't STOP, now!") == ["don", "'", "t", "stop", ",", "now", "!"]
    assert tokenize("Ünïcode wörds") == ["ünïcode", "wörds"]
    assert tokenize("Keep Case", lowercase=False) == ["Keep", "Case"]


def test_the_vocabulary_orders_words_by_frequency_then_alphabet():
    v = Vocab.build([["b", "a", "c"], ["c", "b"], ["c", "d"]], min_freq=1)
    assert v.itos == ["<pad>", "<unk>", "c", "b", "a", "d"]
    assert v["c"] == 2 and v["never seen"] == 1 and len(v) == 6
    assert Vocab.build([["b", "a", "c"], ["c", "b"]], min_freq=2).itos == [
        "<pad>",
        "<unk>",
        "b",
        "c",
    ]
    assert Vocab.build([["b", "a", "c"], ["c"]], max_size=1).itos == ["<pad>", "<unk>", "c"]
    np.testing.assert_array_equal(v.encode(["a", "z", "c"], 5), [4, 1, 2, 0, 0])
    np.testing.assert_array_equal(v.encode(["a"] * 7, 3), [4, 4, 4])


def _write(root, train, test=None):
    (root / "train.tsv").write_text(train, encoding="utf-8")
    if test is not None:
        (root / "test.tsv").write_text(test, encoding="utf-8")


def test_a_directory_of_tsv_files_reads_as_padded_token_ids(tmp_path):
    _write(
        tmp_path,
        "pos\tGreat movie, loved it\nneg\tboring movie\n\npos\tloved the music\n",
        "neg\tterrible acting\npos\tgreat music\n",
    )
    train = TextClassification(tmp_path, train=True, seq_len=6)
    test = TextClassification(tmp_path, train=False, seq_len=6)
    assert train.classes == test.classes == ("neg", "pos")
    assert len(train) == 3 and len(test) == 2
    assert train.tokens.shape == (3, 6) and train.tokens.dtype == np.int64
    assert train.decode(0) == "great movie , loved it"
    assert test.decode(0) == "<unk> <unk>"  # the vocabulary is the training split's
    assert test.decode(1) == "great music"
    np.testing.assert_array_equal(train.labels, [1, 0, 1])
    tokens, labels = DataLoader(train, batch_size=2).__iter__().__next__()
    assert tokens.shape == (2, 6) and tokens.dtype == graphc.int64
    assert labels.numpy().tolist() == [1, 0]


@pytest.mark.parametrize(
    "train, test, message",
    [
        ("pos great\n", "pos fine\n", r"train.tsv:1: expected `label<TAB>text`"),
        ("pos\tgreat\n\t missing label\n", "pos\tx\n", r"train.tsv:2: expected `label<TAB>text`"),
        ("pos\tgreat\n", "neu\tfine\n", r"test.tsv: label\(s\) \['neu'\] do not occur"),
        ("\n\n", "pos\tx\n", r"train.tsv: no samples"),
    ],
)
def test_broken_files_name_the_file_and_line(tmp_path, train, test, message):
    _write(tmp_path, train, test)
    with pytest.raises(DataError, match=message):
        TextClassification(tmp_path, train=False)


def test_missing_files_and_bad_encodings_are_reported(tmp_path):
    with pytest.raises(DataError, match="no train.tsv or train.txt found"):
        TextClassification(tmp_path)
    (tmp_path / "train.tsv").write_bytes(b"pos\tfine\nneg\t\xff\xfe bad\n")
    with pytest.raises(DataError, match=r"train.tsv:2: not UTF-8"):
        TextClassification(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        TextClassification(tmp_path / "train.tsv")


def test_the_builtin_task_is_deterministic_and_split():
    a, b = SyntheticText(size=50, seed=3), SyntheticText(size=50, seed=3)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    test = SyntheticText(train=False, size=50, seed=3)
    assert not np.array_equal(a.tokens, test.tokens)
    assert len(a.vocab) == 2 + len(MARKERS) + len(FILLERS) == 60
    assert a.classes == SYNTHETIC_CLASSES and a.seq_len == 32


def test_the_builtin_task_needs_word_order():
    """Every sentence holds each marker exactly once and its filler words are drawn
    independently of its class: what a bag of words sees is the same for every class.
    The class is which marker of each pair comes first."""
    data = SyntheticText(size=2000, seq_len=16, seed=0)
    ids = {w: data.vocab[w] for w in MARKERS}
    for tokens, label in zip(data.tokens, data.labels, strict=True):
        where = {w: list(tokens).index(i) for w, i in ids.items()}
        assert all((tokens == i).sum() == 1 for i in ids.values())
        assert label == 2 * (where["beta"] < where["alpha"]) + (where["delta"] < where["gamma"])
    counts = np.zeros((4, len(data.vocab)))
    for tokens, label in zip(data.tokens, data.labels, strict=True):
        counts[label] += np.bincount(tokens, minlength=len(data.vocab))
    share = counts / counts.sum(1, keepdims=True)
    assert np.abs(share - share.mean(0)).max() < 0.01  # no word tells the class
    assert np.bincount(data.labels).tolist() == [500] * 4
