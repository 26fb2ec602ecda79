"""Improved clustered attention (Vyas, Katharopoulos, Fleuret, NeurIPS 2020) as a registered mechanism.

Clustered attention (:mod:`qattn.attention.clustered`, which holds the hashing, the k-means and
the shared machinery) gives each cluster of queries its centroid's row. The improved variant
keeps, per cluster, the ``top_k`` keys of that row and gives each member query its EXACT
attention on them, scaled by the centroid's mass on those keys; on the other keys it keeps the
centroid's row::

    T_c  = top_k keys of A^c,   m_c = Σ_{j∈T_c} A^c_j
    Â_ij = m_c · softmax_{j∈T_c}(q_i k_jᵀ / sqrt(D))   for j in T_c,   Â_ij = A^c_j otherwise

With ``top_k = S`` it is full attention, and per query it is never farther from full attention
in L1 than the plain clustered row (the paper's Proposition 2; both tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qattn.attention._spec import Mechanism
from qattn.attention.clustered import clustered_shared_attention, draw_planes

__all__ = ["improved_clustered_core", "MECHANISM"]


def improved_clustered_core(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
    *,
    n_clusters: int = 100,
    top_k: int = 32,
    bits: int = 31,
    iterations: int = 10,
    planes: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The registered ``"improved_clustered"`` core, with shared quaternion scores.

    ``q (B, H, N, 4, d_h)``, ``k (B, H, S, 4, d_h)``, ``v (B, H, S, 4, d_v)`` → ``(out (B, H, N,
    4, d_v), weights (B, H, N, S) or None)``; key masks only, no causal masks. ``top_k`` is
    clipped to ``S`` (a sequence shorter than ``top_k`` keys gets exact attention); other options
    as in :func:`~qattn.attention.clustered.clustered_shared_attention`.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1 for improved clustered attention (0 is plain 'clustered'), got {top_k}")
    return clustered_shared_attention(
        q,
        k,
        v,
        n_clusters,
        min(top_k, k.shape[2]),
        bits,
        iterations,
        generator,
        planes,
        None,
        attn_mask,
        dropout_p,
        is_causal,
        need_weights,
    )


MECHANISM = Mechanism(
    name="improved_clustered",
    core=improved_clustered_core,
    summary="Improved clustered attention (Vyas et al.): the centroid's row, with exact per-query weights on its top-k keys.",
    maps_per_head=1,
    returns_weights=True,
    bool_mask=True,
    float_mask=True,
    per_query_mask=False,
    causal=False,
    causal_only=False,
    cross_attention=True,
    exact=False,
    options={"n_clusters": 100, "top_k": 32, "bits": 31, "iterations": 10, "planes": None, "generator": None},
    draw_buffers=draw_planes,
)
"""Registry spec of improved clustered attention (see :mod:`qattn.attention.registry`)."""
