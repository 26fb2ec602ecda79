"""A quaternion Transformer text encoder (and its real counterparts) for sentence classification.

Token embedding: a table of ``V`` vectors of width ``E = 4·n``, i.e. ``n`` quaternions per token in
the blocked layout ``[r | i | j | k]`` (a lookup has no product, so a quaternion embedding table
IS a real table of width ``4·n``); learned position embeddings of the same width are added.
The encoder (:class:`~qattn.book.models.blocks.Encoder`) uses quaternion attention and quaternion
feed-forward layers in the quaternion variants; a real linear head reads the ``<cls>`` token
(the first position). Padding positions are excluded as keys through ``key_padding_mask``.

>>> import torch
>>> model = TextTransformer("shared", vocab_size=50, num_classes=2, width=32, num_heads=2,
...                         generator=torch.Generator().manual_seed(0))
>>> ids = torch.tensor([[2, 7, 9, 0], [2, 5, 0, 0]]); pad = ids == 0
>>> logits, maps = model(ids, pad, need_weights=True)
>>> logits.shape, maps[0].shape
(torch.Size([2, 2]), torch.Size([2, 2, 4, 4]))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qattn.book.models.blocks import VARIANTS, Encoder, count_parameters, initialise_, matched_width

__all__ = ["TextTransformer", "build_text_model"]


class TextTransformer(nn.Module):
    """Transformer classifier over token ids in one of the four variants of :mod:`qattn.book.models.blocks`.

    Parameters
    ----------
    variant : ``"shared"``, ``"hamilton"``, ``"real_same_width"`` or ``"real_same_params"``
    vocab_size : size of the token table (id 0 is padding)
    num_classes : output classes
    width : feature size ``E``
    depth, num_heads, ffn_mult, dropout : encoder settings
    max_len : longest sequence (position embeddings)
    generator : initialises every parameter

    Shapes: ids ``(B, L)`` int64 and padding mask ``(B, L)`` bool (True at padding) → logits
    ``(B, num_classes)`` and, with ``need_weights``, one attention tensor per layer.
    """

    def __init__(
        self,
        variant: str,
        vocab_size: int,
        num_classes: int,
        width: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        ffn_mult: int = 2,
        dropout: float = 0.1,
        max_len: int = 40,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.max_len = variant, max_len
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, width))
        self.dropout = nn.Dropout(dropout)
        self.encoder = Encoder(variant, width, depth, num_heads, ffn_mult, dropout)
        self.head = nn.Linear(width, num_classes)
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        initialise_(self, generator)
        with torch.no_grad():
            nn.init.trunc_normal_(self.pos_embed, std=0.02, generator=generator)
            self.embed.weight[0].zero_()

    def forward(self, ids: Tensor, padding_mask: Tensor | None = None, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``(B, L)`` ids and ``(B, L)`` padding mask → ``(B, num_classes)`` logits and per-layer maps."""
        if ids.dim() != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"ids must be (B, L) with L <= max_len={self.max_len}, got shape {tuple(ids.shape)}")
        if padding_mask is not None and (padding_mask.shape != ids.shape or padding_mask.dtype != torch.bool):
            raise ValueError(
                f"padding_mask must be bool of the shape of ids {tuple(ids.shape)}, got {tuple(padding_mask.shape)} {padding_mask.dtype}"
            )
        x = self.dropout(self.embed(ids) + self.pos_embed[:, : ids.shape[1]])
        x, maps = self.encoder(x, key_padding_mask=padding_mask, need_weights=need_weights)
        return self.head(x[:, 0]), maps


def build_text_model(variant: str, width: int = 64, generator: torch.Generator | None = None, **kwargs) -> TextTransformer:
    """A :class:`TextTransformer` of ``variant``; ``width`` is the quaternion models' width.

    ``"real_same_params"`` gets the width (a multiple of ``num_heads``) whose whole model,
    token table included, has the parameter count closest to the quaternion model of ``width``.
    """
    if variant == "real_same_params":
        heads = kwargs.get("num_heads", 4)
        target = count_parameters(TextTransformer("shared", width=width, **kwargs))
        width = matched_width(lambda w: TextTransformer(variant, width=w, **kwargs), target, heads, width)
    return TextTransformer(variant, width=width, generator=generator, **kwargs)
