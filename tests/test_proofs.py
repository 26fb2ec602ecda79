"""The theory chapter's proofs: interaction-subspace statements 0-5, counts, numeric cross-checks.

Each check is run on the real inputs (it must hold) and on deliberately wrong inputs (negative
controls: it must be reported false), so a checker that always says "true" fails here.
"""

import pytest
import sympy as sp

from proofs import counts, numeric
from proofs.interaction_subspace import StatementFailed, check_convention, coverage, prove, xor_class
from proofs.symbolic import (
    ALL_TERMS,
    HAMILTON,
    SCORE_NAMES,
    block_symbols,
    expand_block_score,
    expand_scalar_score,
    plain_real_score,
    score_forms,
)


@pytest.fixture(scope="module")
def record():
    return prove()


# -- the theorem on the real inputs ------------------------------------------------------------
def test_every_statement_holds_for_general_sizes(record):
    assert [s.number for s in record.statements] == [0, 1, 2, 3, 4, 5]
    assert all(s.holds for s in record.statements), [str(s) for s in record.statements if not s.holds]
    assert record.scalar_supports_agree


def test_statement_1_and_2_supports_and_signs(record):
    for name in SCORE_NAMES:
        assert len(record.supports[name]) == 64
        assert set(record.supports[name].values()) == {-1, 1}
    for m, name in enumerate(SCORE_NAMES[1:]):
        assert set(record.supports[name]) == {t for t in ALL_TERMS if xor_class(t) == m}
        assert record.xor_classes[name] == (m,)
    assert record.xor_classes["shared"] == (0,)
    assert record.sign_flips == 48 and record.partition
    shared, s_r = record.supports["shared"], record.supports["S_r"]
    # T(0,0,0,0) = x_rᵀ W_rᵀ U_r y_r enters both with +1; T(1,1,0,0) = x_iᵀ W_rᵀ U_r y_i comes from
    # q_i k_i: +1 in the shared score, −1 in S_r (the −q_i k_i term).
    assert shared[(0, 0, 0, 0)] == s_r[(0, 0, 0, 0)] == 1
    assert shared[(1, 1, 0, 0)] == 1 and s_r[(1, 1, 0, 0)] == -1
    # the 16 unflipped terms are those with a ⊕ c = 0, i.e. from q_r k_r
    assert {t for t in shared if shared[t] == s_r[t]} == {t for t in shared if t[0] == t[2]}


def test_statement_3_coverage_under_premixing(record):
    for name in SCORE_NAMES:
        assert record.coverage[name] == tuple((4,) * 4 for _ in range(4))


def test_statement_4_block_diagonal_coverage(record):
    pairs = {n: {(a, b) for a in range(4) for b in range(4) if g[a][b]} for n, g in record.contrast_coverage.items()}
    assert pairs["shared"] == {(0, 0), (1, 1), (2, 2), (3, 3)}
    assert pairs["S_i"] == {(0, 1), (1, 0), (2, 3), (3, 2)}
    assert pairs["S_j"] == {(0, 2), (2, 0), (1, 3), (3, 1)}
    assert pairs["S_k"] == {(0, 3), (3, 0), (1, 2), (2, 1)}
    assert set().union(*(pairs[n] for n in SCORE_NAMES[1:])) == {(a, b) for a in range(4) for b in range(4)}


def test_statement_5_not_a_combination_and_no_key_weight(record):
    assert record.linear_combination is None
    assert set(record.key_weight_solutions.values()) == {"{(0, 0, 0, 0, 0, 0, 0, 0)}"}
    w = sp.symbols("w_r w_i w_j w_k", real=True)
    assert sp.expand(sp.sympify(record.left_determinant, locals={str(s): s for s in w}) - sum(c**2 for c in w) ** 2) == 0


def test_symbolic_sizes_equal_concrete_sizes_and_the_scalar_case():
    forms = score_forms()
    concrete = block_symbols(d=3, d_h=2)
    for name in ("shared", "S_j"):
        general = expand_block_score(forms[name])
        assert expand_block_score(forms[name], symbols=concrete) == general
        assert expand_scalar_score(forms[name]) == general


def test_record_summary_is_json_serialisable(record):
    import json

    summary = json.loads(json.dumps(record.summary()))
    assert summary["terms_per_score"] == {n: 64 for n in SCORE_NAMES}
    assert summary["statements"] == {str(i): True for i in range(6)}


# -- negative controls: the checker must be able to fail ---------------------------------------
@pytest.mark.parametrize("a", range(4))
@pytest.mark.parametrize("b", range(4))
def test_every_single_sign_flip_breaks_the_convention(a, b):
    result = check_convention(HAMILTON.flipped(a, b))
    assert not result.holds and "differ from SymPy" in result.details


def test_flipped_hamilton_sign_is_caught():
    wrong = HAMILTON.flipped(1, 2)  # i·j = −k
    rec = prove(table=wrong, strict=False)
    assert not rec.statement(0).holds
    assert not rec.statement(5).holds  # det L(W) is no longer |W|⁴
    with pytest.raises(StatementFailed, match="statement 0 is FALSE"):
        prove(table=wrong)


def test_non_conjugate_shared_score_is_caught():
    rec = prove(shared=plain_real_score(HAMILTON), strict=False)
    assert rec.sign_flips == 0
    assert not rec.statement(2).holds
    assert rec.linear_combination == {"lambda_r": "1", "lambda_i": "0", "lambda_j": "0", "lambda_k": "0"}
    assert not rec.statement(5).holds
    assert rec.statement(1).holds and rec.statement(3).holds  # it is still a 64-term score covering all pairs


