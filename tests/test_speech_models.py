"""Speech enhancer: shapes, release-sized parameter counts, mask head, shared vs hamilton parameters."""

import pytest
import torch

from qattn.book.models.speech import (
    QuaternionBatchNorm2d,
    SpeechEnhancer,
    SpeechModelConfig,
    apply_mask,
    cat_channels,
    count_parameters,
    istft,
    quaternion_input,
    release_config,
    stft,
)

TINY = SpeechModelConfig(
    growth=8,
    dense_width=16,
    d_model=16,
    num_heads=2,
    ffn_dim=32,
    conv_kernel=3,
    n_time_blocks=1,
    n_freq_blocks=1,
    encoder_dilations=(1, 2),
    decoder_dilations=(2, 1),
)


@pytest.mark.parametrize(
    "bottleneck,kind,paper",
    [
        ("conformer", "quaternion", 0.80e6),
        ("transformer", "quaternion", 0.62e6),
        ("conformer", "real", 3.19e6),
    ],
)
def test_release_parameter_counts(bottleneck, kind, paper):
    n = count_parameters(SpeechEnhancer(release_config(bottleneck, kind)))
    assert abs(n - paper) <= 0.05 * paper, n


def test_shared_and_hamilton_have_identical_parameters():
    torch.manual_seed(0)
    a = SpeechEnhancer(TINY.replace(score="shared"))
    torch.manual_seed(0)
    b = SpeechEnhancer(TINY.replace(score="hamilton"))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kind,bottleneck", [("quaternion", "conformer"), ("quaternion", "transformer"), ("real", "conformer")])
def test_shapes_and_gradients(kind, bottleneck):
    model = SpeechEnhancer(TINY.replace(kind=kind, bottleneck=bottleneck))
    wave = torch.randn(2, 1650)
    out = model(wave)
    assert out.shape == wave.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    features = quaternion_input(stft(wave))
    assert features.shape == (2, 4, 17, 201)
    mask, time_maps, freq_maps = model.mask(features, maps_for=3)
    assert mask.shape == (2, 2, 17, 201) and mask.abs().max() <= 1
    assert time_maps[0].shape[-2:] == (17, 17) and freq_maps[0].shape[-2:] == (101, 101)


def test_hamilton_maps_have_four_components():
    model = SpeechEnhancer(TINY.replace(score="hamilton")).eval()
    _, time_maps, freq_maps = model.forward_with_maps(torch.randn(1, 1600), maps_for=2)
    assert time_maps[0].shape == (2, 2, 4, 17, 17) and freq_maps[0].shape == (2, 2, 4, 101, 101)
    torch.testing.assert_close(time_maps[0].sum(-1), torch.ones(2, 2, 4, 17))


def test_mask_head_identity_rotation_and_gain():
    spec = stft(torch.randn(1, 3200))
    ones, zeros = torch.ones(1, *spec.shape[1:]), torch.zeros(1, *spec.shape[1:])
    torch.testing.assert_close(apply_mask(spec, torch.stack([ones, zeros], 1)), spec)
    torch.testing.assert_close(apply_mask(spec, torch.stack([0.5 * ones, zeros], 1)), 0.5 * spec)
    rotated = apply_mask(spec, torch.stack([ones, ones], 1))  # π rotation = sign flip
    torch.testing.assert_close(rotated, -spec, atol=1e-5, rtol=1e-5)
    quarter = apply_mask(spec, torch.stack([ones, 0.5 * ones], 1))
    torch.testing.assert_close(quarter, 1j * spec, atol=1e-5, rtol=1e-5)
    # through iSTFT: an identity mask reconstructs the wave
    wave = torch.randn(1, 3200)
    torch.testing.assert_close(istft(stft(wave), 3200), wave, atol=1e-5, rtol=1e-4)


def test_quaternion_input_layout():
    spec = torch.tensor([[[3 + 4j]]])
    assert quaternion_input(spec).flatten().tolist() == [0.0, 5.0, 3.0, 4.0]


def test_quaternion_batch_norm_statistics():
    bn = QuaternionBatchNorm2d(8)
    x = torch.randn(4, 8, 6, 5) * 3 + 2
    y = bn(x).view(4, 4, 2, 6, 5)
    assert y.mean(dim=(0, 3, 4)).abs().max() < 1e-5
    assert torch.allclose(y.pow(2).sum(1).mean(dim=(0, 2, 3)), torch.ones(2), atol=1e-3)
    assert sum(p.numel() for p in bn.parameters()) == 2 + 8


def test_cat_channels_keeps_components_together():
    a, b = torch.randn(1, 8, 2, 2), torch.randn(1, 12, 2, 2)
    c = cat_channels([a, b], quaternion=True)
    for comp in range(4):
        torch.testing.assert_close(
            c[:, comp * 5 : (comp + 1) * 5], torch.cat([a[:, comp * 2 : (comp + 1) * 2], b[:, comp * 3 : (comp + 1) * 3]], 1)
        )


def test_config_errors():
    with pytest.raises(ValueError, match="score"):
        SpeechModelConfig(score="both")
    with pytest.raises(ValueError, match="d_model"):
        SpeechModelConfig(d_model=20, num_heads=2)
    with pytest.raises(ValueError, match="at least n_fft"):
        SpeechEnhancer(TINY)(torch.randn(1, 100))
