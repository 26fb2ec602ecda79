"""The attention registry, and the core contract checked for EVERY registered mechanism.

Contract tests are parametrised over ``mechanism_names()``: a new mechanism registered in
``qattn/attention/registry.py`` is tested here without touching this file. A contract test of a
capability a mechanism does not declare is skipped for it (and the declared ones are checked by
``test_declared_capabilities_are_honoured``).
"""

import dataclasses
import math
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import qattn
from qattn.attention import QuaternionMultiheadAttention, registry
from qattn.attention.registry import MECHANISMS, Mechanism, get_mechanism, mechanism_names

NAMES = mechanism_names()
CAPABILITIES = ("returns_weights", "bool_mask", "float_mask", "per_query_mask", "causal", "cross_attention")


def require(spec: Mechanism, *capabilities: str) -> None:
    missing = [c for c in capabilities if not getattr(spec, c)]
    if missing:
        pytest.skip(f"{spec.name} does not declare {missing}")


def call(spec: Mechanism, q, k, v, **kwargs):
    """``spec.core(q, k, v, **kwargs)``, with ``is_causal=True`` unless given for a causal-only mechanism."""
    if spec.causal_only:
        kwargs.setdefault("is_causal", True)
    return spec.core(q, k, v, **kwargs)


def qkv(b, h, n, s, d=2, d_v=None, dtype=torch.float64, seed=0, requires_grad=False):
    """Random ``q (B, H, N, 4, d)``, ``k (B, H, S, 4, d)``, ``v (B, H, S, 4, d_v)``."""
    g = torch.Generator().manual_seed(seed)
    shapes = ((b, h, n, 4, d), (b, h, s, 4, d), (b, h, s, 4, d if d_v is None else d_v))
    return tuple(torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad) for shape in shapes)


