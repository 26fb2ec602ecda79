"""Clustered and improved clustered attention: exactness limits, the paper's proposition, a loop reference, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qattn.attention.clustered import (
    MAX_BITS,
    cluster_queries,
    clustered_attention,
    clustered_shared_attention,
    hamming_kmeans,
    hash_codes,
    random_planes,
)
from qattn.attention.shared_score import shared_score_attention


def full_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, -math.inf)
    weights = torch.softmax(scores, -1)
    return weights @ v, weights


def loop_reference(q, k, v, labels, n_clusters, top_k):
    """Clustered / improved clustered attention written as plain loops over heads, clusters and queries."""
    batch, heads, n, d = q.shape
    out = torch.zeros(batch, heads, n, v.shape[-1], dtype=q.dtype)
    rows_out = torch.zeros(batch, heads, n, k.shape[2], dtype=q.dtype)
    for b in range(batch):
        for h in range(heads):
            for c in range(n_clusters):
                members = [i for i in range(n) if labels[b, h, i] == c]
                if not members:
                    continue
                centroid = torch.stack([q[b, h, i] for i in members]).mean(0)
                row = torch.softmax(k[b, h] @ centroid / math.sqrt(d), -1)
                top = sorted(range(k.shape[2]), key=lambda j: -float(row[j]))[:top_k] if top_k else []
                mass = sum(float(row[j]) for j in top)
                for i in members:
                    r = row.clone()
                    if top:
                        exact = torch.softmax(torch.stack([k[b, h, j] @ q[b, h, i] / math.sqrt(d) for j in top]), -1)
                        for j, p in zip(top, exact):
                            r[j] = mass * p
                    rows_out[b, h, i] = r
                    out[b, h, i] = r @ v[b, h]
    return out, rows_out


def tensors(batch=2, heads=3, n=12, s=10, d=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, heads, n, d, generator=g, dtype=dtype),
        torch.randn(batch, heads, s, d, generator=g, dtype=dtype),
        torch.randn(batch, heads, s, 7, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_every_query_its_own_cluster_is_full_attention(dtype, tol):
    q, k, v = tensors(dtype=dtype)
    labels = torch.arange(q.shape[2]).expand(q.shape[:3]).contiguous()
    out, weights = clustered_attention(q, k, v, labels, q.shape[2], need_weights=True)
    ref, ref_w = full_attention(q, k, v)
    assert torch.allclose(out, ref, atol=tol, rtol=0) and torch.allclose(weights, ref_w, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("n_clusters", [1, 3])
def test_improved_with_every_key_is_full_attention(dtype, tol, n_clusters):
    q, k, v = tensors(dtype=dtype)
    labels = torch.randint(n_clusters, q.shape[:3], generator=torch.Generator().manual_seed(1))
    out, weights = clustered_attention(q, k, v, labels, n_clusters, top_k=k.shape[2], need_weights=True)
    ref, ref_w = full_attention(q, k, v)
    assert torch.allclose(out, ref, atol=tol, rtol=0) and torch.allclose(weights, ref_w, atol=tol, rtol=0)


@pytest.mark.parametrize("top_k", [0, 1, 4])
def test_equals_a_loop_reference(top_k):
    q, k, v = tensors()
    labels = torch.randint(4, q.shape[:3], generator=torch.Generator().manual_seed(2))
    out, weights = clustered_attention(q, k, v, labels, 4, top_k=top_k, need_weights=True)
    ref, ref_rows = loop_reference(q, k, v, labels, 4, top_k)
    assert torch.allclose(out, ref, atol=1e-12) and torch.allclose(weights, ref_rows, atol=1e-12)
    assert torch.allclose(weights.sum(-1), torch.ones(()).double())


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 24),
    s=st.integers(2, 16),
    d=st.integers(1, 8),
    n_clusters=st.integers(1, 6),
    top_k=st.integers(1, 16),
    spread=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_improved_is_never_farther_from_full_attention_than_clustered(n, s, d, n_clusters, top_k, spread, seed):
    """Proposition 2 of the paper, per query: ‖A_i − Â_i‖₁ ≤ ‖A_i − A^c_i‖₁."""
    g = torch.Generator().manual_seed(seed)
    q = spread * torch.randn(1, 2, n, d, generator=g, dtype=torch.float64)
    k = spread * torch.randn(1, 2, s, d, generator=g, dtype=torch.float64)
    v = torch.randn(1, 2, s, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(n_clusters, (1, 2, n), generator=g)
    top_k = min(top_k, s)
    _, full = full_attention(q, k, v)
    _, plain = clustered_attention(q, k, v, labels, n_clusters, need_weights=True)
    _, improved = clustered_attention(q, k, v, labels, n_clusters, top_k=top_k, need_weights=True)
    gap_plain = (full - plain).abs().sum(-1)
    gap_improved = (full - improved).abs().sum(-1)
    assert (gap_improved <= gap_plain + 1e-12).all(), (gap_improved - gap_plain).max()


def test_a_checker_that_swapped_the_two_would_fail():
    """Negative control: on the same inputs the reverse inequality does not hold everywhere."""
    q, k, v = tensors(n=20, s=12, seed=3)
    labels = torch.randint(3, q.shape[:3], generator=torch.Generator().manual_seed(3))
    _, full = full_attention(q, k, v)
    _, plain = clustered_attention(q, k, v, labels, 3, need_weights=True)
    _, improved = clustered_attention(q, k, v, labels, 3, top_k=4, need_weights=True)
    assert ((full - plain).abs().sum(-1) > (full - improved).abs().sum(-1) + 1e-9).any()


def test_gradients_reach_every_member_query_through_the_centroid():
    q, k, v = tensors()
    q.requires_grad_(True)
    labels = torch.randint(3, q.shape[:3], generator=torch.Generator().manual_seed(4))
    for top_k in (0, 3):
        q.grad = None
        out, _ = clustered_attention(q, k, v, labels, 3, top_k=top_k)
        out.square().sum().backward()
        assert (q.grad.abs().sum(-1) > 0).all(), f"top_k={top_k}: a query got no gradient"
    assert torch.autograd.gradcheck(lambda x: clustered_attention(x, k, v, labels, 3, top_k=3)[0], (q.detach().requires_grad_(),))


def test_key_padding_masks_and_dead_rows():
    q, k, v = tensors()
    mask = torch.zeros(2, 1, 1, k.shape[2], dtype=torch.bool)
    mask[0, ..., -3:] = True
    mask[1] = True  # every key of batch 1 masked: zeros, never NaN
    labels = torch.arange(q.shape[2]).expand(q.shape[:3]).contiguous()
    out, weights = clustered_attention(q, k, v, labels, q.shape[2], top_k=2, attn_mask=mask, need_weights=True)
    ref, ref_w = full_attention(q[:1], k[:1], v[:1], mask[:1])
    assert torch.allclose(out[:1], ref, atol=1e-10) and torch.allclose(weights[:1], ref_w, atol=1e-10)
    assert torch.all(weights[0, ..., -3:] == 0)
    assert torch.all(out[1] == 0) and not torch.isnan(out).any()


def test_bad_arguments_are_refused_by_name():
    q, k, v = tensors()
    labels = torch.zeros(q.shape[:3], dtype=torch.int64)
    with pytest.raises(ValueError, match="n_clusters"):
        clustered_attention(q, k, v, labels, 0)
    with pytest.raises(ValueError, match="top_k"):
        clustered_attention(q, k, v, labels, 1, top_k=k.shape[2] + 1)
    with pytest.raises(ValueError, match="causal"):
        clustered_attention(q, k, v, labels, 1, is_causal=True)
    with pytest.raises(ValueError, match="key masks only"):
        clustered_attention(q, k, v, labels, 1, attn_mask=torch.eye(q.shape[2], k.shape[2], dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout_p"):
        clustered_attention(q, k, v, labels, 1, dropout_p=1.0)
    with pytest.raises(ValueError, match="labels"):
        clustered_attention(q, k, v, labels + 1, 1)
    with pytest.raises(ValueError, match="bits"):
        random_planes(4, MAX_BITS + 1)
    with pytest.raises(ValueError, match="bits"):
        random_planes(4, 0)


def test_hashing_and_kmeans_are_seeded_and_group_identical_queries():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    q = base.repeat_interleave(5, 0)  # 4 groups of 5 identical queries
    planes = random_planes(6, 16, torch.Generator().manual_seed(1))
    codes = hash_codes(q, planes)
    assert codes.dtype == torch.int64 and len(torch.unique(codes)) <= 4
    labels = hamming_kmeans(codes, 4, 16, generator=torch.Generator().manual_seed(2))
    for group in range(4):
        assert len(torch.unique(labels[group * 5 : group * 5 + 5])) == 1, "identical queries share a cluster"
    again = hamming_kmeans(codes, 4, 16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(labels, again)
    batched = cluster_queries(q[None, None], 4, planes, generator=torch.Generator().manual_seed(2))
    assert batched.shape == (1, 1, 20) and int(batched.max()) < 4


def test_quaternion_shared_scores_cluster_once_for_all_components():
    """With every query its own cluster, the quaternion variant equals shared-score attention."""
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, n, 4, 3, generator=g, dtype=torch.float64) for n in (9, 7, 7))
    labels = torch.arange(9).expand(2, 2, 9).contiguous()
    out, weights = clustered_shared_attention(q, k, v, n_clusters=9, labels=labels, need_weights=True)
    ref, ref_w = shared_score_attention(q, k, v, need_weights=True)
    assert out.shape == (2, 2, 9, 4, 3) and weights.shape == (2, 2, 9, 7)
    assert torch.allclose(out, ref, atol=1e-10) and torch.allclose(weights, ref_w, atol=1e-10)
    clustered, _ = clustered_shared_attention(q, k, v, n_clusters=3, top_k=2, generator=torch.Generator().manual_seed(6))
    assert clustered.shape == ref.shape and torch.isfinite(clustered).all()


def test_hamming_distances_equal_a_bit_count():
    from qattn.attention.clustered import _hamming

    g = torch.Generator().manual_seed(7)
    a, b = torch.randint(0, 2**40, (50,), generator=g), torch.randint(0, 2**40, (9,), generator=g)
    brute = torch.tensor([[bin(int(x) ^ int(y)).count("1") for y in b] for x in a])
    assert torch.equal(_hamming(a, b, 40), brute)


def test_the_chapter_experiment_runs_and_reports_its_headlines():
    from qattn.book.experiments import clustered_attention as chapter

    cfg = chapter.config_for(
        "ci", length=64, heads=2, clusters=(2, 0), top_ks=(0, 4), timing_lengths=(64, 128), timing_repeats=1, timing_min_time_s=0.0
    )
    metrics = chapter.run(cfg, log=lambda line: None)
    names = [h["name"] for h in metrics["headline"]]
    assert "queries where improved clustered is farther from full attention than clustered" in names
    exact = next(h for h in metrics["headline"] if h["name"].startswith("row L1 distance"))
    assert exact["value"] <= 1e-5
    assert (
        metrics["approximation"]["proposition_violations"] == 0 and metrics["approximation"]["proposition_checked"] == 2 * 2 * 64
    )  # C settings × heads × queries
    assert {r["variant"] for r in metrics["timing"]["rows"]} == {"full", "clustered", "improved", "clustering", "hamilton_clustered"}
    assert all(0 < s < 1 for s in metrics["timing"]["hamilton_shared_clustering_saving"].values())
    with pytest.raises(ValueError, match="unknown config field"):
        chapter.config_for("ci", clusterz=3)


def test_the_chapter_memory_workload_builds_a_forward_pass():
    from qattn.book.experiments import clustered_attention as chapter

    cfg = chapter.config_for("ci", heads=1, timing_clusters=4)
    for variant in chapter.VARIANTS:
        call = chapter.forward_workload(variant, 32, cfg.to_dict())
        assert call() is None


def test_hamilton_scores_share_one_clustering_and_reach_hamilton_attention_at_the_limit():
    from qattn.attention.clustered import clustered_hamilton_attention
    from qattn.attention.hamilton import hamilton_attention

    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 2, n, 4, 3, generator=g, dtype=torch.float64) for n in (9, 7, 7))
    own = torch.arange(9).expand(2, 2, 9).contiguous()
    out, weights = clustered_hamilton_attention(q, k, v, n_clusters=9, labels=own, need_weights=True)
    ref, ref_w = hamilton_attention(q, k, v, need_weights=True)
    assert out.shape == ref.shape and weights.shape == ref_w.shape == (2, 2, 4, 9, 7)
    assert torch.allclose(out, ref, atol=1e-10) and torch.allclose(weights, ref_w, atol=1e-10)
    improved, _ = clustered_hamilton_attention(q, k, v, n_clusters=2, top_k=7, labels=torch.zeros(2, 2, 9, dtype=torch.int64))
    assert torch.allclose(improved, ref, atol=1e-10), "top_k = S is exact whatever the clustering"
    # one clustering for the four maps: every map's row is a function of the same labels
    labels = torch.randint(3, (2, 2, 9), generator=g)
    _, w = clustered_hamilton_attention(q, k, v, n_clusters=3, labels=labels, need_weights=True)
    for b in range(2):
        for h in range(2):
            for c in range(3):
                rows = w[b, h][:, labels[b, h] == c]  # (4 maps, members, S)
                assert torch.allclose(rows, rows[:, :1].expand_as(rows)), "members of a cluster share each map's row"


# -- the registered mechanisms and the layer ------------------------------------------------------


def layer_input(seed=0, n=40, e=32):
    return torch.randn(2, n, e, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_layer_keeps_its_planes_as_a_buffer_and_redraws_only_when_asked():
    from qattn.attention import QuaternionMultiheadAttention

    gen = torch.Generator().manual_seed(1)
    layer = QuaternionMultiheadAttention(
        32, 2, score="clustered", score_options={"n_clusters": 4, "bits": 12}, generator=gen, batch_first=True, dtype=torch.float64
    ).eval()
    assert layer.planes.shape == (12, 4 * 4 + 1) and layer.planes.dtype == torch.float64  # d_h = 32 / (4·2) = 4
    assert "planes" in layer.state_dict() and "n_clusters': 4" in repr(layer)
    x = layer_input()
    first, _ = layer(x, x, x)
    assert torch.equal(first, layer(x, x, x)[0])  # same planes, same k-means seed: same output
    again = QuaternionMultiheadAttention(
        32,
        2,
        score="clustered",
        score_options={"n_clusters": 4, "bits": 12},
        generator=torch.Generator().manual_seed(1),
        batch_first=True,
        dtype=torch.float64,
    )
    assert torch.equal(again.planes, layer.planes)  # the generator alone decides the planes
    old = layer.planes.clone()
    layer.redraw_buffers(torch.Generator().manual_seed(2))
    assert not torch.equal(layer.planes, old) and layer.planes.shape == old.shape
    assert not torch.allclose(layer(x, x, x)[0], first)  # other planes, other clusters (negative control)


def test_inference_time_swap_keeps_the_projections_and_is_exact_with_a_cluster_per_query():
    from qattn.attention import QuaternionMultiheadAttention

    torch.manual_seed(0)
    full = QuaternionMultiheadAttention(32, 2, score="shared", batch_first=True, dtype=torch.float64).eval()
    x = layer_input(3)
    reference, _ = full(x, x, x)
    for score, options in (("clustered", {"n_clusters": 40}), ("improved_clustered", {"n_clusters": 1, "top_k": 40})):
        swapped = full.with_score(score, options, generator=torch.Generator().manual_seed(4))
        assert swapped.score == score and full.score == "shared" and not hasattr(full, "planes")
        assert torch.equal(swapped.q_proj.weight_r, full.q_proj.weight_r)
        assert torch.allclose(swapped(x, x, x)[0], reference, atol=1e-10)  # the exactness limits, through the layer
    coarse = full.with_score("clustered", {"n_clusters": 2})
    assert not torch.allclose(coarse(x, x, x)[0], reference, atol=1e-3)  # negative control: 2 clusters approximate
    with pytest.raises(ValueError, match="takes no option"):
        full.with_score("clustered", {"top_k": 3})
    with pytest.raises(ValueError, match="unknown attention mechanism"):
        full.with_score("clusterd")


def test_layer_refuses_causal_and_per_query_masks_and_takes_key_padding():
    from qattn.attention import QuaternionMultiheadAttention

    layer = QuaternionMultiheadAttention(
        32, 2, score="improved_clustered", score_options={"n_clusters": 3, "top_k": 5}, batch_first=True, dtype=torch.float64
    )
    x = layer_input(5)
    with pytest.raises(ValueError, match="causal"):
        layer(x, x, x, attn_mask=torch.ones(40, 40, dtype=torch.bool).triu(1), is_causal=True)
    with pytest.raises(ValueError, match="key masks only"):
        layer(x, x, x, attn_mask=torch.ones(40, 40, dtype=torch.bool).triu(1))
    padding = torch.zeros(2, 40, dtype=torch.bool)
    padding[0, 30:] = True
    out, weights = layer(x, x, x, key_padding_mask=padding)
    assert torch.isfinite(out).all() and (weights[0, :, 30:] == 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(()).double())


def test_dropout_acts_in_training_only_and_keeps_rows_unbiased():
    from qattn.attention.clustered import clustered_core

    q, k, v = (torch.randn(1, 1, 64, 4, 2, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (7, 8, 9))
    plain, _ = clustered_core(q, k, v, n_clusters=4)
    torch.manual_seed(0)
    dropped = torch.stack([clustered_core(q, k, v, dropout_p=0.5, n_clusters=4)[0] for _ in range(400)])
    assert not torch.allclose(dropped[0], plain)
    assert torch.allclose(dropped.mean(0), plain, atol=0.15)  # inverted dropout: unbiased on average


def test_swap_attention_swaps_every_layer_of_a_model_and_leaves_it_unchanged():
    from qattn.attention import swap_attention
    from qattn.book.models.blocks import Encoder

    torch.manual_seed(0)
    model = Encoder("shared", width=32, depth=2, num_heads=2).double().eval()
    x = layer_input(6, n=24)
    reference, _ = model(x)
    # 63 bits: distinct queries get distinct codes here (with 31, two of them shared one)
    swapped = swap_attention(model, "clustered", {"n_clusters": 24, "bits": 63}, generator=torch.Generator().manual_seed(0))
    scores = [m.score for m in swapped.modules() if hasattr(m, "score_options")]
    assert scores == ["clustered", "clustered"]
    assert [m.score for m in model.modules() if hasattr(m, "score_options")] == ["shared", "shared"]
    assert torch.allclose(swapped(x)[0], reference, atol=1e-10)  # a cluster per query: exact
    assert not torch.allclose(swap_attention(model, "clustered", {"n_clusters": 2})(x)[0], reference, atol=1e-3)
    with pytest.raises(ValueError, match="no QuaternionMultiheadAttention layer"):
        swap_attention(torch.nn.Linear(3, 3), "clustered")
