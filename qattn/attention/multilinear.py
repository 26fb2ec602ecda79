"""Multi-linear attention (MAN, Jin & Zhao, NeurIPS 2021): joint attention over M ≥ 2 modalities, exact or by ARF.

OUR RECONSTRUCTION. The paper's formulas could not be read; what follows is rebuilt from its
description (a generalisation of bilinear attention networks, :mod:`qattn.attention.bilinear`, to
``M`` modalities, made linear in the sequence lengths by addition random features, with local
sequential constraints) and may differ from the authors' equations in scaling and detail.

Inputs: ``M ≥ 2`` modalities ``x_m (B, L_m, d_m)`` (own lengths and widths) and optional length
masks ``mask_m (B, L_m)``, bool, True = padding. Per modality two factors::

    fusion    F^m = σ(U_m [x_m, 1])   (B, L_m, K)    σ = ReLU, K = joint width shared by all modalities
    attention S^m =   V_m [x_m, 1]    (B, L_m, r)    r = rank

The appended constant 1 is the bias of an ``nn.Linear``, exactly as in BAN's ``σ(Uᵀ X)`` (whose
linears carry a bias); the fusion factor keeps BAN's ReLU, the attention factor is linear (its
pairwise dot products are the logits). ONE softmax over all ``Π_m L_m`` index tuples::

    α(i_1, …, i_M) ∝ exp( Σ_{m<n} ⟨s^m_{i_m}, s^n_{i_n}⟩ / √r )          (tuples with a padding token: α = 0)
    z = Σ_{i_1..i_M} α(i_1, …, i_M) · f^1_{i_1} ∘ f^2_{i_2} ∘ … ∘ f^M_{i_M}   (B, K)

A sample with a fully padded modality has no tuple left: ``z = 0`` (and zero weights), never NaN.
The exact form (:func:`multilinear_attention`) costs ``O(B · Π_m L_m · (K + M))``. For ``M = 2``
it is BAN's joint softmax and pooling with logits ``⟨s^1_i, s^2_j⟩ / √r``: BAN's
``pᵀ(u_i ∘ v_j) + b`` is the case ``s^1 = √r · p ∘ u``, ``s^2 = v`` (the bias cancels in the softmax).

Addition random features (ARF, :func:`arf_multilinear_attention`). For ``ω ~ N(0, I_r)`` and
``φ_ω(x) = exp(ωᵀx − ‖x‖²/2)``, since ``E exp(ωᵀa) = exp(‖a‖²/2)`` (proofs/arf_identity.py)::

    E_ω[ Π_m φ_ω(x_m) ] = exp(‖Σ_m x_m‖²/2 − Σ_m ‖x_m‖²/2) = exp( Σ_{m<n} x_mᵀ x_n )

With ``x_m = s^m / r^{1/4}`` every pair carries ``x_mᵀx_n = ⟨s^m, s^n⟩ / √r``, so the product of the
M feature maps is an unbiased estimate of the tuple kernel ``κ(i_1..i_M)``. The sums over tuples
then factorise per modality (distributivity), for ``R`` features ``ω_1..ω_R``::

    N = Σ_tuples κ · f^1 ∘ … ∘ f^M  ≈  (1/R) Σ_ω Π_m ( Σ_i φ_ω(x_{m,i}) f^m_i )      (B, K), elementwise in K
    D = Σ_tuples κ                  ≈  (1/R) Σ_ω Π_m ( Σ_i φ_ω(x_{m,i}) )            (B,)
    z = N / D

at a cost ``O(B · R · Σ_m L_m · (r + K))``. Both estimates are unbiased; ``z`` (a ratio) is
consistent with an ``O(1/R)`` bias. Padding tokens are dropped from the per-modality sums.

Stabiliser. With ``ℓ_{m,ω,i} = ωᵀx_{m,i} − ‖x_{m,i}‖²/2`` (the log-features), take per sample
``c_{m,ω} = max_i ℓ_{m,ω,i}`` (over non-padding tokens), ``C_ω = Σ_m c_{m,ω}`` and ``C* = max_ω C_ω``::

    Π_m Σ_i e^{ℓ_{m,ω,i}} g_i = e^{C*} · e^{C_ω − C*} · Π_m Σ_i e^{ℓ_{m,ω,i} − c_{m,ω}} g_i

Every exponent is ``≤ 0``, the factor ``e^{C*}`` is common to ``N`` and ``D`` and cancels, and the
normaliser is ``≥ 1`` (at the maximising ω every modality's largest token contributes ``e^0``),
so large scores neither overflow nor divide by zero. :func:`arf_kernel_sums` returns the
stabilised sums with ``log_scale = C* − log R`` for the unnormalised estimates.

Features (:func:`draw_features`): i.i.d. Gaussian rows, or orthogonal ones (Performer-style):
blocks of ``r`` Gaussian rows orthogonalised by QR, each row rescaled to the norm of an
independent ``N(0, I_r)`` vector (chi-distributed), so every row is still marginally ``N(0, I_r)``
(unbiased) while rows within a block are exactly orthogonal (lower variance).

Local sequential constraints (:func:`local_positions`). A shared positional term
``w · p(τ)`` is added to every modality's attention factor, ``τ ∈ [0, 1]`` the normalised time
step of a token among its modality's non-padding tokens. With ``n = ⌊(r − 1)/2⌋`` frequencies,
``p(τ) = r^{1/4} (a_0, a_1 cos πτ, a_1 sin πτ, …, a_n cos nπτ, a_n sin nπτ, 0…)`` and
``a_0² = C(2n, n)/4ⁿ``, ``a_k² = 2·C(2n, n−k)/4ⁿ``, so that::

    ⟨p(τ), p(τ′)⟩ / √r = cos^{2n}( π (τ − τ′) / 2 )     (1 at τ = τ′, decreasing in |τ − τ′|, 0 at |τ − τ′| = 1)

and the exponent gains ``w² · Σ_{m<n} cos^{2n}(π(τ_m − τ_n)/2)`` (plus cross terms with the
scores): temporally aligned tuples are rewarded. It is a plain addition to ``S^m``, so ARF
applies unchanged.

Examples
--------
>>> gen = torch.Generator().manual_seed(0)
>>> fusion = [torch.rand(2, n, 4, generator=gen) for n in (3, 5, 2)]
>>> scores = [0.5 * torch.randn(2, n, 6, generator=gen) for n in (3, 5, 2)]
>>> z, weights = multilinear_attention(fusion, scores, need_weights=True)
>>> tuple(z.shape), tuple(weights.shape), round(float(weights[0].sum()), 6)
((2, 4), (2, 3, 5, 2), 1.0)
>>> features = draw_features(6, 4096, torch.Generator().manual_seed(1))
>>> bool((arf_multilinear_attention(fusion, scores, features) - z).abs().max() < 0.02)
True
>>> man = MultilinearAttention([8, 5, 3], joint_dim=4, rank=6, features=64, generator=torch.Generator().manual_seed(2))
>>> tuple(man([torch.randn(2, 7, 8), torch.randn(2, 4, 5), torch.randn(2, 6, 3)]).shape), tuple(man.features.shape)
((2, 4), (64, 6))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.attention._spec import FusionMechanism

__all__ = [
    "multilinear_attention",
    "multilinear_kernel_sums",
    "draw_features",
    "arf_kernel_sums",
    "arf_multilinear_attention",
    "local_positions",
    "arf_multilinear_core",
    "MultilinearAttention",
    "MECHANISM",
    "ARF_MECHANISM",
]

MaskList = Sequence[Tensor | None] | None


def _check_factors(fusion: Sequence[Tensor], scores: Sequence[Tensor], masks: MaskList) -> list[Tensor | None]:
    """Validate ``fusion[m] (B, L_m, K)``, ``scores[m] (B, L_m, r)``, ``masks[m] (B, L_m)``; return the masks as a list."""
    m = len(fusion)
    if m < 2:
        raise ValueError(f"multilinear attention needs at least 2 modalities, got {m}")
    if len(scores) != m:
        raise ValueError(f"expected one attention factor per fusion factor ({m}), got {len(scores)}")
    masks = [None] * m if masks is None else list(masks)
    if len(masks) != m:
        raise ValueError(f"expected one mask (or None) per modality ({m}), got {len(masks)}")
    b, k, r = fusion[0].shape[0], fusion[0].shape[-1], scores[0].shape[-1]
    for i, (f, s, mask) in enumerate(zip(fusion, scores, masks)):
        if f.dim() != 3 or s.dim() != 3:
            raise ValueError(f"modality {i}: expected fusion (B, L, K) and scores (B, L, r), got {tuple(f.shape)} and {tuple(s.shape)}")
        if f.shape[:2] != s.shape[:2] or f.shape[0] != b:
            raise ValueError(
                f"modality {i}: expected batch size {b} and equal lengths in fusion and scores, got {tuple(f.shape)} and {tuple(s.shape)}"
            )
        if f.shape[-1] != k or s.shape[-1] != r:
            raise ValueError(f"modality {i}: expected joint width K={k} and rank r={r}, got {f.shape[-1]} and {s.shape[-1]}")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(f.shape[:2])):
            raise ValueError(f"mask {i}: expected a bool tensor of shape (B, L)={tuple(f.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
    return masks


def _joint_logits(scores: Sequence[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor]:
    """``Σ_{m<n} ⟨s^m, s^n⟩ / √r`` as ``(B, L_1, …, L_M)`` and the blocked tuples (any padding token)."""
    m, b = len(scores), scores[0].shape[0]
    lengths = [s.shape[1] for s in scores]
    scale = scores[0].shape[-1] ** -0.5

    def spread(t: Tensor, axes: tuple[int, ...]) -> Tensor:  # (B, L_a[, L_b]) → broadcastable to (B, L_1..L_M)
        shape = [b] + [lengths[a] if a in axes else 1 for a in range(m)]
        return t.reshape(shape)

    logits = torch.zeros([b] + lengths, dtype=scores[0].dtype, device=scores[0].device)
    for i in range(m):
        for j in range(i + 1, m):
            logits = logits + spread(scores[i] @ scores[j].transpose(1, 2) * scale, (i, j))
    blocked = torch.zeros([b] + lengths, dtype=torch.bool, device=scores[0].device)
    for i, mask in enumerate(masks):
        if mask is not None:
            blocked = blocked | spread(mask, (i,))
    return logits, blocked


def _pool(weights: Tensor, fusion: Sequence[Tensor]) -> Tensor:
    """``Σ_tuples w(i_1..i_M) · f^1_{i_1} ∘ … ∘ f^M_{i_M}``, contracting the last modality first: ``(B, K)``."""
    t = torch.einsum("b...j,bjk->b...k", weights, fusion[-1])
    for f in reversed(fusion[:-1]):
        t = torch.einsum("b...jk,bjk->b...k", t, f)
    return t


def multilinear_kernel_sums(fusion: Sequence[Tensor], scores: Sequence[Tensor], masks: MaskList = None) -> tuple[Tensor, Tensor, Tensor]:
    """Exact unnormalised sums ``N = Σ_tuples κ · f^1 ∘ … ∘ f^M`` and ``D = Σ_tuples κ``, stabilised.

    ``κ(i_1..i_M) = exp(Σ_{m<n} ⟨s^m_{i_m}, s^n_{i_n}⟩ / √r)`` over the tuples without padding.
    Returns ``(numerator (B, K), normaliser (B,), log_scale (B,))`` with ``N = numerator · e^{log_scale}``
    and ``D = normaliser · e^{log_scale}`` (``log_scale`` = the largest logit; a sample with no tuple
    gets zeros). The same form as :func:`arf_kernel_sums`, whose estimates these are.
    """
    masks = _check_factors(fusion, scores, masks)
    logits, blocked = _joint_logits(scores, masks)
    b = logits.shape[0]
    flat = logits.masked_fill(blocked, float("-inf")).reshape(b, -1)
    top = flat.max(-1).values.detach()
    dead = torch.isneginf(top)
    top = top.masked_fill(dead, 0.0)
    kernel = torch.exp(flat - top[:, None]).reshape(logits.shape)  # exp(-inf) = 0 on blocked tuples
    return _pool(kernel, fusion), kernel.reshape(b, -1).sum(-1), top


def multilinear_attention(
    fusion: Sequence[Tensor], scores: Sequence[Tensor], masks: MaskList = None, need_weights: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Exact multi-linear attention: one softmax over all ``Π_m L_m`` index tuples.

    Parameters
    ----------
    fusion : sequence of Tensor
        ``M ≥ 2`` fusion factors ``F^m (B, L_m, K)``.
    scores : sequence of Tensor
        Attention factors ``S^m (B, L_m, r)``.
    masks : sequence of (Tensor or None), optional
        ``(B, L_m)`` bool, True = padding; tuples with a padding token get weight 0.
    need_weights : bool
        Also return the weights ``α (B, L_1, …, L_M)``.

    Returns
    -------
    (Tensor, Tensor or None)
        ``z = Σ α · f^1 ∘ … ∘ f^M`` ``(B, K)`` (zeros for a sample with no tuple left) and the weights.
    """
    masks = _check_factors(fusion, scores, masks)
    logits, blocked = _joint_logits(scores, masks)
    b = logits.shape[0]
    flat = logits.masked_fill(blocked, float("-inf")).reshape(b, -1)
    dead = torch.isneginf(flat).all(-1, keepdim=True)
    weights = torch.softmax(flat.masked_fill(dead, 0.0), dim=-1).masked_fill(dead | blocked.reshape(b, -1), 0.0).reshape(logits.shape)
    return _pool(weights, fusion), (weights if need_weights else None)


