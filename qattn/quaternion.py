"""Quaternion algebra on the blocked tensor layout.

Convention (used everywhere in qattn)
-------------------------------------
Basis ``1, i, j, k`` with ``i² = j² = k² = ijk = −1``, so ``ij = k``, ``jk = i``, ``ki = j``
and the reversed products are negated. Components are indexed ``0..3 = r, i, j, k``; the
product of two basis elements is ``e_a e_b = SIGN[a, b] · e_(a XOR b)``.

A vector of ``n`` quaternion units is stored as a real vector of ``4·n`` numbers in *blocks*::

    [ r_1 … r_n | i_1 … i_n | j_1 … j_n | k_1 … k_n ]

This is the public layout ("blocked", shape ``(..., 4·n)``). Internally a tensor is viewed
as ``(..., 4, n)`` ("split"), so ``x_split[..., c, u]`` is component ``c`` of unit ``u``.
All sizes given to qattn layers are in real units (multiples of 4), as in ``nn.Linear``.

The Hamilton product ``p ⊗ q`` of two units is::

    r: p0q0 − p1q1 − p2q2 − p3q3
    i: p0q1 + p1q0 + p2q3 − p3q2
    j: p0q2 − p1q3 + p2q0 + p3q1
    k: p0q3 + p1q2 − p2q1 + p3q0

and ``Re(p ⊗ q̄) = p0q0 + p1q1 + p2q2 + p3q3`` is the Euclidean dot product of the four
coefficients: the identity that makes shared-score attention cheap.

Examples
--------
>>> import torch
>>> x = torch.arange(8.0)             # two units: r=(0,1) i=(2,3) j=(4,5) k=(6,7)
>>> split(x).shape
torch.Size([4, 2])
>>> torch.equal(merge(split(x)), x)
True
>>> i, j = torch.tensor([0., 1., 0., 0.]), torch.tensor([0., 0., 1., 0.])
>>> hamilton(i, j)                    # i ⊗ j = k
tensor([0., 0., 0., 1.])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "COMPONENTS",
    "SIGN",
    "split",
    "merge",
    "hamilton",
    "conj",
    "inner",
    "norm",
    "left_matrix",
]

#: Names of the four components, in storage order.
COMPONENTS = ("r", "i", "j", "k")

#: ``SIGN[a][b]`` is the sign of ``e_a e_b = ± e_(a XOR b)``.
SIGN = (
    (1, 1, 1, 1),
    (1, -1, 1, -1),
    (1, -1, -1, 1),
    (1, 1, -1, -1),
)


def _check_blocked(x: Tensor, name: str, dim: int = -1) -> int:
    size = x.shape[dim]
    if size % 4 != 0:
        raise ValueError(
            f"{name} must have a size divisible by 4 along dim {dim} (blocked quaternion layout r|i|j|k), got shape {tuple(x.shape)}"
        )
    return size // 4


def split(x: Tensor, dim: int = -1) -> Tensor:
    """View a blocked tensor ``(..., 4·n, ...)`` as ``(..., 4, n, ...)`` along ``dim``.

    Returns a view (no copy) whenever ``x`` is contiguous along ``dim``.

    >>> split(torch.zeros(2, 12)).shape
    torch.Size([2, 4, 3])
    """
    dim = dim % x.dim()
    n = _check_blocked(x, "x", dim)
    return x.unflatten(dim, (4, n))


def merge(x: Tensor, dim: int = -2) -> Tensor:
    """Inverse of :func:`split`: ``(..., 4, n, ...)`` → ``(..., 4·n, ...)``; ``dim`` is the size-4 axis.

    >>> merge(torch.zeros(2, 4, 3)).shape
    torch.Size([2, 12])
    """
    dim = dim % x.dim()
    if x.shape[dim] != 4:
        raise ValueError(f"x must have size 4 along dim {dim} (the component axis), got shape {tuple(x.shape)}")
    return x.flatten(dim, dim + 1)


def hamilton(p: Tensor, q: Tensor) -> Tensor:
    """Unit-by-unit Hamilton product ``p ⊗ q`` of blocked tensors ``(..., 4·n)`` (broadcasting).

    >>> hamilton(torch.tensor([0., 0., 1., 0.]), torch.tensor([0., 1., 0., 0.]))  # j ⊗ i = −k
    tensor([ 0.,  0.,  0., -1.])
    """
    p0, p1, p2, p3 = split(p).unbind(-2)
    q0, q1, q2, q3 = split(q).unbind(-2)
    r = p0 * q0 - p1 * q1 - p2 * q2 - p3 * q3
    i = p0 * q1 + p1 * q0 + p2 * q3 - p3 * q2
    j = p0 * q2 - p1 * q3 + p2 * q0 + p3 * q1
    k = p0 * q3 + p1 * q2 - p2 * q1 + p3 * q0
    return merge(torch.stack((r, i, j, k), dim=-2))


def conj(q: Tensor) -> Tensor:
    """Quaternion conjugate of a blocked tensor: negate the i, j, k blocks.

    >>> conj(torch.tensor([1., 2., 3., 4.]))
    tensor([ 1., -2., -3., -4.])
    """
    sign = torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)
    return merge(split(q) * sign[:, None])


def inner(p: Tensor, q: Tensor) -> Tensor:
    """Per-unit real inner product ``Re(p ⊗ q̄)`` of blocked tensors: shape ``(..., n)``.

    Equal to the dot product of the four coefficients of each unit; sum over the last axis for
    the inner product of whole vectors.

    >>> inner(torch.tensor([1., 2., 3., 4.]), torch.tensor([1., 1., 1., 1.]))
    tensor([10.])
    """
    return (split(p) * split(q)).sum(-2)


def norm(q: Tensor) -> Tensor:
    """Per-unit modulus ``|q| = sqrt(Re(q ⊗ q̄))``: shape ``(..., n)``.

    >>> norm(torch.tensor([1., 1., 1., 1.]))
    tensor([2.])
    """
    return inner(q, q).sqrt()


def left_matrix(w_r: Tensor, w_i: Tensor, w_j: Tensor, w_k: Tensor) -> Tensor:
    """Real block matrix of left multiplication ``x ↦ W ⊗ x`` on the blocked layout.

    Each ``w_c`` has shape ``(out, in, *rest)`` (``rest`` is e.g. a convolution kernel); the result
    has shape ``(4·out, 4·in, *rest)`` and equals::

        [ W_r  −W_i  −W_j  −W_k ]
        [ W_i   W_r  −W_k   W_j ]
        [ W_j   W_k   W_r  −W_i ]
        [ W_k  −W_j   W_i   W_r ]

    so that ``left_matrix(W) @ x`` is the blocked form of ``W ⊗ x`` (sum over input units).

    >>> one = torch.ones(1, 1); zero = torch.zeros(1, 1)
    >>> left_matrix(zero, one, zero, zero).int()      # multiplication by i on the left
    tensor([[ 0, -1,  0,  0],
            [ 1,  0,  0,  0],
            [ 0,  0,  0, -1],
            [ 0,  0,  1,  0]], dtype=torch.int32)
    """
    shapes = {tuple(w.shape) for w in (w_r, w_i, w_j, w_k)}
    if len(shapes) != 1:
        raise ValueError(f"the four weight components must have the same shape, got {sorted(shapes)}")
    rows = (
        (w_r, -w_i, -w_j, -w_k),
        (w_i, w_r, -w_k, w_j),
        (w_j, w_k, w_r, -w_i),
        (w_k, -w_j, w_i, w_r),
    )
    return torch.cat([torch.cat(row, dim=1) for row in rows], dim=0)
