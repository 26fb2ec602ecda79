"""QuaternionMultiheadAttention: equivalence with torch.nn.MultiheadAttention, masks, layouts, errors."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qattn.attention import QuaternionMultiheadAttention, hamilton_attention, shared_score_attention
from qattn.attention.multihead import head_order


def head_permutation(embed_dim: int, num_heads: int, head_split: str) -> list[int]:
    """Feature indices in the order torch's MultiheadAttention sees them (head-major)."""
    if head_split == "release":
        return list(range(embed_dim))
    n, d = embed_dim // 4, embed_dim // (4 * num_heads)
    return [c * n + h * d + u for h in range(num_heads) for c in range(4) for u in range(d)]


def torch_twin(layer: QuaternionMultiheadAttention, batch_first: bool) -> torch.nn.MultiheadAttention:
    """nn.MultiheadAttention with the same (permuted) weights: equal to a shared-score layer."""
    e, h = layer.embed_dim, layer.num_heads
    perm = head_permutation(e, h, layer.head_split)
    mha = torch.nn.MultiheadAttention(e, h, batch_first=batch_first, dtype=torch.float64)
    with torch.no_grad():
        projections = (layer.q_proj, layer.k_proj, layer.v_proj)
        mha.in_proj_weight.copy_(torch.cat([p.block_weight()[perm] for p in projections]))
        mha.in_proj_bias.copy_(torch.cat([p.bias[perm] for p in projections]))
        mha.out_proj.weight.copy_(layer.out_proj.block_weight()[:, perm])
        mha.out_proj.bias.copy_(layer.out_proj.bias)
    return mha.eval()


def make_layer(e=32, h=2, score="shared", head_split="components", batch_first=True, seed=0, **kw):
    torch.manual_seed(seed)
    layer = QuaternionMultiheadAttention(e, h, score=score, head_split=head_split, batch_first=batch_first, dtype=torch.float64, **kw)
    with torch.no_grad():
        for p in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
            p.bias.normal_()
    return layer.eval()


@st.composite
def mha_case(draw):
    h = draw(st.sampled_from([1, 2, 4]))
    e = 4 * h * draw(st.integers(1, 3))
    b, n, s = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    masks = draw(st.sampled_from(["none", "bool2d", "float2d", "bool3d", "padding-bool", "padding-float", "both"]))
    return dict(
        h=h,
        e=e,
        b=b,
        n=n,
        s=s,
        masks=masks,
        head_split=draw(st.sampled_from(["components", "release"])),
        batch_first=draw(st.booleans()),
        average=draw(st.booleans()),
        seed=draw(st.integers(0, 1000)),
    )


def build_masks(kind, b, h, n, s, g):
    attn, padding = None, None
    if kind in ("bool2d", "both"):
        attn = torch.rand(n, s, generator=g) < 0.3
    if kind == "float2d":
        attn = torch.randn(n, s, generator=g, dtype=torch.float64)
    if kind == "bool3d":
        attn = torch.rand(b * h, n, s, generator=g) < 0.3
    if kind in ("padding-bool", "both"):
        padding = torch.rand(b, s, generator=g) < 0.3
    if kind == "padding-float":
        padding = torch.randn(b, s, generator=g, dtype=torch.float64)
    if kind == "both":
        attn[:, 0] = False  # keep at least one key visible per row
        padding[:, 0] = False
    return attn, padding


def live_rows(attn, padding, b, h, n, s):
    """(B, N) True where every head has at least one visible key (torch gives NaN elsewhere)."""
    blocked = torch.zeros(b, h, n, s, dtype=torch.bool)
    if attn is not None:
        a = torch.isneginf(attn) if attn.is_floating_point() else attn
        blocked |= a.reshape(b, h, n, s) if a.dim() == 3 else a
    if padding is not None:
        p = torch.isneginf(padding) if padding.is_floating_point() else padding
        blocked |= p[:, None, None, :]
    return (~blocked.all(-1)).all(1)