def draw_features(
    rank: int,
    n_features: int,
    generator: torch.Generator | None = None,
    orthogonal: bool = True,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n_features`` random features ``ω ~ N(0, I_rank)`` as rows of an ``(n_features, rank)`` tensor.

    ``orthogonal``: blocks of ``rank`` rows are orthogonalised (QR of a Gaussian block, signs fixed
    by ``diag(R)`` so the basis is Haar-distributed) and each row is rescaled to the norm of an
    independent Gaussian vector (chi with ``rank`` degrees of freedom); the last block is cut to
    size. Every row is marginally ``N(0, I)`` either way. Drawn in float64 on the CPU from
    ``generator`` (torch's default generator when None), then cast.

    >>> w = draw_features(4, 6, torch.Generator().manual_seed(0), orthogonal=True)
    >>> w.shape, bool(abs(float(w[0] @ w[1])) < 1e-5)
    (torch.Size([6, 4]), True)
    """
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    if n_features < 1:
        raise ValueError(f"the number of random features R must be at least 1, got {n_features}")
    if not orthogonal:
        w = torch.randn(n_features, rank, generator=generator, dtype=torch.float64)
    else:
        n_blocks = math.ceil(n_features / rank)
        q, r = torch.linalg.qr(torch.randn(n_blocks, rank, rank, generator=generator, dtype=torch.float64))
        signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        q = q * signs.masked_fill(signs == 0, 1.0)[:, None, :]  # Haar: fix the column signs
        norms = torch.randn(n_blocks, rank, rank, generator=generator, dtype=torch.float64).norm(dim=-1, keepdim=True)
        w = (q.transpose(-1, -2) * norms).reshape(n_blocks * rank, rank)[:n_features]  # rows of qᵀ, rescaled to chi_rank norms
    return w.to(dtype=dtype, device=device)


def arf_kernel_sums(
    fusion: Sequence[Tensor], scores: Sequence[Tensor], features: Tensor, masks: MaskList = None
) -> tuple[Tensor, Tensor, Tensor]:
    """ARF estimates of the unnormalised sums ``N (B, K)`` and ``D (B,)`` of :func:`multilinear_kernel_sums`.

    ``features (R, r)``. Returns ``(numerator (B, K), normaliser (B,), log_scale (B,))`` with the
    estimates ``N̂ = numerator · e^{log_scale}``, ``D̂ = normaliser · e^{log_scale}``, ``log_scale = C* − log R``
    (see the module notes on the stabiliser). Cost ``O(B · R · Σ_m L_m · (r + K))``. A sample with a
    fully padded modality gets zeros.
    """
    masks = _check_factors(fusion, scores, masks)
    r = scores[0].shape[-1]
    if features.dim() != 2 or features.shape[-1] != r or features.shape[0] < 1:
        raise ValueError(f"features must be (R, r) with R ≥ 1 and r={r} (the rank of the scores), got {tuple(features.shape)}")
    dtype, b = scores[0].dtype, scores[0].shape[0]
    omega = features.to(dtype=dtype, device=scores[0].device)
    dead = torch.zeros(b, dtype=torch.bool, device=scores[0].device)
    offsets, sums, norms = [], [], []
    for f, s, mask in zip(fusion, scores, masks):
        x = s * r**-0.25  # pairwise x_mᵀx_n = ⟨s^m, s^n⟩ / √r
        log_phi = x @ omega.T - 0.5 * x.pow(2).sum(-1, keepdim=True)  # (B, L_m, R)
        if mask is not None:
            log_phi = log_phi.masked_fill(mask[..., None], float("-inf"))
        c = log_phi.max(1, keepdim=True).values.detach()  # (B, 1, R): c_{m,ω}
        empty = torch.isneginf(c[:, 0, 0])
        dead = dead | empty
        c = c.masked_fill(empty[:, None, None], 0.0)
        e = torch.exp(log_phi - c)  # ≤ 1, exactly 0 on padding
        offsets.append(c[:, 0])
        sums.append(torch.einsum("bir,bik->brk", e, f))  # (B, R, K)
        norms.append(e.sum(1))  # (B, R)
    total = torch.stack(offsets).sum(0)  # C_ω (B, R)
    top = total.max(-1, keepdim=True).values  # C* (B, 1)
    weight = torch.exp(total - top)  # (B, R), ≤ 1, = 1 at the maximising ω
    numerator = torch.einsum("br,brk->bk", weight, math.prod(sums))
    normaliser = (weight * math.prod(norms)).sum(-1)
    keep = ~dead
    log_scale = top[:, 0] - math.log(omega.shape[0])
    return numerator * keep[:, None], normaliser * keep, log_scale * keep


def arf_multilinear_attention(fusion: Sequence[Tensor], scores: Sequence[Tensor], features: Tensor, masks: MaskList = None) -> Tensor:
    """Multi-linear attention approximated by addition random features ``features (R, r)``: ``z ≈ N̂ / D̂`` ``(B, K)``.

    Arguments as :func:`multilinear_attention`; linear in every ``L_m``. The common stabiliser
    cancels in the ratio; a sample with a fully padded modality gets ``z = 0``.
    """
    numerator, normaliser, _ = arf_kernel_sums(fusion, scores, features, masks)
    return numerator / normaliser.masked_fill(normaliser == 0, 1.0)[:, None]


def _normalised_times(length: int, mask: Tensor | None, dtype: torch.dtype, device: torch.device | str | None) -> Tensor:
    """``τ (1 or B, L)`` in ``[0, 1]``: a token's rank among its modality's non-padding tokens over (count − 1)."""
    if mask is None:
        steps = torch.arange(length, dtype=dtype, device=device)[None]
        return steps / max(length - 1, 1)
    keep = (~mask).to(dtype)
    steps = keep.cumsum(-1) - 1.0
    return (steps / (keep.sum(-1, keepdim=True) - 1.0).clamp(min=1.0)).clamp(min=0.0)


def local_positions(
    length: int,
    rank: int,
    mask: Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The shared positional term ``p(τ)`` of the local sequential constraint: ``(1, L, r)``, or ``(B, L, r)`` with a mask.

    ``τ`` is the normalised time step among the non-padding tokens (``mask (B, L)``, True = padding),
    so modalities of different lengths are aligned end to end. Built so that
    ``⟨p(τ), p(τ′)⟩ / √r = cos^{2n}(π(τ − τ′)/2)``, ``n = ⌊(r − 1)/2⌋`` (see the module notes);
    for ``r ≤ 2`` (``n = 0``) the term is constant and rewards nothing.

    >>> p, steps = local_positions(5, 7), torch.arange(5.0)
    >>> bool(torch.allclose(p[0] @ p[0].T / 7**0.5, torch.cos(torch.pi * (steps[:, None] - steps) / 8) ** 6, atol=1e-6))
    True
    """
    if rank < 1 or length < 1:
        raise ValueError(f"length and rank must be at least 1, got length={length}, rank={rank}")
    if mask is not None and (mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[-1] != length):
        raise ValueError(f"mask must be a bool tensor of shape (B, {length}), got {mask.dtype} {tuple(mask.shape)}")
    device = mask.device if mask is not None and device is None else device
    tau = _normalised_times(length, mask, torch.float64, device)  # (1|B, L)
    n = (rank - 1) // 2
    k = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    amp0 = math.sqrt(math.comb(2 * n, n) / 4**n)
    amp = torch.tensor([math.sqrt(2 * math.comb(2 * n, n - i) / 4**n) for i in range(1, n + 1)], dtype=torch.float64, device=device)
    angle = math.pi * tau[..., None] * k  # (1|B, L, n)
    parts = [torch.full_like(tau[..., None], amp0), torch.stack([amp * torch.cos(angle), amp * torch.sin(angle)], -1).flatten(-2)]
    p = torch.cat(parts, -1)
    p = F.pad(p, (0, rank - p.shape[-1]))
    return (p * rank**0.25).to(dtype)


class MultilinearAttention(nn.Module):
    """Multi-linear attention over ``M = len(in_dims) ≥ 2`` modalities: exact or with ARF.

    Parameters
    ----------
    in_dims : sequence of int
        Widths ``d_m`` of the modalities.
    joint_dim : int
        The joint width ``K`` of the fusion factors and of the output.
    rank : int
        Width ``r`` of the attention factors.
    features : int or None
        Number ``R`` of addition random features; None: the exact ``O(Π L_m)`` attention.
    orthogonal : bool
        Orthogonal (True) or i.i.d. Gaussian random features.
    local : bool
        Add the local sequential constraint ``w · p(τ)`` (:func:`local_positions`, learned scalar ``w``, initially 1)
        to every attention factor.
    generator : torch.Generator, optional
        Source of the random features (torch's default generator otherwise; parameters are
        initialised by torch's default generator, as every ``nn.Linear``).

    Notes
    -----
    ``forward(inputs [x_m (B, L_m, d_m)], masks=None [(B, L_m) bool or None]) → z (B, K)``. The
    features are a buffer ``features (R, r)`` (in the state dict); :meth:`redraw_features` draws
    new ones.
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        joint_dim: int,
        rank: int,
        features: int | None = None,
        orthogonal: bool = True,
        local: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        in_dims = [int(d) for d in in_dims]
        if len(in_dims) < 2:
            raise ValueError(f"multilinear attention needs at least 2 modalities (in_dims), got {len(in_dims)}")
        if any(d < 1 for d in in_dims) or joint_dim < 1 or rank < 1:
            raise ValueError(f"in_dims, joint_dim and rank must be at least 1, got {in_dims}, {joint_dim}, {rank}")
        if features is not None and features < 1:
            raise ValueError(f"the number of random features R must be at least 1 (or None for exact attention), got {features}")
        self.in_dims, self.joint_dim, self.rank = tuple(in_dims), joint_dim, rank
        self.orthogonal, self.local = orthogonal, local
        self.fusion = nn.ModuleList(nn.Linear(d, joint_dim) for d in in_dims)  # U_m [x, 1]
        self.attention = nn.ModuleList(nn.Linear(d, rank) for d in in_dims)  # V_m [x, 1]
        self.local_weight = nn.Parameter(torch.ones(())) if local else None
        buffer = None if features is None else draw_features(rank, features, generator, orthogonal)
        self.register_buffer("features", buffer)

    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Replace the feature buffer with ``R`` fresh features from ``generator`` (same dtype and device)."""
        if self.features is None:
            raise ValueError("an exact MultilinearAttention (features=None) has no random features to redraw")
        old = self.features
        self.features = draw_features(self.rank, old.shape[0], generator, self.orthogonal, dtype=old.dtype, device=old.device)

    def _check_inputs(self, inputs: Sequence[Tensor], masks: MaskList) -> list[Tensor | None]:
        if len(inputs) < 2 or len(inputs) != len(self.in_dims):
            raise ValueError(f"expected {len(self.in_dims)} modalities (in_dims={list(self.in_dims)}), got {len(inputs)}")
        b = inputs[0].shape[0] if inputs[0].dim() else None
        for i, (x, d) in enumerate(zip(inputs, self.in_dims)):
            if x.dim() != 3 or x.shape[-1] != d:
                raise ValueError(f"modality {i}: expected (B, L, {d}), got {tuple(x.shape)}")
            if x.shape[0] != b:
                raise ValueError(f"modality {i}: expected batch size {b} (that of modality 0), got {x.shape[0]}")
        masks = [None] * len(inputs) if masks is None else list(masks)
        if len(masks) != len(inputs):
            raise ValueError(f"expected one mask (or None) per modality ({len(inputs)}), got {len(masks)}")
        for i, (x, mask) in enumerate(zip(inputs, masks)):
            if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2])):
                raise ValueError(
                    f"mask {i}: expected a bool tensor of shape (B, L)={tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
                )
        return masks

    def factors(self, inputs: Sequence[Tensor], masks: MaskList = None) -> tuple[list[Tensor], list[Tensor]]:
        """The fusion factors ``σ(U_m [x_m, 1]) (B, L_m, K)`` and attention factors ``V_m [x_m, 1] (+ w·p(τ)) (B, L_m, r)``."""
        return self._factors(inputs, self._check_inputs(inputs, masks))

    def _factors(self, inputs: Sequence[Tensor], masks: list[Tensor | None]) -> tuple[list[Tensor], list[Tensor]]:
        fusion = [F.relu(lin(x)) for lin, x in zip(self.fusion, inputs)]
        scores = [lin(x) for lin, x in zip(self.attention, inputs)]
        if self.local_weight is not None:
            scores = [
                s + self.local_weight * local_positions(x.shape[1], self.rank, mask, dtype=s.dtype, device=s.device)
                for s, x, mask in zip(scores, inputs, masks)
            ]
        return fusion, scores

    def forward(self, inputs: Sequence[Tensor], masks: MaskList = None) -> Tensor:
        """``inputs [x_m (B, L_m, d_m)]``, ``masks [(B, L_m) bool or None]`` (True = padding) → ``z (B, joint_dim)``."""
        masks = self._check_inputs(inputs, masks)
        fusion, scores = self._factors(inputs, masks)
        if self.features is None:
            return multilinear_attention(fusion, scores, masks)[0]
        return arf_multilinear_attention(fusion, scores, self.features, masks)

    def extra_repr(self) -> str:
        mode = "exact" if self.features is None else f"features={self.features.shape[0]}, orthogonal={self.orthogonal}"
        return f"in_dims={list(self.in_dims)}, joint_dim={self.joint_dim}, rank={self.rank}, {mode}, local={self.local}"


