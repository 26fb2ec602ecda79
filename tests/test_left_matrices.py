"""``left_matrices`` (the layers' one-node assembly) against ``left_matrix`` through plain autograd.

The layers train through :func:`qattn.quaternion.left_matrices`; the seeded results of every
chapter were computed through :func:`qattn.quaternion.left_matrix`. The assembled values, and the
gradients that reach the four components, must be BITWISE the same, for any shape, head layout
and bias; a negative control shows that the bitwise check can tell two summation orders apart.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qattn import quaternion as qt


def _reference(weights: torch.Tensor, row_heads, col_heads, bias=None):
    """left_matrix per group through autograd, reordered head-major the way the layer does it."""
    leaves = [[weights[g, c].detach().clone().requires_grad_() for c in range(4)] for g in range(weights.shape[0])]
    out = torch.stack([qt.left_matrix(*w) for w in leaves])
    n_out, n_in = weights.shape[2], weights.shape[3]
    if row_heads:
        out = out.unflatten(1, (4, row_heads, n_out // row_heads)).transpose(1, 2).flatten(1, 3)
    if col_heads:
        out = out.unflatten(2, (4, col_heads, n_in // col_heads)).transpose(2, 3).flatten(2, 4)
    bias_leaf = None
    if bias is not None:
        bias_leaf = bias.detach().clone().requires_grad_()
        b = bias_leaf
        if row_heads:
            b = b.unflatten(1, (4, row_heads, n_out // row_heads)).transpose(1, 2).flatten(1, 3)
        return out, b, leaves, bias_leaf
    return out, None, leaves, None


@settings(max_examples=40, deadline=None)
@given(
    groups=st.integers(1, 3),
    heads_out=st.sampled_from([None, 1, 2]),
    heads_in=st.sampled_from([None, 1, 2]),
    units=st.integers(1, 3),
    kernel=st.sampled_from([(), (3,), (2, 2)]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_values_and_gradients_are_bitwise_those_of_left_matrix(groups, heads_out, heads_in, units, kernel, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    n_out, n_in = units * (heads_out or 1), (units + 1) * (heads_in or 1)
    weights = torch.randn(groups, 4, n_out, n_in, *kernel, generator=gen, dtype=dtype, requires_grad=True)
    out = qt.left_matrices(weights, heads_out, heads_in)
    ref, _, leaves, _ = _reference(weights, heads_out, heads_in)
    assert out.shape == ref.shape and torch.equal(out, ref.detach())
    upstream = torch.randn(ref.shape, generator=gen, dtype=dtype)
    out.backward(upstream)
    ref.backward(upstream)
    expected = torch.stack([torch.stack([w.grad for w in group]) for group in leaves])
    assert torch.equal(weights.grad, expected)


@pytest.mark.parametrize("heads", [None, 2])
@pytest.mark.parametrize("transposed", [False, True])
def test_packed_weight_and_bias_share_one_matrix_and_match_the_reference(heads, transposed):
    """With a bias: weight and bias are views of one (G·4·out, 4·in + 1) matrix, and gradients arriving
    in any layout (a linear layer's weight gradient arrives transposed) give the reference's bitwise."""
    gen = torch.Generator().manual_seed(3)
    weights = torch.randn(3, 4, 4, 6, generator=gen, requires_grad=True)
    bias = torch.randn(3, 16, generator=gen, requires_grad=True)
    weight, packed_bias = qt.left_matrices(weights, row_heads=heads, bias=bias)
    assert weight.shape == (48, 24) and packed_bias.shape == (48,)
    assert weight.stride() == (25, 1) and packed_bias.stride() == (25,) and weight.data_ptr() + 24 * 4 == packed_bias.data_ptr()
    ref, ref_bias, leaves, bias_leaf = _reference(weights, heads, None, bias)
    assert torch.equal(weight, ref.detach().flatten(0, 1)) and torch.equal(packed_bias, ref_bias.detach().flatten())
    x = torch.randn(5, 24, generator=gen)
    if transposed:  # F.linear's weight gradient is the transpose of a contiguous matrix
        torch.nn.functional.linear(x, weight, packed_bias).sum().backward()
        torch.nn.functional.linear(x, ref.flatten(0, 1), ref_bias.flatten()).sum().backward()
    else:
        upstream, upstream_bias = torch.randn(48, 24, generator=gen), torch.randn(48, generator=gen)
        torch.autograd.backward([weight, packed_bias], [upstream, upstream_bias])
        torch.autograd.backward([ref.flatten(0, 1), ref_bias.flatten()], [upstream, upstream_bias])
    assert torch.equal(weights.grad, torch.stack([torch.stack([w.grad for w in g]) for g in leaves]))
    assert torch.equal(bias.grad, bias_leaf.grad)


def test_the_bitwise_check_can_fail_negative_control():
    """Summing the same four blocks in another order changes float32 results: the check above is not vacuous."""
    gen = torch.Generator().manual_seed(0)
    a, b, c, d = torch.randn(4, 1000, generator=gen)
    assert not torch.equal(((a + b) + c) + d, ((d + c) + b) + a)


def test_bad_shapes_are_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(G, 4, out, in"):
        qt.left_matrices(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="row_heads=3 must divide"):
        qt.left_matrices(torch.zeros(1, 4, 4, 4), row_heads=3)
    with pytest.raises(ValueError, match="bias must have shape"):
        qt.left_matrices(torch.zeros(1, 4, 4, 4), bias=torch.zeros(1, 4))


def _old_attention_forward(layer, x):
    """The attention layer as it was computed before left_matrices (left_matrix, cat, a packed
    (3E, E+1) matrix sliced into weight and bias): the reference the seeded results came from."""
    import torch.nn.functional as F

    projections = (layer.q_proj, layer.k_proj, layer.v_proj)
    weight = torch.cat([layer.head_major(qt.left_matrix(*p.components()), 0) for p in projections])
    bias = torch.cat([layer.head_major(p.bias, 0) for p in projections])
    packed = torch.cat([weight, bias[:, None]], dim=1)
    q, k, v = (
        t.unflatten(-1, (layer.num_heads, 4, layer.head_units)).transpose(1, 2)
        for t in F.linear(x, packed[:, :-1], packed[:, -1]).chunk(3, -1)
    )
    out, _ = layer.mechanism.core(q, k, v, need_weights=False)
    out_weight = layer.head_major(qt.left_matrix(*layer.out_proj.components()), 1)
    return F.linear(out.transpose(1, 2).flatten(2), out_weight, layer.out_proj.bias)


@pytest.mark.parametrize("score", ["shared", "hamilton"])
@pytest.mark.parametrize("embed_dim", [32, 256])
def test_the_attention_layer_trains_bitwise_as_before(score, embed_dim):
    """Output and every parameter's gradient of QuaternionMultiheadAttention equal, bitwise, those of
    the computation the committed results were made with (sizes where F.linear's kernel depends on strides)."""
    from qattn.attention import QuaternionMultiheadAttention

    torch.manual_seed(0)
    layer = QuaternionMultiheadAttention(embed_dim, 4, score=score, batch_first=True)
    x = torch.randn(2, 100, embed_dim)
    new = layer(x, x, x, need_weights=False)[0]
    grads_new = torch.autograd.grad(new.square().sum(), list(layer.parameters()))
    old = _old_attention_forward(layer, x)
    grads_old = torch.autograd.grad(old.square().sum(), list(layer.parameters()))
    assert torch.equal(new, old)
    assert all(torch.equal(a, b) for a, b in zip(grads_new, grads_old))


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_quaternion_layers_train_bitwise_as_before(kind):
    import torch.nn.functional as F

    from qattn.layers import QuaternionConv2d, QuaternionLinear

    torch.manual_seed(1)
    if kind == "linear":
        layer, x = QuaternionLinear(64, 32), torch.randn(50, 64)
        old = F.linear(x, qt.left_matrix(*layer.components()), layer.bias)
    else:
        layer, x = QuaternionConv2d(8, 12, 3, padding=1), torch.randn(2, 8, 9, 9)
        old = F.conv2d(x, qt.left_matrix(*layer.components()), layer.bias, padding=1)
    new = layer(x)
    params = list(layer.parameters())
    assert torch.equal(new, old)
    grads_new = torch.autograd.grad(new.square().sum(), params)
    grads_old = torch.autograd.grad(old.square().sum(), params)
    assert all(torch.equal(a, b) for a, b in zip(grads_new, grads_old))