@given(mha_case())
def test_shared_layer_equals_torch_multihead_attention(c):
    layer = make_layer(c["e"], c["h"], head_split=c["head_split"], batch_first=c["batch_first"], seed=c["seed"])
    mha = torch_twin(layer, c["batch_first"])
    g = torch.Generator().manual_seed(c["seed"])
    shape_q = (c["b"], c["n"], c["e"]) if c["batch_first"] else (c["n"], c["b"], c["e"])
    shape_k = (c["b"], c["s"], c["e"]) if c["batch_first"] else (c["s"], c["b"], c["e"])
    q = torch.randn(shape_q, generator=g, dtype=torch.float64)
    k = torch.randn(shape_k, generator=g, dtype=torch.float64)
    v = torch.randn(shape_k, generator=g, dtype=torch.float64)
    attn, padding = build_masks(c["masks"], c["b"], c["h"], c["n"], c["s"], g)
    kw = dict(key_padding_mask=padding, attn_mask=attn, average_attn_weights=c["average"])
    out, w = layer(q, k, v, **kw)
    ref_out, ref_w = mha(q, k, v, **kw)
    live = live_rows(attn, padding, c["b"], c["h"], c["n"], c["s"])
    out_b = out if c["batch_first"] else out.transpose(0, 1)
    ref_b = ref_out if c["batch_first"] else ref_out.transpose(0, 1)
    assert torch.allclose(out_b[live], ref_b[live], atol=1e-10)
    assert torch.isfinite(out).all()
    w_live = w[live] if c["average"] else w.transpose(1, 2)[live]
    ref_live = ref_w[live] if c["average"] else ref_w.transpose(1, 2)[live]
    assert torch.isfinite(ref_live).all()  # live rows: every head sees at least one key
    assert torch.allclose(w_live, ref_live, atol=1e-10)


@pytest.mark.parametrize("batch_first", [True, False])
def test_is_causal_matches_torch(batch_first):
    layer = make_layer(32, 4, batch_first=batch_first)
    mha = torch_twin(layer, batch_first)
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6, dtype=torch.float64)
    ref, _ = mha(x, x, x, attn_mask=causal, is_causal=True)
    out, _ = layer(x, x, x, attn_mask=causal, is_causal=True)
    out_hint_only, _ = layer(x, x, x, is_causal=True, need_weights=False)
    assert torch.allclose(out, ref, atol=1e-10) and torch.allclose(out_hint_only, ref, atol=1e-10)


def test_unbatched_input_matches_batched():
    layer = make_layer(16, 2)
    x = torch.randn(5, 16, dtype=torch.float64)
    padding = torch.tensor([False, False, True, False, True])
    out, w = layer(x, x, x, key_padding_mask=padding)
    out_b, w_b = layer(x[None], x[None], x[None], key_padding_mask=padding[None])
    assert torch.allclose(out, out_b[0]) and torch.allclose(w, w_b[0])


@pytest.mark.parametrize("score, core", [("shared", shared_score_attention), ("hamilton", hamilton_attention)])
@pytest.mark.parametrize("head_split", ["components", "release"])
def test_layer_equals_core_on_its_own_projections(score, core, head_split):
    layer = make_layer(48, 3, score=score, head_split=head_split)
    x, y = torch.randn(2, 5, 48, dtype=torch.float64), torch.randn(2, 7, 48, dtype=torch.float64)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[0, 4:] = True
    out, w = layer(x, y, y, key_padding_mask=padding, average_attn_weights=False)
    q, k, v = (layer.split_heads(p(t)) for p, t in ((layer.q_proj, x), (layer.k_proj, y), (layer.v_proj, y)))
    ref, ref_w = core(q, k, v, attn_mask=padding[:, None, None, :], need_weights=True)
    assert torch.allclose(out, layer.out_proj(layer.merge_heads(ref)), atol=1e-12)
    assert torch.allclose(w, ref_w, atol=1e-12)
    assert w.shape == ((2, 3, 5, 7) if score == "shared" else (2, 3, 4, 5, 7))
    fast, none = layer(x, y, y, key_padding_mask=padding, need_weights=False)
    assert none is None and torch.allclose(fast, out, atol=1e-12)


@given(heads=st.integers(1, 4), units=st.integers(1, 3), head_split=st.sampled_from(["components", "release"]))
def test_head_major_reshape_equals_indexing_by_head_order(heads, units, head_split):
    # The reshape the module uses against the index list, an independent construction; then a
    # negative control: in the components split with more than one head the order is not the identity.
    e = 4 * heads * units
    layer = QuaternionMultiheadAttention(e, heads, head_split=head_split)
    w = torch.randn(e, e + 1)
    order = head_order(e, heads, head_split)
    assert torch.equal(layer.head_major(w[:, :e], 0), w[order, :e])
    assert torch.equal(layer.head_major(w[:, :e], 1), w[:, order])
    assert torch.equal(layer.head_major(w[:, 0], 0), w[order, 0])
    if head_split == "components" and heads > 1:
        assert not torch.equal(layer.head_major(w[:, :e], 0), w[:, :e])


