"""Component-wise ("Hamilton") quaternion attention (Tay et al., 2019), the paper's baseline.

Four real score maps, the components of the Hamilton product ``Q ⊗ Kᵀ`` summed over the
``d_h`` units of a head, with NO conjugate (as in Tay's code)::

    S_r = Q_r K_rᵀ − Q_i K_iᵀ − Q_j K_jᵀ − Q_k K_kᵀ
    S_i = Q_r K_iᵀ + Q_i K_rᵀ + Q_j K_kᵀ − Q_k K_jᵀ
    S_j = Q_r K_jᵀ − Q_i K_kᵀ + Q_j K_rᵀ + Q_k K_iᵀ
    S_k = Q_r K_kᵀ + Q_i K_jᵀ − Q_j K_iᵀ + Q_k K_rᵀ

    A_c = softmax_row(S_c / sqrt(4·d_h) + mask)        four softmaxes
    O_c = A_c V_c                                       each map on its own value component

Efficient form: ``S_m(q, k) = Σ_a q_a · SIGN[a, a⊕m] · k_(a⊕m)`` is the dot product of the
flattened query with a signed permutation of the key's components. So the four maps come from
ONE batched matmul of the flattened queries against four signed, permuted key copies, and
without weights requested the whole thing is one fused ``scaled_dot_product_attention`` call
over a component batch axis (query = flattened q, key = m-th key copy). torch's fused CPU
kernels need the value as wide as the query, so each map aggregates the whole flattened value
and keeps component m of its result: 4× the value-aggregation multiplications of the explicit
path (``need_weights=True``, which does exactly the paper's count), yet faster on CPU than the
explicit path (the performance chapter measures by how much), because no N×N map is materialised. The plain
16-matmul form :func:`hamilton_scores_reference` is kept as the readable reference for tests.

Tensors are ``(B, H, N, 4, d_h)``; weights are ``(B, H, 4, N, S)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from qattn.attention import _masks
from qattn.attention._spec import Mechanism
from qattn.attention.shared_score import check_core_inputs
from qattn.quaternion import SIGN

__all__ = ["signed_key_copies", "hamilton_scores", "hamilton_scores_reference", "hamilton_attention", "MECHANISM"]

# Key copy m, query component a: component a XOR m of the key with sign SIGN[a][a XOR m].
_PERM = tuple(tuple(a ^ m for a in range(4)) for m in range(4))
_PERM_SIGN = tuple(tuple(SIGN[a][a ^ m] for a in range(4)) for m in range(4))


def signed_key_copies(k: Tensor) -> Tensor:
    """The four signed, permuted key copies, flattened: ``(B, H, S, 4, d)`` → ``(B, H, 4, S, 4·d)``.

    Copy ``m`` satisfies ``⟨q_flat, copy_m⟩ = S_m(q, k)`` for every query.
    """
    index = torch.tensor(_PERM, device=k.device)
    sign = torch.tensor(_PERM_SIGN, dtype=k.dtype, device=k.device)
    copies = k[..., index, :] * sign[:, :, None]  # (B, H, S, 4 m, 4 a, d)
    return copies.movedim(-3, 2).flatten(-2)  # (B, H, 4 m, S, 4·d)


def hamilton_scores(q: Tensor, k: Tensor) -> Tensor:
    """Unscaled Hamilton score maps ``(B, H, 4, N, S)`` from one batched matmul.

    >>> q, k = torch.randn(1, 2, 3, 4, 5), torch.randn(1, 2, 6, 4, 5)
    >>> torch.allclose(hamilton_scores(q, k), hamilton_scores_reference(q, k), atol=1e-5)
    True
    """
    return q.flatten(-2).unsqueeze(2) @ signed_key_copies(k).transpose(-1, -2)


def hamilton_scores_reference(q: Tensor, k: Tensor) -> Tensor:
    """Readable 16-matmul reference of the four Hamilton score maps ``(B, H, 4, N, S)`` (unscaled)."""
    qr, qi, qj, qk = q.unbind(-2)
    kr, ki, kj, kk = k.unbind(-2)

    def mm(a: Tensor, b: Tensor) -> Tensor:
        return a @ b.transpose(-1, -2)

    s_r = mm(qr, kr) - mm(qi, ki) - mm(qj, kj) - mm(qk, kk)
    s_i = mm(qr, ki) + mm(qi, kr) + mm(qj, kk) - mm(qk, kj)
    s_j = mm(qr, kj) - mm(qi, kk) + mm(qj, kr) + mm(qk, ki)
    s_k = mm(qr, kk) + mm(qi, kj) - mm(qj, ki) + mm(qk, kr)
    return torch.stack((s_r, s_i, s_j, s_k), dim=2)


def hamilton_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Component-wise quaternion attention (four score maps, four softmaxes).

    Parameters
    ----------
    q, k, v : Tensor
        Queries ``(B, H, N, 4, d_h)``, keys ``(B, H, S, 4, d_h)``, values ``(B, H, S, 4, d_v)``.
    attn_mask : Tensor, optional
        Broadcastable to ``(B, H, N, S)`` and applied to all four maps; bool True = NOT
        allowed, float = added to the scores.
    dropout_p : float
        Dropout on the attention weights (pass 0 in eval mode).
    is_causal : bool
        Query ``i`` sees keys ``j ≤ i``.
    need_weights : bool
        Also return the four weight maps ``(B, H, 4, N, S)`` (before dropout); the computation
        is then an explicit batched matmul, softmax, matmul. Without weights it is one fused
        ``scaled_dot_product_attention`` call over the component axis.

    Returns
    -------
    tuple of Tensor
        ``(out, weights)``, ``out`` of shape ``(B, H, N, 4, d_v)`` with
        ``out[..., c, :] = A_c V_c``. Fully masked query rows give zeros.

    Examples
    --------
    >>> q, k, v = torch.randn(2, 3, 5, 4, 2), torch.randn(2, 3, 7, 4, 2), torch.randn(2, 3, 7, 4, 2)
    >>> out, w = hamilton_attention(q, k, v, need_weights=True)
    >>> out.shape, w.shape
    (torch.Size([2, 3, 5, 4, 2]), torch.Size([2, 3, 4, 5, 7]))
    """
    check_core_inputs(q, k, v)
    b, h, n = q.shape[:3]
    s, d_v = k.shape[2], v.shape[-1]
    scale = 1.0 / math.sqrt(q.shape[-2] * q.shape[-1])
    mask = _masks.combine(attn_mask, is_causal, n, s, q.dtype, q.device)
    mask, dead = _masks.guard_dead_rows(mask)
    values = v.movedim(-2, 2)  # (B, H, 4, S, d_v): value component c for map c

    weights = None
    if need_weights:
        scores = hamilton_scores(q, k) * scale
        if mask is not None:
            scores = scores + mask.unsqueeze(-3)
        weights = torch.softmax(scores, dim=-1)
        used = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        out = used @ values  # (B, H, 4, N, d_v)
    else:
        # Fold the component axis into the head axis so the fused 4-D kernels apply. The fused
        # CPU kernels need value width = query width, so every map aggregates the whole flattened
        # value and keeps its own component (4× the value work of the explicit path, still faster).
        width = q.shape[-2] * q.shape[-1]
        queries = q.flatten(-2).unsqueeze(2).expand(b, h, 4, n, width).flatten(1, 2)
        keys = signed_key_copies(k).flatten(1, 2)
        full_values = v.flatten(-2).unsqueeze(2).expand(b, h, 4, s, 4 * d_v).flatten(1, 2)
        fused_mask = None
        if mask is not None:
            fused_mask = mask
            while fused_mask.dim() < 4:
                fused_mask = fused_mask.unsqueeze(0)
            fused_mask = fused_mask.repeat_interleave(4, dim=1) if fused_mask.shape[1] != 1 else fused_mask
        out = F.scaled_dot_product_attention(
            queries, keys, full_values, attn_mask=fused_mask, dropout_p=dropout_p, scale=scale
        )  # (B, H·4 maps, N, 4·d_v)
        out = out.unflatten(1, (h, 4)).unflatten(-1, (4, d_v)).diagonal(dim1=2, dim2=4).movedim(-1, 2)

    out = out.movedim(2, -2)  # (B, H, N, 4, d_v)
    if dead is not None:
        out = out.masked_fill(dead.unsqueeze(-1), 0.0)
        if weights is not None:
            weights = weights.masked_fill(dead.unsqueeze(-3), 0.0)
    return out, weights


MECHANISM = Mechanism(
    name="hamilton",
    core=hamilton_attention,
    summary="Component-wise Hamilton scores (Tay et al.): four maps and four softmaxes per head.",
    maps_per_head=4,
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
"""Registry spec of the Hamilton mechanism (see :mod:`qattn.attention.registry`)."""
