"""The quaternion encoder of the key tasks (:mod:`qattn.book.data.key_tasks`), with two heads.

Token and learned position embeddings (width ``E``), a quaternion
:class:`~qattn.book.models.blocks.Encoder` with shared-score attention, then

- ``task="presence"``: a real linear layer on the mean of the outputs → 2 logits ``(B, 2)``;
- ``task="span"``: a real linear layer on every position → start and end logits ``(B, N, 2)``.

Trained with full (shared-score) attention, its attention layers can answer with another
registered mechanism afterwards (:func:`qattn.attention.swap_attention`), or be swapped before
training to train with it.

>>> import torch
>>> model = KeyTaskModel("span", vocab=20, length=12, width=16, depth=1, num_heads=2, generator=torch.Generator().manual_seed(0))
>>> model(torch.randint(20, (3, 12))).shape
torch.Size([3, 12, 2])
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from qattn.book.models.blocks import Encoder, initialise_

__all__ = ["KeyTaskModel", "TASKS"]

TASKS = ("presence", "span")


class KeyTaskModel(nn.Module):
    """Embeddings, a shared-score quaternion encoder and the task's head (see the module docstring).

    Parameters
    ----------
    task : ``"presence"`` (sequence classification) or ``"span"`` (start / end per position)
    vocab : token ids are ``0 .. vocab − 1``
    length : longest sequence (position embeddings)
    width, depth, num_heads, ffn_mult : encoder settings (``width`` a multiple of ``4·num_heads``)
    generator : initialises every parameter
    """

    def __init__(
        self,
        task: Literal["presence", "span"],
        vocab: int,
        length: int,
        width: int = 64,
        depth: int = 2,
        num_heads: int = 2,
        ffn_mult: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task, self.length = task, length
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.zeros(length, width))
        self.encoder = Encoder("shared", width, depth, num_heads, ffn_mult)
        self.head = nn.Linear(width, 2)
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        initialise_(self, generator)
        with torch.no_grad():
            self.positions.normal_(std=0.02, generator=generator)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens (B, N)`` int64, ``N ≤ length`` → ``(B, 2)`` (presence) or ``(B, N, 2)`` (span) logits."""
        if tokens.dim() != 2 or tokens.shape[1] > self.length:
            raise ValueError(f"tokens must be (B, N) with N ≤ {self.length}, got {tuple(tokens.shape)}")
        x = self.tokens(tokens) + self.positions[: tokens.shape[1]]
        x, _ = self.encoder(x)
        if self.task == "presence":
            return self.head(x.mean(1))
        return self.head(x)
