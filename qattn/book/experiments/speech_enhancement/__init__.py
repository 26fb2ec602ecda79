"""Speech enhancement (the paper's main experiment), heavily scaled down to this project's machines.

Paper set-up: VoiceBank+DEMAND, release-sized models (0.80 M QConformer, 0.62 M
QTransformer, 3.19 M real Conformer), 400 epochs; table 2 (PESQ/STOI) and table 3 (RTF).
Here: the synthetic corpus of :mod:`qattn.book.data.speech` (a DIFFERENT, much easier-to-make corpus;
the paper's numbers are shown beside ours, never compared), NARROW models of the same
architecture (:class:`~qattn.book.models.speech.SpeechModelConfig` sizes per profile; the
narrow models use a magnitude mask on a compressed spectrum, options of that config whose
defaults stay the release's) trained for 150 steps with the release's loss, and the
release-sized models built untrained for timing. Optimiser: AdamW, lr 2e-3 with a 15-step
warm-up and cosine decay, betas (0.9, 0.999) in the full profile (the release: lr 2e-4
constant, betas (0.5, 0.999), for 400 epochs; with those betas and a constant lr our short runs
diverged after 50-100 steps). Shared against Hamilton is judged by :data:`MARGINS`, declared
before the run; enhancement by :data:`TARGET_GAINS` over the noisy input.

Variants (:data:`VARIANTS`): the real Conformer, and the QTransformer and QConformer each with
Hamilton and shared scores. Every variant sees the same batches (same seed), the same number of
steps and the same initial values where the parameters coincide (shared vs hamilton:
identical). The checkpoint is chosen by validation SI-SDR (validation split only); the test set
is evaluated once per trained model, plus the unprocessed noisy input. Nothing uses the clean
reference at inference (no sign flip, no loudness matching, unlike the release's evaluation).

Timing: real-time factor = (STFT + network + mask + iSTFT time) / audio duration at batch 1,
``threads`` threads, median (min, max) of ``repeats`` interleaved runs, after ``timing_warmup``
warm-up rounds before the first (shortest) length of each sweep (warm-up pays the first-call
costs once; rounds at the long lengths, up to 15 s each with materialised maps, are not repeated):
(a) the trained narrow models at each length, Hamilton also with its four maps materialised
(:class:`MaterialisedMaps`: the release's way of computing them; our ``score="hamilton"`` runs a
fused kernel that never stores them) where they fit in ``maps_limit_gb``; (b) release-sized
models: the attention layers alone at the exact bottleneck shapes at every length, and the whole
model, shared and Hamilton interleaved, directly at ``release_whole_s`` (6.86 s); RTFs at the
other lengths are COMPOSED as (whole − attention)·L/``release_whole_s`` + attention(L).
Memory: the peak resident memory of one whole-model forward at the longest length, each model in
a fresh process (:func:`peak_memory`): the trained sizes always, the release sizes where
``release_memory`` (off in the full profile: four more whole-model forwards at the longest
length, whose peak memory barely depends on the score).

The experiment in parts: :mod:`.config` (variants, paper numbers, profiles), :mod:`.training`
(one variant's training), :mod:`.evaluation` (quality metrics, divergence, examples),
:mod:`.timing` (real-time factors, peak memory) and :mod:`.experiment` (``run`` and the headline
numbers).

>>> cfg = config_for("ci")
>>> cfg.profile, cfg.variants[0]
('ci', 'real_conformer')
"""

from qattn.book.experiments.speech_enhancement.config import (
    LABELS,
    MARGINS,
    PAPER_PARAMS,
    PAPER_QUALITY,
    PAPER_RTF,
    TARGET_GAINS,
    VARIANTS,
    SpeechExperimentConfig,
    build_model,
    config_for,
    model_config,
)
from qattn.book.experiments.speech_enhancement.evaluation import enhance_waves
from qattn.book.experiments.speech_enhancement.experiment import ASSETS, headline, run
from qattn.book.experiments.speech_enhancement.timing import MaterialisedMaps, maps_bytes, peak_memory, time_rtf
from qattn.book.experiments.speech_enhancement.training import train_one, training_batches

__all__ = [
    "ASSETS",
    "LABELS",
    "MARGINS",
    "PAPER_PARAMS",
    "PAPER_QUALITY",
    "PAPER_RTF",
    "TARGET_GAINS",
    "VARIANTS",
    "MaterialisedMaps",
    "SpeechExperimentConfig",
    "build_model",
    "config_for",
    "enhance_waves",
    "headline",
    "maps_bytes",
    "model_config",
    "peak_memory",
    "run",
    "time_rtf",
    "train_one",
    "training_batches",
]
