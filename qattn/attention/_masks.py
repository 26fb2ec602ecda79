"""Mask handling shared by the attention cores and modules.

Polarity (the same as ``torch.nn.MultiheadAttention``): a BOOLEAN mask is True where attention
is NOT allowed; a FLOAT mask is ADDED to the scores. Internally every mask becomes one additive
float mask broadcastable to ``(B, H, N, S)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_mask_dtype(mask: Tensor, name: str) -> None:
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"{name} must be a bool tensor (True = not allowed) or a float tensor (added to the scores), got dtype {mask.dtype}"
        )


def to_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Bool mask (True = masked out) → float mask with −inf there; float masks are cast to ``dtype``."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def causal_mask(n: int, s: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Additive ``(n, s)`` mask letting query ``i`` see keys ``j ≤ i`` (top-left aligned, as SDPA)."""
    blocked = torch.ones(n, s, dtype=torch.bool, device=device).triu(1)
    return to_additive(blocked, dtype)


def combine(attn_mask: Tensor | None, is_causal: bool, n: int, s: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """Merge a user mask (bool or float, broadcastable to ``(..., n, s)``) with the causal mask."""
    mask = None
    if attn_mask is not None:
        check_mask_dtype(attn_mask, "attn_mask")
        tail = tuple(attn_mask.shape[-2:])
        if attn_mask.dim() < 2 or attn_mask.dim() > 4 or any(t not in (1, full) for t, full in zip(tail, (n, s))):
            raise ValueError(
                f"attn_mask must be broadcastable to (B, H, N, S) with (N, S) = ({n}, {s}), got shape {tuple(attn_mask.shape)}"
            )
        mask = to_additive(attn_mask, dtype)
    if is_causal:
        causal = causal_mask(n, s, dtype, device)
        mask = causal if mask is None else mask + causal
    return mask


def guard_dead_rows(mask: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """Find query rows whose keys are all masked (−inf everywhere) and neutralise them.

    Returns ``(mask, dead)``: the mask with dead rows set to 0 (so softmax stays finite and
    gradients stay clean) and a bool tensor ``(..., n, 1)`` marking those rows, or ``None`` when
    there are none. Callers zero the outputs (and weights) of dead rows afterwards.
    """
    if mask is None:
        return None, None
    dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
    if not bool(dead.any()):
        return mask, None
    return mask.masked_fill(dead, 0.0), dead
