"""The speech experiment's units of work, each run in its own single-threaded worker process.

Small models train several times faster per core in separate single-threaded processes than in
one process with two threads, so :func:`~qattn.book.experiments.speech_enhancement.experiment.run`
hands these jobs to a pool of ``workers`` spawned processes. Every job is a pure function of the
config and its arguments (its batches, initial values and dropout come from the seed), so the
results do not depend on which worker runs it or in what order. The corpus is generated once by
the parent and read from the disk cache by the workers.

- :func:`variant_job`: train one variant under one seed, enhance the test set, score it.
- :func:`baseline_job`: score the noisy input, the oracle ratio mask, spectral subtraction, or
  train and score the real-valued recurrent mask estimator.
- :func:`overfit_job`: fit one fixed batch, the first check of any recipe.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from qattn.book.data.speech import SpeechCorpus, load_speech_corpus
from qattn.book.experiments.speech_enhancement.config import as_config, build_model
from qattn.book.experiments.speech_enhancement.evaluation import enhance_waves, score_waves
from qattn.book.experiments.speech_enhancement.training import _valid_si_sdr, train_model, training_batches, validation_batch
from qattn.book.models.speech import RecurrentMaskEstimator
from qattn.book.speech.baselines import ideal_ratio_mask, spectral_subtraction
from qattn.book.speech.losses import total_loss

__all__ = ["BASELINES", "variant_job", "baseline_job", "overfit_job"]

#: The reference points scored beside the trained models.
BASELINES = ("noisy", "spectral_subtraction", "ideal_ratio_mask", "recurrent_mask")


def _setup(config: dict[str, Any]) -> tuple[Any, SpeechCorpus, list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:
    cfg = as_config(config)
    torch.set_num_threads(cfg.train_threads)
    corpus = load_speech_corpus(cfg.corpus_config())
    test = corpus.test
    n = len(test) if cfg.n_test is None else min(cfg.n_test, len(test))
    return cfg, corpus, test.clean[:n], test.noisy[:n], test.meta[:n]


def _log(lines: list[str]):
    return lambda line: lines.append(line)


def variant_job(config: dict[str, Any], variant: str, seed: int) -> dict[str, Any]:
    """Train ``variant`` with ``seed`` (batches, initial values, dropout), test it once.

    Returns ``history`` (:func:`train_model`), ``scores`` (:func:`score_waves`: means and
    per-utterance PESQ, STOI, SI-SDR), ``state_dict`` (the selected model), the first
    ``n_examples`` enhanced test waves and the progress lines of training.
    """
    cfg, corpus, clean, noisy, meta = _setup(config)
    batches = training_batches(corpus.train, cfg.steps, cfg.batch_size, int(cfg.crop_s * 16000), seed)
    valid = validation_batch(corpus.valid, int(cfg.valid_crop_s * 16000))
    lines: list[str] = []
    model = build_model(cfg.model, variant, seed)
    history = train_model(model, cfg, seed, batches, valid, _log(lines), f"{variant} seed {seed}")
    t0 = time.perf_counter()
    enhanced = enhance_waves(model, noisy)
    scores = score_waves(clean, enhanced, meta)
    return {
        "variant": variant,
        "seed": seed,
        "history": history,
        "scores": scores,
        "evaluate_s": time.perf_counter() - t0,
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "examples": enhanced[: cfg.n_examples],
        "log": lines,
    }


def baseline_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Score the baseline ``name`` (one of :data:`BASELINES`) on the test set.

    ``recurrent_mask`` is trained first (seed ``cfg.seed``, the same loss and batch sequence as
    the models, ``cfg.mask_estimator_steps`` steps); its history comes back too.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")
    cfg, corpus, clean, noisy, meta = _setup(config)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"name": name}
    if name == "noisy":
        processed = noisy
    elif name == "ideal_ratio_mask":
        processed = [ideal_ratio_mask(c, x) for c, x in zip(clean, noisy)]
    elif name == "spectral_subtraction":
        processed = [spectral_subtraction(c, x) for c, x in zip(clean, noisy)]
    else:
        steps = cfg.mask_estimator_steps
        batches = training_batches(corpus.train, steps, cfg.batch_size, int(cfg.crop_s * 16000), cfg.seed)
        valid = validation_batch(corpus.valid, int(cfg.valid_crop_s * 16000))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = RecurrentMaskEstimator()
        lines: list[str] = []
        out["history"] = train_model(model, cfg, cfg.seed, batches, valid, _log(lines), "recurrent mask estimator")
        out["log"] = lines
        processed = enhance_waves(model, noisy)
    out["scores"] = score_waves(clean, processed, meta)
    out["wall_s"] = time.perf_counter() - t0
    return out


def overfit_job(config: dict[str, Any], mask: str, input_compression: float) -> dict[str, Any]:
    """Fit the QConformer with shared scores to ONE fixed batch (the first training batch of
    ``cfg.seed``, ``overfit_batch`` utterances) for ``overfit_steps`` steps, with the given mask and
    input compression; returns the loss and the batch's SI-SDR after every step, and the noisy
    input's SI-SDR on the same batch. A recipe that cannot fit one batch cannot learn a corpus."""
    cfg, corpus, *_ = _setup(config)
    batch = training_batches(corpus.train, 1, cfg.overfit_batch, int(cfg.crop_s * 16000), cfg.seed)[0]
    model_kw = {**cfg.model, "mask": mask, "input_compression": input_compression}
    model = build_model(model_kw, "qconformer_shared", cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=0.01)
    losses, fitted = [], []
    noisy, clean = batch
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1000)
        for _ in range(cfg.overfit_steps):
            model.train()
            loss = total_loss(model(noisy), clean)["total"]
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            losses.append(float(loss))
            fitted.append(_valid_si_sdr(model, batch))
    from qattn.book.speech.metrics import si_sdr

    return {
        "mask": mask,
        "input_compression": input_compression,
        "loss": losses,
        "si_sdr": fitted,
        "noisy_si_sdr": float(np.mean([si_sdr(c, x) for c, x in zip(clean.numpy(), noisy.numpy())])),
        "wall_s": time.perf_counter() - t0,
    }
