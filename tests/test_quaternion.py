"""The quaternion algebra against an independent oracle (SymPy's Quaternion) and known values."""

import itertools

import pytest
import sympy
import torch
from sympy.algebras.quaternion import Quaternion

from qattn import quaternion as qt


def to_sympy(units: torch.Tensor) -> list[Quaternion]:
    """Blocked (4·n,) integer tensor → list of n SymPy quaternions."""
    comps = qt.split(units).tolist()
    return [Quaternion(*(int(comps[c][u]) for c in range(4))) for u in range(len(comps[0]))]


def from_sympy(quats: list[Quaternion]) -> torch.Tensor:
    comps = [[float(getattr(q, name)) for q in quats] for name in ("a", "b", "c", "d")]
    return torch.tensor(comps, dtype=torch.float64).flatten()


def test_basis_products_follow_the_convention():
    e = torch.eye(4, dtype=torch.float64)  # 1, i, j, k as single units
    one, i, j, k = e
    assert torch.equal(qt.hamilton(i, j), k) and torch.equal(qt.hamilton(j, k), i) and torch.equal(qt.hamilton(k, i), j)
    assert torch.equal(qt.hamilton(j, i), -k) and torch.equal(qt.hamilton(k, j), -i) and torch.equal(qt.hamilton(i, k), -j)
    for u in (i, j, k):
        assert torch.equal(qt.hamilton(u, u), -one)
    assert torch.equal(qt.hamilton(qt.hamilton(i, j), k), -one)  # ijk = −1
    for a, b in itertools.product(range(4), repeat=2):  # e_a e_b = SIGN[a][b] e_(a xor b)
        assert torch.equal(qt.hamilton(e[a], e[b]), qt.SIGN[a][b] * e[a ^ b])


def test_hamilton_matches_sympy_on_several_units():
    g = torch.Generator().manual_seed(1)
    p = torch.randint(-9, 10, (4 * 5,), generator=g).double()
    q = torch.randint(-9, 10, (4 * 5,), generator=g).double()
    expected = from_sympy([a * b for a, b in zip(to_sympy(p), to_sympy(q))])
    assert torch.equal(qt.hamilton(p, q), expected)
    conj = from_sympy([a.conjugate() for a in to_sympy(q)])
    assert torch.equal(qt.conj(q), conj)
    inner = torch.tensor([float((a * b.conjugate()).a) for a, b in zip(to_sympy(p), to_sympy(q))], dtype=torch.float64)
    assert torch.equal(qt.inner(p, q), inner)
    assert torch.allclose(qt.norm(q), torch.tensor([float(a.norm()) for a in to_sympy(q)], dtype=torch.float64))


def test_hamilton_broadcasts_and_norm_is_multiplicative():
    p, q = torch.randn(3, 1, 8, dtype=torch.float64), torch.randn(1, 5, 8, dtype=torch.float64)
    pq = qt.hamilton(p, q)
    assert pq.shape == (3, 5, 8)
    assert torch.allclose(qt.norm(pq), qt.norm(p) * qt.norm(q))
    # Re(p ⊗ q̄) is the real component of the product and the plain dot product per unit.
    assert torch.allclose(qt.inner(p, q), qt.split(qt.hamilton(p, qt.conj(q)))[..., 0, :])


def test_split_merge_round_trip_and_errors():
    x = torch.arange(24.0).reshape(2, 12)
    assert torch.equal(qt.split(x)[1, 2], torch.tensor([18.0, 19.0, 20.0]))  # component j of row 1
    assert torch.equal(qt.merge(qt.split(x)), x)
    y = torch.arange(24.0).reshape(8, 3)
    assert qt.split(y, dim=0).shape == (4, 2, 3) and torch.equal(qt.merge(qt.split(y, dim=0), dim=0), y)
    with pytest.raises(ValueError, match="divisible by 4"):
        qt.split(torch.zeros(3, 10))
    with pytest.raises(ValueError, match="size 4"):
        qt.merge(torch.zeros(3, 5, 2))


def test_left_matrix_equals_sympy_product_matrix_left():
    """By linearity: Σ_c w_c · left_matrix(e_c) must equal product_matrix_left of symbolic w."""
    w = sympy.symbols("w_r w_i w_j w_k")
    one, zero = torch.ones(1, 1), torch.zeros(1, 1)
    basis = [qt.left_matrix(*[one if c == m else zero for c in range(4)]) for m in range(4)]
    assembled = sum((w[m] * sympy.Matrix(basis[m].int().tolist()) for m in range(4)), sympy.zeros(4, 4))
    assert sympy.simplify(assembled - Quaternion(*w).product_matrix_left) == sympy.zeros(4, 4)


def test_left_matrix_applies_w_times_x_unit_by_unit():
    out_u, in_u = 3, 2
    w = [torch.randn(out_u, in_u, dtype=torch.float64) for _ in range(4)]
    x = torch.randn(4 * in_u, dtype=torch.float64)
    y = qt.left_matrix(*w) @ x
    # Independent: y_o = Σ_v W[o, v] ⊗ x_v with single-unit Hamilton products.
    for o in range(out_u):
        acc = torch.zeros(4, dtype=torch.float64)
        for v in range(in_u):
            w_ov = torch.stack([w[c][o, v] for c in range(4)])
            acc += qt.hamilton(w_ov, qt.split(x)[:, v])
        assert torch.allclose(qt.split(y)[:, o], acc)
    with pytest.raises(ValueError, match="same shape"):
        qt.left_matrix(w[0], w[1], w[2], torch.zeros(2, 2))
