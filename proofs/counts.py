"""Multiplication and softmax counts of the two attention mechanisms: symbolic, derived, measured.

Counter. A real multiplication is a product of two real numbers. An expression is first expanded
into a polynomial ``Σ_i c_i · m_i`` (monomials ``m_i``); evaluating it term by term costs::

    mults = Σ_i (deg m_i − 1) + #{i : c_i ∉ {−1, 0, 1}}

(a monomial of degree n needs n − 1 products; a coefficient ±1 is a sign, additions are free).
This is what a matmul does with a sum of products. SymPy's ``count_ops`` is NOT such a counter: it
counts additions, negations and numeric coefficients, and turns ``x·x`` into a power.

Per query-key pair and quaternion unit (:func:`per_pair_unit_counts`): the four Hamilton
components of ``q ⊗ k`` cost 16 multiplications, the shared score ``Re(q ⊗ k̄)`` 4. Per head with
``N`` queries and keys of ``d_h`` units (:func:`head_formulas`, symbols ``N``, ``d_h``)::

    score         = (per pair and unit) · N² · d_h       16 N² d_h  |  4 N² d_h
    softmax maps  = number of score maps                 4          |  1
    value         = 4 · N² · d_h  (one product per key, component and unit, for every query)
    core          = score + value                        20 N² d_h  |  8 N² d_h
    N×N maps held = score maps (+ partial products q_p k_nᵀ if built naively: 16 | 4)

:func:`explicit_head_counts` counts the fully written-out head for small ``N, d_h`` and must
equal the formulas; :func:`measure_core` measures qattn's implementations with
``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add, so multiplications =
FLOPs / 2) and counts softmax maps with a ``TorchDispatchMode``.

Examples
--------
>>> per_pair_unit_counts()
{'hamilton': 16, 'shared': 4}
>>> x, y = sp.symbols("x y")
>>> count_multiplications(x * x - 2 * x * y), sp.count_ops(x * x - 2 * x * y)
(3, 4)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import sympy as sp
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from proofs.symbolic import HAMILTON, SCORE_NAMES, ProductTable, ScoreForm, score_forms
from qattn.attention import (
    QuaternionMultiheadAttention,
    hamilton_attention,
    hamilton_scores,
    hamilton_scores_reference,
    shared_score_attention,
    shared_scores,
)

__all__ = [
    "MECHANISMS",
    "count_multiplications",
    "mechanism_forms",
    "per_pair_unit_counts",
    "HeadCounts",
    "head_formulas",
    "explicit_head_counts",
    "MeasuredCounts",
    "measure_core",
    "parameter_counts",
    "CountMismatch",
    "CountsRecord",
    "verify_counts",
]

MECHANISMS = ("hamilton", "shared")
N, D_H = sp.symbols("N d_h", positive=True, integer=True)


def count_multiplications(expr: sp.Expr) -> int:
    """Real multiplications to evaluate the expanded form of ``expr`` term by term (see module doc).

    >>> a, b, c = sp.symbols("a b c")
    >>> count_multiplications(a * b * c + a - b), count_multiplications(3 * a**2)
    (2, 2)
    """
    expanded = sp.expand(expr)
    if expanded == 0:
        return 0
    symbols = sorted(expanded.free_symbols, key=str)
    if not symbols:
        return 0
    total = 0
    for monom, coeff in sp.Poly(expanded, *symbols).terms():
        degree = sum(monom)
        if degree > 0:  # a constant costs nothing
            total += degree - 1 + (0 if abs(coeff) == 1 else 1)
    return total


def mechanism_forms(table: ProductTable = HAMILTON) -> dict[str, list[ScoreForm]]:
    """Score forms of each mechanism: the four ``S_m`` (``"hamilton"``) or the shared score."""
    forms = score_forms(table)
    return {"hamilton": [forms[n] for n in SCORE_NAMES[1:]], "shared": [forms["shared"]]}


def _pair_expressions(forms: list[ScoreForm], q, k) -> list[sp.Expr]:
    return [sp.Add(*[m * q[p] * k[n] for m, p, n in form.pairs()]) for form in forms]


def per_pair_unit_counts(table: ProductTable = HAMILTON, counter: Callable[[sp.Expr], int] = count_multiplications) -> dict[str, int]:
    """Multiplications per query-key pair and quaternion unit: all score maps of one mechanism.

    ``counter`` may be replaced (e.g. by ``sympy.count_ops``) to show how another count differs.
    """
    q = sp.symbols("q_r q_i q_j q_k", real=True)
    k = sp.symbols("k_r k_i k_j k_k", real=True)
    return {name: sum(int(counter(e)) for e in _pair_expressions(forms, q, k)) for name, forms in mechanism_forms(table).items()}


@dataclass(frozen=True)
class HeadCounts:
    """Per-head counts of one mechanism (integers, or SymPy expressions in ``N`` and ``d_h``)."""

    score_mults: object
    softmax_maps: object
    value_mults: object
    core_mults: object
    maps_held: object
    naive_partial_products: object

    def evaluate(self, n: int, d_h: int) -> dict[str, int]:
        """Plain integers at ``N = n``, ``d_h = d_h``."""
        return {k: int(sp.sympify(v).subs({N: n, D_H: d_h})) for k, v in asdict(self).items()}


def _value_mults_per_pair_unit() -> int:
    """Products per (query, key, unit): one per value component, ``A_c[i, j] · V_c[j, u]``."""
    a = sp.symbols("a_r a_i a_j a_k", real=True)
    v = sp.symbols("v_r v_i v_j v_k", real=True)
    return sum(count_multiplications(a[c] * v[c]) for c in range(4))


def head_formulas(table: ProductTable = HAMILTON) -> dict[str, HeadCounts]:
    """The per-head multiplication and softmax counts of both scores, derived symbolically in ``N`` and ``d_h``."""
    pair = per_pair_unit_counts(table)
    value = _value_mults_per_pair_unit()
    out = {}
    for name, forms in mechanism_forms(table).items():
        score = pair[name] * N**2 * D_H
        value_mults = value * N**2 * D_H
        out[name] = HeadCounts(
            score_mults=score,
            softmax_maps=sp.Integer(len(forms)),
            value_mults=value_mults,
            core_mults=sp.expand(score + value_mults),
            maps_held=sp.Integer(len(forms)),
            naive_partial_products=sp.Integer(len({(p, n) for f in forms for _, p, n in f.pairs()})),
        )
    return out


def explicit_head_counts(n: int, d_h: int, mechanism: str, table: ProductTable = HAMILTON) -> HeadCounts:
    """Count a fully written-out head: every score entry and every output entry as an expression.

    Queries, keys and values are ``n × 4 × d_h`` real symbols; the softmax outputs are opaque
    symbols ``A_m[i, j]`` (one map per score form). Each score entry is
    ``Σ_u Σ_{p,n′} M[p][n′] q[i,p,u] k[j,n′,u]``; each output ``O_c[i, u] = Σ_j A_c[i, j] V[j, c, u]``
    (``A_c`` the map of component ``c``, or the one shared map).
    """
    forms = mechanism_forms(table)[mechanism]
    q = [[[sp.Symbol(f"q_{i}_{p}_{u}") for u in range(d_h)] for p in range(4)] for i in range(n)]
    k = [[[sp.Symbol(f"k_{j}_{p}_{u}") for u in range(d_h)] for p in range(4)] for j in range(n)]
    v = [[[sp.Symbol(f"v_{j}_{p}_{u}") for u in range(d_h)] for p in range(4)] for j in range(n)]
    score = 0
    for form in forms:
        for i in range(n):
            for j in range(n):
                entry = sp.Add(*[m * q[i][p][u] * k[j][pn][u] for m, p, pn in form.pairs() for u in range(d_h)])
                score += count_multiplications(entry)
    maps = [[[sp.Symbol(f"A{m}_{i}_{j}") for j in range(n)] for i in range(n)] for m in range(len(forms))]
    value = 0
    for c in range(4):
        a = maps[c if len(forms) == 4 else 0]
        for i in range(n):
            for u in range(d_h):
                value += count_multiplications(sp.Add(*[a[i][j] * v[j][c][u] for j in range(n)]))
    partial = len({(p, pn) for f in forms for _, p, pn in f.pairs()})
    return HeadCounts(score, len(forms), value, score + value, len(forms), partial)


# ---------------------------------------------------------------------------------------------
# Measurements of qattn's implementations
# ---------------------------------------------------------------------------------------------
class _OpCounter(TorchDispatchMode):
    """Records softmax calls and the shapes of matmul outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.softmax_outputs: list[tuple[int, ...]] = []
        self.matmul_outputs: list[tuple[int, ...]] = []
        self.fused_queries: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet in (torch.ops.aten._softmax, torch.ops.aten.softmax):
            self.softmax_outputs.append(tuple(out.shape))
        elif packet in (torch.ops.aten.bmm, torch.ops.aten.mm, torch.ops.aten.matmul, torch.ops.aten.baddbmm):
            self.matmul_outputs.append(tuple(out.shape))
        elif "scaled_dot_product" in packet.__name__:
            self.fused_queries.append(tuple(args[0].shape))
        return out


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _flop_counter() -> FlopCounterMode:
    # torch counts the CUDA SDPA kernels but not the CPU flash kernel: give it the same formula.
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops})


