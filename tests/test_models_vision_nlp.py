"""Models of the vision and NLP chapters: shapes, masks, identical shared/Hamilton initialisation, sizes."""

import pytest
import torch

from qattn.book.models.blocks import VARIANTS, count_parameters, initialise_, matched_width
from qattn.book.models.text import TextTransformer, build_text_model
from qattn.book.models.vit import VisionTransformer, build_vit, quaternion_patches

SMALL_VIT = dict(width=32, depth=1, num_heads=2, patch_size=8)
SMALL_TEXT = dict(vocab_size=30, num_classes=3, width=32, depth=2, num_heads=2, max_len=12)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_quaternion_patches_layout():
    x = torch.arange(64.0).reshape(1, 8, 8)
    p = quaternion_patches(x, 4)
    assert p.shape == (1, 4, 16)
    # patch 0 (top-left 4×4): r = (even row, even col), i = (even, odd), j = (odd, even), k = (odd, odd)
    assert p[0, 0, :4].tolist() == [0, 2, 16, 18]
    assert p[0, 0, 4:8].tolist() == [1, 3, 17, 19]
    assert p[0, 0, 8:12].tolist() == [8, 10, 24, 26]
    assert p[0, 0, 12:].tolist() == [9, 11, 25, 27]
    assert p[0, 1, 0] == 4  # second patch starts at column 4
    assert quaternion_patches(torch.ones(2, 28, 28), 8).shape == (2, 16, 64)  # padded to 32×32
    assert float(quaternion_patches(torch.ones(1, 28, 28), 8).sum()) == 28 * 28  # zero padding
    with pytest.raises(ValueError, match="even"):
        quaternion_patches(x, 3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_vit_shapes(variant):
    model = build_vit(variant, generator=gen(), **SMALL_VIT)
    logits, maps = model(torch.rand(3, 28, 28), need_weights=True)
    assert logits.shape == (3, 10) and len(maps) == 1
    heads = 2
    expected = (3, heads, 4, 17, 17) if variant == "hamilton" else (3, heads, 17, 17)
    assert maps[0].shape == expected
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(maps[0].shape[:-1]))
    assert model(torch.rand(2, 28, 28))[1] == []


@pytest.mark.parametrize("family", ["vit", "text"])
def test_shared_and_hamilton_start_identical(family):
    if family == "vit":
        a, b = (build_vit(v, generator=gen(5), **SMALL_VIT) for v in ("shared", "hamilton"))
    else:
        a, b = (build_text_model(v, generator=gen(5), **SMALL_TEXT) for v in ("shared", "hamilton"))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    c = (
        build_vit("shared", generator=gen(6), **SMALL_VIT)
        if family == "vit"
        else build_text_model("shared", generator=gen(6), **SMALL_TEXT)
    )
    assert not all(torch.equal(sa[k], v) for k, v in c.state_dict().items())
    # ... and they do compute different things (the scores differ)
    if family == "vit":
        x = torch.rand(2, 28, 28)
        assert not torch.allclose(a(x)[0], b(x)[0])


def test_same_seed_same_model_for_every_variant():
    for variant in VARIANTS:
        a, b = (build_vit(variant, generator=gen(1), **SMALL_VIT) for _ in range(2))
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_real_counterparts_parameter_counts():
    q = count_parameters(build_vit("shared", **SMALL_VIT))
    wide = count_parameters(build_vit("real_same_width", **SMALL_VIT))
    same = build_vit("real_same_params", **SMALL_VIT)
    # encoder and patch embedding are 4× larger at the same width; embeddings/norms/head are not
    assert 2.5 * q < wide < 4 * q
    assert abs(count_parameters(same) - q) / q < 0.15
    assert same.pos_embed.shape[-1] < 32
    tq = count_parameters(build_text_model("hamilton", **SMALL_TEXT))
    tw = count_parameters(build_text_model("real_same_params", **SMALL_TEXT))
    assert abs(tw - tq) / tq < 0.15
    # matched_width picks the closest
    assert matched_width(lambda w: torch.nn.Linear(w, w), 64 * 64 + 64, 8, 128) == 64


def test_encoder_parameter_ratio_is_four():
    blocks_q = count_parameters(build_vit("shared", **SMALL_VIT).encoder.blocks)
    blocks_r = count_parameters(build_vit("real_same_width", **SMALL_VIT).encoder.blocks)
    norms = 2 * 2 * 32  # two LayerNorms per block (not quaternion)
    biases = 4 * 32 + 32 * 2 + 32  # attention biases + FFN biases are real-sized in both
    assert blocks_r - norms - biases == 4 * (blocks_q - norms - biases)


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_shapes_and_padding_mask(variant):
    model = build_text_model(variant, generator=gen(), **SMALL_TEXT).eval()
    ids = torch.tensor([[2, 5, 6, 7, 0, 0], [2, 8, 0, 0, 0, 0]])
    mask = ids == 0
    logits, maps = model(ids, mask, need_weights=True)
    assert logits.shape == (2, 3) and len(maps) == 2
    w = maps[0]
    assert w.shape[:2] == (2, 2) and w.shape[-2:] == (6, 6)
    assert float(w[..., 4:].detach().abs().sum()) == 0.0 and float(w[1][..., 2:].detach().abs().sum()) == 0.0  # padded keys get 0
    # padding does not change the result for the real tokens
    short, _ = model(ids[1:, :2], mask[1:, :2])
    torch.testing.assert_close(short, logits[1:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="padding_mask"):
        model(ids, mask.long())
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_bad_variant():
    with pytest.raises(ValueError, match="variant"):
        VisionTransformer("complex")
    with pytest.raises(ValueError, match="variant"):
        TextTransformer("complex", 10, 2)


def test_initialise_is_driven_by_the_generator_only():
    model = build_vit("real_same_width", generator=gen(2), **SMALL_VIT)
    before = [p.clone() for p in model.parameters()]
    torch.manual_seed(123)  # the global generator must not matter
    initialise_(model, gen(2))
    a = [p.clone() for p in model.parameters()]
    torch.manual_seed(456)
    initialise_(model, gen(2))
    assert all(torch.equal(x, y) for x, y in zip(a, model.parameters()))
    assert len(before) == len(a)
