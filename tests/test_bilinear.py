"""Bilinear attention networks: core vs naive loops, joint softmax, low-rank identity, glimpse residual, quaternion variants."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from qattn import quaternion as qt
from qattn.attention.bilinear import (
    BilinearAttentionNetwork,
    bilinear_logits,
    bilinear_pooling,
    joint_softmax,
)


def naive_logits(x_att, y_att, p, bias):
    b, rho, _ = x_att.shape
    out = torch.zeros(b, p.shape[0], rho, y_att.shape[1], dtype=x_att.dtype)
    for n in range(b):
        for g in range(p.shape[0]):
            for i in range(rho):
                for j in range(y_att.shape[1]):
                    out[n, g, i, j] = (p[g] * x_att[n, i] * y_att[n, j]).sum() + bias[g]
    return out


def naive_pooling(x_feat, y_feat, att):
    out = torch.zeros(x_feat.shape[0], x_feat.shape[-1], dtype=x_feat.dtype)
    for n in range(x_feat.shape[0]):
        for i in range(x_feat.shape[1]):
            for j in range(y_feat.shape[1]):
                out[n] += att[n, i, j] * x_feat[n, i] * y_feat[n, j]
    return out


@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.sampled_from([4, 8]), st.integers(1, 3), st.integers(0, 999))
def test_logits_and_pooling_equal_naive_double_loops(b, rho, phi, k, g, seed):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.rand(b, rho, k, generator=gen, dtype=torch.float64), torch.rand(b, phi, k, generator=gen, dtype=torch.float64)
    p, bias = torch.randn(g, k, generator=gen, dtype=torch.float64), torch.randn(g, generator=gen, dtype=torch.float64)
    logits = bilinear_logits(x, y, p, bias)
    assert torch.allclose(logits, naive_logits(x, y, p, bias))
    att = joint_softmax(logits)[:, 0]
    assert torch.allclose(bilinear_pooling(x, y, att), naive_pooling(x, y, att))


def test_low_rank_identity():
    """Σ_ij A_ij (x_i ∘ y_j) = diag(Xᵀ A Y): the pooling is a rank-K bilinear form."""
    x, y, a = torch.randn(2, 3, 5, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64), torch.rand(2, 3, 4, dtype=torch.float64)
    diag = torch.diagonal(x.transpose(1, 2) @ a @ y, dim1=1, dim2=2)
    assert torch.allclose(bilinear_pooling(x, y, a), diag)


def test_joint_softmax_sums_to_one_and_masks_exactly():
    logits = torch.randn(3, 2, 4, 5)
    x_mask = torch.tensor([[False, False, True, True], [False] * 4, [True] * 4])
    y_mask = torch.tensor([[False] * 4 + [True], [True, False, False, False, False], [False] * 5])
    a = joint_softmax(logits, x_mask, y_mask)
    assert torch.allclose(a[:2].sum((-1, -2)), torch.ones(2, 2))  # one distribution over all pairs
    assert (a[0, :, 2:] == 0).all() and (a[0, :, :, 4] == 0).all() and (a[1, :, :, 0] == 0).all()
    assert (a[2] == 0).all()  # every token masked: zeros, not NaN
    assert not torch.allclose(a[0], torch.softmax(logits[0], -1).masked_fill(y_mask[0], 0))  # joint, not per row


def test_glimpse_residual_and_maps_from_initial_states():
    torch.manual_seed(0)
    ban = BilinearAttentionNetwork(8, 6, hidden=10, glimpses=2).double()
    x, y = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    joint, maps = ban(x, y)
    f1 = ban.proj[0](ban.pool(0, x, y, maps[:, 0])).unsqueeze(1) + x
    f2 = ban.proj[1](ban.pool(1, f1, y, maps[:, 1])).unsqueeze(1) + f1
    assert torch.allclose(joint, f2.sum(1))
    # the second glimpse's map does not depend on the first glimpse's pooling weights
    with torch.no_grad():
        ban.pool_x[0].weight.mul_(3.0)
    assert torch.allclose(ban(x, y)[1], maps)


def test_shared_quaternion_logit_is_real_part_of_conjugate_product():
    torch.manual_seed(1)
    ban = BilinearAttentionNetwork(8, 8, hidden=8, glimpses=1, score="shared").double()
    x, y = torch.randn(1, 2, 8, dtype=torch.float64), torch.randn(1, 3, 8, dtype=torch.float64)
    u, v = F.relu(ban.att_x(x)), F.relu(ban.att_y(y))
    logits = bilinear_logits(u, v, ban.p, ban.bias, "shared")
    for i in range(2):
        for j in range(3):
            re = qt.inner(ban.p[0] * u[0, i], v[0, j]).sum() + ban.bias[0]
            assert torch.allclose(logits[0, 0, i, j], re)


def test_hamilton_logits_are_the_four_product_components():
    torch.manual_seed(2)
    u, v = torch.rand(1, 2, 8, dtype=torch.float64), torch.rand(1, 3, 8, dtype=torch.float64)
    p, bias = torch.randn(2, 8, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    logits = bilinear_logits(u, v, p, bias, "hamilton")
    assert logits.shape == (1, 2, 4, 2, 3)
    for g in range(2):
        for i in range(2):
            for j in range(3):
                prod = qt.split(qt.hamilton(p[g] * u[0, i], v[0, j])).sum(-1)  # (4,) components summed over units
                assert torch.allclose(logits[0, g, :, i, j], prod)


@pytest.mark.parametrize("score", ["real", "shared", "hamilton"])
def test_network_shapes_masks_and_gradients(score):
    torch.manual_seed(3)
    ban = BilinearAttentionNetwork(16, 8, hidden=12, glimpses=3, score=score)
    x, y = torch.randn(2, 5, 16, requires_grad=True), torch.randn(2, 6, 8)
    x_mask = torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    y_mask = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    joint, maps = ban(x, y, x_mask, y_mask)
    assert joint.shape == (2, 16)
    expected = (2, 3, 5, 6) if score != "hamilton" else (2, 3, 4, 5, 6)
    assert maps.shape == expected and (maps[0, ..., 3:, :] == 0).all() and (maps[1, ..., 4:] == 0).all()
    assert torch.allclose(maps.sum((-1, -2)), torch.ones(maps.shape[:-2]))
    joint.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_quaternion_variants_have_equal_parameters_and_a_quarter_of_real():
    counts = {}
    for score in ("real", "shared", "hamilton"):
        torch.manual_seed(4)
        counts[score] = sum(p.numel() for p in BilinearAttentionNetwork(32, 16, hidden=24, glimpses=2, score=score).parameters())
    assert counts["shared"] == counts["hamilton"] < counts["real"] / 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="score must be one of"):
        BilinearAttentionNetwork(8, 8, 8, score="complex")
    with pytest.raises(ValueError, match="hidden must be a multiple of 4"):
        BilinearAttentionNetwork(8, 8, 10, score="shared")
    with pytest.raises(ValueError, match="glimpses must be at least 1"):
        BilinearAttentionNetwork(8, 8, 8, glimpses=0)
    with pytest.raises(ValueError, match=r"x must be \(B, ρ, d_x\)"):
        BilinearAttentionNetwork(8, 8, 8)(torch.randn(2, 8), torch.randn(2, 3, 8))


@pytest.mark.parametrize("score", ["real", "hamilton"])
def test_shared_images_through_y_index_equal_repeated_regions(score):
    torch.manual_seed(5)
    ban = BilinearAttentionNetwork(8, 8, hidden=8, glimpses=2, score=score).double()
    x, y = torch.randn(5, 3, 8, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)
    index = torch.tensor([0, 0, 1, 1, 0])
    joint, maps = ban(x, y, y_index=index)
    joint_rep, maps_rep = ban(x, y[index])
    assert torch.allclose(joint, joint_rep) and torch.allclose(maps, maps_rep)
