"""Transformer blocks shared by the experiment models, in four variants that differ only where stated.

Variants (``VARIANTS``):

- ``"shared"`` / ``"hamilton"`` (``QUATERNION_VARIANTS``: every registered mechanism that
  computes attention exactly, ``mechanism_names(exact=True)``): quaternion blocks. Attention is
  :class:`~qattn.attention.QuaternionMultiheadAttention` with ``score=<variant>``; the
  feed-forward layers are :class:`~qattn.layers.QuaternionLinear`. They all have the same modules
  and parameters, and :func:`initialise_` with generators in the same state gives them identical
  values: they differ only in how the scores are formed.
- ``"real_same_width"``: the real-valued counterpart at the same width (``nn.MultiheadAttention``
  and ``nn.Linear``), about 4× the parameters of the quaternion blocks.
- ``"real_same_params"``: the same real block at a smaller width, chosen by :func:`matched_width`
  so that the whole model has about as many parameters as the quaternion one.

Block (pre-norm, real ``LayerNorm`` over all ``4·n`` features as in the paper's release)::

    x = x + Dropout(MHA(LN(x)))
    x = x + Dropout(W2 · Dropout(GELU(W1 · LN(x))))

Shapes: ``(B, N, E)`` in and out (batch first); ``key_padding_mask`` is ``(B, N)`` bool, True at
padding. Attention weights, when asked for, are per head and not averaged: ``(B, H, N, N)`` for
the shared and real variants and ``(B, H, 4, N, N)`` for Hamilton (one map per component).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from qattn.attention import QuaternionMultiheadAttention, mechanism_names
from qattn.layers import QuaternionLinear

__all__ = [
    "VARIANTS",
    "QUATERNION_VARIANTS",
    "REAL_VARIANTS",
    "make_linear",
    "make_attention",
    "FeedForward",
    "TransformerBlock",
    "Encoder",
    "initialise_",
    "count_parameters",
    "matched_width",
]

QUATERNION_VARIANTS = mechanism_names(exact=True)
REAL_VARIANTS = ("real_same_width", "real_same_params")
VARIANTS = QUATERNION_VARIANTS + REAL_VARIANTS


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(
            f"variant must be one of {VARIANTS} (the registered quaternion mechanisms {QUATERNION_VARIANTS} "
            f"or a real baseline {REAL_VARIANTS}), got {variant!r}"
        )


def make_linear(variant: str, in_features: int, out_features: int) -> nn.Module:
    """``QuaternionLinear`` for the quaternion variants, ``nn.Linear`` for the real ones."""
    _check_variant(variant)
    if variant in QUATERNION_VARIANTS:
        return QuaternionLinear(in_features, out_features)
    return nn.Linear(in_features, out_features)


def make_attention(variant: str, width: int, num_heads: int, dropout: float) -> nn.Module:
    """The attention layer of a variant (batch first)."""
    _check_variant(variant)
    if variant in QUATERNION_VARIANTS:
        return QuaternionMultiheadAttention(width, num_heads, score=variant, dropout=dropout, batch_first=True)
    return nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)


class FeedForward(nn.Module):
    """``W2 · Dropout(GELU(W1 · x))`` with quaternion or real layers: ``(..., E)`` → ``(..., E)``."""

    def __init__(self, variant: str, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear1 = make_linear(variant, width, hidden)
        self.linear2 = make_linear(variant, hidden, width)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TransformerBlock(nn.Module):
    """One pre-norm Transformer block (see the module docstring).

    Parameters
    ----------
    variant : one of ``VARIANTS``
    width : feature size ``E`` (a multiple of ``4·num_heads`` for the quaternion variants)
    num_heads : attention heads
    ffn_mult : hidden size of the feed-forward layer = ``ffn_mult · width``
    dropout : dropout on attention weights, feed-forward activations and both residual branches
    """

    def __init__(self, variant: str, width: int, num_heads: int, ffn_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.variant = variant
        self.norm1 = nn.LayerNorm(width)
        self.attention = make_attention(variant, width, num_heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = FeedForward(variant, width, ffn_mult * width, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """``(B, N, E)`` → ``(B, N, E)`` and the per-head attention weights (or None)."""
        h = self.norm1(x)
        out, weights = self.attention(h, h, h, key_padding_mask=key_padding_mask, need_weights=need_weights, average_attn_weights=False)
        x = x + self.dropout(out)
        x = x + self.dropout(self.ffn(self.norm2(x)))
        return x, weights


class Encoder(nn.Module):
    """``depth`` :class:`TransformerBlock` s and a final ``LayerNorm``."""

    def __init__(self, variant: str, width: int, depth: int, num_heads: int, ffn_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(variant, width, num_heads, ffn_mult, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``(B, N, E)`` → ``(B, N, E)`` and, if ``need_weights``, one weight tensor per layer."""
        maps: list[Tensor] = []
        for block in self.blocks:
            x, weights = block(x, key_padding_mask, need_weights)
            if weights is not None:
                maps.append(weights)
        return self.norm(x), maps


@torch.no_grad()
def initialise_(model: nn.Module, generator: torch.Generator) -> None:
    """(Re)initialise every layer of ``model`` from ``generator`` alone, in module order.

    Quaternion layers: Parcollet's initialisation (``QuaternionLinear.reset_parameters``).
    ``nn.Linear`` and ``nn.MultiheadAttention`` projections: Xavier-uniform weights, zero biases.
    ``nn.Embedding``: normal with standard deviation 0.02. ``LayerNorm``: ones and zeros.
    Parameters held directly by a model (class tokens, position embeddings) are left to it.
    """
    for module in model.modules():
        if isinstance(module, QuaternionLinear):
            module.reset_parameters(generator=generator)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is not None:
                nn.init.xavier_uniform_(module.in_proj_weight, generator=generator)
            if module.in_proj_bias is not None:
                nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02, generator=generator)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable real numbers in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_width(build: Callable[[int], nn.Module], target: int, multiple: int, max_width: int) -> int:
    """The width (a multiple of ``multiple``, at most ``max_width``) whose model is closest to ``target`` parameters.

    ``build(width)`` returns a model of that width; its parameters are counted, nothing is trained.
    """
    candidates = range(multiple, max_width + 1, multiple)
    if not candidates:
        raise ValueError(f"no width that is a multiple of {multiple} up to {max_width}")
    return min(candidates, key=lambda w: (abs(count_parameters(build(w)) - target), w))