def additive(mask: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """Bool mask (True = NOT allowed) → float mask with −inf at the same places."""
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(mask, -math.inf)


def per_map(spec: Mechanism, x: torch.Tensor) -> torch.Tensor:
    """A ``(B, H, N, S)``-shaped tensor aligned with the weights ``spec.weights_shape(...)``."""
    return x if spec.maps_per_head == 1 else x.unsqueeze(-3)


def fit_mask(spec: Mechanism, mask: torch.Tensor) -> torch.Tensor:
    """The mask as ``spec`` takes it: unchanged, or, for a mechanism with key masks only
    (``per_query_mask`` False), with every query's row equal to the first one's."""
    return mask if spec.per_query_mask else mask[..., :1, :].expand_as(mask).clone()


def blocked_everywhere(mask: torch.Tensor, b, h, n, s) -> torch.Tensor:
    """``(B, H, N, S)`` bool, True where a bool or float mask forbids the pair."""
    forbidden = torch.isneginf(mask) if mask.is_floating_point() else mask
    return forbidden.broadcast_to(b, h, n, s)


# -- the registry -----------------------------------------------------------------------------


def test_names_are_the_registered_specs_in_order():
    assert NAMES == tuple(spec.name for spec in MECHANISMS)
    assert len(set(NAMES)) == len(NAMES) and len(NAMES) >= 2
    assert NAMES[:2] == ("shared", "hamilton")  # display order of every table built from it
    for name in NAMES:
        spec = get_mechanism(name)
        assert isinstance(spec, Mechanism) and spec.name == name and name.isidentifier()


@pytest.mark.parametrize("name", NAMES)
def test_each_spec_is_declared_by_the_module_of_its_core(name):
    spec = get_mechanism(name)
    assert sys.modules[spec.core.__module__].MECHANISM is spec


@pytest.mark.parametrize("bad", ["real", "", "Shared", "core_shared", None, 1])
def test_unknown_name_error_names_it_and_lists_the_registered_ones(bad):
    with pytest.raises(ValueError, match="unknown attention mechanism") as info:
        get_mechanism(bad)
    message = str(info.value)
    assert repr(bad) in message and str(NAMES) in message


def test_public_exports():
    assert qattn.get_mechanism is registry.get_mechanism is qattn.attention.get_mechanism
    assert qattn.mechanism_names is registry.mechanism_names is qattn.attention.mechanism_names
    assert qattn.Mechanism is registry.Mechanism is qattn.attention.Mechanism
    assert {"Mechanism", "get_mechanism", "mechanism_names"} <= set(qattn.__all__) & set(qattn.attention.__all__)


def _spec(**changes):
    fields = dict(
        name="demo",
        core=qattn.shared_score_attention,
        summary="A demo.",
        maps_per_head=1,
        returns_weights=True,
        bool_mask=True,
        float_mask=True,
        per_query_mask=True,
        causal=True,
        causal_only=False,
        cross_attention=True,
        exact=True,
        options={},
        draw_buffers=None,
    )
    return Mechanism(**{**fields, **changes})


@pytest.mark.parametrize(
    "changes, error, pattern",
    [
        (dict(maps_per_head=2), ValueError, r"maps_per_head of mechanism 'demo' must be one of \(1, 4\), got 2"),
        (dict(maps_per_head=True), ValueError, r"maps_per_head .* must be one of \(1, 4\)"),
        (dict(name="core-demo"), ValueError, "name must be a non-empty Python identifier"),
        (dict(name=""), ValueError, "name must be a non-empty Python identifier"),
        (dict(summary="two\nlines"), ValueError, "summary of mechanism 'demo' must be one non-empty line"),
        (dict(core="shared"), TypeError, "core of mechanism 'demo' must be callable"),
        (dict(causal=1), TypeError, "causal of mechanism 'demo' must be a bool"),
        (dict(exact="yes"), TypeError, "exact of mechanism 'demo' must be a bool"),
        (dict(options=["n_clusters"]), TypeError, "options of mechanism 'demo' must be a mapping"),
        (dict(options={"attn_mask": None}), ValueError, "option 'attn_mask' of mechanism 'demo' must be a keyword name other than"),
        (dict(options={"two words": 1}), ValueError, "option 'two words'"),
        (dict(draw_buffers="planes"), TypeError, "draw_buffers of mechanism 'demo' must be callable or None"),
    ],
)
def test_mechanism_spec_validation(changes, error, pattern):
    with pytest.raises(error, match=pattern):
        _spec(**changes)


def test_options_resolve_to_defaults_and_unknown_ones_are_named():
    spec = _spec(options={"n_clusters": 100, "top_k": 32})
    assert spec.resolve_options() == {"n_clusters": 100, "top_k": 32}
    assert spec.resolve_options({"n_clusters": 5}) == {"n_clusters": 5, "top_k": 32}
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['bits'\]; its options: \('n_clusters', 'top_k'\)"):
        spec.resolve_options({"bits": 3})
    with pytest.raises(ValueError, match="its options: none"):
        _spec().resolve_options({"n_clusters": 5})
    with pytest.raises(TypeError):
        spec.options["top_k"] = 1  # type: ignore[index]  # read-only


def test_mechanism_names_filter_exact_ones():
    exact = mechanism_names(exact=True)
    assert exact[:2] == ("shared", "hamilton") and all(get_mechanism(n).exact for n in exact)
    approximate = mechanism_names(exact=False)
    assert set(exact) | set(approximate) == set(NAMES) and not set(exact) & set(approximate)
    assert {"clustered", "improved_clustered"} <= set(approximate)
    with pytest.raises(TypeError, match="exact must be True, False or None"):
        mechanism_names(exact="yes")  # type: ignore[arg-type]


def test_mechanism_spec_is_frozen_keyword_only_and_complete():
    spec = _spec()
    assert spec.capabilities() == dict.fromkeys(CAPABILITIES, True)
    assert spec.weights_shape(2, 3, 5, 7) == (2, 3, 5, 7)
    assert _spec(maps_per_head=4).weights_shape(2, 3, 5, 7) == (2, 3, 4, 5, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Mechanism("demo", qattn.shared_score_attention, "A demo.", 1, True, True, True, True, True, True, True, {}, None)  # type: ignore[misc]
    with pytest.raises(TypeError, match="causal"):
        Mechanism(
            name="demo",
            core=qattn.shared_score_attention,
            summary="A demo.",
            maps_per_head=1,  # type: ignore[call-arg]
            returns_weights=True,
            bool_mask=True,
            float_mask=True,
            per_query_mask=True,
            cross_attention=True,
            exact=True,
            options={},
            draw_buffers=None,
        )


# -- declared capabilities are honoured -------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_declared_capabilities_are_honoured(name):
    spec = get_mechanism(name)
    b, h, n, s = 2, 2, 4, 5 if spec.cross_attention else 4
    q, k, v = qkv(b, h, n, s, seed=1)
    plain, none = call(spec, q, k, v)
    assert none is None and plain.shape == (b, h, n, 4, 2)
    mask = torch.zeros(n, s, dtype=torch.bool)
    mask[:, 1] = True
    if spec.returns_weights:
        out, weights = call(spec, q, k, v, need_weights=True)
        assert weights is not None and weights.shape == spec.weights_shape(b, h, n, s)
        assert torch.allclose(out, plain, atol=1e-12)
    if spec.cross_attention:
        assert s != n and plain.shape[2] == n
    if spec.bool_mask:
        masked, _ = call(spec, q, k, v, attn_mask=mask)
        assert not torch.allclose(masked, plain)  # the mask is applied, not ignored
    if spec.float_mask:
        biased, _ = call(spec, q, k, v, attn_mask=fit_mask(spec, torch.randn(n, s, dtype=torch.float64)))
        assert not torch.allclose(biased, plain)
    if spec.causal and not spec.causal_only:
        causal, _ = call(spec, q, k, v, is_causal=True)
        assert not torch.allclose(causal, plain)
        assert torch.allclose(causal[:, :, -1], call(spec, q[:, :, -1:], k[:, :, :n], v[:, :, :n])[0][:, :, 0], atol=1e-12)
    if spec.causal_only:  # the first query sees only itself, the last sees more than itself
        assert torch.allclose(plain[:, :, 0], v[:, :, 0], atol=1e-12) and not torch.allclose(plain[:, :, -1], v[:, :, -1])
        with pytest.raises(ValueError, match=f"{name} is causal by construction.*is_causal=True"):
            spec.core(q, k, v, is_causal=False)


# -- the core contract, for every registered mechanism ----------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n, s", [(5, 5), (5, 7), (6, 3)])
def test_output_and_weights_shapes(name, n, s):
    spec = get_mechanism(name)
    if n != s:
        require(spec, "cross_attention")
    b, h, d, d_v = 2, 3, 2, 3
    q, k, v = qkv(b, h, n, s, d, d_v)
    out, none = call(spec, q, k, v)
    assert out.shape == (b, h, n, 4, d_v) and none is None
    if spec.returns_weights:
        out_w, weights = call(spec, q, k, v, need_weights=True)
        assert out_w.shape == out.shape and weights.shape == spec.weights_shape(b, h, n, s)
        assert torch.allclose(out_w, out, atol=1e-12)  # need_weights changes the path, not the result


@st.composite
def contract_case(draw, spec):
    b, h = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(1, 6))
    s = draw(st.integers(1, 6)) if spec.cross_attention else n
    d, d_v = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shape = draw(st.sampled_from([(n, s), (h, n, s), (b, 1, n, s), (1, h, n, s), (b, h, n, s), (b, 1, 1, s)]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    mask = fit_mask(spec, torch.rand(shape, generator=g) < draw(st.sampled_from([0.0, 0.3, 0.7])))
    return (b, h, n, s, d, d_v), mask, draw(st.integers(0, 2**16))


@pytest.mark.parametrize("name", NAMES)
def test_property_shapes_polarity_and_normalisation(name):
    """Hypothesis over shapes and mask shapes: bool ≡ float −inf, weights 0 where masked, rows sum to 1 (or 0 if dead)."""
    spec = get_mechanism(name)
    require(spec, "bool_mask", "float_mask", "returns_weights")

    @given(contract_case(spec))
    def check(case):
        (b, h, n, s, d, d_v), mask, seed = case
        q, k, v = qkv(b, h, n, s, d, d_v, seed=seed)
        out_b, w_b = call(spec, q, k, v, attn_mask=mask, need_weights=True)
        out_f, w_f = call(spec, q, k, v, attn_mask=additive(mask), need_weights=True)
        fused, _ = call(spec, q, k, v, attn_mask=mask)
        assert out_b.shape == (b, h, n, 4, d_v) and w_b.shape == spec.weights_shape(b, h, n, s)
        assert torch.isfinite(out_b).all() and torch.isfinite(w_b).all() and torch.isfinite(fused).all()
        assert torch.allclose(out_b, out_f, atol=1e-12) and torch.allclose(w_b, w_f, atol=1e-12)
        assert torch.allclose(fused, out_b, atol=1e-10)
        blocked = per_map(spec, blocked_everywhere(mask, b, h, n, s))
        assert (w_b[blocked.expand_as(w_b)] == 0).all()  # True = NOT allowed
        dead = blocked.all(-1)
        sums = w_b.sum(-1)
        assert torch.allclose(sums, (~dead).to(sums.dtype).expand_as(sums), atol=1e-12)

    check()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("need_weights", [False, True])
def test_bool_mask_equals_float_mask_with_neg_inf(name, need_weights):
    spec = get_mechanism(name)
    require(spec, "bool_mask", "float_mask", "cross_attention")
    if need_weights:
        require(spec, "returns_weights")
    b, h, n, s = 2, 3, 4, 6
    q, k, v = qkv(b, h, n, s, seed=2)
    mask = fit_mask(spec, torch.rand(b, 1, n, s, generator=torch.Generator().manual_seed(3)) < 0.5)
    mask[..., 0] = False  # every query keeps one key
    out_b, w_b = call(spec, q, k, v, attn_mask=mask, need_weights=need_weights)
    out_f, w_f = call(spec, q, k, v, attn_mask=additive(mask), need_weights=need_weights)
    assert torch.allclose(out_b, out_f, atol=1e-12)
    inverted, _ = call(spec, q, k, v, attn_mask=~mask, need_weights=need_weights)
    assert not torch.allclose(out_b, inverted)  # negative control: polarity matters
    if need_weights:
        assert torch.allclose(w_b, w_f, atol=1e-12)
        assert (w_b[per_map(spec, mask.expand(b, h, n, s)).expand_as(w_b)] == 0).all()
        assert (w_b[per_map(spec, ~mask.expand(b, h, n, s)).expand_as(w_b)] > 0).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_query_row_gives_zeros_not_nan(name, need_weights, kind):
    spec = get_mechanism(name)
    require(spec, f"{kind}_mask", "per_query_mask")
    if need_weights:
        require(spec, "returns_weights")
    n, s = 4, 5 if spec.cross_attention else 4
    q, k, v = qkv(2, 2, n, s, seed=4, requires_grad=True)
    mask = torch.zeros(n, s, dtype=torch.bool)
    mask[1] = True  # query 1 may see nothing
    mask[2, :2] = True
    out, weights = call(spec, q, k, v, attn_mask=mask if kind == "bool" else additive(mask), need_weights=need_weights)
    assert not torch.isnan(out).any()
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    assert (out[:, :, [0, 2, 3]].abs().sum((-1, -2)) > 0).all()
    if need_weights:
        assert not torch.isnan(weights).any() and (weights[..., 1, :] == 0).all()
        assert torch.allclose(weights[..., [0, 2, 3], :].sum(-1), torch.ones(()).double())
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_batch_element_gives_zeros_not_nan(name, need_weights, kind):
    """A key mask that hides every key of one batch element: zeros there, finite gradients."""
    spec = get_mechanism(name)
    require(spec, f"{kind}_mask")
    if need_weights:
        require(spec, "returns_weights")
    n, s = 4, 5 if spec.cross_attention else 4
    q, k, v = qkv(2, 2, n, s, seed=4, requires_grad=True)
    mask = torch.zeros(2, 1, 1, s, dtype=torch.bool)
    mask[0] = True  # batch element 0 may see nothing
    mask[1, ..., :2] = True
    out, weights = call(spec, q, k, v, attn_mask=mask if kind == "bool" else additive(mask), need_weights=need_weights)
    assert not torch.isnan(out).any() and torch.equal(out[0], torch.zeros_like(out[0]))
    assert (out[1].abs().sum((-1, -2)) > 0).all()
    if need_weights:
        assert (weights[0] == 0).all() and torch.allclose(weights[1].sum(-1), torch.ones(()).double())
        assert (weights[1, ..., :2] == 0).all()
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_mechanisms_without_masks_refuse_every_mask_by_name(name):
    spec = get_mechanism(name)
    if spec.bool_mask or spec.float_mask:
        pytest.skip(f"{name} takes masks")
    q, k, v = qkv(1, 2, 4, 4, seed=15)
    for mask in (torch.zeros(4, 4, dtype=torch.bool), torch.zeros(1, 4), torch.zeros(4, 4)):
        with pytest.raises(ValueError, match=f"{name} takes no attn_mask.*{tuple(mask.shape)}".replace("(", r"\(").replace(")", r"\)")):
            call(spec, q, k, v, attn_mask=mask)


@pytest.mark.parametrize("name", NAMES)
def test_key_mask_only_mechanisms_refuse_per_query_masks_by_name(name):
    spec = get_mechanism(name)
    if spec.per_query_mask:
        pytest.skip(f"{name} takes per-query masks")
    require(spec, "bool_mask")
    q, k, v = qkv(1, 2, 4, 4, seed=15)
    per_query = torch.eye(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="key masks only") as info:
        call(spec, q, k, v, attn_mask=per_query)
    assert "(4, 4)" in str(info.value)
    # the same key mask repeated on every query row is accepted, and equals the (1, S) form
    keys = torch.tensor([False, True, False, False])
    rows, _ = call(spec, q, k, v, attn_mask=keys.expand(4, 4))
    assert torch.allclose(rows, call(spec, q, k, v, attn_mask=keys[None])[0], atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("need_weights", [False, True])
def test_gradcheck_float64(name, mask_kind, need_weights):
    spec = get_mechanism(name)
    if mask_kind != "none":
        require(spec, f"{mask_kind}_mask")
    if need_weights:
        require(spec, "returns_weights")
    n, s = 3, 4 if spec.cross_attention else 3
    q, k, v = qkv(1, 2, n, s, seed=5, requires_grad=True)
    mask = None
    if mask_kind == "bool":
        mask = torch.tensor([[False, True, False, True], [False, False, False, False], [True, False, True, False]])[:, :s]
    elif mask_kind == "float":
        mask = torch.randn(n, s, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    mask = None if mask is None else fit_mask(spec, mask)

    def f(q, k, v):
        out, weights = call(spec, q, k, v, attn_mask=mask, need_weights=need_weights)
        return (out, weights) if need_weights else out

    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("need_weights", [False, True])
def test_float32_and_float64_keep_dtype_and_agree(name, need_weights):
    spec = get_mechanism(name)
    require(spec, "bool_mask")
    if need_weights:
        require(spec, "returns_weights")
    n, s = 6, 5 if spec.cross_attention else 6
    q, k, v = qkv(2, 2, n, s, d=3, seed=7)
    mask = fit_mask(spec, torch.rand(n, s, generator=torch.Generator().manual_seed(8)) < 0.3)
    results = {}
    for dtype in (torch.float32, torch.float64):
        out, weights = call(spec, q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=mask, need_weights=need_weights)
        assert out.dtype == dtype and (weights is None or weights.dtype == dtype)
        results[dtype] = (out, weights)
    (out32, w32), (out64, w64) = results[torch.float32], results[torch.float64]
    assert torch.allclose(out32.double(), out64, atol=1e-5, rtol=1e-5)
    if need_weights:
        assert torch.allclose(w32.double(), w64, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n, s", [(5, 5), (4, 7), (7, 4)])
@pytest.mark.parametrize("need_weights", [False, True])
def test_causal_equals_explicit_lower_triangular_bool_mask(name, n, s, need_weights):
    spec = get_mechanism(name)
    require(spec, "causal", "bool_mask")
    if n != s:
        require(spec, "cross_attention")
    if need_weights:
        require(spec, "returns_weights")
    q, k, v = qkv(2, 2, n, s, seed=9)
    upper = torch.ones(n, s, dtype=torch.bool).triu(1)  # query i sees keys j ≤ i (top-left aligned)
    causal, w_causal = call(spec, q, k, v, is_causal=True, need_weights=need_weights)
    explicit, w_explicit = call(spec, q, k, v, attn_mask=upper, need_weights=need_weights)
    assert torch.allclose(causal, explicit, atol=1e-12)
    extra = torch.rand(2, 1, n, s, generator=torch.Generator().manual_seed(10)) < 0.3
    both, w_both = call(spec, q, k, v, attn_mask=extra, is_causal=True, need_weights=need_weights)
    union, w_union = call(spec, q, k, v, attn_mask=extra | upper, need_weights=need_weights)
    assert torch.allclose(both, union, atol=1e-12) and not torch.isnan(both).any()
    if need_weights:
        assert torch.allclose(w_causal, w_explicit, atol=1e-12) and torch.allclose(w_both, w_union, atol=1e-12)
        assert (w_causal[per_map(spec, upper.expand(2, 2, n, s)).expand_as(w_causal)] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_weights_sum_to_one_on_unmasked_rows(name):
    spec = get_mechanism(name)
    require(spec, "returns_weights", "float_mask")
    n, s = 5, 6 if spec.cross_attention else 5
    q, k, v = qkv(2, 3, n, s, seed=11)
    for mask in (None, fit_mask(spec, torch.randn(2, 3, n, s, generator=torch.Generator().manual_seed(12), dtype=torch.float64))):
        _, weights = call(spec, q, k, v, attn_mask=mask, need_weights=True)
        assert (weights >= 0).all()
        assert torch.allclose(weights.sum(-1), torch.ones(()).double(), atol=1e-12)


# -- through QuaternionMultiheadAttention ------------------------------------------------------


def make_layer(name, e=16, h=2, seed=0):
    torch.manual_seed(seed)
    layer = QuaternionMultiheadAttention(e, h, score=name, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for p in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
            p.bias.normal_()
    return layer.eval()


def per_head_mask(b, h, n, s, seed, as_float, rows_equal=False):
    """``(B·H, N, S)`` mask, different for every (batch, head), each row keeping a key
    (with ``rows_equal``: one key mask per (batch, head), repeated on every query row)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        mask = torch.rand(b * h, 1 if rows_equal else n, s, generator=g) < 0.5
        mask = mask.expand(b * h, n, s).clone()
        mask[torch.arange(b * h), :, torch.arange(b * h) % s] = False
        if len({tuple(m.flatten().tolist()) for m in mask}) == b * h:  # all (batch, head) slices differ
            break
    return additive(mask) if as_float else mask


def one_by_one(layer, q, k, v, mask_for_batch, need_weights=True):
    """Run each batch element alone with its own ``(H, N, S)`` mask slice; stack the results."""
    outs, weights = [], []
    for i in range(q.shape[0]):
        out, w = layer(
            q[i : i + 1], k[i : i + 1], v[i : i + 1], attn_mask=mask_for_batch(i), need_weights=need_weights, average_attn_weights=False
        )
        outs.append(out)
        weights.append(w)
    return torch.cat(outs), (torch.cat(weights) if need_weights else None)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("as_float", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_module_per_head_attn_mask_is_batch_major(name, as_float, need_weights):
    """Fixed case, B = 3 and H = 2: the ``(B·H, N, S)`` mask is read batch-major, as torch does."""
    spec = get_mechanism(name)
    require(spec, "float_mask" if as_float else "bool_mask")
    if need_weights:
        require(spec, "returns_weights")
    b, h, n, s, e = 3, 2, 4, 5 if spec.cross_attention else 4, 16
    layer = make_layer(name, e, h)
    g = torch.Generator().manual_seed(13)
    q = torch.randn(b, n, e, generator=g, dtype=torch.float64)
    k, v = (torch.randn(b, s, e, generator=g, dtype=torch.float64) for _ in range(2))
    mask = per_head_mask(b, h, n, s, seed=14, as_float=as_float, rows_equal=not spec.per_query_mask)
    out, weights = layer(q, k, v, attn_mask=mask, need_weights=need_weights, average_attn_weights=False)
    expected, expected_w = one_by_one(layer, q, k, v, lambda i: mask[i * h : (i + 1) * h], need_weights)
    assert torch.allclose(out, expected, atol=1e-12)
    if need_weights:
        assert weights.shape == spec.weights_shape(b, h, n, s)
        assert torch.allclose(weights, expected_w, atol=1e-12)
    # Negative control: reading the same mask head-major, as (H·B, N, S), gives another result,
    # so this test fails if the module used the wrong reshape.
    wrong, _ = one_by_one(layer, q, k, v, lambda i: mask.view(h, b, n, s)[:, i], need_weights)
    assert not torch.allclose(out, wrong, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_module_per_head_mask_property(name):
    spec = get_mechanism(name)
    require(spec, "bool_mask")

    @given(b=st.integers(1, 3), h=st.sampled_from([1, 2, 4]), n=st.integers(1, 4), s=st.integers(1, 4), seed=st.integers(0, 999))
    def check(b, h, n, s, seed):
        if not spec.cross_attention:
            s = n
        layer = make_layer(name, 4 * h, h, seed=seed)
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(b, n, 4 * h, generator=g, dtype=torch.float64)
        k, v = (torch.randn(b, s, 4 * h, generator=g, dtype=torch.float64) for _ in range(2))
        mask = fit_mask(spec, torch.rand(b * h, n, s, generator=g) < 0.4)
        out, w = layer(q, k, v, attn_mask=mask, need_weights=spec.returns_weights, average_attn_weights=False)
        expected, expected_w = one_by_one(layer, q, k, v, lambda i: mask[i * h : (i + 1) * h], spec.returns_weights)
        assert torch.isfinite(out).all() and torch.allclose(out, expected, atol=1e-12)
        if spec.returns_weights:
            assert torch.allclose(w, expected_w, atol=1e-12)

    check()


@pytest.mark.parametrize("name", NAMES)
def test_module_calls_the_registered_core(name):
    spec = get_mechanism(name)
    layer = make_layer(name, 24, 3)
    assert layer.mechanism is spec and f"score={name!r}" in repr(layer)
    x, y = torch.randn(2, 5, 24, dtype=torch.float64), torch.randn(2, 6 if spec.cross_attention else 5, 24, dtype=torch.float64)
    out, w = layer(x, y, y, average_attn_weights=False, need_weights=spec.returns_weights, is_causal=spec.causal_only)
    q, k, v = (layer.split_heads(p(t)) for p, t in ((layer.q_proj, x), (layer.k_proj, y), (layer.v_proj, y)))
    ref, ref_w = call(spec, q, k, v, need_weights=spec.returns_weights)
    assert torch.allclose(out, layer.out_proj(layer.merge_heads(ref)), atol=1e-12)
    if spec.returns_weights:
        assert w.shape == spec.weights_shape(2, 3, 5, y.shape[1]) and torch.allclose(w, ref_w, atol=1e-12)


def test_module_bad_score_lists_the_registered_names():
    with pytest.raises(ValueError, match="score must be one of") as info:
        QuaternionMultiheadAttention(16, 2, score="real")
    assert str(NAMES) in str(info.value) and "'real'" in str(info.value)


# -- the book side takes its names from the registry --------------------------------------------


def test_book_variants_come_from_the_registry():
    from qattn.book.experiments import performance
    from qattn.book.models import blocks
    from qattn.book.models.speech import SpeechModelConfig

    exact = mechanism_names(exact=True)
    assert blocks.QUATERNION_VARIANTS == exact and blocks.VARIANTS[: len(exact)] == exact
    assert set(exact) <= set(performance.MODULE_VARIANTS)
    assert {f"core_{name}" for name in exact} <= set(performance.CORE_VARIANTS)
    # approximations (clustered attention) have their own chapter, not transformer variants
    assert not set(mechanism_names(exact=False)) & set(blocks.VARIANTS + performance.MODULE_VARIANTS)
    for name in NAMES:
        assert SpeechModelConfig(score=name).score == name
    with pytest.raises(ValueError, match=r"score must be one of \(") as info:
        SpeechModelConfig(score="real")
    assert str(NAMES) in str(info.value)
    with pytest.raises(ValueError, match="variant must be one of") as info:
        blocks.make_attention("complex", 16, 2, 0.0)
    assert str(exact) in str(info.value)


def test_benchmark_variant_names_and_order_are_unchanged():
    """Results files and notebooks use these names; the registry must reproduce them in order."""
    from qattn.book.experiments import performance

    assert performance.MODULE_VARIANTS[:6] == ("torch_mha", "shared", "shared_release", "hamilton", "hamilton_maps", "hamilton_reference")
    assert performance.CORE_VARIANTS[:4] == ("core_shared", "core_hamilton", "core_hamilton_maps", "core_hamilton_reference")


@pytest.mark.parametrize("name", mechanism_names(exact=True))
def test_benchmark_core_variant_runs_the_registered_core(name):
    from qattn.book.experiments import performance

    forward, (q, k, v) = performance.make_variant(f"core_{name}", 32, 2, 2, 5, "cpu", seed=3)
    assert torch.equal(forward(), get_mechanism(name).core(q, k, v)[0])
