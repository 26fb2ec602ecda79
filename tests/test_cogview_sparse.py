"""CogView's pivot + window sparse attention against dense attention under the same mask."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qattn.attention.cogview_sparse import (
    PivotWindowLayout,
    dense_masked_attention,
    pivot_bias,
    pivot_window_attention,
    pivot_window_mask,
    sample_pivots,
)


def tensors(b, h, s, d, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, s, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad) for _ in range(3))


@pytest.mark.parametrize(
    "length, text, window, blocks, pivots",
    [(256, 16, 32, 2, 48), (1088, 64, 64, 3, 256), (1345, 5, 269, 2, 300)],
)
def test_sparse_equals_dense_under_the_mask_values_and_gradients(length, text, window, blocks, pivots):
    layout = PivotWindowLayout(length, text, window, blocks, pivots)
    pivot_idx = sample_pivots(layout, 2, torch.Generator().manual_seed(1))
    q, k, v = tensors(2, 2, length, 8, requires_grad=True)
    allowed = pivot_window_mask(layout, pivot_idx)
    for correction in (False, True):
        sparse = pivot_window_attention(q, k, v, pivot_idx, layout, log_correction=correction)
        dense = dense_masked_attention(q, k, v, allowed, pivot_bias(layout, pivot_idx) if correction else None)
        assert torch.allclose(sparse, dense, atol=1e-10)
        g_sparse = torch.autograd.grad(sparse.square().sum(), (q, k, v))
        g_dense = torch.autograd.grad(dense.square().sum(), (q, k, v))
        assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(g_sparse, g_dense))
    uncorrected = pivot_window_attention(q, k, v, pivot_idx, layout, log_correction=False)
    assert not torch.allclose(sparse, uncorrected)  # the correction changes the result
    q32, k32, v32 = (t.detach().float() for t in (q, k, v))
    out32 = pivot_window_attention(q32, k32, v32, pivot_idx, layout)
    assert out32.dtype == torch.float32 and torch.allclose(out32.double(), dense, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    blocks_total=st.integers(1, 6),
    window=st.integers(1, 5),
    t=st.integers(1, 4),
    text_frac=st.floats(0, 1),
    extra=st.integers(0, 30),
    seed=st.integers(0, 999),
)
def test_mask_is_causal_disjoint_and_counts_match_the_formula(blocks_total, window, t, text_frac, extra, seed):
    length = blocks_total * window
    text = int(text_frac * length)
    pivots = min(length, text + extra)
    if pivots < 1:
        return
    layout = PivotWindowLayout(length, text, window, t, pivots)
    pivot_idx = sample_pivots(layout, 2, torch.Generator().manual_seed(seed))
    assert (pivot_idx[:, :text] == torch.arange(text)).all() and len(set(pivot_idx[0].tolist())) == pivots
    mask = pivot_window_mask(layout, pivot_idx)
    assert torch.equal(mask, mask & torch.ones(length, length, dtype=torch.bool).tril())  # causal
    i = torch.arange(length)
    start = layout.window_start(i)
    window_count = i - start + 1
    for b in range(2):
        pivot_count = (pivot_idx[b][None, :] < start[:, None]).sum(1)  # pivots strictly before the window
        assert torch.equal(mask[b].sum(1), window_count + pivot_count)  # no key counted twice
        assert mask[b].diagonal().all()  # every query sees itself: never an empty row


def test_log_correction_is_log_s_over_p_on_pivot_logits():
    layout = PivotWindowLayout(64, 4, 8, 2, 16)
    pivot_idx = sample_pivots(layout, 1, torch.Generator().manual_seed(2))
    bias = pivot_bias(layout, pivot_idx)
    assert math.isclose(layout.correction, math.log(64 // 16))
    values = bias[bias != 0]
    assert values.numel() > 0 and torch.allclose(values, torch.full_like(values, math.log(4)))
    # the bias sits exactly on the allowed pivot pairs: never on a window pair, never on a forbidden one
    i = torch.arange(64)
    start = layout.window_start(i)
    window = (i[None, :] <= i[:, None]) & (i[None, :] >= start[:, None])
    pivot_pairs = torch.zeros(64, 64, dtype=torch.bool)
    pivot_pairs[:, pivot_idx[0]] = True
    pivot_pairs &= i[None, :] < start[:, None]
    assert torch.equal(bias[0] != 0, pivot_pairs) and not (pivot_pairs & window).any()
    assert torch.equal(pivot_window_mask(layout, pivot_idx)[0], window | pivot_pairs)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(length=100, text=4, window=8, window_blocks=2, pivots=10), "length must be divisible by window"),
        (dict(length=64, text=70, window=8, window_blocks=2, pivots=80), "text must be in 0..length"),
        (dict(length=64, text=4, window=8, window_blocks=2, pivots=65), "pivots larger than the image part"),
        (dict(length=64, text=8, window=8, window_blocks=2, pivots=4), "pivots must count every text token"),
        (dict(length=64, text=4, window=8, window_blocks=0, pivots=8), "window_blocks must be a positive int"),
    ],
)
def test_bad_layouts_are_refused_by_name(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PivotWindowLayout(**kwargs)


def test_bad_inputs_are_refused():
    layout = PivotWindowLayout(32, 2, 8, 2, 6)
    q, k, v = tensors(1, 1, 32, 4)
    pivots = sample_pivots(layout, 1, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="the sequence has 16 tokens but the layout 32"):
        pivot_window_attention(q[:, :, :16], k[:, :, :16], v[:, :, :16], pivots, layout)
    with pytest.raises(ValueError, match="pivots must be int64"):
        pivot_window_attention(q, k, v, pivots[:, :3], layout)
    with pytest.raises(ValueError, match="one row per sequence"):
        pivot_window_attention(q, k, v, pivots.expand(2, -1), layout)


def test_pivot_estimator_proof_and_its_negative_controls():
    from proofs import pivot_estimator

    results = pivot_estimator.prove()
    assert all(results.values()), results
    assert not pivot_estimator.unbiased(pivot_estimator.M / (pivot_estimator.P + 1))  # the checker can say no
    with pytest.raises(ValueError, match="1 ≤ p ≤ m"):
        pivot_estimator.exhaustive_mean_equals_total(2, 3)


def test_cogview_constant_overweights_text_and_matches_a_monte_carlo_estimate():
    from proofs.pivot_estimator import expected_ratio

    layout = PivotWindowLayout(1088, 64, 64, 2, 256)
    c = 1088 // 256
    assert math.isclose(expected_ratio(1088, 64, 256, 64, 0), c)  # only text before the window: c-fold
    pi = (256 - 64) / (1088 - 64)
    assert math.isclose(expected_ratio(1088, 64, 256, 0, 500), c * pi)
    assert math.isnan(expected_ratio(1088, 64, 256, 0, 0))
    # Monte Carlo with the sampler: mean pivot count before position 704's window, weighted by c
    g = torch.Generator().manual_seed(0)
    start = int(layout.window_start(torch.tensor(704)))
    draws = sample_pivots(layout, 400, g)
    mass = c * (draws < start).sum(1).double().mean()
    expected = expected_ratio(1088, 64, 256, 64, start - 64) * start
    assert abs(float(mass) - expected) / expected < 0.02


@pytest.mark.parametrize("score", ["shared", "hamilton"])
def test_quaternion_variants_use_one_mask_and_equal_the_dense_quaternion_cores(score):
    from qattn.attention import hamilton_attention, shared_score_attention
    from qattn.attention.cogview_sparse import pivot_window_hamilton_attention, pivot_window_shared_attention

    layout = PivotWindowLayout(96, 8, 16, 2, 24)
    pivots = sample_pivots(layout, 2, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 3, 96, 4, 2, generator=g, dtype=torch.float64) for _ in range(3))
    additive = pivot_bias(layout, pivots).masked_fill(~pivot_window_mask(layout, pivots), -math.inf)[:, None]
    if score == "shared":
        sparse = pivot_window_shared_attention(q, k, v, pivots, layout)
        dense, _ = shared_score_attention(q, k, v, attn_mask=additive)
    else:
        sparse = pivot_window_hamilton_attention(q, k, v, pivots, layout)
        dense, _ = hamilton_attention(q, k, v, attn_mask=additive)
    assert sparse.shape == (2, 3, 96, 4, 2) and torch.allclose(sparse, dense, atol=1e-10)


# -- the registered mechanisms -----------------------------------------------------------------


def quaternion_qkv(b, h, s, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, s, 4, d, generator=g, dtype=torch.float64) for _ in range(3))


@pytest.mark.parametrize("name, dense_name", [("cogview_sparse", "shared"), ("cogview_sparse_hamilton", "hamilton")])
def test_registered_core_with_one_window_is_causal_attention(name, dense_name):
    from qattn.attention import get_mechanism

    q, k, v = quaternion_qkv(2, 3, 20, seed=5)
    sparse, w_sparse = get_mechanism(name).core(q, k, v, is_causal=True, need_weights=True, window=32)
    dense, w_dense = get_mechanism(dense_name).core(q, k, v, is_causal=True, need_weights=True)
    assert torch.allclose(sparse, dense, atol=1e-12) and torch.allclose(w_sparse, w_dense, atol=1e-12)
    narrow, _ = get_mechanism(name).core(q, k, v, is_causal=True, window=4, n_pivots=3, log_correction=False)
    assert not torch.allclose(narrow, dense)  # negative control: a narrow window with few pivots is not full attention


@pytest.mark.parametrize("name, dense_name", [("cogview_sparse", "shared"), ("cogview_sparse_hamilton", "hamilton")])
@pytest.mark.parametrize("length", [48, 50])  # 50: padded to 64 inside the core
def test_registered_core_equals_dense_attention_under_the_layout(name, dense_name, length):
    from qattn.attention import get_mechanism

    spec = get_mechanism(name)
    padded = -(-length // 16) * 16
    layout = PivotWindowLayout(padded, 4, 16, 2, 12)
    pivots = sample_pivots(layout, 2, torch.Generator().manual_seed(2), end=length)
    q, k, v = quaternion_qkv(2, 2, length, seed=6)
    allowed = pivot_window_mask(layout, pivots)[:, :length, :length]
    correction = torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(
        pivot_bias(layout, pivots)[:, :length, :length] != 0, math.log(length // 12)
    )
    additive = correction.masked_fill(~allowed, -math.inf)[:, None]
    options = dict(text=4, window=16, window_blocks=2, pivot_positions=pivots)
    out, weights = spec.core(q, k, v, is_causal=True, need_weights=True, **options)
    ref, ref_w = get_mechanism(dense_name).core(q, k, v, attn_mask=additive, need_weights=True)
    assert torch.allclose(out, ref, atol=1e-12) and torch.allclose(weights, ref_w, atol=1e-12)
    assert (weights.sum(-1) - 1).abs().max() < 1e-12
    # drawn pivots: every text token, image pivots inside the real sequence, reproducible from the seed
    drawn = [spec.core(q, k, v, is_causal=True, need_weights=True, text=4, window=16, n_pivots=12, pivot_seed=7)[1] for _ in range(2)]
    assert torch.equal(drawn[0], drawn[1])
    other = spec.core(q, k, v, is_causal=True, need_weights=True, text=4, window=16, n_pivots=12, pivot_seed=8)[1]
    assert not torch.equal(drawn[0], other)


def test_registered_core_refuses_bad_options_by_name():
    from qattn.attention import get_mechanism

    core = get_mechanism("cogview_sparse").core
    q, k, v = quaternion_qkv(1, 1, 16)
    with pytest.raises(ValueError, match="n_pivots must be an int in text … s = 2 … 16"):
        core(q, k, v, is_causal=True, text=2, n_pivots=17)
    with pytest.raises(ValueError, match="text longer than the sequence"):
        core(q, k, v, is_causal=True, text=17)
    with pytest.raises(ValueError, match=r"pivot_positions must lie in \[0, s\) = \[0, 16\)"):
        core(q, k, v, is_causal=True, pivot_positions=torch.tensor([3, 16]))
    with pytest.raises(ValueError, match="self-attention"):
        core(q, k[:, :, :8], v[:, :, :8], is_causal=True)
    with pytest.raises(ValueError, match="window must be a positive int"):
        core(q, k, v, is_causal=True, window=0)


def test_layer_keeps_the_pivot_seed_as_an_int_buffer_and_redraws_it():
    from qattn.attention import QuaternionMultiheadAttention

    options = {"window": 8, "n_pivots": 8}
    layer = QuaternionMultiheadAttention(
        16, 2, score="cogview_sparse", score_options=options, batch_first=True, generator=torch.Generator().manual_seed(0)
    )
    layer = layer.double().eval()
    assert layer.pivot_seed.dtype == torch.int64 and "pivot_seed" in layer.state_dict()
    x = torch.randn(2, 40, 16, dtype=torch.float64)
    first, _ = layer(x, x, x, is_causal=True)
    again, _ = layer(x, x, x, is_causal=True)
    assert torch.equal(first, again)  # the same pivots from call to call
    layer.redraw_buffers(torch.Generator().manual_seed(1))
    redrawn, _ = layer(x, x, x, is_causal=True)
    assert not torch.allclose(first, redrawn)  # new pivots, new output
    with pytest.raises(ValueError, match="is_causal=True"):
        layer(x, x, x)


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_local_window_mask_2d_counts_and_causality(kernel):
    from qattn.attention.cogview_sparse import local_window_mask_2d

    full = local_window_mask_2d(9, 11, kernel, causal=False)
    causal = local_window_mask_2d(9, 11, kernel)
    assert torch.equal(full, full.T) and torch.equal(causal, full.tril())
    interior = 4 * 11 + 5  # (4, 5), far from the borders
    half = kernel // 2
    assert int(full[interior].sum()) == kernel * kernel
    assert int(causal[interior].sum()) == half * kernel + half + 1
    assert bool(full.diagonal().all())
    with pytest.raises(ValueError, match="kernel must be odd"):
        local_window_mask_2d(4, 4, 2)