def _mults(fn: Callable[[], object]) -> int:
    counter = _flop_counter()
    with counter:
        fn()
    flops = counter.get_total_flops()
    if flops % 2:
        raise ValueError(f"odd FLOP count {flops}: not 2 per multiply-add")
    return flops // 2


def _ops(fn: Callable[[], object]) -> _OpCounter:
    counter = _OpCounter()
    with counter:
        fn()
    return counter


@dataclass(frozen=True)
class MeasuredCounts:
    """Per-head counts measured on qattn's cores (totals divided by batch × heads).

    ``score_mults``: ``shared_scores`` / ``hamilton_scores``. ``core_mults``, ``value_mults``,
    ``softmax_maps``: the explicit path (``need_weights=True``). ``maps_held``: N×N maps out of
    the score matmul; ``reference_partial_products``: N×N maps out of the 16-matmul reference
    (``None`` for shared). ``fused_core_mults`` / ``fused_softmax_maps``: the default fused SDPA
    path (``need_weights=False``), counted with the SDPA formula torch uses on GPU.
    """

    mechanism: str
    n: int
    d_h: int
    score_mults: int
    value_mults: int
    core_mults: int
    softmax_maps: int
    softmax_calls: int
    maps_held: int
    reference_partial_products: int | None
    fused_core_mults: int
    fused_softmax_maps: int


