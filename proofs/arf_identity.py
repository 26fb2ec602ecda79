"""Why addition random features (ARF) are unbiased: ``E_ω[Π_m φ_ω(x_m)] = exp(Σ_{m<n} x_m·x_n)``.

Setting (:mod:`qattn.attention.multilinear`, our reconstruction of Jin & Zhao's multi-linear
attention). ``ω ~ N(0, I_d)`` and ``φ_ω(x) = exp(ωᵀx − ‖x‖²/2)`` for vectors ``x_1..x_M ∈ R^d``.
The statements, each checked with SymPy:

1. the Gaussian moment generating function ``E[exp(tω)] = exp(t²/2)`` for ``ω ~ N(0, 1)`` and
   every real ``t``, by integration against the density;
2. ``E[exp(ωᵀa)] = exp(‖a‖²/2)`` in dimension ``d``: the standard normal density and
   ``exp(ωᵀa)`` both factorise over coordinates, so (Fubini) the expectation is the product of
   the 1-D ones; for general ``d`` by induction (the step ``Π_{j≤d+1} = Π_{j≤d} · e^{a²/2}`` against
   ``exp(Σ_{j≤d+1} a_j²/2)``), and by explicit ``d``-fold integration for ``d = 1, 2, 3``;
3. the exponent: ``‖Σ_m x_m‖²/2 − Σ_m ‖x_m‖²/2 = Σ_{m<n} x_m·x_n`` for symbolic vectors (``d = 3``
   components) and ``M = 2, 3, 4, 5``, and for general ``M`` by induction on the expansion
   ``(S + y)² = S² + 2yS + y²`` (per coordinate; the dot products are sums over coordinates);
4. together, ``E[Π_m φ_ω(x_m)] = exp(‖Σx‖²/2) · exp(−Σ‖x‖²/2) = exp(Σ_{m<n} x_m·x_n)`` (statement 1
   at ``t = Σ x_m`` for ``M = 2..5``; direct integration for ``M = 2, 3`` at ``d = 1``, where SymPy
   is fast: the ``d = 2`` integral takes it 10 s and more, and statement 2 covers the dimension);
   with ``x_m = s_m / r^{1/4}`` every pair carries ``s_m·s_n / √r``;
5. the sum over all index tuples of a product of per-modality terms factorises,
   ``Σ_{i_1..i_M} Π_m g_m(i_m) = Π_m Σ_i g_m(i)`` (checked for lengths ``(2, 3, 2)``): this is what
   makes ARF linear in the lengths.

Negative controls (reported as False, i.e. the wrong identity is caught): dropping the
stabiliser ``−‖x‖²/2``; a product of the pairwise terms in the exponent in place of their sum;
a stabiliser ``−‖x‖²`` in place of ``−‖x‖²/2``.

>>> gaussian_mgf_holds()
True
>>> product_identity_holds(3, stabiliser=sp.Rational(1, 2)), product_identity_holds(3, stabiliser=0)
(True, False)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import sympy as sp

__all__ = [
    "gaussian_mgf_holds",
    "mgf_induction_step_holds",
    "mgf_by_integration_holds",
    "exponent_identity_holds",
    "exponent_induction_step_holds",
    "product_identity_holds",
    "product_identity_by_integration_holds",
    "scaling_holds",
    "tuple_sum_factorises",
    "prove",
]

W = sp.Symbol("w", real=True)
T = sp.Symbol("t", real=True)
HALF = sp.Rational(1, 2)


def _expectation_1d(integrand: sp.Expr, w: sp.Symbol = W) -> sp.Expr:
    """``E[g(ω)] = ∫ g(w) e^{−w²/2} dw / √(2π)`` for ``ω ~ N(0, 1)``."""
    return sp.integrate(integrand * sp.exp(-(w**2) / 2), (w, -sp.oo, sp.oo)) / sp.sqrt(2 * sp.pi)


def _equal_exponentials(lhs: sp.Expr, rhs: sp.Expr) -> bool:
    """``lhs == rhs`` for positive expressions (exponentials and products of them): their ratio simplifies to 1."""
    ratio = sp.simplify(sp.powsimp(sp.expand(lhs / rhs), force=True))
    ratio = sp.simplify(sp.expand(sp.expand_log(sp.log(ratio), force=True)))
    return ratio == 0


def gaussian_mgf_holds() -> bool:
    """Statement 1: ``∫ e^{tw} e^{−w²/2} dw / √(2π) = e^{t²/2}`` for symbolic real ``t``."""
    return sp.simplify(_expectation_1d(sp.exp(T * W)) - sp.exp(T**2 / 2)) == 0


def mgf_induction_step_holds() -> bool:
    """Statement 2, general ``d``: if ``Π_{j≤d} e^{a_j²/2} = exp(Σ_{j≤d} a_j²/2) =: e^{S}`` then the same holds at ``d + 1``.

    The product of the 1-D expectations over one more coordinate is ``e^{S} · e^{a²/2}`` (statement 1
    at ``t = a``), the claim at ``d + 1`` is ``exp(S + a²/2)``; the base case ``d = 1`` is statement 1.
    """
    s, a = sp.symbols("S a", real=True)
    product_next = sp.exp(s) * _expectation_1d(sp.exp(a * W))
    return sp.simplify(product_next - sp.exp(s + a**2 / 2)) == 0


def mgf_by_integration_holds(d: int) -> bool:
    """Statement 2, explicit ``d``: the ``d``-fold integral of ``e^{ωᵀa}`` against the ``N(0, I_d)`` density is ``e^{‖a‖²/2}``.

    Also checks that the density is the product of the 1-D densities (the independence used).
    """
    ws, a = sp.symbols(f"w1:{d + 1}", real=True), sp.symbols(f"a1:{d + 1}", real=True)
    density = sp.exp(-sum(w**2 for w in ws) / 2) / (2 * sp.pi) ** sp.Rational(d, 2)
    factorises = sp.simplify(density - sp.Mul(*(sp.exp(-(w**2) / 2) / sp.sqrt(2 * sp.pi) for w in ws))) == 0
    value = sp.integrate(sp.exp(sum(wi * ai for wi, ai in zip(ws, a))) * density, *((w, -sp.oo, sp.oo) for w in ws))
    return factorises and sp.simplify(value - sp.exp(sum(x**2 for x in a) / 2)) == 0


def _vectors(m: int, d: int) -> list[list[sp.Symbol]]:
    return [list(sp.symbols(f"x{i}_1:{d + 1}", real=True)) for i in range(1, m + 1)]


def _dot(u: list[sp.Expr], v: list[sp.Expr]) -> sp.Expr:
    return sp.Add(*(a * b for a, b in zip(u, v)))


def _pairwise_sum(xs: list[list[sp.Symbol]]) -> sp.Expr:
    return sp.Add(*(_dot(u, v) for u, v in itertools.combinations(xs, 2)))


def _pairwise_product(xs: list[list[sp.Symbol]]) -> sp.Expr:
    return sp.Mul(*(_dot(u, v) for u, v in itertools.combinations(xs, 2)))


def exponent_identity_holds(m: int, d: int = 3) -> bool:
    """Statement 3: ``‖Σ_m x_m‖²/2 − Σ_m ‖x_m‖²/2 − Σ_{m<n} x_m·x_n`` expands to 0 for ``m`` symbolic ``d``-vectors."""
    xs = _vectors(m, d)
    total = [sp.Add(*col) for col in zip(*xs)]
    return sp.expand(_dot(total, total) / 2 - sp.Add(*(_dot(x, x) for x in xs)) / 2 - _pairwise_sum(xs)) == 0


def exponent_induction_step_holds() -> bool:
    """Statement 3, general ``M`` (per coordinate): ``S_M² = Q_M + 2 P_M`` implies it at ``M + 1``.

    ``S_{M+1} = S + y``, ``Q_{M+1} = Q + y²`` (squares), ``P_{M+1} = P + y·S`` (the new pairs); the
    base case ``M = 1`` is ``x² = x² + 0``. Substituting the hypothesis ``S² = Q + 2P`` leaves 0.
    """
    s, q, p, y = sp.symbols("S Q P y", real=True)
    step = sp.expand((s + y) ** 2 - (q + y**2) - 2 * (p + y * s))
    return sp.expand(step.subs(s**2, q + 2 * p)) == 0


def _mgf(t: sp.Expr) -> sp.Expr:
    """``E[e^{tω}]`` as statement 1 proves it, at any real ``t``."""
    return sp.exp(t**2 / 2)


def product_identity_holds(
    m: int, d: int = 2, stabiliser: sp.Expr = HALF, target: Callable[[list[list[sp.Symbol]]], sp.Expr] = _pairwise_sum
) -> bool:
    """Statement 4: ``E[Π_m exp(ωᵀx_m − c‖x_m‖²)] = exp(target(x))`` for ``m`` symbolic ``d``-vectors.

    By statements 1-2 the left side is ``Π_j E[exp(ω_j Σ_m x_{m,j})] · exp(−c Σ_m ‖x_m‖²)``. True for
    ``c = 1/2`` and the sum of the pairwise dot products; the negative controls change ``c`` or the target.
    """
    xs = _vectors(m, d)
    expectation = sp.Mul(*(_mgf(sp.Add(*col)) for col in zip(*xs))) * sp.exp(-stabiliser * sp.Add(*(_dot(x, x) for x in xs)))
    return _equal_exponentials(expectation, sp.exp(target(xs)))


def product_identity_by_integration_holds(m: int, d: int) -> bool:
    """Statement 4, directly: the ``d``-fold Gaussian integral of ``Π_m φ_ω(x_m)`` equals ``exp(Σ_{m<n} x_m·x_n)``."""
    ws = sp.symbols(f"w1:{d + 1}", real=True)
    xs = _vectors(m, d)
    phi = sp.Mul(*(sp.exp(_dot(list(ws), x) - _dot(x, x) / 2) for x in xs))
    density = sp.exp(-sum(w**2 for w in ws) / 2) / (2 * sp.pi) ** sp.Rational(d, 2)
    value = sp.integrate(sp.powsimp(phi * density), *((w, -sp.oo, sp.oo) for w in ws))
    return sp.simplify(value - sp.exp(_pairwise_sum(xs))) == 0


def scaling_holds() -> bool:
    """``x_m = s_m / r^{1/4}`` gives ``x_m·x_n = s_m·s_n / √r`` (for symbolic ``r > 0``, ``d = 3``)."""
    r = sp.Symbol("r", positive=True)
    s1, s2 = _vectors(2, 3)
    x1, x2 = [v / r ** sp.Rational(1, 4) for v in s1], [v / r ** sp.Rational(1, 4) for v in s2]
    return sp.simplify(_dot(x1, x2) - _dot(s1, s2) / sp.sqrt(r)) == 0


def tuple_sum_factorises(lengths: tuple[int, ...] = (2, 3, 2)) -> bool:
    """Statement 5: ``Σ_{i_1..i_M} Π_m g_m(i_m) = Π_m Σ_i g_m(i)`` for symbolic ``g_m(i)``."""
    g = [sp.symbols(f"g{m}_0:{n}") for m, n in enumerate(lengths)]
    tuples = sp.Add(*(sp.Mul(*(g[m][i] for m, i in enumerate(idx))) for idx in itertools.product(*(range(n) for n in lengths))))
    return sp.expand(tuples - sp.Mul(*(sp.Add(*gm) for gm in g))) == 0


def prove() -> dict[str, bool]:
    """Every statement, and the negative controls that must come out False."""
    record = {
        "1: Gaussian MGF E[exp(tω)] = exp(t²/2)": gaussian_mgf_holds(),
        "2: induction step over coordinates (general d)": mgf_induction_step_holds(),
    }
    record |= {f"2: E[exp(ωᵀa)] = exp(‖a‖²/2), d={d} by integration": mgf_by_integration_holds(d) for d in (1, 2, 3)}
    record |= {f"3: exponent identity, M={m}, d=3": exponent_identity_holds(m) for m in (2, 3, 4, 5)}
    record["3: induction step over modalities (general M)"] = exponent_induction_step_holds()
    record |= {f"4: E[Π φ(x_m)] = exp(Σ_{{m<n}} x_m·x_n), M={m}, d=2": product_identity_holds(m) for m in (2, 3, 4, 5)}
    record["4: by direct integration, M=2, d=1"] = product_identity_by_integration_holds(2, 1)
    record["4: by direct integration, M=3, d=1"] = product_identity_by_integration_holds(3, 1)
    record["4: x = s / r^(1/4) puts 1/√r on every pair"] = scaling_holds()
    record["5: sum over tuples factorises, lengths (2, 3, 2)"] = tuple_sum_factorises()
    record["negative control: without the stabiliser −‖x‖²/2 the identity fails"] = not product_identity_holds(3, stabiliser=0)
    record["negative control: a product of pairwise terms in the exponent fails"] = not product_identity_holds(
        3, stabiliser=HALF, target=_pairwise_product
    )
    record["negative control: the stabiliser −‖x‖² fails"] = not product_identity_holds(3, stabiliser=sp.Integer(1))
    return record


if __name__ == "__main__":
    import time

    start = time.perf_counter()
    results = prove()
    width = max(map(len, results))
    for statement, holds in results.items():
        print(f"{statement:<{width}}  {'holds' if holds else 'FAILS'}")
    print(f"{sum(results.values())}/{len(results)} in {time.perf_counter() - start:.1f} s")
    raise SystemExit(0 if all(results.values()) else 1)