def arf_multilinear_core(
    fusion: Sequence[Tensor],
    scores: Sequence[Tensor],
    masks: MaskList = None,
    need_weights: bool = False,
    *,
    features: Tensor | None = None,
    n_features: int = 256,
    orthogonal: bool = True,
) -> tuple[Tensor, None]:
    """The registry's ARF core: :func:`arf_multilinear_attention` under the fusion contract.

    ``features (R, r)`` are required (the core never draws randomness of its own):
    ``ARF_MECHANISM.draw_buffers(r, options, generator)`` draws ``n_features`` of them,
    orthogonal or i.i.d. as ``orthogonal`` says; given ``features``, those two options are unused.
    ARF never forms the ``Π_m L_m`` weights, so ``need_weights=True`` is refused.
    """
    if need_weights:
        raise ValueError("multilinear_arf never forms the joint weights (B, L_1, …, L_M); use the exact 'multilinear' core for them")
    if features is None:
        raise ValueError(
            "multilinear_arf needs its random features: pass features=(R, r), e.g. draw_features(r, R, generator) "
            "or ARF_MECHANISM.draw_buffers(r, options, generator)"
        )
    return arf_multilinear_attention(fusion, scores, features, masks), None


def _draw_arf_features(rank: int, options: Mapping[str, Any], generator: torch.Generator | None) -> dict[str, Tensor]:
    """The ARF core's random state: ``{"features": (n_features, rank)}``."""
    return {"features": draw_features(rank, int(options["n_features"]), generator, bool(options["orthogonal"]))}


MECHANISM = FusionMechanism(
    name="multilinear",
    core=multilinear_attention,
    summary="exact multi-linear attention (MAN, our reconstruction): one softmax over all index tuples of M ≥ 2 modalities",
    exact=True,
    returns_weights=True,
    options={},
    draw_buffers=None,
)

ARF_MECHANISM = FusionMechanism(
    name="multilinear_arf",
    core=arf_multilinear_core,
    summary="multi-linear attention by addition random features: linear in every modality's length",
    exact=False,
    returns_weights=False,
    options={"features": None, "n_features": 256, "orthogonal": True},
    draw_buffers=_draw_arf_features,
)
