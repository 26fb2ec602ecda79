"""WAV input and output for the speech tools (16-bit / 32-bit PCM through the standard library).

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "x.wav")
>>> write_wav(path, np.zeros(1600, dtype=np.float32))
>>> wave, rate = read_wav(path)
>>> wave.shape, rate
((1600, 1), 16000)
"""

from __future__ import annotations

import wave as _wave
from math import gcd
from pathlib import Path

import numpy as np

__all__ = ["read_wav", "write_wav", "to_mono_16k", "resample"]


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file: float32 samples ``(n, channels)`` in [−1, 1] and the sample rate.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a
    PCM WAV (8, 16, 24 or 32 bit).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such WAV file: {path}")
    try:
        with _wave.open(str(path), "rb") as f:
            channels, width, rate, frames = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            raw = f.readframes(frames)
    except (_wave.Error, EOFError) as err:
        raise ValueError(f"{path} is not a PCM WAV file ({err})") from err
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 8388608
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648
    else:
        raise ValueError(f"{path}: unsupported sample width {width} bytes")
    return data.reshape(-1, channels), rate


def write_wav(path: str | Path, wave: np.ndarray, rate: int = 16000) -> None:
    """Write a mono float wave (clipped to [−1, 1]) as 16-bit PCM."""
    data = np.clip(np.asarray(wave, dtype=np.float64).reshape(-1), -1.0, 1.0)
    with _wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.round(data * 32767).astype("<i2").tobytes())


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) of a 1-D wave."""
    if rate_in == rate_out:
        return x.astype(np.float32)
    from scipy.signal import resample_poly  # the `speech` extra

    g = gcd(rate_in, rate_out)
    return resample_poly(x, rate_out // g, rate_in // g).astype(np.float32)


def to_mono_16k(wave: np.ndarray, rate: int) -> np.ndarray:
    """Average the channels of ``(n, channels)`` and resample to 16 kHz: ``(n',)`` float32."""
    mono = wave.mean(axis=1) if wave.ndim == 2 else wave
    return resample(mono, rate, 16000)
