"""CogView's sparse attention with Hamilton (component-wise) quaternion scores, as a registered mechanism.

The layout, the pivots and the sparse kernel are those of :mod:`qattn.attention.cogview_sparse`;
here the four Hamilton maps (query against each signed key copy, one softmax per map) share ONE
pivot + window mask, so the quaternion variants differ only in their scores.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qattn.attention._spec import Mechanism
from qattn.attention.cogview_sparse import MECHANISM as SHARED_MECHANISM
from qattn.attention.cogview_sparse import _pivot_window, _sparse_inputs, draw_pivot_seed
from qattn.attention.hamilton import signed_key_copies

__all__ = ["cogview_sparse_hamilton_core", "MECHANISM"]


def cogview_sparse_hamilton_core(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
    *,
    text: int = 0,
    window: int = 64,
    window_blocks: int = 2,
    n_pivots: int | None = None,
    log_correction: bool = True,
    pivot_positions: Tensor | None = None,
    pivot_seed: int | Tensor = 0,
) -> tuple[Tensor, Tensor | None]:
    """The registered ``"cogview_sparse_hamilton"`` core: ``(out (B, H, s, 4, d_v), weights (B, H, 4, s, s) or None)``.

    Map ``m`` scores the flattened query against the ``m``-th signed key copy
    (:func:`~qattn.attention.hamilton.signed_key_copies`) and aggregates value component ``m``;
    options and restrictions as :func:`~qattn.attention.cogview_sparse.cogview_sparse_core`.
    """
    length = q.shape[2]
    q, k, v, pivots, layout, correction = _sparse_inputs(
        "cogview_sparse_hamilton",
        q,
        k,
        v,
        attn_mask,
        is_causal,
        text,
        window,
        window_blocks,
        n_pivots,
        log_correction,
        pivot_positions,
        pivot_seed,
    )
    qf, keys = q.flatten(-2), signed_key_copies(k)  # keys (B, H, 4, s, 4·d_h)
    maps = [_pivot_window(qf, keys[:, :, m], v[..., m, :], pivots, layout, correction, dropout_p, need_weights) for m in range(4)]
    out = torch.stack([o for o, _ in maps], dim=-2)[:, :, :length]
    if not need_weights:
        return out, None
    return out, torch.stack([w for _, w in maps], dim=2)[..., :length, :length]


MECHANISM = Mechanism(
    name="cogview_sparse_hamilton",
    core=cogview_sparse_hamilton_core,
    summary="CogView's sparse attention with Hamilton scores: four component-wise maps under one pivot + window mask.",
    maps_per_head=4,
    returns_weights=True,
    bool_mask=False,
    float_mask=False,
    per_query_mask=False,
    causal=True,
    causal_only=True,
    cross_attention=False,
    exact=False,
    options=dict(SHARED_MECHANISM.options),
    draw_buffers=draw_pivot_seed,
)
"""Registry spec of CogView's sparse attention with Hamilton scores (see :mod:`qattn.attention.registry`)."""
