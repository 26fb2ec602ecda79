"""The speech-enhancement experiment's configuration: variants, paper numbers, profiles.

>>> cfg = config_for("ci")
>>> cfg.profile, cfg.variants[0]
('ci', 'real_conformer')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from qattn.book.data.speech import SpeechCorpusConfig
from qattn.book.harness.config import ExperimentConfig, choice, nested
from qattn.book.models.speech import N_FFT, SpeechEnhancer, SpeechModelConfig

VARIANTS: dict[str, dict[str, str]] = {
    "real_conformer": {"kind": "real", "bottleneck": "conformer", "score": "shared"},
    "qtransformer_hamilton": {"kind": "quaternion", "bottleneck": "transformer", "score": "hamilton"},
    "qtransformer_shared": {"kind": "quaternion", "bottleneck": "transformer", "score": "shared"},
    "qconformer_hamilton": {"kind": "quaternion", "bottleneck": "conformer", "score": "hamilton"},
    "qconformer_shared": {"kind": "quaternion", "bottleneck": "conformer", "score": "shared"},
}


LABELS = {
    "noisy": "Noisy input",
    "real_conformer": "Conformer (real-valued)",
    "qtransformer_hamilton": "QTransformer, Hamilton",
    "qtransformer_shared": "QTransformer, shared",
    "qconformer_hamilton": "QConformer, Hamilton",
    "qconformer_shared": "QConformer, shared",
}


#: Paper table 2 (VoiceBank+DEMAND): PESQ, STOI.
PAPER_QUALITY = {
    "noisy": (1.97, 0.91),
    "real_conformer": (3.25, 0.95),
    "qtransformer_hamilton": (3.07, 0.95),
    "qtransformer_shared": (3.07, 0.95),
    "qconformer_hamilton": (3.11, 0.95),
    "qconformer_shared": (3.18, 0.95),
}


#: Paper table 3 (DNS-3, 6.86 s): CPU RTF hamilton, shared, reduction %; GPU likewise.
PAPER_RTF = {
    "qtransformer": {"cpu": (0.594, 0.249, 58.1), "gpu": (0.0192, 0.0107, 44.3)},
    "qconformer": {"cpu": (0.610, 0.259, 57.5), "gpu": (0.0202, 0.0157, 22.3)},
}


#: Frequency bins after the encoder's stride-2 convolution (F = n_fft/2 + 1 = 201 → 101).
FREQ_BOTTLENECK = (N_FFT // 2 + 2) // 2


PAPER_PARAMS = {"qconformer": 0.80e6, "qtransformer": 0.62e6, "real_conformer": 3.19e6}


#: The narrow models trained in the full profile (keys: fields of SpeechModelConfig): the release's
#: architecture at the width the budget allows (growth 8 vs 64, d_model 16 vs 64, one bottleneck
#: block per axis vs two), with the magnitude mask and compressed input (see SpeechModelConfig).
_NARROW = dict(
    growth=8,
    dense_width=16,
    d_model=16,
    num_heads=2,
    ffn_dim=32,
    conv_kernel=7,
    n_time_blocks=1,
    n_freq_blocks=1,
    encoder_dilations=(1, 2),
    decoder_dilations=(2, 1),
    dropout=0.0,
    attn_dropout=0.0,
    mask="magnitude",
    input_compression=0.3,
)

#: Equivalence margins of shared − Hamilton, declared before the reference run.
MARGINS = {"pesq": 0.1, "stoi": 0.01, "si_sdr": 0.5}

#: Targets of every trained variant over the noisy input (mean gain on the test set).
TARGET_GAINS = {"pesq": 0.3, "si_sdr": 4.0, "stoi": 0.0}


@dataclass(frozen=True)
class SpeechExperimentConfig(ExperimentConfig):
    """Everything one run does (:class:`~qattn.book.harness.config.ExperimentConfig`); ``config_for(profile)``
    gives the two profiles.

    ``corpus``: fields of :class:`~qattn.book.data.speech.SpeechCorpusConfig` (its ``seed`` is the
    config's seed); ``model``: fields of :class:`~qattn.book.models.speech.SpeechModelConfig`
    other than the variant's ``kind``, ``bottleneck`` and ``score``.
    """

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "full": dict(
            model=_NARROW,
            corpus=dict(n_train=1000, n_valid=16, n_test=200, max_seconds=2.5),
            quaternion_seeds=3,
            steps=150,
            batch_size=8,
            lr=2e-3,
            valid_every=25,
            valid_crop_s=1.5,
            warmup_steps=15,
            cosine_decay=True,
            betas=(0.9, 0.999),
            timing_repeats=2,
            breakdown_s=4.0,
            breakdown_repeats=1,
            release_whole_repeats=2,
            release_memory=False,
        ),
        "ci": dict(
            model=dict(_NARROW, encoder_dilations=(1,), decoder_dilations=(1,), growth=4, dense_width=8),
            corpus=dict(n_train=8, n_valid=2, n_test=3, max_seconds=1.5),
            quaternion_seeds=2,
            mask_estimator_steps=2,
            overfit_steps=2,
            overfit_batch=2,
            breakdown_s=0.5,
            breakdown_repeats=1,
            steps=2,
            batch_size=2,
            valid_every=2,
            valid_crop_s=0.5,
            timing_lengths=(1.0,),
            timing_repeats=2,
            release_timing=False,
            release_whole_s=1.0,
            divergence_s=0.5,
            divergence_sequences=2,
            n_examples=1,
        ),
    }

    profile: str = "full"
    seed: int = 0
    corpus: dict[str, Any] = nested(SpeechCorpusConfig)
    model: dict[str, Any] = nested(SpeechModelConfig, exclude=("kind", "bottleneck", "score"))
    variants: tuple[str, ...] = choice(VARIANTS, tuple(VARIANTS))
    quaternion_seeds: int = 2
    real_seeds: int = 1
    workers: int = 2
    steps: int = 36
    batch_size: int = 4
    crop_s: float = 0.5
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    warmup_steps: int = 0
    cosine_decay: bool = False
    clip_norm: float = 1.0
    valid_every: int = 8
    valid_crop_s: float = 1.0
    n_test: int | None = None
    mask_estimator_steps: int = 600
    overfit_steps: int = 60
    overfit_batch: int = 4
    train_threads: int = 1
    threads: int = 2
    timing_lengths: tuple[float, ...] = (1.0, 2.0, 4.0, 6.86)
    timing_warmup: int = 1
    timing_repeats: int = 5
    release_timing: bool = True
    release_whole_s: float = 6.86
    release_whole_repeats: int = 3
    maps_limit_gb: float = 8.0
    memory: bool = True
    release_memory: bool = True
    breakdown_s: float = 6.86
    breakdown_repeats: int = 2
    bootstrap_resamples: int = 2000
    divergence_s: float = 1.0
    divergence_sequences: int = 8
    n_examples: int = 3
    real_clip: str = "/usr/share/sounds/alsa/Front_Center.wav"

    @classmethod
    def seeded(cls, values: dict[str, Any], seed: int) -> dict[str, Any]:
        """The seed of the models and batches, and of the corpus."""
        return {**values, "seed": seed, "corpus": {**values.get("corpus", {}), "seed": seed}}

    def corpus_config(self) -> SpeechCorpusConfig:
        """The corpus to generate."""
        return SpeechCorpusConfig(**self.corpus)


def config_for(profile: str, seed: int = 0, **overrides: Any) -> SpeechExperimentConfig:
    """The ``ci`` (about a minute) or ``full`` (about 50 minutes on 2 cores) profile."""
    return SpeechExperimentConfig.for_profile(profile, seed, **overrides)


def as_config(config: SpeechExperimentConfig | Mapping[str, Any]) -> SpeechExperimentConfig:
    """``config`` itself or the config of its dict (unknown keys refused)."""
    return SpeechExperimentConfig.coerce(config)


def model_config(base: Mapping[str, Any], variant: str) -> SpeechModelConfig:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {list(VARIANTS)}")
    kw = dict(base)
    for key in ("encoder_dilations", "decoder_dilations"):
        if key in kw:
            kw[key] = tuple(kw[key])
    return SpeechModelConfig(**{**kw, **VARIANTS[variant]})  # type: ignore[arg-type]


def build_model(base: Mapping[str, Any], variant: str, seed: int) -> SpeechEnhancer:
    """The model of ``variant``, initialised under ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SpeechEnhancer(model_config(base, variant))
