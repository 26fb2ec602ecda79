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

import functools

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
    "left_matrices",
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


# Where each component sits in left_matrix: block (r, s) holds ±W_c. Entries are (c, sign) in
# row-major block order.
_LEFT_BLOCKS = (
    (0, 1), (1, -1), (2, -1), (3, -1),
    (1, 1), (0, 1), (3, -1), (2, 1),
    (2, 1), (3, 1), (0, 1), (1, -1),
    (3, 1), (2, -1), (1, 1), (0, 1),
)  # fmt: skip
# The gradient of W_c sums its four blocks. They are added in the order autograd adds them
# through left_matrix (blocks taken as they are, by descending block row, then the negated
# ones, by descending block row), so that training through left_matrices gives bitwise the
# numbers training through left_matrix gives. _FOLD[t][c] is the t-th block added for W_c.
_FOLD = tuple(
    tuple(sorted((b for b in range(16) if _LEFT_BLOCKS[b][0] == c), key=lambda b: (_LEFT_BLOCKS[b][1] < 0, -(b // 4)))[t] for c in range(4))
    for t in range(4)
)


@functools.lru_cache(maxsize=64)
def _layout(
    g: int, n_out: int, n_in: int, rest: tuple[int, ...], row_heads: int | None, col_heads: int | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Shapes and permutations between the 16 signed blocks and the assembled matrix.

    Returns ``(split, perm, assembled_split, inverse)``: ``split`` is ``(G, 4, 4, rows..., cols...,
    *rest)`` (block row ``r``, block column ``s``, rows ``(out,)`` or ``(H, out/H)``, columns
    likewise); ``split.permute(perm)`` is the assembled order ``(G, r, out, s, in)`` or, with heads,
    ``(G, H, r, d, ...)`` / ``(..., H, s, e)``; ``assembled_split`` is that permuted shape and
    ``inverse`` the permutation back.
    """
    rows = (n_out,) if row_heads is None else (row_heads, n_out // row_heads)
    cols = (n_in,) if col_heads is None else (col_heads, n_in // col_heads)
    split = (g, 4, 4, *rows, *cols, *rest)
    row_dims = list(range(3, 3 + len(rows)))
    col_dims = list(range(3 + len(rows), 3 + len(rows) + len(cols)))
    row_order = [1, *row_dims] if row_heads is None else [row_dims[0], 1, row_dims[1]]
    col_order = [2, *col_dims] if col_heads is None else [col_dims[0], 2, col_dims[1]]
    first_rest = 3 + len(rows) + len(cols)
    perm = (0, *row_order, *col_order, *range(first_rest, first_rest + len(rest)))
    assembled_split = tuple(split[d] for d in perm)
    inverse = tuple(perm.index(d) for d in range(len(perm)))
    return split, perm, assembled_split, inverse


@functools.lru_cache(maxsize=16)
def _block_constants(dtype: torch.dtype, device: torch.device, dims: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Index and sign tensors (constants) of the assembly and of its gradient's fold."""
    index = torch.tensor([c for c, _ in _LEFT_BLOCKS], device=device)
    sign = torch.tensor([s for _, s in _LEFT_BLOCKS], dtype=dtype, device=device).view(16, *[1] * dims)
    order = [b for step in _FOLD for b in step]
    fold_index = torch.tensor(order, device=device)
    fold_sign = torch.tensor([_LEFT_BLOCKS[b][1] for b in order], dtype=dtype, device=device).view(16, *[1] * dims)
    return index, sign, fold_index, fold_sign


def _head_major_rows(t: Tensor, heads: int | None, inverse: bool = False) -> Tensor:
    """``(G, 4·n, ...)`` rows ``(4, n)`` → head-major ``(H, 4, n/H)`` (or back, with ``inverse``)."""
    if heads is None:
        return t
    g, rows, rest = t.shape[0], t.shape[1], t.shape[2:]
    n = rows // 4
    split = (heads, 4, n // heads) if inverse else (4, heads, n // heads)
    return t.reshape(g, *split, *rest).transpose(1, 2).reshape(g, rows, *rest)


def _assembled_view(t: Tensor, geometry: tuple) -> Tensor:
    """An assembled matrix (``(G, 4·out, 4·in, *rest)``, or ``(G·4·out, 4·in)``; any strides)
    viewed in its split shape ``(G, rows..., cols..., *rest)`` of :func:`_layout`, without a copy."""
    g, n_out, n_in, rest, row_heads, col_heads = geometry
    rows = (4, n_out) if row_heads is None else (row_heads, 4, n_out // row_heads)
    cols = (4, n_in) if col_heads is None else (col_heads, 4, n_in // col_heads)
    if t.dim() == 2 and not rest:
        t = t.unflatten(0, (g, 4 * n_out))
    return t.unflatten(1, rows).unflatten(1 + len(rows), cols)


class _LeftMatrices(torch.autograd.Function):
    """Autograd node of :func:`left_matrices`: one node instead of the 21 of ``left_matrix``.

    Forward: the 16 signed blocks are gathered (``index_select`` and sign) and copied once into
    the assembled order (with a bias, concatenated with it as the last column). Backward: the
    gradient is copied once into block order (whatever its strides: a weight's gradient often
    arrives transposed), its blocks gathered in the fold order, and summed, four per component.
    """

    generate_vmap_rule = True  # torch.func transforms (vmap, jacrev) run forward and backward per sample

    @staticmethod
    def forward(weights: Tensor, bias: Tensor | None, row_heads: int | None, col_heads: int | None):
        g, _, n_out, n_in, *rest = weights.shape
        geometry = (g, n_out, n_in, tuple(rest), row_heads, col_heads)
        split, perm, _, _ = _layout(*geometry)
        index, sign, _, _ = _block_constants(weights.dtype, weights.device, weights.dim() - 2)
        blocks = weights.index_select(1, index).mul_(sign).view(split).permute(perm)
        if bias is None:
            return blocks.reshape(g, 4 * n_out, 4 * n_in, *rest)
        column = _head_major_rows(bias, row_heads).reshape(-1, 1)
        packed = torch.cat([blocks.reshape(g * 4 * n_out, 4 * n_in), column], dim=1)
        return packed[:, :-1], packed[:, -1]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        weights, _, row_heads, col_heads = inputs
        g, _, n_out, n_in, *rest = weights.shape
        ctx.geometry = (g, n_out, n_in, tuple(rest), row_heads, col_heads)

    @staticmethod
    def backward(ctx, grad: Tensor | None, grad_bias: Tensor | None = None):
        geometry = ctx.geometry
        g, n_out, n_in, rest, row_heads, col_heads = geometry
        bias_grad = None
        if grad_bias is not None:
            bias_grad = _head_major_rows(grad_bias.reshape(g, 4 * n_out), row_heads, inverse=True)
        if grad is None:
            return None, bias_grad, None, None
        _, _, _, inverse = _layout(*geometry)
        _, _, fold_index, fold_sign = _block_constants(grad.dtype, grad.device, 2 + len(rest))
        blocks = _assembled_view(grad, geometry).permute(inverse).reshape(g, 16, n_out, n_in, *rest)
        terms = blocks.index_select(1, fold_index).unflatten(1, (4, 4))
        # the first two blocks of every component are added as they are, the last two with their sign
        total = terms[:, 0] + terms[:, 1]
        total.addcmul_(terms[:, 2], fold_sign[8:12])
        total.addcmul_(terms[:, 3], fold_sign[12:16])
        return total, bias_grad, None, None


def left_matrices(
    weights: Tensor, row_heads: int | None = None, col_heads: int | None = None, bias: Tensor | None = None
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`left_matrix` of a stack of weights, assembled as ONE autograd node.

    ``weights`` is ``(G, 4, out, in, *rest)``: ``G`` quaternion weights, components on axis 1.
    Returns ``(G, 4·out, 4·in, *rest)``, ``result[g] == left_matrix(*weights[g])`` exactly.
    With ``row_heads=H`` the rows come in head-major order ``(H, 4, out/H)`` instead of
    ``(4, out)`` (the order :class:`~qattn.attention.QuaternionMultiheadAttention` splits heads
    in); ``col_heads`` does the same for the columns.

    With ``bias`` (``(G, 4·out)``, linear weights only) the result is ``(weight, bias)``: the
    ``G`` matrices stacked as ``(G·4·out, 4·in)`` and the biases ``(G·4·out,)`` (rows in the
    same order), both views of ONE ``(G·4·out, 4·in + 1)`` matrix whose last column is the bias.

    Same values and, in training, bitwise the same gradients as ``left_matrix`` (the four
    blocks of each component are summed in the order autograd sums them there), at a fraction
    of the autograd bookkeeping: this is what the quaternion layers call at every training step.

    >>> w = torch.randn(2, 4, 3, 5)
    >>> torch.equal(left_matrices(w)[1], left_matrix(*w[1]))
    True
    """
    if weights.dim() < 4 or weights.shape[1] != 4:
        raise ValueError(f"weights must have shape (G, 4, out, in, *rest), got {tuple(weights.shape)}")
    for name, heads, size in (("row_heads", row_heads, weights.shape[2]), ("col_heads", col_heads, weights.shape[3])):
        if heads is not None and (heads <= 0 or size % heads):
            raise ValueError(f"{name}={heads} must divide the {'out' if name == 'row_heads' else 'in'} size {size}")
    if bias is not None and (weights.dim() != 4 or bias.shape != (weights.shape[0], 4 * weights.shape[2])):
        raise ValueError(
            f"bias must have shape (G, 4·out) = ({weights.shape[0]}, {4 * weights.shape[2]}) for linear weights "
            f"(G, 4, out, in), got bias {tuple(bias.shape)} and weights {tuple(weights.shape)}"
        )
    return _LeftMatrices.apply(weights, bias, row_heads, col_heads)
