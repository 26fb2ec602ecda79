"""VQA data that works offline: easy-VQA (PyPI ``easy-vqa``) and generated Sort-of-CLEVR scenes.

Both give a :class:`VQASet`: images ``(n_images, 3, H, W)`` uint8, questions as token ids
``(n_questions, L)`` (0 = padding), the image of each question, the answer index and a question
type. Images are shared by several questions; models run the CNN once per image.

easy-VQA (Zhou, 2020, MIT): 4,000 train and 1,000 test 64×64 images of one coloured shape,
38,575 / 9,673 questions, 13 answers. Question types: ``yes/no``, ``shape``, ``color``. We take a
validation split from the train images (whole images, so no image is in two splits).

Sort-of-CLEVR (after Santoro et al., 2017, generated here): 64×64 scenes with six objects of six
distinct colours, each a square or a circle, at non-overlapping positions. Per scene and colour,
non-relational questions (``shape``: its shape; ``horizontal``: is it on the left; ``vertical``:
is it at the top) and relational ones (``closest``/``furthest``: the shape of the object closest
to / furthest from it; ``count``: how many objects share its shape). Questions are English text
so that the same GRU encoder reads both data sets.

The tokenizer is a word vocabulary built from the TRAINING questions only (lower case, ``?``
dropped); unknown words map to id 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qattn.book.data.common import MissingDataError

__all__ = ["VQASet", "Vocabulary", "load_easy_vqa", "make_sort_of_clevr", "SORT_OF_CLEVR_COLOURS"]

PAD, UNK = 0, 1


@dataclass
class Vocabulary:
    """Word ↔ id map built from training questions; 0 is padding, 1 unknown."""

    words: list[str] = field(default_factory=lambda: ["<pad>", "<unk>"])

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.lower().replace("?", " ").replace(",", " ").split()

    @classmethod
    def fit(cls, texts: list[str]) -> Vocabulary:
        vocab = cls()
        seen = set(vocab.words)
        for text in texts:
            for w in cls.tokenize(text):
                if w not in seen:
                    seen.add(w)
                    vocab.words.append(w)
        return vocab

    def encode(self, texts: list[str], length: int | None = None) -> np.ndarray:
        """Token ids ``(n, L)``, right-padded with 0 (``L`` = longest question unless given)."""
        index = {w: i for i, w in enumerate(self.words)}
        ids = [[index.get(w, UNK) for w in self.tokenize(t)] for t in texts]
        length = length or max(map(len, ids))
        out = np.zeros((len(ids), length), dtype=np.int64)
        for row, seq in enumerate(ids):
            out[row, : min(len(seq), length)] = seq[:length]
        return out


@dataclass
class VQASet:
    """One split: images, questions (token ids), question → image index, answers, types."""

    images: np.ndarray  # (n_images, 3, H, W) uint8
    questions: np.ndarray  # (n_questions, L) int64, 0 = padding
    texts: list[str]
    image_index: np.ndarray  # (n_questions,) int64 into images
    answers: np.ndarray  # (n_questions,) int64 into answer_names
    types: np.ndarray  # (n_questions,) int64 into type_names
    answer_names: list[str]
    type_names: list[str]

    def __len__(self) -> int:
        return len(self.answers)


def _easy_vqa_dir() -> Path:
    try:
        import easy_vqa  # noqa: PLC0415 (optional data package)
    except ImportError as err:
        raise MissingDataError("easy-VQA is not installed: install the PyPI package easy-vqa==1.0 (make setup does)") from err
    return Path(easy_vqa.__file__).parent / "data"


def _read_split(root: Path, split: str) -> tuple[list, dict[int, np.ndarray]]:
    from PIL import Image  # noqa: PLC0415 (pillow comes with matplotlib; only needed here)

    questions = json.loads((root / split / "questions.json").read_text())
    images = {}
    for path in (root / split / "images").glob("*.png"):
        with Image.open(path) as im:
            images[int(path.stem)] = np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()
    return questions, images


def load_easy_vqa(seed: int = 0, val_fraction: float = 0.1, limit_images: int | None = None) -> tuple[VQASet, VQASet, VQASet, Vocabulary]:
    """easy-VQA as ``(train, val, test, vocabulary)``; validation = ``val_fraction`` of the train images.

    ``limit_images`` keeps only the first that many images of each split (for quick profiles).
    """
    root = _easy_vqa_dir()
    answer_names = [a.strip() for a in (root / "answers.txt").read_text().splitlines() if a.strip()]
    shapes = {"circle", "rectangle", "triangle"}
    type_names = ["yes/no", "shape", "color"]

    def qtype(answer: str) -> int:
        return 0 if answer in ("yes", "no") else 1 if answer in shapes else 2

    train_q, train_im = _read_split(root, "train")
    test_q, test_im = _read_split(root, "test")
    rng = np.random.default_rng(seed)
    train_ids = sorted(train_im)
    if limit_images:
        train_ids = train_ids[:limit_images]
    order = rng.permutation(len(train_ids))
    n_val = int(round(val_fraction * len(train_ids)))
    val_ids = sorted(train_ids[i] for i in order[:n_val])
    fit_ids = sorted(train_ids[i] for i in order[n_val:])
    test_ids = sorted(test_im)[:limit_images] if limit_images else sorted(test_im)
    fit_set = set(fit_ids)
    vocab = Vocabulary.fit([q[0] for q in train_q if q[2] in fit_set])
    length = max(len(Vocabulary.tokenize(q[0])) for q in train_q + test_q)

    def build(ids: list[int], questions: list, images: dict[int, np.ndarray]) -> VQASet:
        pos = {image_id: i for i, image_id in enumerate(ids)}
        qs = [q for q in questions if q[2] in pos]
        return VQASet(
            images=np.stack([images[i] for i in ids]),
            questions=vocab.encode([q[0] for q in qs], length),
            texts=[q[0] for q in qs],
            image_index=np.array([pos[q[2]] for q in qs], dtype=np.int64),
            answers=np.array([answer_names.index(q[1]) for q in qs], dtype=np.int64),
            types=np.array([qtype(q[1]) for q in qs], dtype=np.int64),
            answer_names=answer_names,
            type_names=type_names,
        )

    return build(fit_ids, train_q, train_im), build(val_ids, train_q, train_im), build(test_ids, test_q, test_im), vocab


# -- Sort-of-CLEVR ---------------------------------------------------------------------------------

SORT_OF_CLEVR_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 60, 220),
    "orange": (245, 140, 20),
    "gray": (128, 128, 128),
    "yellow": (235, 220, 30),
}
_SOC_TYPES = ["shape", "horizontal", "vertical", "closest", "furthest", "count"]
_SOC_ANSWERS = ["square", "circle", "yes", "no", "1", "2", "3", "4", "5", "6"]
RELATIONAL_TYPES = ("closest", "furthest", "count")


def _render(centres: np.ndarray, shapes: np.ndarray, size: int, half: int) -> np.ndarray:
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for (cy, cx), shape, rgb in zip(centres, shapes, SORT_OF_CLEVR_COLOURS.values()):
        if shape == 0:  # square
            inside = (abs(yy - cy) <= half) & (abs(xx - cx) <= half)
        else:
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= half**2
        img[inside] = rgb
    return img.transpose(2, 0, 1)


def _scene_questions(centres: np.ndarray, shapes: np.ndarray, size: int) -> list[tuple[str, str, str]]:
    colours = list(SORT_OF_CLEVR_COLOURS)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    out = []
    for o, colour in enumerate(colours):
        shape_name = ["square", "circle"][shapes[o]]
        others = np.where(np.arange(len(colours)) != o)[0]
        closest = others[np.argmin(dist[o, others])]
        furthest = others[np.argmax(dist[o, others])]
        out += [
            (f"what shape is the {colour} object?", shape_name, "shape"),
            (f"is the {colour} object on the left?", "yes" if centres[o, 1] < size / 2 else "no", "horizontal"),
            (f"is the {colour} object at the top?", "yes" if centres[o, 0] < size / 2 else "no", "vertical"),
            (f"what shape is the object closest to the {colour} object?", ["square", "circle"][shapes[closest]], "closest"),
            (f"what shape is the object furthest from the {colour} object?", ["square", "circle"][shapes[furthest]], "furthest"),
            (f"how many objects have the same shape as the {colour} object?", str(int((shapes == shapes[o]).sum())), "count"),
        ]
    return out


def make_sort_of_clevr(
    n_train: int, n_val: int, n_test: int, seed: int = 0, size: int = 64, questions_per_scene: int = 12
) -> tuple[VQASet, VQASet, VQASet, Vocabulary]:
    """Generated Sort-of-CLEVR scenes: ``(train, val, test, vocabulary)``, deterministic for ``seed``.

    Each scene gets ``questions_per_scene`` questions drawn without replacement from its 36
    (6 colours × 6 types), half relational and half not.
    """
    if questions_per_scene % 2 or not 2 <= questions_per_scene <= 36:
        raise ValueError(f"questions_per_scene must be an even number in [2, 36], got {questions_per_scene}")
    rng = np.random.default_rng(seed)
    half = max(2, size // 16)
    scenes = []
    for _ in range(n_train + n_val + n_test):
        centres: list[tuple[int, int]] = []
        while len(centres) < len(SORT_OF_CLEVR_COLOURS):
            c = tuple(int(v) for v in rng.integers(half + 1, size - half - 1, size=2))
            if all((c[0] - a) ** 2 + (c[1] - b) ** 2 > (2 * half + 2) ** 2 for a, b in centres):
                centres.append(c)
        centres_arr = np.array(centres)
        shapes = rng.integers(0, 2, size=len(centres))
        qs = _scene_questions(centres_arr, shapes, size)
        relational = [q for q in qs if q[2] in RELATIONAL_TYPES]
        plain = [q for q in qs if q[2] not in RELATIONAL_TYPES]
        k = questions_per_scene // 2
        pick = [plain[i] for i in rng.choice(len(plain), k, replace=False)] + [
            relational[i] for i in rng.choice(len(relational), k, replace=False)
        ]
        scenes.append((_render(centres_arr, shapes, size, half), pick))

    bounds = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n_train + n_val + n_test)]
    vocab = Vocabulary.fit([q[0] for _, qs in scenes[:n_train] for q in qs])
    length = max(len(Vocabulary.tokenize(q[0])) for _, qs in scenes for q in qs)

    def build(lo: int, hi: int) -> VQASet:
        part = scenes[lo:hi]
        qs = [(i, q) for i, (_, questions) in enumerate(part) for q in questions]
        return VQASet(
            images=np.stack([img for img, _ in part]),
            questions=vocab.encode([q[0] for _, q in qs], length),
            texts=[q[0] for _, q in qs],
            image_index=np.array([i for i, _ in qs], dtype=np.int64),
            answers=np.array([_SOC_ANSWERS.index(q[1]) for _, q in qs], dtype=np.int64),
            types=np.array([_SOC_TYPES.index(q[2]) for _, q in qs], dtype=np.int64),
            answer_names=list(_SOC_ANSWERS),
            type_names=list(_SOC_TYPES),
        )

    return build(*bounds[0]), build(*bounds[1]), build(*bounds[2]), vocab
