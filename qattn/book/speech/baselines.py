"""Reference points for the enhancers: an oracle ceiling and a classical floor.

Both use what a real enhancer never sees (the clean speech or the true noise), so they bound the
task from above and below rather than compete with the models:

- :func:`ideal_ratio_mask`: the gain ``sqrt(|S|² / (|S|² + |N|²))`` per STFT bin from the true
  clean spectrum ``S`` and noise spectrum ``N = X − S``, applied to the noisy spectrum ``X`` (noisy
  phase). What a perfect magnitude-mask estimator would reach.
- :func:`spectral_subtraction`: power spectral subtraction with the true noise's mean power per
  frequency, ``gain = sqrt(max(1 − P_N(f)/|X|², floor²))``: the classical method given a perfect
  stationary noise estimate. A trained model below it has learnt less than a 1979 baseline.

STFT: the models' (n_fft 400, hop 100, Hann; :func:`qattn.book.models.speech.stft`).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> clean = np.sin(np.arange(8000) / 9).astype(np.float32); noisy = clean + 0.3 * rng.standard_normal(8000).astype(np.float32)
>>> from qattn.book.speech.metrics import si_sdr
>>> si_sdr(clean, ideal_ratio_mask(clean, noisy)) > si_sdr(clean, spectral_subtraction(clean, noisy)) > si_sdr(clean, noisy)
True
"""

from __future__ import annotations

import numpy as np
import torch

from qattn.book.models.speech import istft, stft

__all__ = ["ideal_ratio_mask", "spectral_subtraction"]


def _spectra(clean: np.ndarray, noisy: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    clean, noisy = np.asarray(clean, dtype=np.float32), np.asarray(noisy, dtype=np.float32)
    if clean.shape != noisy.shape or clean.ndim != 1:
        raise ValueError(f"clean and noisy must be 1-D waves of the same length, got {clean.shape} and {noisy.shape}")
    return stft(torch.from_numpy(clean)[None]), stft(torch.from_numpy(noisy)[None])


def ideal_ratio_mask(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """The noisy wave under the oracle ratio mask built from the true clean and noise spectra."""
    s, x = _spectra(clean, noisy)
    ps, pn = s.abs().square(), (x - s).abs().square()
    gain = (ps / (ps + pn + 1e-12)).sqrt()
    return istft(x * gain, len(noisy))[0].numpy()


def spectral_subtraction(clean: np.ndarray, noisy: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """Power spectral subtraction with the true noise's mean power per frequency (``floor``: minimum gain)."""
    s, x = _spectra(clean, noisy)
    noise_power = (x - s).abs().square().mean(dim=1, keepdim=True)
    gain = (1 - noise_power / (x.abs().square() + 1e-12)).clamp(min=floor**2).sqrt()
    return istft(x * gain, len(noisy))[0].numpy()
