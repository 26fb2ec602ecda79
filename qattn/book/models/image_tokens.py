"""A tiny CogView-like autoregressive transformer on ``[caption, image codes]`` sequences.

Token and learned position embeddings (width ``E``), ``depth`` pre-norm causal blocks with
quaternion attention (:class:`~qattn.attention.QuaternionMultiheadAttention` with any registered
causal mechanism: ``"shared"`` for full causal attention, ``"cogview_sparse"`` /
``"cogview_sparse_hamilton"`` for CogView's pivot + window attention) and quaternion feed-forward
layers, a final ``LayerNorm`` and a real linear head giving next-token logits. Every block is
called with ``is_causal=True``: position ``i`` predicts token ``i + 1`` from tokens ``≤ i``.

CogView draws new pivots for every batch; :meth:`ImageTokenModel.redraw_pivots` does that for
the sparse mechanisms (their layers keep a pivot seed as a buffer) and nothing for the others.
:meth:`ImageTokenModel.with_attention` gives a copy answering with another mechanism, e.g. a
model trained with sparse attention evaluated with full attention.

>>> import torch
>>> model = ImageTokenModel(vocab=30, length=16, width=16, depth=1, num_heads=2, generator=torch.Generator().manual_seed(0))
>>> model(torch.randint(30, (3, 16))).shape
torch.Size([3, 16, 30])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from qattn.attention import QuaternionMultiheadAttention, get_mechanism, swap_attention
from qattn.book.models.blocks import FeedForward, initialise_

__all__ = ["ImageTokenModel", "CausalBlock"]


class CausalBlock(nn.Module):
    """Pre-norm block ``x + MHA(LN(x)) ; x + FFN(LN(x))`` with causal quaternion attention."""

    def __init__(self, width: int, num_heads: int, score: str, score_options: Mapping[str, Any] | None, ffn_mult: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = QuaternionMultiheadAttention(width, num_heads, score=score, score_options=score_options, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = FeedForward("shared", width, ffn_mult * width, 0.0)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(B, N, E)`` → ``(B, N, E)`` and the per-head weights (or None)."""
        h = self.norm1(x)
        out, weights = self.attention(h, h, h, need_weights=need_weights, average_attn_weights=False, is_causal=True)
        x = x + out
        return x + self.ffn(self.norm2(x)), weights


class ImageTokenModel(nn.Module):
    """Embeddings, causal quaternion blocks and a next-token head (see the module docstring).

    Parameters
    ----------
    vocab : token ids ``0 … vocab − 1``
    length : longest sequence (position embeddings)
    width, depth, num_heads, ffn_mult : block settings (``width`` a multiple of ``4·num_heads``)
    score, score_options : the attention mechanism of every block and its options; it must be
        causal (:attr:`~qattn.attention.registry.Mechanism.causal`)
    generator : initialises every parameter (the same generator state gives the same weights
        whatever the mechanism, since no mechanism adds parameters)
    """

    def __init__(
        self,
        vocab: int,
        length: int,
        width: int = 64,
        depth: int = 2,
        num_heads: int = 2,
        ffn_mult: int = 2,
        score: str = "shared",
        score_options: Mapping[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not get_mechanism(score).causal:
            raise ValueError(f"score must be a causal mechanism for an autoregressive model, got {score!r}")
        self.length = length
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.zeros(length, width))
        self.blocks = nn.ModuleList(CausalBlock(width, num_heads, score, score_options, ffn_mult) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        initialise_(self, generator)
        with torch.no_grad():
            self.positions.normal_(std=0.02, generator=generator)
        self.redraw_pivots(generator)  # after the parameters: the same weights whatever the mechanism

    @property
    def score(self) -> str:
        """The attention mechanism of the blocks."""
        return self.blocks[0].attention.score

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens (B, N)`` int64, ``N ≤ length`` → next-token logits ``(B, N, vocab)``."""
        return self.features(tokens)[0]

    def features(self, tokens: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Logits and, with ``need_weights``, each block's per-head attention weights."""
        if tokens.dim() != 2 or tokens.shape[1] > self.length:
            raise ValueError(f"tokens must be (B, N) with N ≤ {self.length}, got {tuple(tokens.shape)}")
        x = self.tokens(tokens) + self.positions[: tokens.shape[1]]
        maps = []
        for block in self.blocks:
            x, weights = block(x, need_weights)
            if weights is not None:
                maps.append(weights)
        return self.head(self.norm(x)), maps

    def redraw_pivots(self, generator: torch.Generator) -> None:
        """New pivots for every sparse layer (a new pivot seed each); nothing for mechanisms without random state."""
        for block in self.blocks:
            block.attention.redraw_buffers(generator)

    def with_attention(
        self, score: str, score_options: Mapping[str, Any] | None = None, generator: torch.Generator | None = None
    ) -> ImageTokenModel:
        """A copy with the same weights answering with ``score`` (e.g. ``"shared"``: full causal attention)."""
        return swap_attention(self, score, score_options, generator)  # type: ignore[return-value]