def test_block_diagonal_projections_where_coverage_is_claimed_are_caught():
    rec = prove(projection="block_diagonal", strict=False)
    assert not rec.statement(3).holds
    assert not rec.statement(1).holds  # 4 terms per score, not 64
    assert all(sum(map(sum, g)) == 4 for g in rec.coverage.values())
    with pytest.raises(StatementFailed, match="statement 3 is FALSE"):
        prove(projection="block_diagonal")


def test_premixed_projections_where_diagonal_only_is_claimed_are_caught():
    rec = prove(contrast_projection="premixed", strict=False)
    assert not rec.statement(4).holds
    assert [s.number for s in rec.statements if not s.holds] == [4]


def test_coverage_counts_terms_per_pair():
    assert coverage({(0, 1, 2, 3): 1, (0, 1, 0, 0): -1})[0][1] == 2


# -- numeric cross-check with qattn's layers and score functions -------------------------------
@pytest.mark.parametrize("d, d_h", [(1, 1), (3, 2)])
def test_numeric_blocks_match_symbolic_supports_with_premixing(record, d, d_h):
    check = numeric.cross_check(d=d, d_h=d_h, seed=1, supports=record.supports)
    assert check.max_abs_error < 1e-12
    assert check.nonzero_pairs() == {n: 16 for n in SCORE_NAMES}


def test_numeric_blocks_without_premixing(record):
    check = numeric.cross_check(d=2, d_h=3, seed=2, projection="block_diagonal", supports=record.contrast_supports)
    assert check.max_abs_error < 1e-12
    for name in SCORE_NAMES:
        expected = [[record.contrast_coverage[name][a][b] > 0 for b in range(4)] for a in range(4)]
        assert check.nonzero[name] == expected


def test_numeric_check_rejects_wrong_supports(record):
    wrong = dict(record.supports, shared=record.supports["S_r"])  # claim shared = S_r
    assert numeric.cross_check(d=2, d_h=2, seed=0, supports=wrong).max_abs_error > 1e-3


def test_no_key_weight_makes_a_hamilton_component_equal_the_shared_score():
    residuals = numeric.key_weight_residuals(d=3, d_h=2, seed=0)
    assert min(residuals.values()) > 0.1
    control = numeric.key_weight_residuals(d=3, d_h=2, seed=0, target_score="S_r")
    assert control["S_r"] < 1e-10 and control["S_i"] > 0.1


# -- counts --------------------------------------------------------------------------------------
def test_multiplication_counter_is_correct_where_count_ops_is_not():
    x, y, z = sp.symbols("x y z")
    assert counts.count_multiplications(x * x) == 1
    assert counts.count_multiplications(-x * y + x * z) == 2
    assert counts.count_multiplications(2 * x * y) == 2
    assert counts.count_multiplications(x + 3) == 0
    assert counts.count_multiplications((x + y) * (x - y)) == 2  # expanded: x² − y²
    assert counts.per_pair_unit_counts() == {"hamilton": 16, "shared": 4}
    assert counts.per_pair_unit_counts(counter=sp.count_ops) != {"hamilton": 16, "shared": 4}


def test_head_formulas():
    n, d_h = counts.N, counts.D_H
    f = counts.head_formulas()
    assert sp.simplify(f["hamilton"].score_mults - 16 * n**2 * d_h) == 0
    assert sp.simplify(f["shared"].score_mults - 4 * n**2 * d_h) == 0
    assert sp.simplify(f["hamilton"].core_mults - 20 * n**2 * d_h) == 0
    assert sp.simplify(f["shared"].core_mults - 8 * n**2 * d_h) == 0
    assert f["hamilton"].value_mults == f["shared"].value_mults == 4 * n**2 * d_h
    assert (f["hamilton"].softmax_maps, f["shared"].softmax_maps) == (4, 1)
    assert (f["hamilton"].maps_held, f["hamilton"].naive_partial_products, f["shared"].maps_held) == (4, 16, 1)


def test_counts_symbolic_explicit_and_measured_agree():
    rec = counts.verify_counts(explicit_sizes=((1, 1), (2, 3)), measured_sizes=((5, 1), (12, 2), (17, 3)))
    assert rec.holds
    assert len(rec.measured) == 6 and all(row["agrees"] for row in rec.measured)
    row = next(r for r in rec.measured if r["mechanism"] == "hamilton" and r["n"] == 12)
    assert row["score_mults"] == 16 * 12**2 * 2 and row["softmax_maps"] == 4 and row["reference_partial_products"] == 16
    row = next(r for r in rec.measured if r["mechanism"] == "shared" and r["n"] == 17)
    assert row["core_mults"] == 8 * 17**2 * 3 and row["softmax_maps"] == 1
    assert rec.parameters["shared"] == rec.parameters["hamilton"] == 4 * 64 * 64 // 4 + 4 * 64


def test_measurement_detects_a_different_mechanism():
    measured = counts.measure_core("hamilton", 6, 2)
    shared_formula = counts.head_formulas()["shared"].evaluate(6, 2)
    assert measured.score_mults != shared_formula["score_mults"]
    assert measured.softmax_maps != shared_formula["softmax_maps"]
