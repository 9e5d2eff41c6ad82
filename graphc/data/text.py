"""Text classification data: a word-level vocabulary, labelled sentences as padded token ids,
a reader for plain `label<TAB>text` files, and SyntheticText, the built-in task that needs
word order.

A sample is (tokens, label): tokens int64 [seq_len], the sentence's word ids padded with
`<pad>` (id 0) or cut to seq_len; words the vocabulary does not know become `<unk>` (id 1).
Every batch has the same shape, so a compiled step is traced once. The vocabulary and the
label names come from the training split only.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from graphc.data.dataset import Dataset
from graphc.errors import DataError
from graphc.tensor import Tensor

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"\w+|[^\w\s]")
DEFAULT_SEQ_LEN = 32


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and punctuation marks: "Don't stop!" -> ["don", "'", "t", "stop", "!"]."""
    return _WORD.findall(text.lower() if lowercase else text)


class Vocab:
    """Words <-> ids: `<pad>` is 0, `<unk>` is 1, then the words by falling frequency (ties
    in alphabetical order, so the ids do not depend on the order of the data)."""

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(
        cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        counts = Counter(w for s in sentences for w in s)
        words = sorted(
            (w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls(words[:max_size] if max_size is not None else words)

    def __len__(self) -> int:
        return len(self.itos)

    def __getitem__(self, word: str) -> int:
        return self.stoi.get(word, 1)

    def encode(self, words: Sequence[str], seq_len: int) -> np.ndarray:
        ids = np.zeros(seq_len, np.int64)
        cut = [self[w] for w in words[:seq_len]]
        ids[: len(cut)] = cut
        return ids


class TextDataset(Dataset):
    """Token ids (int64 [N, seq_len], 0-padded) with int64 labels [N]."""

    def __init__(
        self, tokens: np.ndarray, labels: np.ndarray, vocab: Vocab, classes: Sequence[str]
    ) -> None:
        if tokens.dtype != np.int64 or tokens.ndim != 2 or labels.shape != tokens.shape[:1]:
            raise ValueError(f"tokens must be int64 [N, L] with N labels, got {tokens.shape}")
        self.tokens, self.labels = tokens, labels.astype(np.int64, copy=False)
        self.vocab, self.classes = vocab, tuple(classes)

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    @property
    def sample_shape(self) -> tuple[int]:
        return (self.seq_len,)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return Tensor._wrap(self.tokens[index].copy()), int(self.labels[index])

    def get_batch(self, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        return Tensor._wrap(self.tokens[indices]), Tensor._wrap(self.labels[indices])

    def decode(self, index: int) -> str:
        return " ".join(self.vocab.itos[i] for i in self.tokens[index] if i != 0)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} sentences of {self.seq_len} tokens, "
            f"vocabulary {len(self.vocab)}, {self.num_classes} classes)"
        )


# ---- label<TAB>text files -----------------------------------------------------------------

SPLIT_FILES = {True: ("train.tsv", "train.txt"), False: ("test.tsv", "test.txt")}


def read_tsv(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(labels, texts) of a `label<TAB>text` file, one sample a line; blank lines skipped."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the text file ({e.strerror or e})") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    labels, texts = [], []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label.strip():
            raise DataError(
                f"{path}:{number}: expected `label<TAB>text`, got {line[:60]!r}; every line "
                "is a label, a tab character, then the text"
            )
        labels.append(label.strip())
        texts.append(text)
    if not labels:
        raise DataError(f"{path}: no samples (every line is `label<TAB>text`)")
    return labels, texts


def _split_file(root: Path, train: bool) -> Path:
    for name in SPLIT_FILES[train]:
        if (root / name).is_file():
            return root / name
    names = " or ".join(SPLIT_FILES[train])
    raise DataError(
        f"{root}: no {names} found; a text data directory holds train.tsv and test.tsv, each "
        "line `label<TAB>text`"
    )


class TextClassification(TextDataset):
    """`TextClassification(root, train=True, seq_len=32)`: the split of a directory holding
    train.tsv and test.tsv (or .txt). The vocabulary (words seen at least `min_freq` times,
    at most `max_vocab` of them) and the label names come from the training file, whichever
    split this is; a test label the training file lacks is an error."""

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        seq_len: int = DEFAULT_SEQ_LEN,
        min_freq: int = 1,
        max_vocab: int | None = None,
        lowercase: bool = True,
    ) -> None:
        if seq_len < 1:
            raise ValueError(f"TextClassification: seq_len must be at least 1, got {seq_len}")
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: not a directory (it should hold train.tsv and test.tsv)")
        train_path = _split_file(root, True)
        train_labels, train_texts = read_tsv(train_path)
        train_words = [tokenize(t, lowercase) for t in train_texts]
        vocab = Vocab.build(train_words, min_freq, max_vocab)
        classes = sorted(set(train_labels))
        if train:
            labels, words, path = train_labels, train_words, train_path
        else:
            path = _split_file(root, False)
            labels, texts = read_tsv(path)
            words = [tokenize(t, lowercase) for t in texts]
            unknown = sorted(set(labels) - set(classes))
            if unknown:
                raise DataError(
                    f"{path}: label(s) {unknown[:5]} do not occur in {train_path}; the "
                    f"classes are the training file's: {classes[:10]}"
                )
        index = {c: i for i, c in enumerate(classes)}
        tokens = np.stack([vocab.encode(w, seq_len) for w in words])
        super().__init__(tokens, np.array([index[c] for c in labels]), vocab, classes)
        self.root, self.train = root, train


# ---- the built-in task -------------------------------------------------------------------

MARKERS = ("alpha", "beta", "gamma", "delta")
FILLERS = tuple(
    f"{c}{v}{e}"
    for c in "bdfklmnprst"
    for v, e in (("a", "n"), ("o", "t"), ("i", "m"), ("e", "l"), ("u", "s"))
)[:54]  # 54 made-up words: the vocabulary is 2 specials + 4 markers + 54 fillers = 60
SYNTHETIC_CLASSES = ("alpha-gamma", "alpha-delta", "beta-gamma", "beta-delta")
DEFAULT_TRAIN_SENTENCES = 8_000
DEFAULT_TEST_SENTENCES = 1_000


class SyntheticText(TextDataset):
    """The built-in text task: `SyntheticText(train=True, size=None, seq_len=32, seed=0)`.

    Every sentence holds each of the four marker words (alpha, beta, gamma, delta) exactly
    once among filler words, at random places. Its class says which of alpha and beta comes
    first and which of gamma and delta does (4 classes). The words of a sentence, counted,
    are the same whatever its class: a bag-of-words model cannot do better than chance
    (25%); a model must read the order. Sentences are 8 to seq_len words long, padded to
    seq_len. Deterministic from (seed, split); the splits are drawn from different streams.
    """

    def __init__(
        self,
        train: bool = True,
        size: int | None = None,
        seq_len: int = DEFAULT_SEQ_LEN,
        seed: int = 0,
    ) -> None:
        if size is None:
            size = DEFAULT_TRAIN_SENTENCES if train else DEFAULT_TEST_SENTENCES
        if size < 0 or seq_len < 8:
            raise ValueError(
                f"SyntheticText: need size >= 0 and seq_len >= 8, got {size}, {seq_len}"
            )
        vocab = Vocab(list(MARKERS) + list(FILLERS))
        tokens, labels = generate_text(size, seq_len, seed, split=0 if train else 1)
        super().__init__(tokens, labels, vocab, SYNTHETIC_CLASSES)
        self.train, self.seed = train, seed


def generate_text(n: int, seq_len: int, seed: int, split: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n sentences (token ids of Vocab(MARKERS + FILLERS)) and their labels."""
    rng = np.random.default_rng([seed, split, 0x7E47])
    first_filler = 2 + len(MARKERS)
    labels = rng.permutation(np.arange(n) % len(SYNTHETIC_CLASSES)).astype(np.int64)
    lengths = rng.integers(8, seq_len + 1, n)
    tokens = rng.integers(first_filler, first_filler + len(FILLERS), (n, seq_len))
    tokens[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0
    for i in range(n):
        at = rng.choice(lengths[i], 4, replace=False)  # where alpha/beta and gamma/delta go
        first, second = labels[i] // 2, labels[i] % 2  # 0: alpha (gamma) first
        ab = sorted(at[:2])
        gd = sorted(at[2:])
        tokens[i, ab[0]], tokens[i, ab[1]] = (2, 3) if first == 0 else (3, 2)
        tokens[i, gd[0]], tokens[i, gd[1]] = (4, 5) if second == 0 else (5, 4)
    return tokens.astype(np.int64), labels
