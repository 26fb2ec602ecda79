"""Speech metrics and losses on known cases: identity, monotone degradation, scale invariance."""

import numpy as np
import pytest
import torch

from qattn.book.speech import losses, metrics


@pytest.fixture(scope="module")
def speechlike():
    """A sentence spoken by espeak-ng (16 kHz) over a −60 dB noise floor, so no frame is silent."""
    from qattn.book.data.speech import SPEAKERS, synthesize

    x = synthesize("The quiet painter carried a wooden ladder across the bridge.", SPEAKERS["test"][0]).astype(np.float64)
    return 0.5 * x / np.max(np.abs(x)) + 5e-4 * np.random.default_rng(9).standard_normal(len(x))


def noisy(x, snr, seed=0):
    n = np.random.default_rng(seed).standard_normal(len(x))
    return x + n * np.sqrt(np.mean(x**2) / (np.mean(n**2) * 10 ** (snr / 10)))


def test_identity(speechlike):
    x = speechlike
    m = metrics.evaluate_pair(x, x)
    assert m["pesq"] == pytest.approx(4.64, abs=0.01)
    assert m["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert m["segsnr"] == 35.0 and m["llr"] == pytest.approx(0.0, abs=1e-9) and m["wss"] == pytest.approx(0.0, abs=1e-9)
    assert m["si_sdr"] > 100
    assert m["csig"] == m["cbak"] == m["covl"] == 5.0


def test_monotone_in_noise(speechlike):
    x = speechlike
    rows = [metrics.evaluate_pair(x, noisy(x, snr)) for snr in (25, 15, 5)]
    for key in ("pesq", "stoi", "si_sdr", "segsnr", "csig", "cbak", "covl"):
        values = [r[key] for r in rows]
        assert values[0] > values[1] > values[2], (key, values)
    for key in ("llr", "wss"):
        values = [r[key] for r in rows]
        assert values[0] < values[1] < values[2], (key, values)
    assert rows[1]["si_sdr"] == pytest.approx(15.0, abs=0.1)


def test_segsnr_of_white_noise_at_known_snr():
    x = np.random.default_rng(0).standard_normal(16000)
    y = x + 0.1 * np.random.default_rng(1).standard_normal(16000)  # 20 dB in every frame (about)
    assert metrics.segmental_snr(x, y) == pytest.approx(20.0, abs=0.5)
    assert metrics.segmental_snr(x, x + 100 * x) == -10.0  # clipped at the floor


def test_si_sdr_scale_invariant_and_errors(speechlike):
    x, y = speechlike, noisy(speechlike, 5)
    assert metrics.si_sdr(x, 3 * y) == pytest.approx(metrics.si_sdr(x, y), abs=1e-9)
    assert metrics.llr(x, 2 * x) == pytest.approx(0.0, abs=1e-9)  # LPC shape is gain-free
    with pytest.raises(ValueError, match="same length"):
        metrics.si_sdr(x, y[:-1])
    with pytest.raises(ValueError, match="too short"):
        metrics.segmental_snr(x[:100], y[:100])


def test_losses_identity_and_order(speechlike):
    x = torch.tensor(speechlike[:16000], dtype=torch.float32)[None]
    y1 = torch.tensor(noisy(speechlike, 20)[:16000], dtype=torch.float32)[None]
    y2 = torch.tensor(noisy(speechlike, 0)[:16000], dtype=torch.float32)[None]
    zero = losses.total_loss(x, x)
    for key in ("mr_stft", "rms", "complex_l1"):
        assert float(zero[key]) < 1e-3
    assert float(losses.si_sdr_loss(y1, x)) == pytest.approx(-metrics.si_sdr(x[0].double().numpy(), y1[0].double().numpy()), abs=1e-2)
    a, b = losses.total_loss(y1, x), losses.total_loss(y2, x)
    for key in ("mr_stft", "neg_si_sdr", "complex_l1", "total"):
        assert float(a[key]) < float(b[key]), key
    est = y2.clone().requires_grad_()
    losses.total_loss(est, x)["total"].backward()
    assert torch.isfinite(est.grad).all()


def test_mr_stft_gradient_stays_bounded_near_silence():
    from qattn.book.speech.losses import mr_stft_loss

    ref = torch.zeros(1, 8000)
    ref[0, 2000:4000] = torch.sin(torch.arange(2000) * 0.3)
    est = (1e-7 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))).requires_grad_()
    mr_stft_loss(est, ref).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().max() < 1e3


def test_mr_stft_gradient_explodes_without_the_floor(monkeypatch):
    """Negative control for the test above: a negligible floor gives the huge gradients it guards against."""
    from qattn.book.speech.losses import mr_stft_loss

    monkeypatch.setattr(losses, "MAG_FLOOR", 1e-12)
    ref = torch.zeros(1, 8000)
    ref[0, 2000:4000] = torch.sin(torch.arange(2000) * 0.3)
    est = (1e-7 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))).requires_grad_()
    mr_stft_loss(est, ref).backward()
    assert est.grad.abs().max() > 1e3
