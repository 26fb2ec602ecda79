"""The interaction-subspace theorem (our reconstruction of the paper's theorem), checked by SymPy.

The paper's own wording was not reachable; the statement below is ours. Tokens ``x, y ∈ Hᵈ`` with real
components ``x_a, y_b``; ``q = W ⊗ x``, ``k = U ⊗ y`` with
``W, U ∈ H^(d_h×d)`` (component pre-mixing). Elementary terms
``T(a, b, c, c′) = x_aᵀ W_cᵀ U_c′ y_b`` (256 of them) span the interaction subspace 𝓘.

0. (Convention) the product table is the Hamilton product (oracle: SymPy's ``Quaternion``).
1. The shared score ``Σ_p q_p·k_p`` and each Hamilton component ``S_m`` are ±1 combinations of
   exactly 64 distinct elementary terms; the 256 terms are linearly independent, so all five
   lie in 𝓘 with unique coordinates.
2. ``S_m`` uses exactly the terms with ``a ⊕ b ⊕ c ⊕ c′ = m``; the shared score uses class 0,
   the support of ``S_r``, with 48 of the 64 signs flipped; the four ``S_m`` partition the 256.
3. Under pre-mixing each of the five scores has exactly 4 terms for every one of the 16 input
   component pairs ``(a, b)``; the Hamilton components add no pair the shared score lacks.
4. With block-diagonal projections ``q_p = W_p x_p``, ``k_n = U_n y_n`` the shared score covers
   only the 4 pairs ``(a, a)``; ``S_m`` covers ``{(a, a ⊕ m)}``, together all 16.
5. The shared score is not a linear combination of ``S_r, S_i, S_j, S_k`` (same weights), and
   no quaternion key weight ``U′`` makes ``S_m(W, U′) = shared(W, U)`` unless ``U = 0``.

Proof idea: expand ``q_pᵀ k_n`` on non-commutative block symbols of symbolic size; every
product is a signed word ``x_aᵀ W_cᵀ U_c′ y_b``, so the supports, classes, coverage tables and
signs are read off exactly, for every ``d`` and ``d_h``. Independence of the 256 terms: setting
every entry except the first of each block to zero maps them to 256 distinct scalar monomials
``x_a y_b w_c u_c′``. Part 5 reduces, for ``W`` with trivial left kernel (any non-zero ``W`` in
the scalar case, since ``det L(W) = |W|⁴``), to the block equation ``M_s L(U) = M_m L(U′)``
whose coefficients are scalars, so the scalar linear system decides it for every size.

:func:`prove` runs every check and returns an :class:`InteractionSubspaceRecord`; with
``strict=True`` (default) it raises :class:`StatementFailed` naming each false statement. Its
inputs can be replaced (a product table, a "shared" score, the projections) for negative
controls.

Examples
--------
>>> record = prove()
>>> record.sign_flips, [s.holds for s in record.statements]
(48, [True, True, True, True, True, True])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from sympy.algebras.quaternion import Quaternion

from proofs.symbolic import (
    ALL_TERMS,
    HAMILTON,
    SCORE_NAMES,
    ProductTable,
    ProjectionKind,
    ScoreForm,
    Terms,
    expand_block_score,
    expand_scalar_score,
    scalar_projection,
    scalar_symbols,
    score_forms,
)

__all__ = [
    "StatementResult",
    "InteractionSubspaceRecord",
    "StatementFailed",
    "xor_class",
    "coverage",
    "check_convention",
    "check_statement_1",
    "check_statement_2",
    "check_statement_3",
    "check_statement_4",
    "check_statement_5",
    "left_matrix",
    "prove",
]

Grid = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class StatementResult:
    """One checked statement: its number, a one-line claim, whether it holds, and what was found."""

    number: int
    claim: str
    holds: bool
    details: str

    def __str__(self) -> str:
        return f"statement {self.number} {'holds' if self.holds else 'is FALSE'}: {self.claim}. {self.details}"


class StatementFailed(AssertionError):
    """Raised by :func:`prove` when a statement is false; ``record`` holds everything checked."""

    def __init__(self, record: InteractionSubspaceRecord) -> None:
        self.record = record
        failed = [str(s) for s in record.statements if not s.holds]
        super().__init__("interaction-subspace theorem: " + " | ".join(failed))


@dataclass(frozen=True)
class InteractionSubspaceRecord:
    """What :func:`prove` established.

    Attributes
    ----------
    table, shared, projection, contrast_projection : the inputs (names).
    supports : score name → ``{(a, b, c, c′): ±1}`` under ``projection`` (general ``d``, ``d_h``).
    scalar_supports_agree : the scalar expansion (``d = d_h = 1``) has the same signed supports.
    xor_classes : score name → sorted set of ``a ⊕ b ⊕ c ⊕ c′`` over its support.
    coverage : score name → 4×4 grid, number of terms per input pair ``(a, b)``.
    contrast_supports, contrast_coverage : the same under ``contrast_projection``.
    sign_flips : terms of the shared score whose sign differs from ``S_r`` (on the common support).
    partition : the supports of ``S_r … S_k`` are disjoint and cover all 256 terms.
    linear_combination : a solution ``λ`` of ``shared = Σ λ_m S_m`` as strings, or None.
    key_weight_solutions : ``m`` → the solution set of ``M_s L(U) = M_m L(U′)`` (strings).
    left_determinant : ``det L(W)`` of the table's left multiplication (string).
    statements : the checked statements 0-5.
    """

    table: str
    shared: str
    projection: str
    contrast_projection: str
    supports: dict[str, Terms]
    scalar_supports_agree: bool
    xor_classes: dict[str, tuple[int, ...]]
    coverage: dict[str, Grid]
    contrast_supports: dict[str, Terms]
    contrast_coverage: dict[str, Grid]
    sign_flips: int
    partition: bool
    linear_combination: dict[str, str] | None
    key_weight_solutions: dict[str, str]
    left_determinant: str
    statements: tuple[StatementResult, ...] = field(default=())

    @property
    def holds(self) -> bool:
        """Every statement holds."""
        return all(s.holds for s in self.statements)

    def statement(self, number: int) -> StatementResult:
        """The result of statement ``number`` (0-5)."""
        return next(s for s in self.statements if s.number == number)

    def summary(self) -> dict[str, Any]:
        """A small JSON-serialisable digest (for results files)."""
        return {
            "table": self.table,
            "shared": self.shared,
            "terms_per_score": {n: len(t) for n, t in self.supports.items()},
            "xor_classes": {n: list(c) for n, c in self.xor_classes.items()},
            "pairs_covered": {n: sum(v > 0 for row in g for v in row) for n, g in self.coverage.items()},
            "pairs_covered_block_diagonal": {n: sum(v > 0 for row in g for v in row) for n, g in self.contrast_coverage.items()},
            "sign_flips_shared_vs_S_r": self.sign_flips,
            "partition_of_256": self.partition,
            "shared_is_linear_combination": self.linear_combination is not None,
            "statements": {str(s.number): s.holds for s in self.statements},
        }


# ---------------------------------------------------------------------------------------------
# Reading supports
# ---------------------------------------------------------------------------------------------
def xor_class(term: tuple[int, int, int, int]) -> int:
    """``a ⊕ b ⊕ c ⊕ c′`` of a term ``(a, b, c, c′)``.

    >>> xor_class((1, 2, 3, 0))
    0
    """
    a, b, c, cp = term
    return a ^ b ^ c ^ cp


def coverage(terms: Terms) -> Grid:
    """4×4 grid: number of terms of a support per input-component pair ``(a, b)``."""
    grid = [[0] * 4 for _ in range(4)]
    for a, b, _, _ in terms:
        grid[a][b] += 1
    return tuple(tuple(r) for r in grid)


def _pairs(grid: Grid) -> set[tuple[int, int]]:
    return {(a, b) for a in range(4) for b in range(4) if grid[a][b] > 0}


# ---------------------------------------------------------------------------------------------
# The statements
# ---------------------------------------------------------------------------------------------
def check_convention(table: ProductTable) -> StatementResult:
    """0: the table's ``W ⊗ x`` equals SymPy's ``Quaternion`` product (independent oracle)."""
    s = scalar_symbols()
    ours = scalar_projection(table, "premixed", s["w"], s["x"])
    oracle = Quaternion(*s["w"]) * Quaternion(*s["x"])
    oracle_parts = (oracle.a, oracle.b, oracle.c, oracle.d)
    wrong = [c for c in range(4) if sp.expand(ours[c] - oracle_parts[c]) != 0]
    names = "rijk"
    return StatementResult(
        0,
        "the product table is the Hamilton product (SymPy Quaternion as oracle)",
        not wrong,
        "all four components of W ⊗ x agree with SymPy"
        if not wrong
        else f"components {[names[c] for c in wrong]} of W ⊗ x differ from SymPy's Quaternion product",
    )


def check_statement_1(supports: dict[str, Terms]) -> StatementResult:
    """1: each score is a ±1 combination of exactly 64 distinct terms; the 256 are independent."""
    problems = []
    for name, terms in supports.items():
        if len(terms) != 64:
            problems.append(f"{name} has {len(terms)} terms, not 64")
        bad = sorted({c for c in terms.values() if c not in (-1, 1)})
        if bad:
            problems.append(f"{name} has coefficients {bad}, not ±1")
        if not set(terms) <= set(ALL_TERMS):
            problems.append(f"{name} has terms outside the 256")
    s = scalar_symbols()
    monomials = {s["x"][a] * s["y"][b] * s["w"][c] * s["u"][cp] for a, b, c, cp in ALL_TERMS}
    if len(monomials) != 256:
        problems.append(f"the 256 terms specialise to only {len(monomials)} distinct scalar monomials")
    return StatementResult(
        1,
        "each of the five scores is a ±1 combination of exactly 64 distinct elementary terms, all in the span "
        "of 256 linearly independent terms",
        not problems,
        "; ".join(problems)
        if problems
        else f"term counts {{{', '.join(f'{n}: {len(t)}' for n, t in supports.items())}}}, coefficients ±1; the 256 terms "
        "specialise to 256 distinct monomials x_a y_b w_c u_c′, hence are independent for every d, d_h",
    )


def check_statement_2(supports: dict[str, Terms]) -> tuple[StatementResult, int, bool]:
    """2: ``S_m`` = XOR class m; shared = class 0 = support of S_r with 48 flips; partition of 256."""
    problems = []
    for m, name in enumerate(SCORE_NAMES[1:]):
        expected = {t for t in ALL_TERMS if xor_class(t) == m}
        if set(supports[name]) != expected:
            problems.append(f"{name} is not exactly XOR class {m} ({len(set(supports[name]) ^ expected)} terms differ)")
    shared, s_r = supports["shared"], supports["S_r"]
    if set(shared) != set(s_r):
        problems.append(f"the shared score's support differs from S_r's in {len(set(shared) ^ set(s_r))} terms")
    flips = sum(1 for t in set(shared) & set(s_r) if shared[t] != s_r[t])
    if flips != 48:
        problems.append(f"{flips} signs differ between the shared score and S_r, not 48")
    hamilton = [set(supports[n]) for n in SCORE_NAMES[1:]]
    disjoint = all(not (hamilton[i] & hamilton[j]) for i in range(4) for j in range(i + 1, 4))
    partition = disjoint and set().union(*hamilton) == set(ALL_TERMS)
    if not partition:
        problems.append("the supports of S_r, S_i, S_j, S_k do not partition the 256 terms")
    result = StatementResult(
        2,
        "S_m uses exactly XOR class m; the shared score has the support of S_r with 48 of 64 signs flipped; "
        "the four S_m partition the 256 terms",
        not problems,
        "; ".join(problems) if problems else f"classes as claimed, {flips} sign flips, partition holds",
    )
    return result, flips, partition


def check_statement_3(coverages: dict[str, Grid]) -> StatementResult:
    """3: every score has exactly 4 terms for each of the 16 pairs; Hamilton adds no new pair."""
    problems = [
        f"{name} covers {len(_pairs(g))} pairs with counts {sorted({v for r in g for v in r})}, not 4 terms on all 16"
        for name, g in coverages.items()
        if any(v != 4 for row in g for v in row)
    ]
    union = set().union(*(_pairs(coverages[n]) for n in SCORE_NAMES[1:]))
    extra = union - _pairs(coverages["shared"])
    if extra:
        problems.append(f"the Hamilton components cover {len(extra)} pairs the shared score does not")
    return StatementResult(
        3,
        "under pre-mixing each score has exactly 4 terms for every one of the 16 input pairs (a, b)",
        not problems,
        "; ".join(problems) if problems else "all five 4×4 coverage grids are constant 4",
    )


def check_statement_4(coverages: dict[str, Grid]) -> StatementResult:
    """4: block-diagonal: shared covers the 4 diagonal pairs; ``S_m`` covers ``(a, a⊕m)``; union all 16."""
    problems = []
    diagonal = {(a, a) for a in range(4)}
    if _pairs(coverages["shared"]) != diagonal:
        problems.append(f"the shared score covers {sorted(_pairs(coverages['shared']))}, not only the 4 diagonal pairs")
    for m, name in enumerate(SCORE_NAMES[1:]):
        expected = {(a, a ^ m) for a in range(4)}
        if _pairs(coverages[name]) != expected:
            problems.append(f"{name} covers {sorted(_pairs(coverages[name]))}, not {sorted(expected)}")
    union = set().union(*(_pairs(coverages[n]) for n in SCORE_NAMES[1:]))
    if len(union) != 16:
        problems.append(f"the four Hamilton components together cover {len(union)} pairs, not 16")
    return StatementResult(
        4,
        "with block-diagonal projections the shared score covers only the 4 pairs (a, a) while the four Hamilton "
        "components together cover all 16",
        not problems,
        "; ".join(problems) if problems else "shared: diagonal only; S_m: {(a, a⊕m)}; union: 16 pairs",
    )


def left_matrix(table: ProductTable, weights) -> sp.Matrix:
    """4×4 matrix of ``x ↦ W ⊗ x`` for scalar weights, from the table (Jacobian of the projection)."""
    s = scalar_symbols()
    q = scalar_projection(table, "premixed", weights, s["x"])
    return sp.Matrix(4, 4, lambda p, a: sp.diff(q[p], s["x"][a]))


def check_statement_5(
    supports: dict[str, Terms], table: ProductTable, forms: dict[str, ScoreForm]
) -> tuple[StatementResult, dict[str, str] | None, dict[str, str], str]:
    """5: the shared score is no linear combination of the S_m; no key weight makes S_m = shared.

    (a) Solve ``shared = Σ_m λ_m S_m`` coefficient by coefficient over the 256 independent
    terms (``linsolve``). (b) For each ``m``, with ``L(W)`` invertible, equality for all
    ``x, y`` means ``M_s L(U) = M_m L(U′)`` (``M`` the 4×4 forms): a homogeneous linear system
    in the 8 unknowns ``U, U′``; only ``U = U′ = 0`` may solve it.
    """
    problems = []
    lam = sp.symbols("lambda_r lambda_i lambda_j lambda_k")
    equations = [
        supports["shared"].get(t, 0) - sum(coef * supports[n].get(t, 0) for coef, n in zip(lam, SCORE_NAMES[1:])) for t in ALL_TERMS
    ]
    solution = sp.linsolve(equations, lam)
    combination = None
    if solution != sp.S.EmptySet:
        sol = next(iter(solution))
        combination = {str(coef): str(v) for coef, v in zip(lam, sol)}
        problems.append(f"the shared score IS a linear combination of the S_m: {combination}")

    w = sp.symbols("w_r w_i w_j w_k", real=True)
    u = sp.symbols("U_r U_i U_j U_k", real=True)
    u2 = sp.symbols("U'_r U'_i U'_j U'_k", real=True)
    det_w = sp.factor(left_matrix(table, w).det())
    if sp.expand(det_w - sum(c**2 for c in w) ** 2) != 0:
        problems.append(f"det L(W) = {det_w} is not |W|⁴, so L(W) need not be invertible for W ≠ 0")
    m_shared = sp.Matrix(forms["shared"].coefficients)
    solutions: dict[str, str] = {}
    for name in SCORE_NAMES[1:]:
        m_m = sp.Matrix(forms[name].coefficients)
        system = m_shared * left_matrix(table, u) - m_m * left_matrix(table, u2)
        sol = sp.linsolve(list(system), [*u, *u2])
        solutions[name] = str(sol)
        if sol != sp.FiniteSet(tuple([0] * 8)):
            problems.append(f"shared(W, U) = {name}(W, U′) has non-zero solutions {sol}")
    return (
        StatementResult(
            5,
            "the shared score is not a linear combination of S_r, S_i, S_j, S_k, and no quaternion key weight makes any S_m equal to it",
            not problems,
            "; ".join(problems)
            if problems
            else f"Σ λ_m S_m = shared has no solution; det L(W) = {det_w}; for each m the key system has only U = U′ = 0",
        ),
        combination,
        solutions,
        str(det_w),
    )


# ---------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------
def prove(
    table: ProductTable = HAMILTON,
    shared: ScoreForm | None = None,
    projection: ProjectionKind = "premixed",
    contrast_projection: ProjectionKind = "block_diagonal",
    strict: bool = True,
) -> InteractionSubspaceRecord:
    """Check statements 0-5 for general ``d`` and ``d_h`` and return what was established.

    Parameters
    ----------
    table : the product of basis elements (default: qattn's Hamilton table).
    shared : the "shared" score form (default ``Re(q ⊗ k̄)`` of the table).
    projection : how q and k are formed for statements 1-3 and 5 (``"premixed"``: ``W ⊗ x``).
    contrast_projection : the projections of statement 4 (``"block_diagonal"``).
    strict : raise :class:`StatementFailed` if any statement is false.

    Returns
    -------
    :class:`InteractionSubspaceRecord`.
    """
    forms = score_forms(table, shared)
    supports = {name: expand_block_score(form, table, projection) for name, form in forms.items()}
    scalar_agree = all(expand_scalar_score(form, table, projection) == supports[name] for name, form in forms.items())
    contrast = {name: expand_block_score(form, table, contrast_projection) for name, form in forms.items()}
    grids = {name: coverage(t) for name, t in supports.items()}
    contrast_grids = {name: coverage(t) for name, t in contrast.items()}

    s0 = check_convention(table)
    s1 = check_statement_1(supports)
    if not scalar_agree:
        s1 = StatementResult(1, s1.claim, False, s1.details + "; the scalar case (d = d_h = 1) disagrees with the block case")
    s2, flips, partition = check_statement_2(supports)
    s3 = check_statement_3(grids)
    s4 = check_statement_4(contrast_grids)
    s5, combination, key_solutions, det_w = check_statement_5(supports, table, forms)
    record = InteractionSubspaceRecord(
        table=table.name,
        shared=("Re(q ⊗ conj(k))" if shared is None else f"custom: {forms['shared'].coefficients}"),
        projection=projection,
        contrast_projection=contrast_projection,
        supports=supports,
        scalar_supports_agree=scalar_agree,
        xor_classes={name: tuple(sorted({xor_class(t) for t in terms})) for name, terms in supports.items()},
        coverage=grids,
        contrast_supports=contrast,
        contrast_coverage=contrast_grids,
        sign_flips=flips,
        partition=partition,
        linear_combination=combination,
        key_weight_solutions=key_solutions,
        left_determinant=det_w,
        statements=(s0, s1, s2, s3, s4, s5),
    )
    if strict and not record.holds:
        raise StatementFailed(record)
    return record
