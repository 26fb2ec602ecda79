"""Speech quality metrics: PESQ, STOI, SI-SDR, and Hu & Loizou's LLR, WSS, segmental SNR and composites.

PESQ (ITU-T P.862.2, wide band) and STOI come from the PyPI packages ``pesq`` and ``pystoi``
(the ``speech`` extra). SI-SDR, the log-likelihood ratio (LLR), weighted spectral slope (WSS),
segmental SNR and the composite measures CSIG / CBAK / COVL are implemented here following
Hu & Loizou (2008) and Loizou's ``composite.m``: 30 ms Hann frames with a 75 % overlap (hop
``floor(frame/4)``), LPC order 16 at 16 kHz, 25 critical bands for WSS (Klatt's weights with
K_max = 20, K_locmax = 1), segmental SNR clipped to [−10, 35] dB per frame, and the mean of the
lowest 95 % of the per-frame LLR and WSS values. The composites use wide-band PESQ:

    CSIG = 3.093 − 1.029·LLR + 0.603·PESQ − 0.009·WSS
    CBAK = 1.634 + 0.478·PESQ − 0.007·WSS + 0.063·segSNR
    COVL = 1.594 + 0.805·PESQ − 0.512·LLR − 0.007·WSS      (each clipped to [1, 5])

All functions take 1-D float arrays ``(n,)`` at the same sample rate: reference (clean) first,
then the signal under test. Nothing is rescaled or sign-flipped against the reference.

Examples
--------
>>> x = np.random.default_rng(0).standard_normal(16000)
>>> round(si_sdr(x, x + 0.1 * np.random.default_rng(1).standard_normal(16000)), 1)
20.0
>>> segmental_snr(x, x), round(llr(x, x), 6), round(wss(x, x), 6)
(35.0, 0.0, 0.0)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "si_sdr",
    "pesq_wb",
    "stoi",
    "segmental_snr",
    "llr",
    "wss",
    "composite",
    "evaluate_pair",
    "METRIC_NAMES",
]

METRIC_NAMES = ("pesq", "stoi", "si_sdr", "csig", "cbak", "covl", "segsnr", "llr", "wss")
_EPS = np.finfo(np.float64).eps


def _pair(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64)
    deg = np.asarray(deg, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != deg.shape:
        raise ValueError(f"reference and signal must be 1-D of the same length, got {ref.shape} and {deg.shape}")
    return ref, deg


def si_sdr(ref: np.ndarray, deg: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al., 2019), both signals made zero-mean first."""
    ref, deg = _pair(ref, deg)
    ref, deg = ref - ref.mean(), deg - deg.mean()
    target = (deg @ ref) / (ref @ ref + _EPS) * ref
    return float(10 * np.log10((target @ target + _EPS) / ((deg - target) @ (deg - target) + _EPS)))


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 16000) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.04–4.64) through the ``pesq`` package."""
    from pesq import pesq  # the `speech` extra

    ref, deg = _pair(ref, deg)
    return float(pesq(sample_rate, ref, deg, "wb"))


def stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 16000) -> float:
    """Short-time objective intelligibility (0–1) through the ``pystoi`` package."""
    from pystoi import stoi as _stoi  # the `speech` extra

    ref, deg = _pair(ref, deg)
    return float(_stoi(ref, deg, sample_rate, extended=False))


def _frames(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Hann-windowed 30 ms frames with hop ``floor(frame/4)`` as in ``composite.m``: ``(n_frames, frame)``."""
    win = int(round(30 * sample_rate / 1000))
    hop = win // 4
    n_frames = int(len(x) / hop - win / hop)
    if n_frames < 1:
        raise ValueError(f"signal too short for 30 ms frames: {len(x)} samples at {sample_rate} Hz")
    window = 0.5 * (1 - np.cos(2 * np.pi * np.arange(1, win + 1) / (win + 1)))
    idx = np.arange(win)[None, :] + hop * np.arange(n_frames)[:, None]
    return x[idx] * window


