"""Enhance a WAV file with a trained speech enhancer (the ``python -m qattn.book.speech enhance`` command).

A checkpoint is what :func:`qattn.book.experiments.speech_enhancement.run` saves: ``{"config": SpeechModelConfig
as a dict, "state_dict": ...}`` under ``<output_dir>/speech_models/<variant>.pt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qattn.book import paths
from qattn.book.models.speech import N_FFT, SpeechEnhancer, SpeechModelConfig
from qattn.book.speech.audio import read_wav, resample, write_wav

__all__ = ["MIN_SECONDS", "EnhanceError", "default_checkpoint", "load_checkpoint", "enhance_file"]

MIN_SECONDS = 0.1
SAMPLE_RATE = 16000


class EnhanceError(ValueError):
    """Input the command refuses, with a message saying what to do."""


def default_checkpoint(variant: str = "qconformer_shared") -> Path:
    """The first existing ``<variant>.pt`` among: the full profile's own build
    (:func:`qattn.book.paths.models_dir`), the committed full-profile reference
    (``results/speech_models``, there after a checkout: the command works without training), and
    last the ci profile's build (a model trained for a few steps, better than nothing only for a
    smoke test)."""
    searched = [paths.models_dir("full"), paths.reference_dir("full") / "speech_models", paths.models_dir("ci")]
    for folder in searched:
        path = folder / f"{variant}.pt"
        if path.exists():
            return path
    raise EnhanceError(
        f"no trained {variant} model found in {' or '.join(map(str, searched))}: run the speech chapter first "
        "(make book, or python -m qattn.book.experiments speech_enhancement --profile ci), "
        "set QATTN_MODELS_DIR to the folder that holds <profile>/<variant>.pt, or pass --model PATH"
    )


def load_checkpoint(path: str | Path) -> SpeechEnhancer:
    """Build the model of a saved checkpoint, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise EnhanceError(f"model checkpoint not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    cfg = dict(data["config"])
    for key in ("encoder_dilations", "decoder_dilations"):
        cfg[key] = tuple(cfg[key])
    model = SpeechEnhancer(SpeechModelConfig(**cfg))
    model.load_state_dict(data["state_dict"])
    return model.eval()


def enhance_file(
    src: str | Path, dst: str | Path, model: SpeechEnhancer, resample_input: bool = False, mix_down: bool = False
) -> dict[str, float]:
    """Enhance ``src`` into ``dst`` (16 kHz mono 16-bit PCM); returns ``{"seconds", "input_rate"}``.

    Refuses (``EnhanceError``) a sample rate other than 16 kHz unless ``resample_input``, more
    than one channel unless ``mix_down``, and audio shorter than :data:`MIN_SECONDS`.
    """
    try:
        wave, rate = read_wav(src)
    except FileNotFoundError as err:
        raise EnhanceError(str(err)) from err
    except ValueError as err:
        raise EnhanceError(f"cannot read {src}: {err}") from err
    if wave.shape[1] > 1 and not mix_down:
        raise EnhanceError(f"{src} has {wave.shape[1]} channels; the model takes mono audio (pass --mix-down to average the channels)")
    mono = wave.mean(axis=1)
    if rate != SAMPLE_RATE:
        if not resample_input:
            raise EnhanceError(f"{src} is sampled at {rate} Hz; the model takes {SAMPLE_RATE} Hz (pass --resample to convert it)")
        mono = resample(mono, rate, SAMPLE_RATE)
    if len(mono) < max(int(MIN_SECONDS * SAMPLE_RATE), N_FFT):
        raise EnhanceError(
            f"{src} is {'empty' if len(mono) == 0 else f'too short ({len(mono) / SAMPLE_RATE:.3f} s)'}: "
            f"need at least {MIN_SECONDS} s of audio"
        )
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None])[0].numpy()
    write_wav(dst, out, SAMPLE_RATE)
    return {"seconds": len(out) / SAMPLE_RATE, "input_rate": rate}
