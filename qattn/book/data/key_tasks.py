"""Two synthetic long-sequence tasks about one key token: a classification and a span extraction.

The clustered attention chapter needs a model trained with full attention on a classification
task and on a span-extraction task, at sequence lengths where clustering has something to merge
(hundreds of tokens). Both tasks are generated here from an explicit generator, so they need no
download and any split is reproducible. They are proxies, chosen for what their attention must
do, not stand-ins for the paper's GLUE and SQuAD:

- **key presence** (classification): ``[open_k, close_k, SEP, body...]``; the label says whether
  the key's opener occurs in the body. Every position can find the answer by looking at the same place
  (position 0, the key): a global lookup, the same for every query.
- **key span** (span extraction): ``[open_k, close_k, SEP, body...]``; the body holds several records
  ``open_j  v ... v  close_j`` for distinct keys ``j``, the asked one among them, amid filler;
  the answer is the values of the asked record, the span strictly between ``open_k`` and
  ``close_k``. A position is the start if the token BEFORE it is the asked opener (header position
  0), and the end if the token AFTER it is the asked closer (header position 1): every query
  needs its own neighbours, a local lookup that differs from query to query.

Token ids::

    0 PAD   1 SEP   2 .. 2 + fillers − 1 fillers   then the keys: opener 2j, closer 2j + 1 after them

Shapes: ``tokens (n, length)`` int64; key presence ``labels (n,)`` in {0, 1}; key span
``spans (n, 2)`` int64 ``(start, end)`` positions, inclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PAD", "SEP", "HEADER", "KeyTaskSpec", "key_presence", "key_span"]

PAD, SEP = 0, 1
HEADER = 3  # the asked key's opener and closer, then SEP


@dataclass(frozen=True)
class KeyTaskSpec:
    """The vocabulary and layout shared by both tasks.

    Attributes
    ----------
    length : tokens per sequence, the two header tokens included
    fillers : distinct filler tokens
    keys : distinct keys (each an opener and a closer token in the span task)
    records : records per sequence in the span task (the asked one included); the number of
        body occurrences of other keys in the presence task
    max_span : longest answer (values per record, drawn from 1..max_span)
    """

    length: int = 256
    fillers: int = 32
    keys: int = 16
    records: int = 6
    max_span: int = 6

    def __post_init__(self) -> None:
        if self.keys < self.records or self.records < 1:
            raise ValueError(f"records must be in 1..keys = 1..{self.keys} (one distinct key per record), got {self.records}")
        if self.fillers < 1 or self.max_span < 1:
            raise ValueError(f"fillers and max_span must be at least 1, got {self.fillers}, {self.max_span}")
        need = HEADER + self.records * (self.max_span + 3)
        if self.length < need:
            raise ValueError(
                f"length must be at least {need} to hold {self.records} records of up to {self.max_span} values, got {self.length}"
            )

    @property
    def vocab(self) -> int:
        """Vocabulary size: PAD, SEP, the fillers, then an opener and a closer per key."""
        return 2 + self.fillers + 2 * self.keys

    def opener(self, key: Tensor | int) -> Tensor | int:
        return 2 + self.fillers + 2 * key

    def closer(self, key: Tensor | int) -> Tensor | int:
        return 3 + self.fillers + 2 * key


def _body(spec: KeyTaskSpec, n: int, generator: torch.Generator) -> Tensor:
    return 2 + torch.randint(spec.fillers, (n, spec.length - HEADER), generator=generator)


def _header(spec: KeyTaskSpec, asked: Tensor) -> Tensor:
    return torch.stack([spec.opener(asked), spec.closer(asked), torch.full_like(asked, SEP)], 1)


def key_presence(spec: KeyTaskSpec, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` key-presence examples: ``(tokens (n, length), labels (n,))``, labels balanced at random.

    The body holds ``records − 1`` openers of other keys and, for label 1, one opener of the
    asked key, at random places.
    """
    body = _body(spec, n, generator)
    asked = torch.randint(spec.keys, (n,), generator=generator)
    labels = torch.randint(2, (n,), generator=generator)
    for i in range(n):
        others = torch.randperm(spec.keys - 1, generator=generator)[: spec.records - 1]
        others = others + (others >= asked[i]).long()  # skip the asked key
        present = [asked[i : i + 1]] if labels[i] else []
        keys = torch.cat([others, *present])
        places = torch.randperm(body.shape[1], generator=generator)[: len(keys)]
        body[i, places] = spec.opener(keys)
    return torch.cat([_header(spec, asked), body], 1), labels


def key_span(spec: KeyTaskSpec, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` key-span examples: ``(tokens (n, length), spans (n, 2))`` with inclusive ``(start, end)``.

    Each body holds ``records`` records ``open_j v_1 .. v_L close_j`` (distinct keys, ``L`` in
    1..max_span, filler values) at random non-overlapping places; the first record's key is asked.
    """
    body = _body(spec, n, generator)
    size = body.shape[1]
    asked = torch.empty(n, dtype=torch.int64)
    spans = torch.empty(n, 2, dtype=torch.int64)
    slot = size // spec.records  # one record per slot, at a random offset inside it
    for i in range(n):
        keys = torch.randperm(spec.keys, generator=generator)[: spec.records]
        slots = torch.randperm(spec.records, generator=generator)
        for r in range(spec.records):
            values = int(torch.randint(1, spec.max_span + 1, (1,), generator=generator))
            start = int(slots[r]) * slot + int(torch.randint(slot - values - 1, (1,), generator=generator))
            body[i, start] = spec.opener(keys[r])
            body[i, start + values + 1] = spec.closer(keys[r])
            if r == 0:
                asked[i] = keys[r]
                spans[i] = torch.tensor([start + 1, start + values]) + HEADER
    return torch.cat([_header(spec, asked), body], 1), spans