def test_head_split_components_mixes_all_components_in_every_head():
    """Default layout: head h's score sums the r, i, j, k dot products of its own units."""
    layer = make_layer(64, 4)
    x = torch.randn(1, 6, 64, dtype=torch.float64)
    _, w = layer(x, x, x, average_attn_weights=False)
    q, k = layer.q_proj(x).reshape(1, 6, 4, 4, 4), layer.k_proj(x).reshape(1, 6, 4, 4, 4)  # (B, N, comp, head, unit)
    for h in range(4):
        scores = torch.einsum("ncu,mcu->nm", q[0, :, :, h], k[0, :, :, h]) / math.sqrt(16)
        assert torch.allclose(w[0, h], torch.softmax(scores, -1))


def test_head_split_release_gives_head_h_component_h_only():
    """Release layout with D = 64, H = 4: head h's score is a dot product over component h alone."""
    layer = make_layer(64, 4, head_split="release")
    x = torch.randn(1, 6, 64, dtype=torch.float64)
    _, w = layer(x, x, x, average_attn_weights=False)
    q, k = layer.q_proj(x), layer.k_proj(x)
    for h in range(4):
        comp = slice(16 * h, 16 * (h + 1))  # the 16 units of component h (r, i, j, k)
        scores = q[0, :, comp] @ k[0, :, comp].T / math.sqrt(16)
        assert torch.allclose(w[0, h], torch.softmax(scores, -1))
    # Perturbing another component's query features leaves head h untouched.
    q_proj_out = layer.q_proj(x)
    assert torch.equal(
        layer.split_heads(q_proj_out)[:, 0], layer.split_heads(q_proj_out + torch.cat([torch.zeros(16), torch.ones(48)]).double())[:, 0]
    )


