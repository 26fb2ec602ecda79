"""Numeric cross-check of the interaction-subspace theorem against qattn's own code.

The five scores are computed exactly as the experiments compute them: queries and keys from
:class:`qattn.layers.QuaternionLinear` (float64, random Parcollet initialisation), scores from
:func:`qattn.attention.shared_scores` and :func:`qattn.attention.hamilton_scores`. Every score
``s(x, y)`` is bilinear in the tokens ``x, y ∈ ℝ^(4d)`` (blocked layout, no bias), so its
bilinear matrix is the mixed second derivative::

    B_s = ∂²s / ∂x ∂y ∈ ℝ^(4d × 4d),      s(x, y) = xᵀ B_s y,

recovered here by autograd (``torch.func.jacrev`` of ``torch.func.jacrev``). Its 16 blocks
``B_s[a, b] ∈ ℝ^(d×d)`` (rows from component ``a`` of x, columns from component ``b`` of y) are the
input-pair interactions. The symbolic supports predict them exactly::

    B_s[a, b] = Σ_{(a, b, c, c′) ∈ supp s} coefficient · W_cᵀ U_c′.

Projections: ``"premixed"`` is the layer as it is (``q = W ⊗ x``); ``"block_diagonal"`` uses the
same layer's four weights but applies ``W_p`` to ``x_p`` only (``q_p = W_p x_p``: the off-diagonal
blocks of the layer's block matrix replaced by zeros and the diagonal by ``W_r … W_k``).

Examples
--------
>>> check = cross_check(d=2, d_h=2, seed=0)
>>> check.nonzero_pairs()["shared"], check.max_abs_error < 1e-12
(16, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from proofs.symbolic import SCORE_NAMES, ProjectionKind, Terms
from qattn.attention import hamilton_scores, shared_scores
from qattn.layers import QuaternionLinear
from qattn.quaternion import split

__all__ = ["NumericCheck", "project", "scores", "bilinear_blocks", "predicted_blocks", "cross_check", "key_weight_residuals"]


def project(layer: QuaternionLinear, x: Tensor, projection: ProjectionKind = "premixed") -> Tensor:
    """Quaternion projection of a blocked token ``x`` ``(4d,)`` → split ``(4, d_h)``.

    ``"premixed"``: ``split(layer(x))``, i.e. ``W ⊗ x``; ``"block_diagonal"``: ``q_p = W_p x_p``.
    """
    if projection == "premixed":
        return split(layer(x))
    if projection == "block_diagonal":
        xs = split(x)
        return torch.stack([w @ xs[p] for p, w in enumerate(layer.components())])
    raise ValueError(f"projection must be 'premixed' or 'block_diagonal', got {projection!r}")


def scores(q: Tensor, k: Tensor) -> Tensor:
    """The five unscaled scores ``(shared, S_r, S_i, S_j, S_k)`` of one query and key ``(4, d_h)``, via qattn."""
    q5, k5 = q[None, None, None], k[None, None, None]  # (B, H, N, 4, d_h) with B = H = N = 1
    return torch.cat([shared_scores(q5, k5).reshape(1), hamilton_scores(q5, k5).reshape(4)])


def bilinear_blocks(wq: QuaternionLinear, wk: QuaternionLinear, projection: ProjectionKind = "premixed") -> Tensor:
    """``∂²s/∂x∂y`` of the five scores, as blocks ``(5, 4, 4, d, d)`` (score, a, b, rows, columns)."""
    d4 = wq.in_features
    x0 = torch.zeros(d4, dtype=torch.float64)
    y0 = torch.zeros(d4, dtype=torch.float64)

    def score(x: Tensor, y: Tensor) -> Tensor:
        return scores(project(wq, x, projection), project(wk, y, projection))

    full = torch.func.jacrev(torch.func.jacrev(score, argnums=0), argnums=1)(x0, y0)  # (5, 4d, 4d)
    d = d4 // 4
    return full.reshape(5, 4, d, 4, d).permute(0, 1, 3, 2, 4)


def predicted_blocks(supports: Mapping[str, Terms], wq: QuaternionLinear, wk: QuaternionLinear) -> Tensor:
    """Blocks predicted by symbolic supports: ``B_s[a, b] = Σ coefficient · W_cᵀ U_c′`` ``(5, 4, 4, d, d)``."""
    W, U = [w.detach() for w in wq.components()], [u.detach() for u in wk.components()]
    d = W[0].shape[1]
    out = torch.zeros(5, 4, 4, d, d, dtype=torch.float64)
    for i, name in enumerate(SCORE_NAMES):
        for (a, b, c, cp), coeff in supports[name].items():
            out[i, a, b] += coeff * W[c].T @ U[cp]
    return out


@dataclass(frozen=True)
class NumericCheck:
    """Result of :func:`cross_check`.

    ``block_norms[s][a][b]`` is the Frobenius norm of block ``(a, b)`` of score ``s``;
    ``nonzero[s][a][b]`` whether it exceeds ``tolerance``; ``max_abs_error`` the largest
    deviation from the symbolic prediction (``nan`` if no supports were given).
    """

    d: int
    d_h: int
    projection: str
    block_norms: dict[str, list[list[float]]]
    nonzero: dict[str, list[list[bool]]]
    max_abs_error: float
    tolerance: float

    def nonzero_pairs(self) -> dict[str, int]:
        """Number of non-zero ``(a, b)`` blocks per score."""
        return {name: sum(map(sum, grid)) for name, grid in self.nonzero.items()}


def _layers(d: int, d_h: int, seed: int) -> tuple[QuaternionLinear, QuaternionLinear]:
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(2):
        layer = QuaternionLinear(4 * d, 4 * d_h, bias=False, dtype=torch.float64)
        layer.reset_parameters(generator=gen)
        layers.append(layer)
    return layers[0], layers[1]


def cross_check(
    d: int = 3,
    d_h: int = 2,
    seed: int = 0,
    projection: ProjectionKind = "premixed",
    supports: Mapping[str, Terms] | None = None,
    tolerance: float = 1e-10,
) -> NumericCheck:
    """Recover the 16 blocks of each score's bilinear matrix from qattn's layers and score functions.

    Parameters
    ----------
    d, d_h : token and head sizes in quaternion units.
    seed : seeds the two layers' initialisation (a ``torch.Generator``; no global state).
    projection : ``"premixed"`` or ``"block_diagonal"`` (see the module docstring).
    supports : symbolic supports of the five scores for this projection; by default expanded here.
    tolerance : a block is non-zero if its Frobenius norm exceeds this.
    """
    if supports is None:
        from proofs.symbolic import HAMILTON, expand_block_score, score_forms

        supports = {n: expand_block_score(f, HAMILTON, projection) for n, f in score_forms(HAMILTON).items()}
    wq, wk = _layers(d, d_h, seed)
    blocks = bilinear_blocks(wq, wk, projection).detach()
    norms = blocks.flatten(-2).norm(dim=-1)  # (5, 4, 4)
    error = (blocks - predicted_blocks(supports, wq, wk)).abs().max().item()
    return NumericCheck(
        d=d,
        d_h=d_h,
        projection=projection,
        block_norms={n: norms[i].tolist() for i, n in enumerate(SCORE_NAMES)},
        nonzero={n: (norms[i] > tolerance).tolist() for i, n in enumerate(SCORE_NAMES)},
        max_abs_error=error,
        tolerance=tolerance,
    )


def key_weight_residuals(d: int = 3, d_h: int = 2, seed: int = 0, target_score: str = "shared") -> dict[str, float]:
    """Relative least-squares residual ``min_U′ ‖B_shared(W, U) − B_m(W, U′)‖ / ‖B_shared(W, U)‖`` per ``S_m``.

    ``B_m(W, U′)`` is linear in the ``4·d_h·d`` entries of ``U′``: its columns are the bilinear
    matrices for unit key weights, computed through qattn. A residual far from 0 means no
    quaternion key weight makes ``S_m`` equal to the shared score (statement 5, numerically).
    ``target_score`` replaces the shared score (e.g. ``"S_r"``: a positive control, residual 0 for m = r).
    Values are rounded to 12 decimals, so that repeated runs give the same numbers.
    """
    wq, wk = _layers(d, d_h, seed)
    target = bilinear_blocks(wq, wk).detach()[SCORE_NAMES.index(target_score)].flatten()
    probe = QuaternionLinear(4 * d, 4 * d_h, bias=False, dtype=torch.float64)
    columns: list[Tensor] = []
    for comp in range(4):
        for idx in range(d_h * d):
            with torch.no_grad():
                for w in probe.components():
                    w.zero_()
                probe.components()[comp].view(-1)[idx] = 1.0
            columns.append(bilinear_blocks(wq, probe).detach()[1:].flatten(1))  # (4 scores, 16 d²)
    basis = torch.stack(columns, dim=-1)  # (4, 16 d², 4 d_h d)
    out = {}
    for m, name in enumerate(SCORE_NAMES[1:]):
        solution = torch.linalg.lstsq(basis[m], target[:, None]).solution
        residual = (basis[m] @ solution).squeeze(-1) - target
        # rounded to 12 decimals: LAPACK's least squares varies in the last bit from run to run
        # (even on one thread), and the residual is read against 0, not to the ulp
        out[name] = round((residual.norm() / target.norm()).item(), 12)
    return out
