"""What CogView's pivot log correction estimates: a proof, and the bias of the constant it uses.

Setting. A query may attend to ``m`` earlier tokens it cannot all afford; ``p`` of them are drawn
uniformly without replacement (the pivots) and stand in for all ``m``. With logits ``ℓ_j``::

    Ŝ = (m / p) · Σ_{j ∈ pivots} e^{ℓ_j}        estimates        S = Σ_{j=1..m} e^{ℓ_j}

Adding ``log(m / p)`` to each pivot logit before the softmax puts exactly ``Ŝ`` in its
denominator. The statements:

1. every token is a pivot with probability ``C(m−1, p−1) / C(m, p) = p / m`` (SymPy, general
   ``m`` and ``p``);
2. hence ``E[Ŝ] = (m/p)·(p/m)·S = S``: ``Ŝ`` is unbiased, and a factor ``f`` gives
   ``E = f·(p/m)·S``, unbiased only for ``f = m/p`` (negative control: ``m/(p+1)`` is reported
   biased);
3. the same, exhaustively: the average of ``Ŝ`` over all ``C(m, p)`` draws equals ``S`` for
   small ``m, p`` (exact rational arithmetic on symbols ``x_j = e^{ℓ_j}``).

CogView (:mod:`qattn.attention.cogview_sparse`) adds ONE constant, ``log(s // P)``, to every
pivot logit of every query, and its pivots are every text token plus image tokens drawn from the
WHOLE image: an image token before a query's window is a pivot with probability
``π = (P − T) / (s − T)`` (``T`` text tokens), a text token with probability 1. So for query ``i``
with ``T_i`` text and ``m_i`` image tokens before its window, with equal logits::

    E[estimate] / true = (T_i·c + m_i·c·π) / (T_i + m_i),    c = s // P

(:func:`expected_ratio`): text tokens are over-weighted ``c``-fold, image tokens by ``c·π``
(1 only if ``s // P = (s − T) / (P − T)``). Early queries, whose eligible tokens are mostly text,
are the most biased.

>>> inclusion_probability_is_p_over_m()
True
>>> unbiased(M / P), unbiased(M / (P + 1))
(True, False)
"""

from __future__ import annotations

import itertools
import math

import sympy as sp

__all__ = ["inclusion_probability_is_p_over_m", "unbiased", "exhaustive_mean_equals_total", "expected_ratio", "prove"]

M, P = sp.symbols("m p", positive=True, integer=True)


def inclusion_probability_is_p_over_m() -> bool:
    """Statement 1: ``C(m−1, p−1) / C(m, p)`` simplifies to ``p / m`` for symbolic ``m, p``."""
    ratio = sp.binomial(M - 1, P - 1) / sp.binomial(M, P)
    return sp.simplify(sp.combsimp(ratio) - P / M) == 0


def unbiased(factor: sp.Expr) -> bool:
    """Statement 2: ``E[factor · Σ_pivots x_j] = factor · (p/m) · S`` equals ``S`` for every ``S``."""
    total = sp.Symbol("S", positive=True)
    expectation = factor * (P / M) * total
    return sp.simplify(expectation - total) == 0


def exhaustive_mean_equals_total(m: int, p: int, factor: sp.Expr | None = None) -> bool:
    """Statement 3: the mean of ``factor · Σ_{j∈draw} x_j`` over all ``C(m, p)`` draws is ``Σ x_j`` (default factor ``m/p``)."""
    if not 1 <= p <= m:
        raise ValueError(f"need 1 ≤ p ≤ m, got m={m}, p={p}")
    factor = sp.Rational(m, p) if factor is None else sp.sympify(factor)
    xs = sp.symbols(f"x1:{m + 1}")
    draws = list(itertools.combinations(xs, p))
    mean = sp.Add(*(factor * sp.Add(*draw) for draw in draws)) / len(draws)
    return sp.expand(mean - sp.Add(*xs)) == 0


def expected_ratio(length: int, text: int, pivots: int, eligible_text: int, eligible_image: int) -> float:
    """``E[CogView's pivot mass] / true mass`` for a query with the given tokens before its window, equal logits.

    ``nan`` when nothing lies before the window (no pivot term at all).
    """
    if eligible_text + eligible_image == 0:
        return math.nan
    c = length // pivots
    pi = (pivots - text) / (length - text) if length > text else 0.0
    return (eligible_text * c + eligible_image * c * pi) / (eligible_text + eligible_image)


def prove() -> dict[str, bool]:
    """Every statement, and the negative controls that must come out False."""
    return {
        "inclusion probability p/m": inclusion_probability_is_p_over_m(),
        "factor m/p is unbiased": unbiased(M / P),
        "negative control: factor m/(p+1) is biased": not unbiased(M / (P + 1)),
        "negative control: no factor is biased": not unbiased(sp.Integer(1)),
        "exhaustive m=6, p=2": exhaustive_mean_equals_total(6, 2),
        "exhaustive m=7, p=3": exhaustive_mean_equals_total(7, 3),
        "negative control: exhaustive with factor m/(p+1) fails": not exhaustive_mean_equals_total(7, 3, sp.Rational(7, 4)),
    }