def test_same_seed_gives_identical_parameters_for_both_scores():
    torch.manual_seed(3)
    a = QuaternionMultiheadAttention(32, 2, score="shared")
    torch.manual_seed(3)
    b = QuaternionMultiheadAttention(32, 2, score="hamilton")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)
    assert sum(p.numel() for p in a.parameters()) == 4 * (32 * 32 // 4 + 32)


@pytest.mark.parametrize("score", ["shared", "hamilton"])
def test_fully_masked_query_gives_zero_attention_output(score):
    layer = make_layer(16, 2, score=score)
    x = torch.randn(2, 4, 16, dtype=torch.float64, requires_grad=True)
    padding = torch.zeros(2, 4, dtype=torch.bool)
    padding[1] = True  # the second sequence has no visible key at all
    out, w = layer(x, x, x, key_padding_mask=padding)
    assert torch.allclose(out[1], layer.out_proj.bias.expand(4, 16))  # zero attention output → bias only
    assert (w[1] == 0).all() and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    no_bias = QuaternionMultiheadAttention(16, 2, score=score, bias=False, batch_first=True)
    assert torch.equal(no_bias(x[1:].float(), x[1:].float(), x[1:].float(), key_padding_mask=padding[1:])[0], torch.zeros(1, 4, 16))


@pytest.mark.parametrize("score", ["shared", "hamilton"])
def test_dropout_only_in_training(score):
    layer = QuaternionMultiheadAttention(16, 2, score=score, dropout=0.5, batch_first=True)
    x = torch.randn(1, 32, 16)
    layer.eval()
    assert torch.equal(layer(x, x, x)[0], layer(x, x, x)[0])
    layer.train()
    torch.manual_seed(0)
    a = layer(x, x, x, need_weights=False)[0]
    assert not torch.allclose(a, layer.eval()(x, x, x)[0])


@pytest.mark.parametrize("score", ["shared", "hamilton"])
def test_module_gradcheck(score):
    layer = make_layer(8, 1, score=score)
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x, x, x))[0]

    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    assert torch.autograd.gradcheck(f, (x, *params))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(embed_dim=24, num_heads=4), ValueError, r"embed_dim must be a positive multiple of 4·num_heads = 16"),
        (dict(embed_dim=32, num_heads=0), ValueError, "num_heads must be a positive int"),
        (
            dict(embed_dim=32, num_heads=2, score="real"),
            ValueError,
            r"score must be one of \('shared', 'hamilton', 'clustered', 'improved_clustered', "
            r"'cogview_sparse', 'cogview_sparse_hamilton'\)",
        ),
        (dict(embed_dim=32, num_heads=2, head_split="heads"), ValueError, "head_split must be one of"),
        (dict(embed_dim=32, num_heads=2, dropout=1.5), ValueError, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        QuaternionMultiheadAttention(**kwargs)


def test_bad_forward_inputs():
    layer = QuaternionMultiheadAttention(16, 2, batch_first=True)
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=r"attn_mask must have shape \(N, S\) = \(5, 5\) or \(B·num_heads, N, S\) = \(4, 5, 5\)"):
        layer(x, x, x, attn_mask=torch.zeros(3, 5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask must be a bool tensor"):
        layer(x, x, x, attn_mask=torch.zeros(5, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, S\) = \(2, 5\)"):
        layer(x, x, x, key_padding_mask=torch.zeros(5, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_padding_mask must be a bool tensor"):
        layer(x, x, x, key_padding_mask=torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="last dimension embed_dim=16"):
        layer(torch.randn(2, 5, 12), x, x)
    with pytest.raises(ValueError, match="all be 3-D"):
        layer(torch.randn(2, 5, 16, 1), x, x)
    with pytest.raises(ValueError, match="share batch and length"):
        layer(x, x, torch.randn(2, 4, 16))


@pytest.mark.parametrize("score", ["shared", "hamilton"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_fast_path_is_one_fused_projection_with_unchanged_outputs(score, batch_first, monkeypatch):
    layer = make_layer(32, 2, score=score, batch_first=batch_first).train()
    x = torch.randn((3, 6, 32) if batch_first else (6, 3, 32), dtype=torch.float64, requires_grad=True)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[2, 3:] = True
    calls = []
    linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda *a, **k: calls.append(a[1].shape) or linear(*a, **k))
    fused, w_fused = layer(x, x, x, key_padding_mask=padding)
    assert calls == [(96, 32), (32, 32)], "self-attention: one (3E, E) projection, then the output projection"
    calls.clear()
    separate, w_sep = layer(x, x.clone(), x.clone(), key_padding_mask=padding)
    assert len(calls) == 4
    assert torch.allclose(fused, separate, atol=1e-12) and torch.allclose(w_fused, w_sep, atol=1e-12)
    g_fused = torch.autograd.grad(fused.square().sum(), [x, *layer.parameters()])
    g_sep = torch.autograd.grad(separate.square().sum(), [x, *layer.parameters()])
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g_fused, g_sep))


def test_block_matrices_are_cached_only_without_autograd():
    layer = make_layer(16, 1)
    proj = layer.q_proj
    with torch.no_grad():
        first = proj.block_weight()
        assert proj.block_weight() is first
        assert layer._packed_qkv()[0].data_ptr() == layer._packed_qkv()[0].data_ptr()  # same cached storage
        proj.weight_i.add_(1.0)  # an in-place update (as an optimiser step) invalidates the cache
        rebuilt = proj.block_weight()
        assert rebuilt is not first and torch.equal(rebuilt[16 // 4 : 2 * 16 // 4, : 16 // 4], proj.weight_i)
        x = torch.randn(1, 4, 16, dtype=torch.float64)
        cached_out = layer(x, x, x)[0]
    with_grad = proj.block_weight()
    assert with_grad.grad_fn is not None and with_grad is not proj.block_weight()
    assert torch.allclose(layer(x, x, x)[0], cached_out, atol=1e-12)


@pytest.mark.parametrize("score", ["shared", "hamilton"])
def test_bfloat16_layer_matches_float64_loosely(score):
    layer64 = make_layer(32, 2, score=score)
    layer16 = QuaternionMultiheadAttention(32, 2, score=score, batch_first=True, dtype=torch.bfloat16)
    layer16.load_state_dict({k: v.to(torch.bfloat16) for k, v in layer64.state_dict().items()})
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    ref, _ = layer64(x, x, x)
    out, w = layer16.eval()(x.to(torch.bfloat16), x.to(torch.bfloat16), x.to(torch.bfloat16))
    assert out.dtype == w.dtype == torch.bfloat16
    assert torch.allclose(out.double(), ref, atol=0.15, rtol=0.05)
