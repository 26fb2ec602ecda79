"""Divergence between attention distributions, e.g. the four component maps of Hamilton attention.

Hamilton (component-wise) attention forms four softmax maps ``A_r, A_i, A_j, A_k`` per head; the
shared score forms one, used for all four components. How far the four maps differ is measured
here as the mean pairwise Jensen-Shannon divergence, per query row, over the six pairs::

    JS(p, q) = ½ Σ_s p_s log₂(p_s / m_s) + ½ Σ_s q_s log₂(q_s / m_s),   m = (p + q) / 2

in bits, so ``0 ≤ JS ≤ 1``; it is 0 exactly (not just to rounding) when the maps are identical,
because then ``m == p`` in floating point and every term is ``p·0``. A shared-score layer
therefore gives exactly 0 when its single map is repeated four times.

The functions are general: any number ``C ≥ 2`` of distributions along any dimension, the
distributions along the last dimension; masked query rows (padding) can be left out of means.

>>> import torch
>>> p = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])          # two identical maps
>>> float(mean_pairwise_js(p, component_dim=0))
0.0
>>> float(mean_pairwise_js(torch.eye(2), component_dim=0))          # disjoint supports: 1 bit
1.0
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

__all__ = ["js_divergence", "mean_pairwise_js", "layer_divergence", "divergence_by_layer", "repeat_components"]


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence in bits between distributions along the last dimension.

    Parameters
    ----------
    p, q : (..., S) non-negative tensors whose last dimension sums to 1 (broadcastable)

    Returns
    -------
    (...) tensor in ``[0, 1]``; exactly 0 where ``p`` and ``q`` are equal.
    """
    m = (p + q) / 2
    kl_p = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)
    kl_q = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)
    return ((kl_p + kl_q) / (2 * math.log(2))).clamp_min(0.0)


def mean_pairwise_js(maps: Tensor, component_dim: int = -3) -> Tensor:
    """Mean JS divergence over all pairs of the ``C`` distributions stacked along ``component_dim``.

    Parameters
    ----------
    maps : tensor with ``C ≥ 2`` distributions along ``component_dim`` and the distribution
        itself along the last dimension, e.g. Hamilton weights ``(B, H, 4, N, S)`` with
        ``component_dim=2`` (or ``-3``)
    component_dim : the dimension that indexes the distributions to compare (not the last one)

    Returns
    -------
    tensor of ``maps.shape`` without ``component_dim`` and the last dimension, e.g. ``(B, H, N)``:
    one value per query row.
    """
    dim = component_dim % maps.dim()
    if dim == maps.dim() - 1:
        raise ValueError("component_dim must not be the last dimension (the distributions run along it)")
    c = maps.shape[dim]
    if c < 2:
        raise ValueError(f"need at least 2 distributions along component_dim={component_dim}, got {c}")
    parts = maps.unbind(dim)
    pairs = [js_divergence(parts[a], parts[b]) for a, b in itertools.combinations(range(c), 2)]
    return torch.stack(pairs).mean(0)


def repeat_components(weights: Tensor, components: int = 4) -> Tensor:
    """A single-map layer's weights ``(B, H, N, S)`` as ``components`` identical maps ``(B, H, C, N, S)``.

    The shared score uses one map for all four components; its divergence is that of this stack (0).
    """
    return weights.unsqueeze(2).expand(*weights.shape[:2], components, *weights.shape[2:])


def layer_divergence(weights: Tensor, query_mask: Tensor | None = None) -> float:
    """Mean pairwise JS divergence of one layer's component maps, averaged over batch, heads and query rows.

    Parameters
    ----------
    weights : (B, H, C, N, S) per-head component maps (``C = 4`` for Hamilton attention), or
        (B, H, N, S) for a single-map layer, which counts as ``C`` identical maps (divergence 0)
    query_mask : optional (B, N) bool, True at query rows to LEAVE OUT (padding, same polarity
        as ``key_padding_mask``)
    """
    if weights.dim() == 4:
        weights = repeat_components(weights)
    if weights.dim() != 5:
        raise ValueError(f"weights must be (B, H, C, N, S) or (B, H, N, S), got shape {tuple(weights.shape)}")
    rows = mean_pairwise_js(weights.double(), component_dim=2)  # (B, H, N)
    if query_mask is None:
        return float(rows.mean())
    if query_mask.shape != (rows.shape[0], rows.shape[2]) or query_mask.dtype != torch.bool:
        raise ValueError(
            f"query_mask must be bool of shape (B, N) = {(rows.shape[0], rows.shape[2])}, got {tuple(query_mask.shape)} {query_mask.dtype}"
        )
    keep = (~query_mask)[:, None, :].expand_as(rows)
    if not keep.any():
        raise ValueError("query_mask leaves no query row")
    return float(rows[keep].mean())


def divergence_by_layer(maps: list[Tensor], query_mask: Tensor | None = None) -> list[float]:
    """:func:`layer_divergence` of every layer's weights (as returned by the experiment models)."""
    return [layer_divergence(w, query_mask) for w in maps]
