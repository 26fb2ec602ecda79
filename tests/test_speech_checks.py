"""The speech chapter's reference points and statistics: oracle and classical baselines, the
magnitude mask, the recurrent mask estimator, the two-way bootstrap and the equivalence verdict."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qattn.book.data.speech import SPEAKERS, make_noise, mix_at_snr, synthesize
from qattn.book.experiments import speech_enhancement as exp
from qattn.book.models.speech import RecurrentMaskEstimator, SpeechEnhancer, apply_mask
from qattn.book.speech.baselines import ideal_ratio_mask, spectral_subtraction
from qattn.book.speech.losses import total_loss
from qattn.book.speech.metrics import si_sdr
from qattn.book.stats import equivalence, two_way_bootstrap

#: The ci profile's narrow model (magnitude mask, compressed input): the experiment's own config.
TINY = exp.model_config(exp.config_for("ci").model, "qconformer_shared")


@pytest.fixture(scope="module")
def utterance():
    """A synthesised test-speaker sentence in pink noise at 5 dB: (clean, noisy)."""
    clean = synthesize("The quiet river carried the wooden basket", SPEAKERS["test"][0])[:24000]
    clean = clean / np.abs(clean).max() * 0.5
    noise = make_noise("pink", len(clean), np.random.default_rng(0))
    return mix_at_snr(clean, noise, 5.0)


def test_oracle_mask_beats_spectral_subtraction_beats_the_input(utterance):
    clean, noisy = utterance
    noisy_db, ss_db, irm_db = (
        si_sdr(clean, noisy),
        si_sdr(clean, spectral_subtraction(clean, noisy)),
        si_sdr(clean, ideal_ratio_mask(clean, noisy)),
    )
    assert irm_db > ss_db + 2 > noisy_db + 2, (noisy_db, ss_db, irm_db)


def test_baselines_leave_clean_speech_alone_and_refuse_mismatched_input(utterance):
    clean, _ = utterance
    np.testing.assert_allclose(ideal_ratio_mask(clean, clean), clean, atol=1e-4)  # no noise: gain 1 everywhere
    with pytest.raises(ValueError, match="same length"):
        ideal_ratio_mask(clean, clean[:-1])


def test_loss_falls_as_quality_rises(utterance):
    """The training loss's sign and scale: clean < oracle mask < noisy input."""
    clean, noisy = utterance
    ref = torch.from_numpy(clean)[None]
    loss = {
        name: float(total_loss(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None], ref)["total"])
        for name, x in (("clean", clean), ("irm", ideal_ratio_mask(clean, noisy)), ("noisy", noisy))
    }
    assert loss["clean"] < loss["irm"] < loss["noisy"], loss


def test_magnitude_mask_keeps_the_noisy_phase_and_is_bounded():
    spec = torch.randn(2, 5, 7, dtype=torch.complex64)
    gain = torch.rand(2, 1, 5, 7)
    out = apply_mask(spec, gain)
    torch.testing.assert_close(out.angle(), spec.angle())
    assert (out.abs() <= spec.abs() + 1e-6).all()
    with pytest.raises(ValueError, match="1 .gain. or 2"):
        apply_mask(spec, torch.rand(2, 3, 5, 7))
    assert TINY.mask == "magnitude" and TINY.input_compression == 0.3
    model = SpeechEnhancer(TINY).eval()
    with torch.no_grad():
        features = torch.randn(1, 4, 9, 201)
        mask = model.mask(features)[0]
    assert mask.shape == (1, 1, 9, 201) and ((mask > 0) & (mask < 1)).all()


def test_config_refuses_unknown_mask_and_bad_compression():
    with pytest.raises(ValueError, match="mask must be"):
        TINY.replace(mask="phase")
    with pytest.raises(ValueError, match="input_compression"):
        TINY.replace(input_compression=0.0)


def test_recurrent_mask_estimator_fits_one_batch(utterance):
    """The sanity check a speech engineer runs first: a plain mask estimator trained on one batch
    with the chapter's loss must rise well above the noisy input on that batch."""
    clean, noisy = utterance
    x, y = torch.from_numpy(noisy[:16000])[None], torch.from_numpy(clean[:16000])[None]
    torch.manual_seed(0)
    model = RecurrentMaskEstimator(hidden=32, layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = total_loss(model(x), y)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fitted = si_sdr(y[0].numpy(), model(x)[0].numpy())
    assert fitted > si_sdr(y[0].numpy(), x[0].numpy()) + 2.0


def test_two_way_bootstrap_constant_and_negative_control():
    ci = two_way_bootstrap(np.full((3, 10), 0.25))
    assert ci["mean"] == ci["low"] == ci["high"] == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    per_utt = rng.normal(0.0, 0.1, 50)
    calm = np.stack([per_utt] * 3)  # three seeds that agree
    wild = calm + np.array([[-1.0], [0.0], [1.0]])  # same mean, seeds disagree strongly
    w_calm = two_way_bootstrap(calm)["high"] - two_way_bootstrap(calm)["low"]
    w_wild = two_way_bootstrap(wild)["high"] - two_way_bootstrap(wild)["low"]
    assert w_wild > 5 * w_calm, "the interval must carry the spread of retraining"
    with pytest.raises(ValueError, match="seeds, examples"):
        two_way_bootstrap(np.zeros(5))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(2, 30), st.floats(-3, 3), st.floats(0.1, 5))
def test_two_way_bootstrap_is_shift_and_scale_equivariant(seeds, n, shift, scale):
    d = np.random.default_rng(seeds * 100 + n).normal(size=(seeds, n))
    base, moved = two_way_bootstrap(d, resamples=200), two_way_bootstrap(scale * d + shift, resamples=200)
    assert base["low"] <= base["high"]
    assert moved["low"] == pytest.approx(scale * base["low"] + shift, abs=1e-9)
    assert moved["high"] == pytest.approx(scale * base["high"] + shift, abs=1e-9)


def test_equivalence_verdicts():
    assert equivalence({"low": -0.09, "high": 0.09}, 0.1) == "equivalent"
    assert equivalence({"low": -0.3, "high": -0.2}, 0.1) == "different"
    assert equivalence({"low": -0.2, "high": 0.0}, 0.1) == "inconclusive"
    with pytest.raises(ValueError, match="margin"):
        equivalence({"low": 0.0, "high": 0.0}, 0.0)
