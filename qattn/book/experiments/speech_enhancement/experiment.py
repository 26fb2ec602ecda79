"""The speech-enhancement run: corpus, training, evaluation, timing, memory; and its headline numbers."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
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
    MARGINS,
    PAPER_PARAMS,
    PAPER_RTF,
    TARGET_GAINS,
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
)
from qattn.book.experiments.speech_enhancement.jobs import BASELINES, baseline_job, overfit_job, variant_job
from qattn.book.experiments.speech_enhancement.timing import (
    MaterialisedMaps,
    attention_share,
    breakdown_table,
    maps_bytes,
    memory_table,
    release_params,
    release_timing,
    time_rtf,
)
from qattn.book.experiments.speech_enhancement.training import validation_batch
from qattn.book.models.blocks import count_parameters
from qattn.book.models.speech import SpeechEnhancer
from qattn.book.stats import equivalence, two_way_bootstrap

#: Relative cost of one training step per variant (measured once; orders the jobs, longest first).
_COST = {
    "qtransformer_hamilton": 2.3,
    "qconformer_hamilton": 2.2,
    "real_conformer": 1.4,
    "qconformer_shared": 1.2,
    "qtransformer_shared": 0.9,
}


def _run_jobs(cfg: SpeechExperimentConfig, log: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    """Every variant × seed, the baselines and the overfitting checks on ``cfg.workers`` spawned
    single-threaded processes (:mod:`.jobs`), longest first; progress lines as jobs finish."""
    config = cfg.to_dict()
    jobs: list[tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...], float]] = []
    for variant in cfg.variants:
        n_seeds = cfg.real_seeds if VARIANTS[variant]["kind"] == "real" else cfg.quaternion_seeds
        for k in range(n_seeds):
            jobs.append(("variant", variant_job, (variant, cfg.seed + k), _COST[variant] * cfg.steps))
    jobs.append(("baseline", baseline_job, ("recurrent_mask",), 0.2 * cfg.mask_estimator_steps))
    for mask, compression in (("magnitude", cfg.model.get("input_compression", 1.0)), ("release", 1.0)):
        jobs.append(("overfit", overfit_job, (mask, compression), 0.6 * cfg.overfit_steps))
    for name in BASELINES:
        if name != "recurrent_mask":
            jobs.append(("baseline", baseline_job, (name,), 1.0))
    jobs.sort(key=lambda j: -j[3])
    out: dict[str, list[dict[str, Any]]] = {"variant": [], "baseline": [], "overfit": []}
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=context) as pool:
        futures = {pool.submit(fn, config, *args): (kind, args) for kind, fn, args, _ in jobs}
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            kind, args = futures[future]
            r = future.result()
            out[kind].append(r)
            elapsed = time.perf_counter() - started
            if kind == "variant":
                sc = r["scores"]
                what = (
                    f"{args[0]} seed {args[1]}: PESQ {sc['pesq']:.3f}, STOI {sc['stoi']:.3f}, SI-SDR {sc['si_sdr']:.2f} dB "
                    f"(best step {r['history']['best_step']}, {r['history']['wall_s']:.0f} s)"
                )
            elif kind == "baseline":
                sc = r["scores"]
                what = f"baseline {args[0]}: PESQ {sc['pesq']:.3f}, STOI {sc['stoi']:.3f}, SI-SDR {sc['si_sdr']:.2f} dB"
            else:
                what = f"overfit one batch, {args[0]} mask: SI-SDR {r['noisy_si_sdr']:.2f} → {r['si_sdr'][-1]:.2f} dB"
            log(f"[speech] ({done}/{len(jobs)}) {what}; {elapsed:.0f} s in all")
    return out


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def loss_check(valid: tuple[torch.Tensor, torch.Tensor]) -> dict[str, dict[str, float]]:
    """The training loss's terms on the validation batch for outputs of known quality: the clean
    reference itself, the oracle ratio mask, spectral subtraction and the noisy input. The loss
    must fall as quality rises (its sign and scale, checked before any training)."""
    from qattn.book.speech.baselines import ideal_ratio_mask, spectral_subtraction
    from qattn.book.speech.losses import total_loss

    noisy, clean = valid
    outputs = {
        "clean": clean,
        "ideal_ratio_mask": torch.from_numpy(np.stack([ideal_ratio_mask(c, x) for c, x in zip(clean.numpy(), noisy.numpy())])),
        "spectral_subtraction": torch.from_numpy(np.stack([spectral_subtraction(c, x) for c, x in zip(clean.numpy(), noisy.numpy())])),
        "noisy": noisy,
    }
    with torch.no_grad():
        return {name: {k: float(v) for k, v in total_loss(est, clean).items()} for name, est in outputs.items()}


def _per_utterance(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    """``(seeds, utterances)`` of ``per_utterance_<key>``."""
    return np.asarray([r[f"per_utterance_{key}"] for r in rows], dtype=np.float64)


def gains(metrics: Mapping[str, Any], resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """Every trained variant and baseline minus the noisy input, per metric: mean over seeds and
    utterances with a two-way bootstrap interval, and whether the target gain is met."""
    noisy = metrics["baselines"]["noisy"]
    rows: dict[str, list[dict[str, Any]]] = {
        **{k: [v] for k, v in metrics["baselines"].items() if k != "noisy"},
        **metrics["test_per_seed"],
    }
    out: dict[str, dict[str, Any]] = {}
    for name, runs in rows.items():
        out[name] = {}
        for key, target in TARGET_GAINS.items():
            diff = _per_utterance(runs, key) - np.asarray(noisy[f"per_utterance_{key}"])[None]
            ci = two_way_bootstrap(diff, resamples, seed)
            out[name][key] = {**ci, "target": target, "met": bool(ci["mean"] >= target)}
    return out


def paired_comparisons(metrics: Mapping[str, Any], resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """Shared − Hamilton per family and metric: per-utterance differences of the two variants
    trained with the same seed, a two-way bootstrap interval over seeds and utterances, and the
    verdict against the margin declared before the run (:data:`MARGINS`)."""
    per_seed = metrics["test_per_seed"]
    out: dict[str, dict[str, Any]] = {}
    for family in ("qtransformer", "qconformer"):
        h, s = per_seed.get(f"{family}_hamilton"), per_seed.get(f"{family}_shared")
        if not (h and s):
            continue
        seeds = sorted({r["seed"] for r in h} & {r["seed"] for r in s})
        hs = [next(r for r in h if r["seed"] == k) for k in seeds]
        ss = [next(r for r in s if r["seed"] == k) for k in seeds]
        out[family] = {"seeds": seeds}
        for key, margin in MARGINS.items():
            ci = two_way_bootstrap(_per_utterance(ss, key) - _per_utterance(hs, key), resamples, seed)
            out[family][key] = {**ci, "margin": margin, "verdict": equivalence(ci, margin)}
    return out


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

        # training and scoring, in worker processes --------------------------------------------
        valid = validation_batch(corpus.valid, int(cfg.valid_crop_s * 16000))
        test = corpus.test
        n_test = len(test) if cfg.n_test is None else min(cfg.n_test, len(test))
        clean_test, noisy_test = test.clean[:n_test], test.noisy[:n_test]
        metrics["loss_check"] = loss_check(valid)
        t0 = time.perf_counter()
        outcome = _run_jobs(cfg, log)
        metrics["wall_s"]["train_and_score"] = time.perf_counter() - t0
        variant_runs = {v: sorted((r for r in outcome["variant"] if r["variant"] == v), key=lambda r: r["seed"]) for v in cfg.variants}
        baselines = {r["name"]: r for r in outcome["baseline"]}
        metrics["baselines"] = {name: r["scores"] for name, r in baselines.items()}
        if "recurrent_mask" in baselines:
            metrics["recurrent_mask_training"] = baselines["recurrent_mask"]["history"]
        metrics["overfit"] = sorted(outcome["overfit"], key=lambda r: (r["mask"], r["input_compression"]))
        metrics["training"] = {v: [{"seed": r["seed"], **r["history"]} for r in runs] for v, runs in variant_runs.items()}
        metrics["test_per_seed"] = {v: [{"seed": r["seed"], **r["scores"]} for r in runs] for v, runs in variant_runs.items()}
        metrics["test"] = {
            "noisy": metrics["baselines"]["noisy"],
            **{v: mean_over_seeds(rows) for v, rows in metrics["test_per_seed"].items()},
        }
        metrics["gains"] = gains(metrics, cfg.bootstrap_resamples, cfg.seed)
        metrics["paired"] = paired_comparisons(metrics, cfg.bootstrap_resamples, cfg.seed)
        metrics["wall_s"]["train"] = sum(r["history"]["wall_s"] for runs in variant_runs.values() for r in runs)
        metrics["wall_s"]["evaluate"] = sum(r["evaluate_s"] for runs in variant_runs.values() for r in runs)
        best_models: dict[str, SpeechEnhancer] = {}
        examples: dict[str, np.ndarray] = {}
        for variant, runs in variant_runs.items():
            first = runs[0]  # seed cfg.seed: the checkpoint, examples, maps and timing
            model = SpeechEnhancer(model_config(cfg.model, variant))
            model.load_state_dict(first["state_dict"])
            best_models[variant] = model.eval()
            for i, wave in enumerate(first["examples"]):
                examples[f"{variant}/{i}"] = wave
            if save is not None:
                (save / "speech_models").mkdir(parents=True, exist_ok=True)
                _save_atomic(
                    {"config": model_config(cfg.model, variant).to_dict(), "state_dict": first["state_dict"]},
                    save / "speech_models" / f"{variant}.pt",
                )

        torch.set_num_threads(cfg.threads)
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
        if cfg.breakdown_s > 0:
            t0 = time.perf_counter()
            metrics["breakdown"] = breakdown_table(cfg, log)
            metrics["wall_s"]["breakdown"] = time.perf_counter() - t0
        if cfg.memory:
            t0 = time.perf_counter()
            metrics["memory"] = memory_table(cfg, log)
            metrics["wall_s"]["memory"] = time.perf_counter() - t0
        metrics["params_trained"] = {v: count_parameters(m) for v, m in best_models.items()}
        metrics["params_release"] = metrics["release"]["params"] if "release" in metrics else release_params()
        metrics["threads"] = {"train": cfg.train_threads, "workers": cfg.workers, "timing": cfg.threads}
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
    for name, sc in metrics.get("baselines", {}).items():
        if name != "noisy":
            rows.append(entry(f"test PESQ, baseline {name.replace('_', ' ')}", round(sc["pesq"], 4), tolerance=0.1, kind="relative"))
            rows.append(entry(f"test SI-SDR (dB), baseline {name.replace('_', ' ')}", round(sc["si_sdr"], 3), tolerance=1.0, kind="exact"))
    for v, g in metrics.get("gains", {}).items():
        if v in VARIANTS:
            for key, tol in (("pesq", 0.1), ("si_sdr", 1.0), ("stoi", 0.01)):
                rows.append(
                    entry(
                        f"{LABELS[v]}: test {key.upper().replace('_', '-')} gain over the noisy input",
                        round(g[key]["mean"], 4),
                        tolerance=tol,
                        kind="exact",
                    )
                )
    for family, p in metrics.get("paired", {}).items():
        for key, tol in (("pesq", 0.1), ("si_sdr", 1.0), ("stoi", 0.01)):
            label = f"{family} {key.upper().replace('_', '-')} shared − hamilton"
            rows.append(entry(f"{label}, mean paired difference", round(p[key]["mean"], 4), tolerance=tol, kind="exact"))
            rows.append(entry(f"{label}, lower end of the 95% interval", round(p[key]["low"], 4), tolerance=tol, kind="exact"))
            rows.append(entry(f"{label}, upper end of the 95% interval", round(p[key]["high"], 4), tolerance=tol, kind="exact"))
    for r in metrics.get("breakdown", []):
        rows.append(
            entry(
                f"release-size {r['family']} {r['score']}: attention share of the forward time at {r['audio_s']} s",
                round(r["share"]["attention"], 4),
                tolerance=0.5,
                kind="relative",
            )
        )
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
