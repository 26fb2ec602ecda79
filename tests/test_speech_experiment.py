"""Speech experiment helpers: profiles, identical batches for every variant, divergence, headline format."""

import numpy as np
import pytest
import torch

from qattn.book.data.speech import SpeechSplit
from qattn.book.experiments import speech_enhancement as exp
from qattn.book.harness.training import lr_factor
from qattn.book.report import collect_headlines


def test_profiles_and_errors():
    full, ci = exp.config_for("full"), exp.config_for("ci")
    assert full.quaternion_seeds >= 2 and full.timing_lengths == (1.0, 2.0, 4.0, 6.86)
    assert set(full.variants) == set(exp.VARIANTS) and ci.steps < full.steps
    with pytest.raises(ValueError, match="profile"):
        exp.config_for("huge")
    with pytest.raises(ValueError, match="unknown config field"):
        exp.config_for("ci", nonsense=1)


def test_batches_depend_only_on_the_seed():
    rng = np.random.default_rng(0)
    split = SpeechSplit(
        [rng.standard_normal(n).astype(np.float32) for n in (3000, 9000)], [rng.standard_normal(n).astype(np.float32) for n in (3000, 9000)]
    )
    a, b, c = (exp.training_batches(split, 3, 2, 4000, s) for s in (0, 0, 1))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert a[0][0].shape == (2, 4000)


def test_shared_and_hamilton_models_start_identical():
    base = exp.config_for("ci").model
    h, s = exp.build_model(base, "qconformer_hamilton", 3), exp.build_model(base, "qconformer_shared", 3)
    assert all(torch.equal(p, q) for p, q in zip(h.state_dict().values(), s.state_dict().values()))
    state = torch.random.get_rng_state()
    exp.build_model(base, "real_conformer", 3)
    assert torch.equal(state, torch.random.get_rng_state()), "building a model must not move the global RNG"


def test_headline_entries_follow_the_report_format():
    metrics = {
        "test": {"noisy": {"pesq": 1.5}, "qconformer_hamilton": {"pesq": 1.6}, "qconformer_shared": {"pesq": 1.62}},
        "rtf_trained": [
            {"model": "qconformer_hamilton", "seconds": 1.0, "rtf": 0.5},
            {"model": "qconformer_shared", "seconds": 1.0, "rtf": 0.4},
        ],
        "divergence": {"qconformer_hamilton": {"time": [0.1], "freq": [0.2]}, "qconformer_shared": {"time": [0.0], "freq": [0.0]}},
    }
    rows = exp.headline(metrics)
    found = collect_headlines({"speech": {"metrics": {"headline": rows}}})
    assert found[("speech", "qconformer (trained, narrow) CPU RTF reduction % at 1.0 s")]["value"] == pytest.approx(20.0)
    assert found[("speech", "JS divergence, QConformer, shared, time blocks")]["value"] == 0.0


def test_lr_schedule_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.01
    assert [lr_factor(s, 100, 0, "constant") for s in (0, 50, 99)] == [1.0, 1.0, 1.0]


def test_materialised_maps_change_the_path_not_the_output():
    base = exp.config_for("ci").model
    model = exp.build_model(base, "qtransformer_hamilton", 0).eval()
    wave = 0.1 * torch.randn(1, 4000, generator=torch.Generator().manual_seed(0))
    seen = []
    handle = model.attention_modules()[0].register_forward_hook(lambda m, a, out: seen.append(out[1] is not None))
    with torch.inference_mode():
        plain, maps = model(wave), exp.MaterialisedMaps(model)(wave)
    handle.remove()
    assert seen == [False, True], "the wrapper must ask the attention for its weights (the maps path)"
    torch.testing.assert_close(maps, plain, atol=1e-5, rtol=1e-4)
    with torch.inference_mode():
        assert torch.equal(model(wave), plain), "the hooks must be removed afterwards"
    with pytest.raises(ValueError, match="score='hamilton'"):
        exp.MaterialisedMaps(exp.build_model(base, "qtransformer_shared", 0))


def test_peak_memory_grows_with_the_materialised_maps():
    cfg = exp.model_config(exp.config_for("ci").model, "qtransformer_hamilton")
    fused = exp.peak_memory(cfg, 2.0, threads=1)
    maps = exp.peak_memory(cfg, 2.0, threads=1, materialise_maps=True)
    assert fused["ok"] and maps["ok"], (fused, maps)
    # the four maps of the time block alone are maps_bytes (≈ 76 MiB here); the fused kernel never stores them
    assert maps["peak_bytes"] - fused["peak_bytes"] > 0.5 * exp.maps_bytes(cfg, 2.0)
