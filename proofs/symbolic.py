"""The symbolic engine: product tables, score forms, projections and their expansion into terms.

Notation (the paper's conventions and our statement of its theorem). Components are indexed ``0..3 = r, i, j, k`` and a
product table gives ``e_a e_b = sign[a][b] · e_(a XOR b)``. A token ``x ∈ Hᵈ`` has real component
vectors ``x_0 … x_3 ∈ ℝᵈ``; a quaternion weight ``W ∈ H^(d_h×d)`` has real components
``W_0 … W_3 ∈ ℝ^(d_h×d)``. With component pre-mixing ("premixed", ``q = W ⊗ x``)::

    q_p = Σ_{c ⊕ a = p} sign[c][a] · W_c x_a          (every q_p sees every x_a)

and with block-diagonal projections ("block_diagonal")::

    q_p = W_p x_p.

A score is a bilinear form in the query and key components, ``s = Σ_{p,n} M[p][n] · q_pᵀ k_n``
(a :class:`ScoreForm`). Expanding ``q_pᵀ k_n`` with ``k = U ⊗ y`` gives signed elementary terms::

    T(a, b, c, c′) = x_aᵀ W_cᵀ U_c′ y_b         (a, b, c, c′ ∈ {0, 1, 2, 3}: 256 terms)

For general ``d`` and ``d_h`` the weights and tokens are SymPy ``MatrixSymbol``\\ s with symbolic
shapes: matrix products do not commute, so an expansion that yields ``x_aᵀ W_cᵀ U_c′ y_b``
holds for every size. :func:`expand_block_score` returns the terms of a score as a mapping
``{(a, b, c, c′): integer coefficient}``; :func:`expand_scalar_score` does the same for
``d = d_h = 1`` with commutative symbols.

Examples
--------
>>> forms = score_forms(HAMILTON)
>>> terms = expand_block_score(forms["S_r"], HAMILTON, "premixed")
>>> len(terms), sorted(set(terms.values()))
(64, [-1, 1])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import sympy as sp

from qattn.quaternion import COMPONENTS, SIGN

__all__ = [
    "Term",
    "Terms",
    "ProjectionKind",
    "ProductTable",
    "HAMILTON",
    "ScoreForm",
    "component_score",
    "conjugate_real_score",
    "plain_real_score",
    "score_forms",
    "SCORE_NAMES",
    "projection_spec",
    "BlockSymbols",
    "block_symbols",
    "block_queries_keys",
    "expand_block_score",
    "scalar_symbols",
    "scalar_projection",
    "expand_scalar_score",
    "ALL_TERMS",
]

#: ``(a, b, c, c′)``: input component of x, input component of y, query weight, key weight.
Term = tuple[int, int, int, int]
#: Signed support of a score: elementary term → integer coefficient (zero coefficients omitted).
Terms = dict[Term, int]
ProjectionKind = Literal["premixed", "block_diagonal"]
_PROJECTIONS = ("premixed", "block_diagonal")

#: All 256 elementary terms, in lexicographic order.
ALL_TERMS: tuple[Term, ...] = tuple((a, b, c, cp) for a in range(4) for b in range(4) for c in range(4) for cp in range(4))

#: Names of the five scores in the order used everywhere: the shared score, then S_r … S_k.
SCORE_NAMES = ("shared", "S_r", "S_i", "S_j", "S_k")


@dataclass(frozen=True)
class ProductTable:
    """A product of basis elements ``e_a e_b = sign[a][b] · e_(a XOR b)`` (index rule fixed to XOR).

    ``HAMILTON`` is qattn's table (:data:`qattn.quaternion.SIGN`); :meth:`flipped` builds a
    deliberately wrong table for negative controls.
    """

    sign: tuple[tuple[int, ...], ...]
    name: str = "hamilton"

    def __post_init__(self) -> None:
        if len(self.sign) != 4 or any(len(row) != 4 or any(s not in (-1, 1) for s in row) for row in self.sign):
            raise ValueError(f"sign must be a 4×4 table of ±1, got {self.sign!r}")

    def flipped(self, a: int, b: int) -> ProductTable:
        """The same table with the sign of ``e_a e_b`` negated (a negative control)."""
        rows = [list(row) for row in self.sign]
        rows[a][b] = -rows[a][b]
        return replace(self, sign=tuple(tuple(r) for r in rows), name=f"{self.name} with e_{COMPONENTS[a]}e_{COMPONENTS[b]} negated")


HAMILTON = ProductTable(sign=tuple(tuple(row) for row in SIGN), name="hamilton")


@dataclass(frozen=True)
class ScoreForm:
    """A score ``s(q, k) = Σ_{p,n} coefficients[p][n] · q_p·k_n`` (dot products summed over units)."""

    name: str
    coefficients: tuple[tuple[int, ...], ...]

    def pairs(self) -> list[tuple[int, int, int]]:
        """The non-zero ``(coefficient, p, n)`` of the form."""
        return [(m, p, n) for p, row in enumerate(self.coefficients) for n, m in enumerate(row) if m != 0]


def component_score(table: ProductTable, m: int) -> ScoreForm:
    """Component ``m`` of ``q ⊗ k`` (no conjugate, Tay et al.): ``S_m = Σ_p sign[p][p⊕m] q_p·k_(p⊕m)``.

    >>> component_score(HAMILTON, 0).coefficients     # S_r = q0k0 − q1k1 − q2k2 − q3k3
    ((1, 0, 0, 0), (0, -1, 0, 0), (0, 0, -1, 0), (0, 0, 0, -1))
    """
    coeffs = [[0] * 4 for _ in range(4)]
    for p in range(4):
        coeffs[p][p ^ m] = table.sign[p][p ^ m]
    return ScoreForm(f"S_{COMPONENTS[m]}", tuple(tuple(r) for r in coeffs))


def conjugate_real_score(table: ProductTable) -> ScoreForm:
    """The shared score ``Re(q ⊗ k̄)``: ``k̄`` negates ``k_1, k_2, k_3``; keep the real part.

    With the Hamilton table this is the plain dot product ``Σ_p q_p·k_p``.

    >>> conjugate_real_score(HAMILTON).coefficients
    ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1))
    """
    coeffs = [[0] * 4 for _ in range(4)]
    for p in range(4):
        coeffs[p][p] = table.sign[p][p] * (1 if p == 0 else -1)
    return ScoreForm("shared", tuple(tuple(r) for r in coeffs))


def plain_real_score(table: ProductTable) -> ScoreForm:
    """``Re(q ⊗ k)`` WITHOUT the conjugate, named "shared": the wrong shared score (negative control)."""
    return replace(component_score(table, 0), name="shared")


def score_forms(table: ProductTable = HAMILTON, shared: ScoreForm | None = None) -> dict[str, ScoreForm]:
    """The five scores ``{"shared", "S_r", "S_i", "S_j", "S_k"}`` of a table.

    ``shared`` replaces the shared score (default :func:`conjugate_real_score`).
    """
    forms = {"shared": shared if shared is not None else conjugate_real_score(table)}
    for m in range(4):
        forms[f"S_{COMPONENTS[m]}"] = component_score(table, m)
    return forms


def projection_spec(table: ProductTable, kind: ProjectionKind) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """For each output component ``p``, the ``(sign, weight index c, input index a)`` of ``q_p``.

    premixed: ``q_p = Σ_{c⊕a=p} sign[c][a] W_c x_a`` (weight on the left, ``q = W ⊗ x``);
    block_diagonal: ``q_p = W_p x_p``.

    >>> projection_spec(HAMILTON, "premixed")[0]      # q_r = W_r x_r − W_i x_i − W_j x_j − W_k x_k
    ((1, 0, 0), (-1, 1, 1), (-1, 2, 2), (-1, 3, 3))
    """
    if kind not in _PROJECTIONS:
        raise ValueError(f"projection kind must be one of {_PROJECTIONS}, got {kind!r}")
    if kind == "block_diagonal":
        return tuple(((1, p, p),) for p in range(4))
    return tuple(tuple((table.sign[c][c ^ p], c, c ^ p) for c in range(4)) for p in range(4))


# ---------------------------------------------------------------------------------------------
# General d, d_h: non-commutative block symbols
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockSymbols:
    """Weights ``W_c, U_c`` (``d_h × d``) and token components ``x_a, y_b`` (``d × 1``) as MatrixSymbols."""

    W: tuple[sp.MatrixSymbol, ...]
    U: tuple[sp.MatrixSymbol, ...]
    x: tuple[sp.MatrixSymbol, ...]
    y: tuple[sp.MatrixSymbol, ...]

    def index(self) -> dict[sp.MatrixSymbol, tuple[str, int]]:
        """Symbol → (role, component), used to read terms back."""
        out: dict[sp.MatrixSymbol, tuple[str, int]] = {}
        for role in ("W", "U", "x", "y"):
            for c, s in enumerate(getattr(self, role)):
                out[s] = (role, c)
        return out


def block_symbols(d: sp.Expr | int | None = None, d_h: sp.Expr | int | None = None) -> BlockSymbols:
    """Block symbols of symbolic sizes ``d`` and ``d_h`` (positive integer Symbols by default)."""
    d = sp.Symbol("d", positive=True, integer=True) if d is None else d
    d_h = sp.Symbol("d_h", positive=True, integer=True) if d_h is None else d_h
    return BlockSymbols(
        W=tuple(sp.MatrixSymbol(f"W_{c}", d_h, d) for c in COMPONENTS),
        U=tuple(sp.MatrixSymbol(f"U_{c}", d_h, d) for c in COMPONENTS),
        x=tuple(sp.MatrixSymbol(f"x_{c}", d, 1) for c in COMPONENTS),
        y=tuple(sp.MatrixSymbol(f"y_{c}", d, 1) for c in COMPONENTS),
    )


def block_queries_keys(
    table: ProductTable = HAMILTON, projection: ProjectionKind = "premixed", symbols: BlockSymbols | None = None
) -> tuple[list[sp.MatrixExpr], list[sp.MatrixExpr]]:
    """The components ``q_p`` (from ``W``, ``x``) and ``k_n`` (from ``U``, ``y``) as block expressions.

    >>> q, k = block_queries_keys()
    >>> q[1]                                          # q_i = W_r x_i + W_i x_r + W_j x_k − W_k x_j
    W_i*x_r + W_j*x_k - W_k*x_j + W_r*x_i
    """
    sym = symbols if symbols is not None else block_symbols()
    spec = projection_spec(table, projection)

    def project(weights, inputs) -> list[sp.MatrixExpr]:
        return [sp.MatAdd(*[s * weights[c] * inputs[a] for s, c, a in spec[p]]) for p in range(4)]

    return project(sym.W, sym.x), project(sym.U, sym.y)


def _read_block_term(term: sp.MatrixExpr, index: Mapping[sp.MatrixSymbol, tuple[str, int]]) -> tuple[Term, int]:
    coeff, matrix = term.as_coeff_mmul()
    factors = matrix.args if isinstance(matrix, sp.MatMul) else (matrix,)
    roles = []
    for f in factors:
        transposed = isinstance(f, sp.Transpose)
        base = f.arg if transposed else f
        if base not in index:
            raise ValueError(f"unexpected factor {f} in term {term}")
        roles.append((index[base], transposed))
    shape = [(role, t) for (role, _), t in roles]
    if shape != [("x", True), ("W", True), ("U", False), ("y", False)]:
        raise ValueError(f"term {term} is not of the form x_aᵀ W_cᵀ U_c′ y_b")
    if not (coeff.is_Integer or (coeff.is_Number and coeff == int(coeff))):
        raise ValueError(f"term {term} has a non-integer coefficient {coeff}")
    (_, a), (_, c), (_, cp), (_, b) = (r for r, _ in roles)
    return (a, b, c, cp), int(coeff)


def expand_block_score(
    form: ScoreForm,
    table: ProductTable = HAMILTON,
    projection: ProjectionKind = "premixed",
    symbols: BlockSymbols | None = None,
) -> Terms:
    """Expand ``s = Σ M[p][n] q_pᵀ k_n`` with ``q = W ⊗ x``, ``k = U ⊗ y`` (or block-diagonal) into terms.

    The expansion is SymPy's, on non-commutative matrix symbols of symbolic shapes, so the result
    holds for every ``d`` and ``d_h``. Terms whose coefficients cancel are absent.

    Returns
    -------
    ``{(a, b, c, c′): coefficient}`` for ``T(a, b, c, c′) = x_aᵀ W_cᵀ U_c′ y_b``.
    """
    sym = symbols if symbols is not None else block_symbols()
    q, k = block_queries_keys(table, projection, sym)
    score = sp.MatAdd(*[m * q[p].T * k[n] for m, p, n in form.pairs()])
    expanded = sp.expand(score)
    if isinstance(expanded, sp.ZeroMatrix) or expanded == 0:
        return {}
    parts = expanded.args if isinstance(expanded, sp.MatAdd) else (expanded,)
    index = sym.index()
    terms: Terms = {}
    for part in parts:
        term, coeff = _read_block_term(part, index)
        terms[term] = terms.get(term, 0) + coeff
    return {t: c for t, c in terms.items() if c != 0}


# ---------------------------------------------------------------------------------------------
# Scalar case d = d_h = 1: commutative symbols
# ---------------------------------------------------------------------------------------------
def scalar_symbols() -> dict[str, tuple[sp.Symbol, ...]]:
    """Commutative real symbols ``w_c, u_c, x_a, y_b`` for the scalar case ``d = d_h = 1``."""
    return {role: sp.symbols(f"{role}_r {role}_i {role}_j {role}_k", real=True) for role in ("w", "u", "x", "y")}


def scalar_projection(table: ProductTable, kind: ProjectionKind, weights, inputs) -> list[sp.Expr]:
    """The four components of ``q`` for scalar symbols (``W ⊗ x`` with the table, or block-diagonal)."""
    spec = projection_spec(table, kind)
    return [sp.Add(*[s * weights[c] * inputs[a] for s, c, a in spec[p]]) for p in range(4)]


def expand_scalar_score(form: ScoreForm, table: ProductTable = HAMILTON, projection: ProjectionKind = "premixed") -> Terms:
    """Terms of a score for ``d = d_h = 1``: monomial ``x_a y_b w_c u_c′`` → ``(a, b, c, c′)``.

    Commutative symbols: a monomial that is not of the form ``x_a y_b w_c u_c′`` raises.
    """
    s = scalar_symbols()
    q = scalar_projection(table, projection, s["w"], s["x"])
    k = scalar_projection(table, projection, s["u"], s["y"])
    score = sp.expand(sp.Add(*[m * q[p] * k[n] for m, p, n in form.pairs()]))
    gens = (*s["x"], *s["y"], *s["w"], *s["u"])
    if score == 0:
        return {}
    terms: Terms = {}
    for monom, coeff in sp.Poly(score, *gens).terms():
        blocks = [monom[4 * r : 4 * r + 4] for r in range(4)]
        if any(sorted(b) != [0, 0, 0, 1] for b in blocks):
            raise ValueError(f"monomial {monom} is not of the form x_a y_b w_c u_c′")
        a, b, c, cp = (blk.index(1) for blk in blocks)
        terms[(a, b, c, cp)] = int(coeff)
    return terms
