"""Clustered and improved clustered attention (Vyas, Katharopoulos, Fleuret, NeurIPS 2020), in plain PyTorch.

Queries that are close get (nearly) the same attention row, so the row is computed once per
cluster of queries. For one head, with ``N`` queries, ``S`` keys, ``C`` clusters::

    codes  = hash(q)                       B random hyperplanes with a bias: a B-bit code per query
    labels = k-means of the codes in Hamming space (Lloyd iterations, majority-vote centroids)
    q̄_c    = mean of the queries of cluster c                                   (C, D)
    A^c    = softmax(q̄_c Kᵀ / sqrt(D) + mask)                                   (C, S)
    out_i  = A^c[labels_i] V                                                    clustered

Improved clustered attention keeps, per cluster, the ``top_k`` keys of the centroid's row and
computes each query's EXACT attention on them, scaled so the row still sums to one::

    T_c    = the top_k keys of A^c,   m_c = Σ_{j∈T_c} A^c_j
    Â_ij   = m_c · softmax_{j∈T_c}(q_i k_jᵀ / sqrt(D))    for j in T_c
    Â_ij   = A^c_j                                          otherwise

Cost per head: O(N·C·B) for the clustering, O(C·S·D) for the centroid rows and O(N·top_k·D)
for the improved part, instead of O(N·S·D). Limits (tested): with every query in its own
cluster the clustered attention is full attention, and with ``top_k = S`` the improved one is.

Quaternion queries with shared scores are plain ``4·d_h`` real vectors (the shared score is their
dot product, :mod:`qattn.attention.shared_score`), so ONE clustering of the flattened queries
serves all four value components: :func:`clustered_shared_attention` works on the book's
``(B, H, N, 4, d_h)`` layout. Hamilton (component-wise) scores form four maps, each the dot
product of the SAME flattened query with a signed, permuted copy of the key
(:func:`qattn.attention.hamilton.signed_key_copies`), so one clustering of the queries serves
the four maps too (:func:`clustered_hamilton_attention`): one hashing and one k-means per head
instead of four, and ``4·C`` centroid rows instead of ``4·N`` rows.

Randomness comes from an explicit ``torch.Generator`` (the hyperplanes, the initial centroids,
re-seeded empty clusters); nothing touches torch's global random state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from qattn.attention._spec import Mechanism
from qattn.attention.hamilton import signed_key_copies
from qattn.attention.shared_score import check_core_inputs

__all__ = [
    "MAX_BITS",
    "random_planes",
    "hash_codes",
    "hamming_kmeans",
    "cluster_queries",
    "clustered_attention",
    "clustered_shared_attention",
    "clustered_hamilton_attention",
    "draw_planes",
    "clustered_core",
    "MECHANISM",
]

MAX_BITS = 63  # codes are int64 bit fields


def random_planes(dim: int, bits: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``bits`` random hyperplanes with a bias for ``dim``-dimensional queries: ``(bits, dim + 1)``."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS} (codes are int64), got {bits}")
    if dim < 1:
        raise ValueError(f"dim must be at least 1, got {dim}")
    return torch.randn(bits, dim + 1, generator=generator, dtype=dtype)


def hash_codes(x: Tensor, planes: Tensor) -> Tensor:
    """The bit code of each vector: bit ``b`` is ``x·w_b + bias_b > 0``. ``x (..., D)``, ``planes (bits, D + 1)`` → int64 ``(...)``."""
    if planes.dim() != 2 or planes.shape[1] != x.shape[-1] + 1:
        raise ValueError(f"planes must be (bits, D + 1) = (bits, {x.shape[-1] + 1}), got {tuple(planes.shape)}")
    bits = planes.shape[0]
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"planes must hold 1..{MAX_BITS} hyperplanes, got {bits}")
    planes = planes.to(x.dtype)
    above = (x @ planes[:, :-1].T + planes[:, -1]) > 0
    weights = 2 ** torch.arange(bits, device=x.device, dtype=torch.int64)
    return (above.to(torch.int64) * weights).sum(-1)


def _bit_matrix(codes: Tensor, bits: int) -> Tensor:
    """``(n,)`` int64 codes → ``(n, bits)`` 0/1 int64."""
    return (codes[:, None] >> torch.arange(bits, device=codes.device)) & 1


def _hamming(a: Tensor, b: Tensor, bits: int) -> Tensor:
    """Hamming distances between the codes ``a (n,)`` and ``b (c,)``: ``(n, c)`` int64."""
    return _hamming_bits(_bit_matrix(a, bits).to(torch.float32), b, bits)


def _hamming_bits(x: Tensor, b: Tensor, bits: int) -> Tensor:
    """Hamming distances from codes given as a float 0/1 bit matrix ``x (n, bits)`` to the codes ``b (c,)``.

    As one matrix product of the bit matrices: ``|x ⊕ y| = |x| + |y| − 2·x·y`` (exact: the
    counts are small integers).
    """
    y = _bit_matrix(b, bits).to(torch.float32)
    return (x.sum(1)[:, None] + y.sum(1)[None, :] - 2 * (x @ y.T)).round().to(torch.int64)


def hamming_kmeans(codes: Tensor, n_clusters: int, bits: int, iterations: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """K-means of one head's ``codes (n,)`` in Hamming space; returns the labels ``(n,)`` in ``[0, n_clusters)``.

    Initial centroids are distinct codes drawn at random (fewer clusters are used when fewer
    distinct codes exist); each Lloyd iteration assigns every code to its nearest centroid (ties:
    the lowest index) and sets each centroid bit by majority vote of its members; an empty
    cluster is re-seeded with the code of a random member of the largest cluster.
    """
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be at least 1, got {n_clusters}")
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    distinct = torch.unique(codes)
    order = torch.randperm(len(distinct), generator=generator)[: min(n_clusters, len(distinct))]
    centroids = distinct[order.to(distinct.device)]
    code_bits = _bit_matrix(codes, bits)  # (n, bits), computed once for every iteration
    code_bits_f = code_bits.to(torch.float32)
    labels = _hamming_bits(code_bits_f, centroids, bits).argmin(1)
    for _ in range(iterations):
        members = torch.bincount(labels, minlength=len(centroids))
        votes = torch.zeros(len(centroids), bits, dtype=torch.int64, device=codes.device)
        votes.index_add_(0, labels, code_bits)
        majority = (2 * votes > members[:, None]).to(torch.int64)
        new = (majority << torch.arange(bits, device=codes.device)).sum(1)
        for c in torch.nonzero(members == 0).flatten().tolist():
            largest = int(members.argmax())
            pool = torch.nonzero(labels == largest).flatten()
            new[c] = codes[pool[torch.randint(len(pool), (1,), generator=generator).item()]]
        if torch.equal(new, centroids):
            break
        centroids = new
        labels = _hamming_bits(code_bits_f, centroids, bits).argmin(1)
    return labels


def cluster_queries(q: Tensor, n_clusters: int, planes: Tensor, iterations: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """Cluster labels ``(B, H, N)`` of the queries ``q (B, H, N, D)``: hashing, then k-means per head."""
    codes = hash_codes(q.detach(), planes)
    bits = planes.shape[0]
    flat = codes.reshape(-1, codes.shape[-1])
    labels = torch.stack([hamming_kmeans(row, n_clusters, bits, iterations, generator) for row in flat])
    return labels.reshape(codes.shape)


def _key_mask(
    attn_mask: Tensor | None, is_causal: bool, batch: int, heads: int, queries: int, keys: int, dtype: torch.dtype
) -> Tensor | None:
    """An additive ``(B, H, 1, S)`` key mask, or None.

    Only masks that are the same for every query fit (a cluster's queries share one row): a mask
    broadcastable to ``(B, H, 1, S)``, or one with a query axis whose rows are all equal.
    """
    if is_causal:
        raise ValueError(
            "clustered attention does not support causal masks (is_causal=True), like the original: queries of one cluster share one row"
        )
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        additive = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device).masked_fill(attn_mask, -math.inf)
    elif attn_mask.is_floating_point():
        additive = attn_mask.to(dtype)
    else:
        raise TypeError(f"attn_mask must be bool (True = not allowed) or float (added to the scores), got {attn_mask.dtype}")
    if additive.dim() == 1:
        additive = additive[None]
    try:
        full = additive.broadcast_to(batch, heads, additive.shape[-2], keys)
    except RuntimeError:
        full = None
    if full is None or additive.dim() > 4 or full.shape[-2] not in (1, queries) or not torch.equal(full, full[..., :1, :].expand_as(full)):
        raise ValueError(
            f"clustered attention takes key masks only, the same for every query: attn_mask must broadcast to "
            f"(B, H, 1, S) = ({batch}, {heads}, 1, {keys}) or have equal rows for all {queries} queries; got {tuple(attn_mask.shape)}"
        )
    return full[..., :1, :]


def _softmax(scores: Tensor) -> Tensor:
    """Row softmax whose fully masked rows (all -inf) are zeros, never NaN."""
    dead = torch.isneginf(scores).all(-1, keepdim=True)
    return torch.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)


def _by_cluster(labels: Tensor, n_clusters: int) -> tuple[Tensor, Tensor, list[int]]:
    """For one head: the query order that groups the clusters, its inverse, and the cluster sizes."""
    order = labels.argsort(stable=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return order, inverse, torch.bincount(labels, minlength=n_clusters).tolist()


def _scores_on_cluster_keys(q: Tensor, k_top: Tensor, labels: Tensor, n_clusters: int) -> Tensor:
    """``q_i · k_j`` for every query and the top keys of its cluster: ``(B, H, N, k)``.

    The queries of each cluster are grouped (sorted by label) so that each cluster is one matrix
    product with its ``k`` keys, instead of gathering a ``(N, k, D)`` copy of the keys.
    """
    heads = []
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            order, inverse, sizes = _by_cluster(labels[b, h], n_clusters)
            parts = [qc @ k_top[b, h, c].T for c, qc in enumerate(q[b, h][order].split(sizes)) if sizes[c]]
            heads.append(torch.cat(parts)[inverse])
    return torch.stack(heads).unflatten(0, q.shape[:2])


def _weighted_cluster_values(p: Tensor, v_top: Tensor, labels: Tensor, n_clusters: int) -> Tensor:
    """``Σ_j p_ij v_j`` over the top keys of each query's cluster: ``(B, H, N, D_v)`` (grouped like the scores)."""
    heads = []
    for b in range(p.shape[0]):
        for h in range(p.shape[1]):
            order, inverse, sizes = _by_cluster(labels[b, h], n_clusters)
            parts = [pc @ v_top[b, h, c] for c, pc in enumerate(p[b, h][order].split(sizes)) if sizes[c]]
            heads.append(torch.cat(parts)[inverse])
    return torch.stack(heads).unflatten(0, p.shape[:2])


def clustered_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    labels: Tensor,
    n_clusters: int,
    top_k: int = 0,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Clustered (``top_k = 0``) or improved clustered attention with given cluster ``labels``.

    Parameters
    ----------
    q, k, v : Tensor
        ``(B, H, N, D)``, ``(B, H, S, D)``, ``(B, H, S, D_v)``.
    labels : Tensor
        ``(B, H, N)`` int64 in ``[0, n_clusters)``, e.g. from :func:`cluster_queries`.
    n_clusters : int
        The number of clusters ``C`` the labels index.
    top_k : int
        ``0``: clustered attention; ``1..S``: improved clustered attention on the top ``top_k``
        keys of each centroid's row.
    attn_mask : Tensor, optional
        A KEY mask, the same for every query (broadcastable to ``(B, H, 1, S)``, or with equal
        rows): bool True = not allowed, float = added.
    dropout_p : float
        Dropout on the attention weights, as the original applies it: on each centroid's row
        (shared by the cluster's members) and, for the improved attention, on each query's
        weights on its top keys. The top keys are chosen before dropout; weights returned with
        ``need_weights`` are taken before dropout.
    is_causal : bool
        Refused (a cluster's queries share one row).
    need_weights : bool
        Also return the attention rows each query effectively used, ``(B, H, N, S)``.
    scale : float, optional
        Score scale, default ``1 / sqrt(D)``.

    Returns
    -------
    (out (B, H, N, D_v), weights or None)
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, length, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    batch, heads, queries, dim = q.shape
    keys = k.shape[2]
    if k.shape[:2] != (batch, heads) or v.shape[:3] != k.shape[:3] or k.shape[-1] != dim:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree on (B, H), S or D")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be at least 1, got {n_clusters}")
    if not 0 <= top_k <= keys:
        raise ValueError(f"top_k must be in 0..S = 0..{keys} (0: plain clustered attention), got {top_k}")
    if labels.shape != (batch, heads, queries) or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 of shape (B, H, N) = {(batch, heads, queries)}, got {labels.dtype} {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_clusters):
        raise ValueError(f"labels must lie in [0, n_clusters) = [0, {n_clusters})")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    mask = _key_mask(attn_mask, is_causal, batch, heads, queries, keys, q.dtype)

    # centroids: the mean of each cluster's queries (an empty cluster's row is never used)
    counts = torch.zeros(batch, heads, n_clusters, dtype=q.dtype, device=q.device)
    counts.scatter_add_(2, labels, torch.ones_like(labels, dtype=q.dtype))
    sums = torch.zeros(batch, heads, n_clusters, dim, dtype=q.dtype, device=q.device)
    sums = sums.scatter_add(2, labels[..., None].expand(-1, -1, -1, dim), q)
    centroids = sums / counts.clamp(min=1)[..., None]

    scores = centroids @ k.transpose(-1, -2) * scale  # (B, H, C, S)
    if mask is not None:
        scores = scores + mask
    rows = _softmax(scores)  # (B, H, C, S)
    dropped = F.dropout(rows, dropout_p) if dropout_p > 0 else rows
    out_c = dropped @ v  # (B, H, C, D_v)
    member = labels[..., None]
    out = out_c.gather(2, member.expand(-1, -1, -1, v.shape[-1]))
    weights = rows.gather(2, member.expand(-1, -1, -1, keys)) if need_weights else None
    if top_k == 0:
        return out, weights

    top_rows, top_idx = rows.topk(top_k, dim=-1)  # (B, H, C, k)
    mass = top_rows.sum(-1)  # (B, H, C)
    k_top = k[:, :, None].expand(-1, -1, n_clusters, -1, -1).gather(3, top_idx[..., None].expand(-1, -1, -1, -1, dim))
    v_top = v[:, :, None].expand(-1, -1, n_clusters, -1, -1).gather(3, top_idx[..., None].expand(-1, -1, -1, -1, v.shape[-1]))
    top_dropped = dropped.gather(3, top_idx) if dropout_p > 0 else top_rows
    rest_c = out_c - (top_dropped[..., None] * v_top).sum(-2)  # the centroid row off its top keys

    exact = _scores_on_cluster_keys(q, k_top, labels, n_clusters) * scale  # (B, H, N, k)
    if mask is not None:
        mask_top = mask.expand(-1, -1, n_clusters, -1).gather(3, top_idx)  # (B, H, C, k)
        exact = exact + mask_top.gather(2, labels[..., None].expand(-1, -1, -1, top_k))
    mass_q = mass.gather(2, labels)[..., None]  # (B, H, N, 1)
    p = _softmax(exact) * mass_q  # (B, H, N, k)
    p_dropped = F.dropout(p, dropout_p) if dropout_p > 0 else p
    out = _weighted_cluster_values(p_dropped, v_top, labels, n_clusters) + rest_c.gather(2, member.expand(-1, -1, -1, v.shape[-1]))
    if need_weights:
        top_idx_q = top_idx.gather(2, labels[..., None].expand(-1, -1, -1, top_k))
        weights = weights.scatter(3, top_idx_q, p)
    return out, weights


DEFAULT_SEED = 0
"""Seed of the generator used when none is given: the cores are then pure functions of their inputs."""


def _labels_once(
    qf: Tensor,
    n_clusters: int,
    bits: int,
    iterations: int,
    generator: torch.Generator | None,
    planes: Tensor | None,
    labels: Tensor | None,
) -> Tensor:
    """The one clustering of the flattened quaternion queries ``qf (B, H, N, 4·d_h)``: ``labels`` if
    given, else hashing with ``planes`` and k-means. Without a ``generator`` a fresh one seeded
    :data:`DEFAULT_SEED` draws the planes (if not given) and the k-means initialisation."""
    if labels is not None:
        return labels
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_SEED)
    if planes is None:
        planes = random_planes(qf.shape[-1], bits, generator, dtype=qf.dtype)
    return cluster_queries(qf, n_clusters, planes.to(qf.device), iterations, generator)


def clustered_shared_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    n_clusters: int,
    top_k: int = 0,
    bits: int = 31,
    iterations: int = 10,
    generator: torch.Generator | None = None,
    planes: Tensor | None = None,
    labels: Tensor | None = None,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """(Improved) clustered attention with shared quaternion scores on ``(B, H, N, 4, d_h)`` tensors.

    The shared score is the dot product of the flattened ``4·d_h`` vectors scaled by
    ``1 / sqrt(4·d_h)``, so the queries are clustered ONCE as ``4·d_h`` real vectors and one
    clustering serves all four value components (one row per cluster, not four). ``planes``
    (``(bits, 4·d_h + 1)``) default to fresh ones drawn from ``generator`` (a generator seeded
    :data:`DEFAULT_SEED` if None); ``labels`` given explicitly skip the clustering. Returns
    ``(out (B, H, N, 4, d_v), weights (B, H, N, S) or None)``.
    """
    check_core_inputs(q, k, v)
    qf, kf, vf = q.flatten(-2), k.flatten(-2), v.flatten(-2)
    labels = _labels_once(qf, n_clusters, bits, iterations, generator, planes, labels)
    out, weights = clustered_attention(qf, kf, vf, labels, n_clusters, top_k, attn_mask, dropout_p, is_causal, need_weights)
    return out.unflatten(-1, (4, v.shape[-1])), weights


def clustered_hamilton_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    n_clusters: int,
    top_k: int = 0,
    bits: int = 31,
    iterations: int = 10,
    generator: torch.Generator | None = None,
    planes: Tensor | None = None,
    labels: Tensor | None = None,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """(Improved) clustered attention with Hamilton (component-wise) scores on ``(B, H, N, 4, d_h)`` tensors.

    Map ``m`` scores the flattened query against the ``m``-th signed key copy and aggregates value
    component ``m`` (as :func:`qattn.attention.hamilton.hamilton_attention`); the queries are
    clustered ONCE and the labels serve all four maps. Returns ``(out (B, H, N, 4, d_v),
    weights (B, H, 4, N, S) or None)``.
    """
    check_core_inputs(q, k, v)
    qf = q.flatten(-2)
    labels = _labels_once(qf, n_clusters, bits, iterations, generator, planes, labels)
    keys = signed_key_copies(k)  # (B, H, 4, S, 4·d_h)
    maps = [
        clustered_attention(qf, keys[:, :, m], v[..., m, :], labels, n_clusters, top_k, attn_mask, dropout_p, is_causal, need_weights)
        for m in range(4)
    ]
    out = torch.stack([o for o, _ in maps], dim=-2)
    weights = torch.stack([w for _, w in maps], dim=2) if need_weights else None
    return out, weights


# -- the registered mechanism -------------------------------------------------------------------


def draw_planes(query_dim: int, options: Mapping[str, Any], generator: torch.Generator | None) -> dict[str, Tensor]:
    """The hashing hyperplanes a layer keeps: ``{"planes": (bits, query_dim + 1)}`` with ``bits = options["bits"]``."""
    return {"planes": random_planes(query_dim, int(options["bits"]), generator)}


def clustered_core(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
    *,
    n_clusters: int = 100,
    bits: int = 31,
    iterations: int = 10,
    planes: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The registered ``"clustered"`` core: clustered attention with shared quaternion scores.

    The registry contract (``(B, H, N, 4, d_h)`` in, ``(out, weights (B, H, N, S) or None)``
    out) with key masks only and no causal masks; options as in :func:`clustered_shared_attention`.
    """
    return clustered_shared_attention(
        q, k, v, n_clusters, 0, bits, iterations, generator, planes, None, attn_mask, dropout_p, is_causal, need_weights
    )


MECHANISM = Mechanism(
    name="clustered",
    core=clustered_core,
    summary="Clustered attention (Vyas et al.): one shared-score row per cluster of hashed queries, broadcast to its members.",
    maps_per_head=1,
    returns_weights=True,
    bool_mask=True,
    float_mask=True,
    per_query_mask=False,
    causal=False,
    causal_only=False,
    cross_attention=True,
    exact=False,
    options={"n_clusters": 100, "bits": 31, "iterations": 10, "planes": None, "generator": None},
    draw_buffers=draw_planes,
)
"""Registry spec of clustered attention (see :mod:`qattn.attention.registry`)."""
