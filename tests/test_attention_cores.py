"""The functional cores against independent references, on random shapes, masks and dtypes."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from qattn import quaternion as qt
from qattn.attention import (
    hamilton_attention,
    hamilton_scores,
    hamilton_scores_reference,
    shared_score_attention,
    shared_scores,
)

TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 6e-2}


def blocked(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, 4, d) → blocked (B, H, L, 4·d)."""
    return qt.merge(x, dim=-2)


def unit_shared_scores(q, k):
    """Σ_units Re(q_u ⊗ k̄_u) for every pair, from quaternion.hamilton and conj."""
    prod = qt.hamilton(blocked(q)[:, :, :, None], qt.conj(blocked(k))[:, :, None])  # (B,H,N,S,4d)
    return qt.split(prod)[..., 0, :].sum(-1)


def unit_hamilton_scores(q, k):
    """The four components of Σ_units q_u ⊗ k_u (no conjugate): (B, H, 4, N, S)."""
    prod = qt.hamilton(blocked(q)[:, :, :, None], blocked(k)[:, :, None])
    return qt.split(prod).sum(-1).movedim(-1, 2)


def reference_attention(scores, v, mask):
    """softmax(scores + mask) @ v in float64, with fully masked rows set to zero."""
    scores = scores.double()
    if mask is not None:
        scores = scores + mask.double()
    dead = torch.isneginf(scores).all(-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    return weights @ v.double(), weights


def random_mask(draw, n, s, b, h):
    kind = draw(st.sampled_from(["none", "bool", "float", "bool-batched"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if kind == "none":
        return None
    shape = (n, s) if kind != "bool-batched" else (b, 1, n, s)
    if kind == "float":
        return torch.randn(shape, generator=g)
    return torch.rand(shape, generator=g) < 0.4


@st.composite
def core_case(draw):
    b, h = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n, s, d = draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    q, k, v = (torch.randn(b, h, length, 4, d, generator=g, dtype=torch.float64) for length in (n, s, s))
    return q.to(dtype), k.to(dtype), v.to(dtype), random_mask(draw, n, s, b, h), draw(st.booleans())


def additive(mask, dtype=torch.float64):
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(mask, -math.inf) if mask.dtype == torch.bool else mask.to(dtype)


def with_causal(mask, n, s, causal):
    out = additive(mask)
    if causal:
        c = torch.zeros(n, s, dtype=torch.float64).masked_fill(torch.ones(n, s, dtype=torch.bool).triu(1), -math.inf)
        out = c if out is None else out + c
    return out


def test_shared_score_is_real_part_of_conjugate_product():
    q, k = torch.randn(2, 3, 5, 4, 3, dtype=torch.float64), torch.randn(2, 3, 6, 4, 3, dtype=torch.float64)
    assert torch.allclose(shared_scores(q, k), unit_shared_scores(q, k))


def test_hamilton_scores_three_ways():
    q, k = torch.randn(2, 3, 5, 4, 3, dtype=torch.float64), torch.randn(2, 3, 6, 4, 3, dtype=torch.float64)
    expected = unit_hamilton_scores(q, k)
    assert torch.allclose(hamilton_scores_reference(q, k), expected)
    assert torch.allclose(hamilton_scores(q, k), expected)


def test_hamilton_reference_differs_from_a_sign_flipped_variant():
    """Negative control: the checker above would catch a single wrong sign."""
    q, k = torch.randn(1, 1, 4, 4, 2, dtype=torch.float64), torch.randn(1, 1, 4, 4, 2, dtype=torch.float64)
    wrong = unit_hamilton_scores(q, k * torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=torch.float64)[:, None])
    assert not torch.allclose(hamilton_scores(q, k), wrong)


@given(core_case())
def test_shared_core_equals_sdpa_and_explicit_path(case):
    q, k, v, mask, causal = case
    n, s = q.shape[2], k.shape[2]
    tol = TOL[q.dtype]
    scale = 1 / math.sqrt(4 * q.shape[-1])
    full_mask = with_causal(mask, n, s, causal)
    expected, expected_w = reference_attention(shared_scores(q.double(), k.double()) * scale, v.flatten(-2), full_mask)
    fused, none = shared_score_attention(q, k, v, attn_mask=mask, is_causal=causal)
    explicit, w = shared_score_attention(q, k, v, attn_mask=mask, is_causal=causal, need_weights=True)
    assert none is None and fused.dtype == q.dtype and fused.shape == v.shape[:2] + (n, 4, v.shape[-1])
    assert torch.allclose(fused.double().flatten(-2), expected, atol=tol, rtol=tol)
    assert torch.allclose(explicit.double().flatten(-2), expected, atol=tol, rtol=tol)
    assert torch.allclose(w.double(), expected_w, atol=tol, rtol=tol)
    if mask is None and not causal:  # without masks: literally SDPA on flattened heads
        sdpa = F.scaled_dot_product_attention(q.flatten(-2), k.flatten(-2), v.flatten(-2))
        assert torch.allclose(fused.flatten(-2), sdpa, atol=tol, rtol=tol)


@given(core_case())
def test_hamilton_core_equals_per_component_reference(case):
    q, k, v, mask, causal = case
    n, s = q.shape[2], k.shape[2]
    tol = TOL[q.dtype]
    scale = 1 / math.sqrt(4 * q.shape[-1])
    full_mask = with_causal(mask, n, s, causal)
    full_mask = None if full_mask is None else full_mask.unsqueeze(-3)
    scores = hamilton_scores_reference(q.double(), k.double()) * scale  # (B,H,4,N,S)
    expected, expected_w = reference_attention(scores, v.double().movedim(-2, 2), full_mask)
    expected = expected.movedim(2, -2)  # O_c = A_c V_c
    fused, none = hamilton_attention(q, k, v, attn_mask=mask, is_causal=causal)
    explicit, w = hamilton_attention(q, k, v, attn_mask=mask, is_causal=causal, need_weights=True)
    assert none is None and w.shape == q.shape[:2] + (4, n, s)
    assert torch.allclose(fused.double(), expected, atol=tol, rtol=tol)
    assert torch.allclose(explicit.double(), expected, atol=tol, rtol=tol)
    assert torch.allclose(w.double(), expected_w, atol=tol, rtol=tol)


@pytest.mark.parametrize("core", [shared_score_attention, hamilton_attention])
@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_rows_give_zeros_and_finite_gradients(core, need_weights):
    q, k, v = (torch.randn(2, 2, 4, 4, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1] = True  # query 1 may see nothing
    float_mask = torch.zeros(4, 4, dtype=torch.float64).masked_fill(mask, -math.inf)
    for m in (mask, float_mask):
        out, w = core(q, k, v, attn_mask=m, need_weights=need_weights)
        assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
        assert torch.isfinite(out).all() and out[:, :, 0].abs().sum() > 0
        if w is not None:
            assert (w[..., 1, :] == 0).all()
        grads = torch.autograd.grad(out.sum(), (q, k, v))
        assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("core", [shared_score_attention, hamilton_attention])
@pytest.mark.parametrize("need_weights", [False, True])
def test_cores_gradcheck(core, need_weights):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 4, 2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[False, True, False], [False, False, False], [True, False, False]])

    def f(q, k, v):
        return core(q, k, v, attn_mask=mask, need_weights=need_weights)[0]

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_dropout_is_applied_only_when_asked():
    q, k, v = (torch.randn(1, 1, 16, 4, 4) for _ in range(3))
    for core in (shared_score_attention, hamilton_attention):
        a, b = core(q, k, v)[0], core(q, k, v)[0]
        assert torch.equal(a, b)
        torch.manual_seed(0)
        c = core(q, k, v, dropout_p=0.5)[0]
        assert not torch.allclose(a, c)


@pytest.mark.parametrize("core", [shared_score_attention, hamilton_attention])
def test_core_input_errors(core):
    q = torch.randn(1, 2, 3, 4, 2)
    with pytest.raises(ValueError, match="4 quaternion components"):
        core(torch.randn(1, 2, 3, 3, 2), q, q)
    with pytest.raises(ValueError, match="same d_h"):
        core(q, torch.randn(1, 2, 3, 4, 3), torch.randn(1, 2, 3, 4, 3))
    with pytest.raises(ValueError, match=r"broadcastable to \(B, H, N, S\) with \(N, S\) = \(3, 3\)"):
        core(q, q, q, attn_mask=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool tensor"):
        core(q, q, q, attn_mask=torch.zeros(3, 3, dtype=torch.int64))
