"""Shared-score quaternion attention (Yamauchi, Nitta, Tamori, ICML 2026).

One real score per query-key pair, the real part of the quaternion inner product summed over
the ``d_h`` units of a head, and ONE softmax shared by the four value components::

    S   = Re(Q ⊗ K†) / sqrt(4·d_h) = (Q_r K_rᵀ + Q_i K_iᵀ + Q_j K_jᵀ + Q_k K_kᵀ) / sqrt(4·d_h)
    A   = softmax_row(S + mask)
    O_c = A V_c                         for c in r, i, j, k

Because ``S`` is exactly the dot product of the flattened ``4·d_h``-dimensional vectors, the
whole head IS scaled dot-product attention on flattened q, k, v: without weights requested it
is one call of ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels).

Tensors are ``(B, H, N, 4, d_h)`` (batch, heads, tokens, component, units); see
:mod:`qattn.quaternion` for the component convention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from qattn.attention import _masks
from qattn.attention._spec import Mechanism

__all__ = ["shared_scores", "shared_score_attention", "check_core_inputs", "MECHANISM"]


def check_core_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Validate ``(B, H, N, 4, d)`` query / ``(B, H, S, 4, d)`` key / ``(B, H, S, 4, d_v)`` value."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 5 or t.shape[-2] != 4:
            raise ValueError(f"{name} must have shape (B, H, length, 4, d_h) with 4 quaternion components, got {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same d_h, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[:3] != v.shape[:3] or q.shape[:2] != k.shape[:2]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree on (B, H) or on S")


def shared_scores(q: Tensor, k: Tensor) -> Tensor:
    """Unscaled shared scores ``Re(q ⊗ k̄)`` summed over units: ``(B, H, N, S)``.

    >>> q, k = torch.randn(1, 1, 3, 4, 2), torch.randn(1, 1, 5, 4, 2)
    >>> shared_scores(q, k).shape
    torch.Size([1, 1, 3, 5])
    """
    return q.flatten(-2) @ k.flatten(-2).transpose(-1, -2)


def shared_score_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Shared-score quaternion attention on ``(B, H, N, 4, d_h)`` tensors.

    Parameters
    ----------
    q, k, v : Tensor
        Queries ``(B, H, N, 4, d_h)``, keys ``(B, H, S, 4, d_h)``, values ``(B, H, S, 4, d_v)``.
    attn_mask : Tensor, optional
        Broadcastable to ``(B, H, N, S)``; bool True = NOT allowed, float = added to the scores.
    dropout_p : float
        Dropout on the attention weights (pass 0 in eval mode).
    is_causal : bool
        Query ``i`` sees keys ``j ≤ i`` (combined with ``attn_mask`` if both are given).
    need_weights : bool
        Also return the attention weights ``(B, H, N, S)`` (before dropout). Without weights,
        the computation is one ``scaled_dot_product_attention`` call.

    Returns
    -------
    tuple of Tensor
        ``(out, weights)`` with ``out`` of shape ``(B, H, N, 4, d_v)``. Query rows whose keys
        are all masked give zeros (output and weights), never NaN.

    Examples
    --------
    >>> q, k, v = torch.randn(2, 3, 5, 4, 2), torch.randn(2, 3, 7, 4, 2), torch.randn(2, 3, 7, 4, 2)
    >>> out, w = shared_score_attention(q, k, v, need_weights=True)
    >>> out.shape, w.shape
    (torch.Size([2, 3, 5, 4, 2]), torch.Size([2, 3, 5, 7]))
    >>> torch.allclose(w.sum(-1), torch.ones(2, 3, 5))
    True
    """
    check_core_inputs(q, k, v)
    n, s, d_v = q.shape[2], k.shape[2], v.shape[-1]
    scale = 1.0 / math.sqrt(q.shape[-2] * q.shape[-1])
    mask = _masks.combine(attn_mask, is_causal, n, s, q.dtype, q.device)
    mask, dead = _masks.guard_dead_rows(mask)
    qf, kf, vf = q.flatten(-2), k.flatten(-2), v.flatten(-2)

    weights = None
    if need_weights:
        scores = shared_scores(q, k) * scale
        if mask is not None:
            scores = scores + mask
        weights = torch.softmax(scores, dim=-1)
        used = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        out = used @ vf
    else:
        out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, dropout_p=dropout_p, scale=scale)

    if dead is not None:
        out = out.masked_fill(dead, 0.0)
        if weights is not None:
            weights = weights.masked_fill(dead, 0.0)
    return out.unflatten(-1, (4, d_v)), weights


MECHANISM = Mechanism(
    name="shared",
    core=shared_score_attention,
    summary="Shared scores Re(q ⊗ k̄): one softmax per head, shared by the four value components (the paper).",
    maps_per_head=1,
    returns_weights=True,
    bool_mask=True,
    float_mask=True,
    per_query_mask=True,
    causal=True,
    causal_only=False,
    cross_attention=True,
    exact=True,
    options={},
    draw_buffers=None,
)
"""Registry spec of the shared-score mechanism (see :mod:`qattn.attention.registry`)."""