def _nn_maps(shapes: list[tuple[int, ...]], n: int, heads: int) -> int:
    return sum(torch.Size(s).numel() // (n * n) for s in shapes if s[-2:] == (n, n)) // heads


def measure_core(mechanism: str, n: int, d_h: int, batch: int = 2, heads: int = 3, seed: int = 0) -> MeasuredCounts:
    """Measure one mechanism's core at sequence length ``n`` and ``d_h`` units per head (float64)."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, 4, d_h, generator=gen, dtype=torch.float64) for _ in range(3))
    bh = batch * heads
    scores_fn = shared_scores if mechanism == "shared" else hamilton_scores
    core_fn = shared_score_attention if mechanism == "shared" else hamilton_attention
    score = _mults(lambda: scores_fn(q, k))
    core = _mults(lambda: core_fn(q, k, v, need_weights=True))
    fused = _mults(lambda: core_fn(q, k, v, need_weights=False))
    explicit_ops = _ops(lambda: core_fn(q, k, v, need_weights=True))
    score_ops = _ops(lambda: scores_fn(q, k))
    fused_ops = _ops(lambda: core_fn(q, k, v, need_weights=False))
    reference = None
    if mechanism == "hamilton":
        reference = _nn_maps(_ops(lambda: hamilton_scores_reference(q, k)).matmul_outputs, n, bh)
    for total in (score, core, fused):
        if total % bh:
            raise ValueError(f"count {total} is not a multiple of batch × heads = {bh}")
    return MeasuredCounts(
        mechanism=mechanism,
        n=n,
        d_h=d_h,
        score_mults=score // bh,
        value_mults=(core - score) // bh,
        core_mults=core // bh,
        softmax_maps=sum(torch.Size(s).numel() for s in explicit_ops.softmax_outputs) // (n * n * bh),
        softmax_calls=len(explicit_ops.softmax_outputs),
        maps_held=_nn_maps(score_ops.matmul_outputs, n, bh),
        reference_partial_products=reference,
        fused_core_mults=fused // bh,
        fused_softmax_maps=sum(s[0] * s[1] for s in fused_ops.fused_queries) // bh,
    )


def parameter_counts(embed_dim: int = 64, num_heads: int = 4, seed: int = 0) -> dict[str, int]:
    """Parameters of ``QuaternionMultiheadAttention`` with each score (built under the same seed).

    Also checks that the two modules' initial parameters are identical (raises otherwise).
    """
    modules = {}
    for score in MECHANISMS:
        module = QuaternionMultiheadAttention(embed_dim, num_heads, score=score)
        gen = torch.Generator().manual_seed(seed)
        for proj in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
            proj.reset_parameters(generator=gen)
        modules[score] = module
    a, b = (modules[s].state_dict() for s in MECHANISMS)
    if a.keys() != b.keys() or any(not torch.equal(a[key], b[key]) for key in a):
        raise AssertionError("the two score modes do not have identical parameters under the same seed")
    return {score: sum(p.numel() for p in m.parameters()) for score, m in modules.items()}


# ---------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------
_MEASURED_KEYS = ("score_mults", "value_mults", "core_mults", "softmax_maps", "maps_held")


class CountMismatch(AssertionError):
    """Raised by :func:`verify_counts` when a count disagrees with its formula."""


@dataclass(frozen=True)
class CountsRecord:
    """What :func:`verify_counts` established.

    ``per_pair_unit``: the correct counter; ``count_ops_per_pair_unit``: SymPy's ``count_ops`` on
    the same expressions (for contrast); ``formulas``: per-head formulas as strings; ``explicit``
    and ``measured``: one row per size and mechanism with the formula's values and whether they
    agree; ``parameters``: parameter counts of the two score modes; ``problems``: disagreements.
    """

    per_pair_unit: dict[str, int]
    count_ops_per_pair_unit: dict[str, int]
    formulas: dict[str, dict[str, str]]
    explicit: list[dict]
    measured: list[dict]
    parameters: dict[str, int]
    problems: tuple[str, ...]

    @property
    def holds(self) -> bool:
        return not self.problems


def verify_counts(
    explicit_sizes: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (2, 3), (3, 2)),
    measured_sizes: tuple[tuple[int, int], ...] = ((8, 1), (16, 4), (37, 3), (64, 16)),
    table: ProductTable = HAMILTON,
    strict: bool = True,
) -> CountsRecord:
    """Derive the formulas, count explicit heads and measure qattn; compare everything exactly.

    Measured rows compare score, value and core multiplications, softmax maps and N×N maps held
    (explicit path) with the formulas; the 16-matmul reference must hold the 16 naive partial
    products; the fused path must have the formula's softmax maps and, for the shared score, its
    core count (the fused Hamilton path aggregates the whole value per map: score + 4 × value).
    """
    formulas = head_formulas(table)
    problems: list[str] = []
    explicit_rows = []
    for n, d_h in explicit_sizes:
        for mech in MECHANISMS:
            got = asdict(explicit_head_counts(n, d_h, mech, table))
            want = formulas[mech].evaluate(n, d_h)
            ok = got == want
            if not ok:
                problems.append(f"explicit {mech} head at N={n}, d_h={d_h}: {got} != formula {want}")
            explicit_rows.append({"mechanism": mech, "n": n, "d_h": d_h, "counts": got, "formula": want, "agrees": ok})
    measured_rows = []
    for n, d_h in measured_sizes:
        for mech in MECHANISMS:
            got = asdict(measure_core(mech, n, d_h))
            want = formulas[mech].evaluate(n, d_h)
            bad = [k for k in _MEASURED_KEYS if got[k] != want[k]]
            if mech == "hamilton" and got["reference_partial_products"] != want["naive_partial_products"]:
                bad.append("reference_partial_products")
            fused_core = want["core_mults"] if mech == "shared" else want["score_mults"] + 4 * want["value_mults"]
            if got["fused_core_mults"] != fused_core:
                bad.append("fused_core_mults")
            if got["fused_softmax_maps"] != want["softmax_maps"]:
                bad.append("fused_softmax_maps")
            for key in bad:
                problems.append(f"measured {mech} at N={n}, d_h={d_h}: {key} = {got[key]}, formula {want.get(key, fused_core)}")
            measured_rows.append({**got, "formula": want, "agrees": not bad})
    params = parameter_counts()
    if len(set(params.values())) != 1:
        problems.append(f"parameter counts differ between the score modes: {params}")
    per_pair = per_pair_unit_counts(table)
    if per_pair != {"hamilton": 16, "shared": 4}:
        problems.append(f"per pair and unit: {per_pair}, expected hamilton 16, shared 4")
    record = CountsRecord(
        per_pair_unit=per_pair,
        count_ops_per_pair_unit={k: int(v) for k, v in per_pair_unit_counts(table, counter=sp.count_ops).items()},
        formulas={m: {k: str(v) for k, v in asdict(h).items()} for m, h in formulas.items()},
        explicit=explicit_rows,
        measured=measured_rows,
        parameters=params,
        problems=tuple(problems),
    )
    if strict and problems:
        raise CountMismatch("counts disagree: " + " | ".join(problems))
    return record
