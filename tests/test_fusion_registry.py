"""The fusion-mechanism registry and the contract every registered fusion core keeps.

Fusion cores pool ``M ≥ 2`` modalities ``fusion [F^m (B, L_m, K)]``, ``scores [S^m (B, L_m, r)]``
into ``z (B, K)`` through one attention over index tuples. The contract tests run on every name in
:data:`FUSION_MECHANISMS`, so a new fusion mechanism is checked as soon as it is registered.
"""

import dataclasses

import pytest
import torch

import qattn
from qattn.attention import FusionMechanism, fusion_names, get_fusion
from qattn.attention import multilinear as man
from qattn.attention.registry import FUSION_MECHANISMS, mechanism_names
from qattn.attention.shared_score import shared_scores

NAMES = fusion_names()
F64 = torch.float64


def inputs(lengths=(3, 4, 2), b=2, k=3, r=4, seed=0, scale=0.5, dtype=F64, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    fusion = [torch.rand(b, n, k, generator=gen, dtype=dtype).requires_grad_(requires_grad) for n in lengths]
    scores = [(scale * torch.randn(b, n, r, generator=gen, dtype=dtype)).requires_grad_(requires_grad) for n in lengths]
    return fusion, scores


def options_for(spec: FusionMechanism, rank: int, n_features: int = 64, seed: int = 1) -> dict:
    """The spec's options with its random state drawn from a seeded generator (float64 features)."""
    if spec.draw_buffers is None:
        return spec.resolve_options()
    drawn = spec.draw_buffers(rank, {**spec.options, "n_features": n_features}, torch.Generator().manual_seed(seed))
    return spec.resolve_options({name: t.to(F64) for name, t in drawn.items()})


def test_names_are_the_registered_specs_in_order():
    assert NAMES == tuple(spec.name for spec in FUSION_MECHANISMS) == ("multilinear", "multilinear_arf")
    assert fusion_names(exact=True) == ("multilinear",) and fusion_names(exact=False) == ("multilinear_arf",)
    assert not set(NAMES) & set(mechanism_names()), "a fusion name must not shadow a q/k/v mechanism"
    assert get_fusion("multilinear") is man.MECHANISM and get_fusion("multilinear_arf") is man.ARF_MECHANISM
    assert "MultilinearAttention" in qattn.attention.__all__ and "get_fusion" in qattn.attention.__all__


@pytest.mark.parametrize("bad", ["shared", "", "MAN", None, 3])
def test_unknown_name_error_lists_the_registered_ones(bad):
    with pytest.raises(ValueError, match=r"unknown fusion mechanism .*registered fusion mechanisms: \('multilinear', 'multilinear_arf'\)"):
        get_fusion(bad)
    with pytest.raises(TypeError, match="exact must be"):
        fusion_names(exact="yes")


@pytest.mark.parametrize(
    "changes, error, pattern",
    [
        ({"name": "multi-linear"}, ValueError, "Python identifier"),
        ({"core": 3}, TypeError, "must be callable"),
        ({"summary": "two\nlines"}, ValueError, "one non-empty line"),
        ({"exact": 1}, TypeError, "exact of fusion mechanism"),
        ({"options": {"masks": None}}, ValueError, "other than the contract's"),
        ({"options": [1]}, TypeError, "must map name"),
        ({"draw_buffers": 5}, TypeError, "callable or None"),
    ],
)
def test_spec_validation_names_the_bad_field(changes, error, pattern):
    with pytest.raises(error, match=pattern):
        dataclasses.replace(man.MECHANISM, **changes)


def test_options_resolve_and_unknown_ones_are_named():
    spec = get_fusion("multilinear_arf")
    assert spec.resolve_options() == {"features": None, "n_features": 256, "orthogonal": True}
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['rank'\]; its options: \('features', 'n_features', 'orthogonal'\)"):
        spec.resolve_options({"rank": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lengths", [(3, 4), (3, 4, 2), (2, 1, 3, 2)])
def test_output_shape_and_weights_as_declared(name, lengths):
    spec = get_fusion(name)
    fusion, scores = inputs(lengths)
    opts = options_for(spec, 4)
    z, weights = spec.core(fusion, scores, **opts)
    assert z.shape == (2, 3) and z.dtype == F64 and weights is None and torch.isfinite(z).all()
    if spec.returns_weights:
        z2, weights = spec.core(fusion, scores, need_weights=True, **opts)
        assert weights.shape == (2, *lengths) and torch.equal(z, z2)
        assert torch.allclose(weights.flatten(1).sum(-1), torch.ones(2, dtype=F64))
    else:
        with pytest.raises(ValueError, match=rf"{name} never forms the joint weights"):
            spec.core(fusion, scores, need_weights=True, **opts)


@pytest.mark.parametrize("name", NAMES)
def test_padding_tokens_change_nothing(name):
    """Appending padding tokens (with any values) to each modality leaves z as it was."""
    spec = get_fusion(name)
    fusion, scores = inputs((3, 4, 2))
    opts = options_for(spec, 4)
    ref, _ = spec.core(fusion, scores, **opts)
    gen = torch.Generator().manual_seed(7)
    padded_f = [torch.cat([f, 50 * torch.rand(2, 2, 3, generator=gen, dtype=F64)], 1) for f in fusion]
    padded_s = [torch.cat([s, torch.randn(2, 2, 4, generator=gen, dtype=F64)], 1) for s in scores]
    masks = [torch.cat([torch.zeros(2, f.shape[1], dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)], 1) for f in fusion]
    out, _ = spec.core(padded_f, padded_s, masks, **opts)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    unmasked, _ = spec.core(padded_f, padded_s, **opts)  # negative control: the same tokens unmasked do matter
    assert not torch.allclose(unmasked, ref, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_a_fully_padded_modality_gives_zeros_not_nan(name):
    spec = get_fusion(name)
    fusion, scores = inputs((3, 4, 2))
    masks = [None, torch.tensor([[True] * 4, [False, True, True, True]]), None]
    z, _ = spec.core(fusion, scores, masks, **options_for(spec, 4))
    assert torch.equal(z[0], torch.zeros(3, dtype=F64)) and torch.isfinite(z).all() and z[1].abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_pooling_ignores_token_order_within_a_modality(name):
    spec = get_fusion(name)
    fusion, scores = inputs((3, 5, 2))
    opts = options_for(spec, 4)
    perm = torch.tensor([4, 2, 0, 1, 3])
    ref, _ = spec.core(fusion, scores, **opts)
    out, _ = spec.core([fusion[0], fusion[1][:, perm], fusion[2]], [scores[0], scores[1][:, perm], scores[2]], **opts)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    spec = get_fusion(name)
    fusion, scores = inputs((2, 3, 2), b=1, k=2, r=3, requires_grad=True)
    opts = options_for(spec, 3, n_features=16)
    mask = torch.tensor([[False, False, True]])

    def f(*tensors):
        return spec.core(list(tensors[:3]), list(tensors[3:]), [None, mask, None], **opts)[0]

    assert torch.autograd.gradcheck(f, (*fusion, *scores))


@pytest.mark.parametrize("name", NAMES)
def test_float32_keeps_dtype_and_agrees_with_float64(name):
    spec = get_fusion(name)
    fusion, scores = inputs((3, 4, 2))
    opts = options_for(spec, 4)
    ref, _ = spec.core(fusion, scores, **opts)
    opts32 = {key: (v.float() if isinstance(v, torch.Tensor) else v) for key, v in opts.items()}
    out, _ = spec.core([f.float() for f in fusion], [s.float() for s in scores], **opts32)
    assert out.dtype == torch.float32 and torch.allclose(out.double(), ref, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_fewer_than_two_modalities_refused(name):
    spec = get_fusion(name)
    fusion, scores = inputs((3,))
    with pytest.raises(ValueError, match="at least 2 modalities, got 1"):
        spec.core(fusion, scores, **options_for(spec, 4))


def test_arf_core_refuses_to_run_without_features_and_approaches_the_exact_core():
    fusion, scores = inputs((3, 4, 2))
    with pytest.raises(ValueError, match="multilinear_arf needs its random features"):
        get_fusion("multilinear_arf").core(fusion, scores)
    exact, _ = get_fusion("multilinear").core(fusion, scores)
    errors = []
    for n in (16, 4096):
        approx, _ = get_fusion("multilinear_arf").core(fusion, scores, **options_for(get_fusion("multilinear_arf"), 4, n))
        errors.append(float((approx - exact).norm() / exact.norm()))
    assert errors[1] < 0.02 and errors[1] < errors[0] / 4, errors


def test_drawn_features_follow_the_options_and_the_generator():
    spec = get_fusion("multilinear_arf")
    a = spec.draw_buffers(5, {"n_features": 12, "orthogonal": True}, torch.Generator().manual_seed(3))["features"]
    b = spec.draw_buffers(5, {"n_features": 12, "orthogonal": True}, torch.Generator().manual_seed(3))["features"]
    c = spec.draw_buffers(5, {"n_features": 12, "orthogonal": False}, torch.Generator().manual_seed(3))["features"]
    assert a.shape == (12, 5) and torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a[0] @ a[1])) < 1e-5 and abs(float(c[0] @ c[1])) > 1e-3  # orthogonal within a block; i.i.d. not


def test_shared_quaternion_scores_are_pairwise_dot_products_so_arf_applies_unchanged():
    """The quaternion link: with shared scores the tuple exponent is Σ_{m<n} Re(s^m ⊗ conj(s^n)), a sum
    of real dot products of the flattened quaternions, which is exactly what ARF factorises."""
    gen = torch.Generator().manual_seed(4)
    lengths, units = (3, 4, 2), 2
    quats = [0.4 * torch.randn(1, n, 4, units, generator=gen, dtype=F64) for n in lengths]  # (B, L, 4, d) quaternion factors
    fusion = [torch.rand(1, n, 3, generator=gen, dtype=F64) for n in lengths]
    logits = torch.zeros(1, *lengths, dtype=F64)
    for i in range(3):
        for j in range(i + 1, 3):
            pair = shared_scores(quats[i][:, None], quats[j][:, None])[:, 0] / (4 * units) ** 0.5  # (1, L_i, L_j)
            shape = [1, 1, 1, 1]
            shape[i + 1], shape[j + 1] = lengths[i], lengths[j]
            logits = logits + pair.reshape(shape)
    weights = torch.softmax(logits.flatten(1), -1).reshape(logits.shape)
    reference = torch.einsum("bxyz,bxk,byk,bzk->bk", weights, *fusion)
    flat = [q.flatten(-2) for q in quats]
    exact, exact_weights = get_fusion("multilinear").core(fusion, flat, need_weights=True)
    assert torch.allclose(exact_weights, weights, atol=1e-12) and torch.allclose(exact, reference, atol=1e-12)
    spec = get_fusion("multilinear_arf")
    approx, _ = spec.core(fusion, flat, **options_for(spec, 4 * units, n_features=8192))
    assert float((approx - exact).norm() / exact.norm()) < 0.02