def segmental_snr(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 16000) -> float:
    """Mean segmental SNR in dB, per-frame values clipped to [−10, 35] (Hu & Loizou)."""
    ref, deg = _pair(ref, deg)
    c, p = _frames(ref, sample_rate), _frames(deg, sample_rate)
    signal = np.sum(c**2, axis=1)
    noise = np.sum((c - p) ** 2, axis=1)
    seg = 10 * np.log10(signal / (noise + _EPS) + _EPS)
    return float(np.mean(np.clip(seg, -10.0, 35.0)))


def _lpc(frames: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation ``(n, order+1)`` and LPC polynomial ``[1, −a_1, …, −a_p]`` ``(n, order+1)``
    by the Levinson–Durbin recursion, vectorised over frames (``lpcoeff`` of composite.m)."""
    n, win = frames.shape
    r = np.stack([np.sum(frames[:, : win - k] * frames[:, k:], axis=1) for k in range(order + 1)], axis=1)
    a = np.zeros((n, order))
    err = r[:, 0].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(order):
            acc = np.sum(a[:, :i] * r[:, i:0:-1], axis=1) if i else 0.0
            k = (r[:, i + 1] - acc) / err
            prev = a[:, :i].copy()
            a[:, i] = k
            if i:
                a[:, :i] = prev - k[:, None] * prev[:, ::-1]
            err = (1 - k * k) * err
    return r, np.concatenate([np.ones((n, 1)), -a], axis=1)


def _mean_lowest(values: np.ndarray, fraction: float = 0.95) -> float:
    values = np.sort(values)
    return float(np.mean(values[: max(int(round(len(values) * fraction)), 1)]))


def llr(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 16000) -> float:
    """Log-likelihood ratio of the LPC models (order 16 at 16 kHz, 10 below 10 kHz), mean of the lowest 95 %.

    Per frame ``log(a_p R_c a_pᵀ / a_c R_c a_cᵀ)`` with ``R_c`` the clean frame's autocorrelation
    Toeplitz matrix; frames where it is undefined (silent reference) count as 0, as in the
    common Python port of composite.m.
    """
    ref, deg = _pair(ref, deg)
    order = 16 if sample_rate >= 10000 else 10
    r_c, a_c = _lpc(_frames(ref, sample_rate), order)
    _, a_p = _lpc(_frames(deg, sample_rate), order)
    lags = np.abs(np.arange(order + 1)[:, None] - np.arange(order + 1)[None, :])
    toeplitz = r_c[:, lags]  # (n, p+1, p+1)
    with np.errstate(divide="ignore", invalid="ignore"):
        num = np.einsum("ni,nij,nj->n", a_p, toeplitz, a_p)
        den = np.einsum("ni,nij,nj->n", a_c, toeplitz, a_c)
        dist = np.nan_to_num(np.log(num / den), nan=0.0, posinf=0.0, neginf=0.0)
    return _mean_lowest(dist)


_CENT_FREQ = np.array(
    [
        50.0,
        120.0,
        190.0,
        260.0,
        330.0,
        400.0,
        470.0,
        540.0,
        617.372,
        703.378,
        798.717,
        904.128,
        1020.38,
        1148.30,
        1288.72,
        1442.54,
        1610.70,
        1794.16,
        1993.93,
        2211.08,
        2446.71,
        2701.97,
        2978.04,
        3276.17,
        3597.63,
    ]
)
_BANDWIDTH = np.array(
    [
        70.0,
        70.0,
        70.0,
        70.0,
        70.0,
        70.0,
        70.0,
        77.3724,
        86.0056,
        95.3398,
        105.411,
        116.256,
        127.914,
        140.423,
        153.823,
        168.154,
        183.457,
        199.776,
        217.153,
        235.631,
        255.255,
        276.072,
        298.126,
        321.465,
        346.136,
    ]
)


def _critical_filters(n_fft: int, sample_rate: int) -> np.ndarray:
    """Klatt's 25 Gaussian-shaped critical-band filters on the first ``n_fft/2`` bins: ``(25, n_fft/2)``."""
    half = n_fft // 2
    max_freq = sample_rate / 2
    j = np.arange(half)
    f0 = np.floor(_CENT_FREQ / max_freq * half)[:, None]
    bw = (_BANDWIDTH / max_freq * half)[:, None]
    norm = (np.log(_BANDWIDTH[0]) - np.log(_BANDWIDTH))[:, None]
    filt = np.exp(-11 * ((j[None, :] - f0) / bw) ** 2 + norm)
    return filt * (filt > np.exp(-30.0 / (2.0 * 2.303)))


def _local_peaks(energy: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Nearest local peak for each band of each frame, searched as in composite.m: ``(n, 24)``.

    Rising slope at band ``i``: search right to the first band ``m`` whose slope is not positive
    (or the last band) and take ``energy[m − 1]``; otherwise search left to the last band ``m``
    with a positive slope (or −1) and take ``energy[m + 1]`` (composite.m's indexing).
    """
    n, bands = slope.shape
    nxt = np.empty((n, bands), dtype=np.int64)
    prv = np.empty((n, bands), dtype=np.int64)
    following = np.full(n, bands)  # = n_crit − 1: the search stops at the last band
    for i in reversed(range(bands)):
        following = np.where(slope[:, i] <= 0, i, following)
        nxt[:, i] = following
    preceding = np.full(n, -1)
    for i in range(bands):
        preceding = np.where(slope[:, i] > 0, i, preceding)
        prv[:, i] = preceding
    index = np.where(slope > 0, nxt - 1, prv + 1)
    return np.take_along_axis(energy, index, axis=1)


def wss(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 16000) -> float:
    """Weighted spectral slope distance (Klatt, 1982) over 25 critical bands, mean of the lowest 95 %."""
    ref, deg = _pair(ref, deg)
    c, p = _frames(ref, sample_rate), _frames(deg, sample_rate)
    n_fft = int(2 ** np.ceil(np.log2(2 * c.shape[1])))
    filters = _critical_filters(n_fft, sample_rate)
    k_max, k_locmax = 20.0, 1.0
    weights = []
    slopes = []
    for frames in (c, p):
        spec = np.abs(np.fft.fft(frames, n_fft, axis=1)[:, : n_fft // 2]) ** 2
        energy = 10 * np.log10(np.maximum(spec @ filters.T, 1e-10))  # (n, 25)
        slope = energy[:, 1:] - energy[:, :-1]
        peaks = _local_peaks(energy, slope)
        w_max = k_max / (k_max + energy.max(axis=1, keepdims=True) - energy[:, :-1])
        w_loc = k_locmax / (k_locmax + peaks - energy[:, :-1])
        weights.append(w_max * w_loc)
        slopes.append(slope)
    w = (weights[0] + weights[1]) / 2
    dist = np.sum(w * (slopes[0] - slopes[1]) ** 2, axis=1) / np.sum(w, axis=1)
    return _mean_lowest(dist)


def composite(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 16000, pesq_value: float | None = None) -> dict[str, float]:
    """CSIG, CBAK, COVL (wide-band PESQ inside) and their ingredients LLR, WSS, segSNR."""
    p = pesq_wb(ref, deg, sample_rate) if pesq_value is None else pesq_value
    lr, w, s = llr(ref, deg, sample_rate), wss(ref, deg, sample_rate), segmental_snr(ref, deg, sample_rate)
    clip = lambda v: float(np.clip(v, 1.0, 5.0))  # noqa: E731
    return {
        "csig": clip(3.093 - 1.029 * lr + 0.603 * p - 0.009 * w),
        "cbak": clip(1.634 + 0.478 * p - 0.007 * w + 0.063 * s),
        "covl": clip(1.594 + 0.805 * p - 0.512 * lr - 0.007 * w),
        "llr": lr,
        "wss": w,
        "segsnr": s,
    }


def evaluate_pair(ref: np.ndarray, deg: np.ndarray, sample_rate: int = 16000) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one (clean, processed) pair."""
    p = pesq_wb(ref, deg, sample_rate)
    return {"pesq": p, "stoi": stoi(ref, deg, sample_rate), "si_sdr": si_sdr(ref, deg), **composite(ref, deg, sample_rate, p)}
