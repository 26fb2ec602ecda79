"""Bilinear attention networks (Kim, Jun, Zhang, NeurIPS 2018) and their quaternion variants.

Question token states ``X`` (``ρ`` tokens, width ``d_x``) and image region features ``Y``
(``φ`` regions, width ``d_y``). Per glimpse ``g`` a low-rank bilinear logit between every token
and every region, with ``U, V`` shared by all glimpses and only ``p_g`` (and a bias) per glimpse::

    A_g[i, j] = p_gᵀ (σ(Uᵀ X_i) ∘ σ(Vᵀ Y_j)) + b_g,            σ = ReLU
    A_g       = softmax over ALL ρ·φ pairs jointly (masked tokens / regions get exactly 0)

Bilinear attention pooling of one glimpse (the low-rank bilinear pooling, ``K`` features)::

    f′_k = Σ_i Σ_j A_g[i, j] · σ(X_i U′)_k · σ(Y_j V′)_k   =  diag(σ(XU′)ᵀ A_g σ(YV′))_k

Glimpses combine by residual learning, in the order of the official code: ALL maps are computed
once from the initial ``X``; glimpse ``g`` pools the current states ``f_g`` and updates them,
``f_(g+1) = P_g f′ + f_g`` (broadcast over tokens), ``f_0 = X``; the network returns the sum over
(unmasked) tokens of ``f_G``.

Quaternion variants (``score``): every projection is a :class:`~qattn.layers.QuaternionLinear`
(a quarter of the parameters) and the ``K`` features form ``K/4`` quaternion units.

- ``"shared"``: the logit is ``Re((p_g ∘ u_i) ⊗ v̄_j)`` summed over units, i.e. the same real dot
  product as above: one map and one joint softmax per glimpse.
- ``"hamilton"``: the four components of ``Σ_units (p_g ∘ u_i) ⊗ v_j`` (no conjugate, as in Tay et
  al.): four maps and four joint softmaxes per glimpse; map ``c`` pools quaternion component ``c``.

Multiplications of the logits per glimpse (pair products only): ``ρ·φ·K`` for real and shared,
``4·ρ·φ·K`` for hamilton.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.attention.hamilton import hamilton_scores
from qattn.layers import QuaternionLinear

__all__ = ["joint_softmax", "bilinear_logits", "bilinear_pooling", "BilinearAttentionNetwork", "BAN_SCORES"]

BanScore = Literal["real", "shared", "hamilton"]
BAN_SCORES = ("real", "shared", "hamilton")


def joint_softmax(logits: Tensor, x_mask: Tensor | None = None, y_mask: Tensor | None = None) -> Tensor:
    """Softmax over all (token, region) pairs of ``logits (B, ..., ρ, φ)`` jointly.

    ``x_mask (B, ρ)`` and ``y_mask (B, φ)`` are True where a token / region is padding; such
    pairs get exactly 0. A sample with nothing left gets an all-zero map.

    >>> a = joint_softmax(torch.zeros(1, 2, 3))
    >>> float(a.sum()), a.shape
    (1.0, torch.Size([1, 2, 3]))
    """
    b, rho, phi = logits.shape[0], logits.shape[-2], logits.shape[-1]
    blocked = torch.zeros(b, rho, phi, dtype=torch.bool, device=logits.device)
    if x_mask is not None:
        blocked = blocked | x_mask[:, :, None]
    if y_mask is not None:
        blocked = blocked | y_mask[:, None, :]
    blocked = blocked.view(b, *([1] * (logits.dim() - 3)), rho, phi)
    flat = logits.masked_fill(blocked, float("-inf")).flatten(-2)
    dead = torch.isneginf(flat).all(-1, keepdim=True)
    weights = torch.softmax(flat.masked_fill(dead, 0.0), dim=-1).masked_fill(dead | blocked.flatten(-2), 0.0)
    return weights.view_as(logits)


def bilinear_logits(x_att: Tensor, y_att: Tensor, p: Tensor, bias: Tensor, score: BanScore = "real") -> Tensor:
    """Low-rank bilinear logits of all glimpses.

    Parameters
    ----------
    x_att, y_att : Tensor
        ``(B, ρ, K) = σ(Uᵀ X)`` and ``(B, φ, K) = σ(Vᵀ Y)``.
    p, bias : Tensor
        Glimpse vectors ``(G, K)`` and biases ``(G,)``.
    score : {"real", "shared", "hamilton"}
        One map per glimpse (real, shared) or four (hamilton).

    Returns
    -------
    Tensor
        ``(B, G, ρ, φ)`` for real/shared, ``(B, G, 4, ρ, φ)`` for hamilton.
    """
    if score in ("real", "shared"):
        return torch.einsum("bik,gk,bjk->bgij", x_att, p, y_att) + bias[:, None, None]
    if score != "hamilton":
        raise ValueError(f"score must be one of {BAN_SCORES}, got {score!r}")
    k = x_att.shape[-1]
    if k % 4:
        raise ValueError(f"hamilton scores need K divisible by 4 (quaternion units), got K={k}")
    queries = (x_att[:, None] * p[None, :, None]).unflatten(-1, (4, k // 4))  # (B, G, ρ, 4, K/4)
    keys = y_att[:, None].unflatten(-1, (4, k // 4))  # (B, 1, φ, 4, K/4)
    keys = keys.expand(-1, p.shape[0], -1, -1, -1)
    return hamilton_scores(queries, keys) + bias[:, None, None, None]


def bilinear_pooling(x_feat: Tensor, y_feat: Tensor, att: Tensor) -> Tensor:
    """Bilinear attention pooling ``f′_k = Σ_ij A[i, j] x_ik y_jk``: ``(B, ρ, K), (B, φ, K), (B, ρ, φ) → (B, K)``.

    >>> x, y, a = torch.ones(1, 2, 3), torch.ones(1, 4, 3), torch.full((1, 2, 4), 1 / 8)
    >>> bilinear_pooling(x, y, a)
    tensor([[1., 1., 1.]])
    """
    return torch.einsum("bik,bij,bjk->bk", x_feat, att, y_feat)


class BilinearAttentionNetwork(nn.Module):
    """Multi-glimpse bilinear attention network with real, shared-score or Hamilton logits.

    Parameters
    ----------
    x_dim, y_dim : int
        Widths of the question states and region features.
    hidden : int
        The joint width ``K`` (a multiple of 4 for quaternion variants).
    glimpses : int
        Number of attention maps ``G``.
    score : {"real", "shared", "hamilton"}
        ``nn.Linear`` projections (real) or ``QuaternionLinear`` ones (shared, hamilton).

    Notes
    -----
    ``forward(x (B, ρ, d_x), y (B, φ, d_y), x_mask=None, y_mask=None)`` returns
    ``(joint (B, d_x), maps)`` with maps ``(B, G, ρ, φ)`` or ``(B, G, 4, ρ, φ)`` (hamilton);
    masks are True at padding.

    >>> ban = BilinearAttentionNetwork(16, 8, hidden=12, glimpses=2, score="hamilton")
    >>> joint, maps = ban(torch.randn(3, 5, 16), torch.randn(3, 7, 8))
    >>> joint.shape, maps.shape
    (torch.Size([3, 16]), torch.Size([3, 2, 4, 5, 7]))
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int, glimpses: int = 2, score: BanScore = "real", dropout: float = 0.0) -> None:
        super().__init__()
        if score not in BAN_SCORES:
            raise ValueError(f"score must be one of {BAN_SCORES}, got {score!r}")
        if glimpses < 1:
            raise ValueError(f"glimpses must be at least 1, got {glimpses}")
        if score != "real":
            for name, value in (("x_dim", x_dim), ("y_dim", y_dim), ("hidden", hidden)):
                if value % 4:
                    raise ValueError(f"{name} must be a multiple of 4 for quaternion scores, got {value}")
        linear = nn.Linear if score == "real" else QuaternionLinear
        self.score, self.glimpses = score, glimpses
        self.att_x, self.att_y = linear(x_dim, hidden), linear(y_dim, hidden)
        self.p = nn.Parameter(torch.randn(glimpses, hidden) / hidden**0.5)
        self.bias = nn.Parameter(torch.zeros(glimpses))
        self.pool_x = nn.ModuleList(linear(x_dim, hidden) for _ in range(glimpses))
        self.pool_y = nn.ModuleList(linear(y_dim, hidden) for _ in range(glimpses))
        self.proj = nn.ModuleList(linear(hidden, x_dim) for _ in range(glimpses))
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def _regions(projected: Tensor, y_index: Tensor | None) -> Tensor:
        # index_select, not projected[y_index]: with repeated indices the backward of advanced
        # indexing (index_put_ with accumulation) is not deterministic on a multi-threaded CPU.
        return projected if y_index is None else projected.index_select(0, y_index)

    def attention_maps(
        self, x: Tensor, y: Tensor, x_mask: Tensor | None = None, y_mask: Tensor | None = None, y_index: Tensor | None = None
    ) -> Tensor:
        """All glimpses' maps from the initial question states (joint softmax per map)."""
        y_att = self._regions(F.relu(self.att_y(y)), y_index)
        logits = bilinear_logits(F.relu(self.att_x(x)), y_att, self.p, self.bias, self.score)
        return joint_softmax(logits, x_mask, y_mask)

    def pool(self, g: int, f: Tensor, y: Tensor, att: Tensor, y_index: Tensor | None = None) -> Tensor:
        """Glimpse ``g``'s pooled joint feature ``(B, K)`` of states ``f`` and regions ``y``."""
        xf, yf = F.relu(self.pool_x[g](f)), self._regions(F.relu(self.pool_y[g](y)), y_index)
        if self.score != "hamilton":
            return bilinear_pooling(xf, yf, att)
        # map c pools quaternion component c of the K features (blocked layout r|i|j|k)
        xc, yc = xf.unflatten(-1, (4, -1)), yf.unflatten(-1, (4, -1))
        return torch.einsum("bick,bcij,bjck->bck", xc, att, yc).flatten(1)

    def forward(
        self, x: Tensor, y: Tensor, x_mask: Tensor | None = None, y_mask: Tensor | None = None, y_index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``y_index (B,)``, when given, maps each sample to its row of ``y (B_y, φ, d_y)``: several
        questions about one image then share the image's region projections (computed once)."""
        b_y = x.shape[0] if y_index is None else y_index.shape[0]
        if x.dim() != 3 or y.dim() != 3 or x.shape[0] != b_y:
            raise ValueError(
                f"x must be (B, ρ, d_x) and y (B, φ, d_y) with the same B (or y_index of length B), "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        maps = self.attention_maps(x, y, x_mask, y_mask, y_index)
        f = x
        for g in range(self.glimpses):
            f = self.proj[g](self.dropout(self.pool(g, f, y, maps[:, g], y_index))).unsqueeze(1) + f
        if x_mask is not None:
            f = f.masked_fill(x_mask[..., None], 0.0)
        return f.sum(1), maps
