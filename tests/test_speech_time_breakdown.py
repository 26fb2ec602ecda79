"""Per-layer-type time breakdown of the speech enhancer (hooks): keys, consistency, no side effects.

No timing assertions (which variant spends more in attention depends on the machine's load).
"""

import pytest
import torch

from qattn.book.experiments.speech_enhancement.timing import BREAKDOWN_CATEGORIES, time_breakdown
from qattn.book.models.speech import SpeechEnhancer, SpeechModelConfig

TINY = SpeechModelConfig(growth=8, dense_width=16, d_model=16, num_heads=2, ffn_dim=32, conv_kernel=3, n_time_blocks=1, n_freq_blocks=1)
CATEGORIES = {"stft", "attention", "bottleneck_other", "dense_blocks", "other_convs"}


@pytest.mark.parametrize(
    "cfg",
    [
        TINY.replace(score="shared"),
        TINY.replace(score="hamilton"),
        TINY.replace(kind="real"),
        TINY.replace(score="shared", bottleneck="transformer"),
    ],
    ids=["shared", "hamilton", "real", "transformer"],
)
def test_breakdown_is_consistent_and_leaves_the_model_untouched(cfg):
    torch.manual_seed(0)
    model = SpeechEnhancer(cfg).eval()
    wave = 0.1 * torch.randn(1, 4000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(wave)

    out = time_breakdown(model, 0.5, repeats=1, warmup=0)  # the forward above warmed it up

    assert set(BREAKDOWN_CATEGORIES) == CATEGORIES
    assert set(out) >= {"seconds", "share", "total_s", "audio_s", "rtf"}
    assert set(out["seconds"]) == CATEGORIES | {"unattributed", "total"}
    assert set(out["share"]) == set(out["seconds"])
    assert out["audio_s"] == 0.5
    assert out["total_s"] == out["seconds"]["total"] > 0
    assert out["rtf"] == pytest.approx(out["total_s"] / 0.5)
    assert all(out["seconds"][c] >= 0 for c in CATEGORIES)
    assert out["seconds"]["attention"] > 0 and out["seconds"]["dense_blocks"] > 0
    parts = sum(out["seconds"][c] for c in CATEGORIES)
    assert 0.8 * out["total_s"] <= parts <= out["total_s"] + 1e-6
    assert sum(out["share"][c] for c in CATEGORIES) + out["share"]["unattributed"] == pytest.approx(1.0)

    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert "mask" not in model.__dict__ and "bottleneck" not in model.__dict__
    assert not model.training
    with torch.inference_mode():
        after = model(wave)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_training_mode_is_restored():
    model = SpeechEnhancer(TINY.replace(score="shared")).train()
    time_breakdown(model, 0.5, repeats=1, warmup=1)
    assert model.training
