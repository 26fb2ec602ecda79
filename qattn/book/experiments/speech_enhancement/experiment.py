"""The speech-enhancement run: corpus, training, evaluation, timing, memory; and its headline numbers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qattn.book.data.speech import load_speech_corpus
from qattn.book.experiments.speech_enhancement.config import (
    LABELS,
    PAPER_PARAMS,
    PAPER_RTF,
    VARIANTS,
    SpeechExperimentConfig,
    as_config,
    model_config,
)
from qattn.book.experiments.speech_enhancement.evaluation import (
    component_divergence,
    enhance_waves,
    mean_over_seeds,
    real_clip,
    save_maps,
    score_waves,
)
from qattn.book.experiments.speech_enhancement.timing import (
    MaterialisedMaps,
    attention_share,
    maps_bytes,
    memory_table,
    release_params,
    release_timing,
    time_rtf,
)
from qattn.book.experiments.speech_enhancement.training import train_one, training_batches, validation_batch
from qattn.book.models.blocks import count_parameters
from qattn.book.models.speech import SpeechEnhancer


def _rtf_row(rows: list[dict[str, Any]], model: str, seconds: float) -> float | None:
    for r in rows:
        if r["model"] == model and r["seconds"] == seconds:
            return r["rtf"]
    return None


#: What ``run(config, save_dir=...)`` writes beside its results: the chapter's example audio and
#: attention maps, and the trained checkpoints (``python -m qattn.book.speech enhance`` loads them).
ASSETS = ("speech_examples.npz", "speech_maps.npz", "speech_models")


def run(
    config: SpeechExperimentConfig | Mapping[str, Any], log: Callable[[str], None] = print, save_dir: str | Path | None = None
) -> dict[str, Any]:
    """Generate the corpus, train every variant, evaluate, time, measure divergence; return metrics.

    Checkpoints (``save_dir/speech_models/<variant>.pt``, seed ``cfg.seed``), example waves
    (``speech_examples.npz``) and attention maps (``speech_maps.npz``) go to ``save_dir`` when set.
    """
    cfg = as_config(config)
    t_start = time.perf_counter()
    threads_before = torch.get_num_threads()
    save = Path(save_dir) if save_dir is not None else None
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"wall_s": {}}
    try:
        t0 = time.perf_counter()
        corpus_cfg = cfg.corpus_config()
        corpus = load_speech_corpus(corpus_cfg)
        metrics["wall_s"]["corpus"] = time.perf_counter() - t0
        metrics["corpus"] = {
            "config": corpus_cfg.to_dict(),
            "cache_key": corpus_cfg.cache_key(),
            "sizes": {s: len(corpus.split(s)) for s in ("train", "valid", "test")},
            "seconds": {s: corpus.split(s).seconds() for s in ("train", "valid", "test")},
            "unseen_test_noises": list(corpus_cfg.unseen_test_noises()),
            "test_meta": corpus.test.meta,
        }
        log(f"[speech] corpus {corpus_cfg.cache_key()}: {metrics['corpus']['sizes']} ({metrics['wall_s']['corpus']:.1f} s)")

        # training ------------------------------------------------------------------------------
        torch.set_num_threads(cfg.train_threads)
        n_crop = int(cfg.crop_s * 16000)
        valid = validation_batch(corpus.valid, int(cfg.valid_crop_s * 16000))
        test = corpus.test
        n_test = len(test) if cfg.n_test is None else min(cfg.n_test, len(test))
        clean_test, noisy_test, meta_test = test.clean[:n_test], test.noisy[:n_test], test.meta[:n_test]
        t0 = time.perf_counter()
        metrics["test"] = {"noisy": score_waves(clean_test, noisy_test, meta_test)}
        metrics["wall_s"]["evaluate_noisy"] = time.perf_counter() - t0
        training: dict[str, list[dict[str, Any]]] = {}
        per_seed: dict[str, list[dict[str, Any]]] = {}
        best_models: dict[str, SpeechEnhancer] = {}
        examples: dict[str, np.ndarray] = {}
        t_train = t_eval = 0.0
        for variant in cfg.variants:
            n_seeds = cfg.real_seeds if VARIANTS[variant]["kind"] == "real" else cfg.quaternion_seeds
            for k in range(n_seeds):
                seed = cfg.seed + k
                batches = training_batches(corpus.train, cfg.steps, cfg.batch_size, n_crop, seed)
                t0 = time.perf_counter()
                model, hist = train_one(cfg, variant, seed, batches, valid, log)
                t_train += time.perf_counter() - t0
                t0 = time.perf_counter()
                enhanced = enhance_waves(model, noisy_test)
                scores = score_waves(clean_test, enhanced, meta_test)
                t_eval += time.perf_counter() - t0
                training.setdefault(variant, []).append({"seed": seed, **hist})
                per_seed.setdefault(variant, []).append({"seed": seed, **scores})
                log(
                    f"[speech] {variant} seed {seed}: PESQ {scores['pesq']:.3f}, STOI {scores['stoi']:.3f}, "
                    f"SI-SDR {scores['si_sdr']:.2f} dB ({hist['wall_s']:.0f} s)"
                )
                if k == 0:
                    best_models[variant] = model
                    for i in range(min(cfg.n_examples, n_test)):
                        examples[f"{variant}/{i}"] = enhanced[i]
                    if save is not None:
                        (save / "speech_models").mkdir(parents=True, exist_ok=True)
                        torch.save(
                            {"config": model_config(cfg.model, variant).to_dict(), "state_dict": model.state_dict()},
                            save / "speech_models" / f"{variant}.pt",
                        )
        metrics["wall_s"]["train"] = t_train
        metrics["wall_s"]["evaluate"] = t_eval
        metrics["training"] = training
        metrics["test"].update({v: mean_over_seeds(rows) for v, rows in per_seed.items()})
        metrics["test_per_seed"] = per_seed

        # divergence ----------------------------------------------------------------------------
        t0 = time.perf_counter()
        div_wave = np.resize(noisy_test[0], int(cfg.divergence_s * 16000)).astype(np.float32)
        metrics["divergence"] = {
            v: component_divergence(m, div_wave, cfg.divergence_sequences)
            for v, m in best_models.items()
            if VARIANTS[v]["kind"] == "quaternion"
        }
        if save is not None:
            save_maps(best_models, div_wave, save)
        metrics["wall_s"]["divergence"] = time.perf_counter() - t0

        # examples (and the real recorded clip) ---------------------------------------------------
        if save is not None:
            real = real_clip(cfg.real_clip, cfg.seed)
            for i in range(min(cfg.n_examples, n_test)):
                examples[f"clean/{i}"], examples[f"noisy/{i}"] = clean_test[i], noisy_test[i]
            if real is not None:
                examples["clean/real"], examples["noisy/real"] = real
                for v, m in best_models.items():
                    examples[f"{v}/real"] = enhance_waves(m, [real[1]])[0]
            np.savez_compressed(save / "speech_examples.npz", **{k.replace("/", "__"): v for k, v in examples.items()})
            metrics["real_clip"] = cfg.real_clip if real is not None else None

        # timing --------------------------------------------------------------------------------
        torch.set_num_threads(cfg.threads)
        t0 = time.perf_counter()
        timed: dict[str, nn.Module] = {v: m for v, m in best_models.items() if VARIANTS[v]["kind"] == "quaternion"}
        longest = max(cfg.timing_lengths)
        metrics["attention_share_trained"] = {v: attention_share(m, longest) for v, m in timed.items()}
        maps_lengths = [
            L
            for L in cfg.timing_lengths
            if 2 * maps_bytes(model_config(cfg.model, "qtransformer_hamilton"), L) <= cfg.maps_limit_gb * 2**30
        ]
        rows = time_rtf(timed, [L for L in cfg.timing_lengths if L not in maps_lengths], cfg.timing_warmup, cfg.timing_repeats, cfg.seed)
        with_maps = {**timed, **{f"{v}_maps": MaterialisedMaps(m) for v, m in timed.items() if VARIANTS[v]["score"] == "hamilton"}}
        rows += time_rtf(with_maps, maps_lengths, cfg.timing_warmup, cfg.timing_repeats, cfg.seed)
        metrics["rtf_trained"] = sorted(rows, key=lambda r: (r["seconds"], r["model"]))
        metrics["wall_s"]["timing_trained"] = time.perf_counter() - t0
        log(f"[speech] timed trained models ({metrics['wall_s']['timing_trained']:.0f} s)")
        if cfg.release_timing:
            t0 = time.perf_counter()
            metrics["release"] = release_timing(cfg, log)
            metrics["wall_s"]["timing_release"] = time.perf_counter() - t0
        if cfg.memory:
            t0 = time.perf_counter()
            metrics["memory"] = memory_table(cfg, log)
            metrics["wall_s"]["memory"] = time.perf_counter() - t0
        metrics["params_trained"] = {v: count_parameters(m) for v, m in best_models.items()}
        metrics["params_release"] = metrics["release"]["params"] if "release" in metrics else release_params()
        metrics["threads"] = {"train": cfg.train_threads, "timing": cfg.threads}
    finally:
        torch.set_num_threads(threads_before)
    metrics["wall_s"]["total"] = time.perf_counter() - t_start
    metrics["headline"] = headline(metrics)
    return metrics


def headline(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Headline entries (qattn.book.headline format). Quality numbers have no paper target: different corpus."""
    from qattn.book.headline import headline as entry

    rows = []
    test = metrics["test"]
    for v in ["noisy", *VARIANTS]:
        if v in test:
            rows.append(entry(f"test PESQ, {LABELS[v]}", round(test[v]["pesq"], 4), tolerance=0.1, kind="relative"))
    for family in ("qtransformer", "qconformer"):
        h, s = test.get(f"{family}_hamilton"), test.get(f"{family}_shared")
        if h and s:
            rows.append(entry(f"{family} PESQ shared − hamilton", round(s["pesq"] - h["pesq"], 4), tolerance=0.15, kind="exact"))
    longest = max(r["seconds"] for r in metrics["rtf_trained"]) if metrics.get("rtf_trained") else None
    for family in ("qtransformer", "qconformer"):
        h = _rtf_row(metrics.get("rtf_trained", []), f"{family}_hamilton", longest)
        s = _rtf_row(metrics.get("rtf_trained", []), f"{family}_shared", longest)
        if h and s:
            rows.append(
                entry(
                    f"{family} (trained, narrow) CPU RTF reduction % at {longest} s",
                    round(100 * (1 - s / h), 2),
                    tolerance=0.5,
                    kind="ratio",
                )
            )
        hm = _rtf_row(metrics.get("rtf_trained", []), f"{family}_hamilton_maps", longest)
        if hm and s:
            rows.append(
                entry(
                    f"{family} (trained, narrow) CPU RTF reduction % at {longest} s vs Hamilton with materialised maps",
                    round(100 * (1 - s / hm), 2),
                    tolerance=0.5,
                    kind="ratio",
                    paper=PAPER_RTF[family]["cpu"][2],
                )
            )
    release = metrics.get("release")
    if release:
        for family in ("qtransformer", "qconformer"):
            row = [
                r for r in release["composed"] if r["family"] == family and r["seconds"] == max(x["seconds"] for x in release["composed"])
            ][0]
            value = row.get("reduction_direct_pct", row["reduction_pct"])
            how = "measured" if "reduction_direct_pct" in row else "composed"
            rows.append(
                entry(
                    f"{family} (release size, {how}) CPU RTF reduction % at {row['seconds']} s",
                    round(value, 2),
                    tolerance=0.5,
                    kind="ratio",
                    paper=PAPER_RTF[family]["cpu"][2],
                )
            )
        for name, n in release["params"].items():
            rows.append(entry(f"release-size parameters, {name}", n, tolerance=0.05, kind="relative", paper=PAPER_PARAMS[name]))
    for v, d in metrics.get("divergence", {}).items():
        for axis in ("time", "freq"):
            value = float(np.mean(d[axis])) if d[axis] else 0.0
            if VARIANTS[v]["score"] == "shared":
                rows.append(entry(f"JS divergence, {LABELS[v]}, {axis} blocks", value, tolerance=0.0, kind="exact"))
            else:
                rows.append(entry(f"JS divergence, {LABELS[v]}, {axis} blocks", round(value, 6), tolerance=0.5, kind="relative"))
    return rows
