"""Real-time factors and peak memory of the enhancers: trained narrow models and release sizes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from qattn.attention import QuaternionMultiheadAttention
from qattn.book.experiments.speech_enhancement.config import FREQ_BOTTLENECK, VARIANTS, SpeechExperimentConfig, model_config
from qattn.book.harness.memory import peak_memory as probe_peak_memory
from qattn.book.harness.timing import summary, time_interleaved
from qattn.book.models.speech import HOP, DenseBlock, SpeechEnhancer, SpeechModelConfig, count_parameters, release_config


def _need_weights_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return args, {**kwargs, "need_weights": True, "average_attn_weights": False}


class MaterialisedMaps(nn.Module):
    """Run a quaternion model's Hamilton attention the release's way: the four N×N maps built.

    Our ``score="hamilton"`` attention runs one fused kernel that never stores the four weight
    maps; the release computes and stores them (``A_c = softmax(S_c)``, then ``A_c V_c``). This
    wrapper asks every attention module for its weights (``need_weights=True``), which makes it
    take that path; the output is identical, only time and memory differ. For timing only.
    """

    def __init__(self, model: SpeechEnhancer) -> None:
        super().__init__()
        if model.cfg.kind != "quaternion" or model.cfg.score != "hamilton":
            raise ValueError("MaterialisedMaps wraps a quaternion model with score='hamilton'")
        self.model = model

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        handles = [m.register_forward_pre_hook(_need_weights_hook, with_kwargs=True) for m in self.model.attention_modules()]
        try:
            return self.model(wave)
        finally:
            for h in handles:
                h.remove()


def maps_bytes(model_cfg: SpeechModelConfig, seconds: float) -> int:
    """Bytes of the four float32 weight maps of one time-axis attention layer (all F′ sequences at once)."""
    frames = int(round(seconds * 16000)) // HOP + 1
    return 4 * 4 * model_cfg.num_heads * FREQ_BOTTLENECK * frames * frames


def memory_workload(model: dict[str, Any], seconds: float, materialise_maps: bool) -> Callable[[], Any]:
    """Workload of :func:`peak_memory` (built in the probe's fresh process): one whole-model forward
    at batch 1 on ``seconds`` of random audio, random weights (``torch.manual_seed(0)``)."""
    cfg = SpeechModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})
    torch.manual_seed(0)
    net: nn.Module = SpeechEnhancer(cfg).eval()
    if materialise_maps:
        net = MaterialisedMaps(net)  # type: ignore[arg-type]
    wave = 0.1 * torch.randn(1, int(round(seconds * 16000)), generator=torch.Generator().manual_seed(0))

    def forward() -> None:
        with torch.inference_mode():
            net(wave)

    return forward


def peak_memory(
    model_cfg: SpeechModelConfig, seconds: float, threads: int = 2, materialise_maps: bool = False, timeout: float = 600
) -> dict[str, Any]:
    """Peak extra resident memory (bytes) of one whole-model forward at batch 1, in a fresh process.

    Weights are random (memory does not depend on them). Returns ``{"ok", "peak_bytes", "time_s"}``
    or ``{"ok": False, "error"}``. Linux only (``/proc/self/clear_refs``); through
    :func:`qattn.book.harness.memory.peak_memory` with :func:`memory_workload`.
    """
    kwargs = {"model": model_cfg.to_dict(), "seconds": seconds, "materialise_maps": materialise_maps}
    return probe_peak_memory("qattn.book.experiments.speech_enhancement.timing:memory_workload", kwargs, threads=threads, timeout=timeout)


def time_rtf(models: dict[str, nn.Module], lengths: list[float], warmup: int, repeats: int, seed: int = 0) -> list[dict[str, Any]]:
    """Interleaved whole-model real-time factors at batch 1 for each length (seconds).

    ``warmup`` rounds run before the first length only (later lengths reuse the warm kernels).
    """
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for i, seconds in enumerate(lengths):
        wave = 0.1 * torch.randn(1, int(round(seconds * 16000)), generator=gen)
        fns = {}
        for name, model in models.items():
            model.eval()
            fns[name] = lambda m=model: m(wave)
        with torch.inference_mode():
            timed = summary(time_interleaved(fns, repeats=repeats, warmup=warmup if i == 0 else 0))
        for name, t in timed.items():
            rows.append(
                {
                    "model": name,
                    "seconds": seconds,
                    **t,
                    "rtf": t["median_s"] / seconds,
                    "rtf_min": t["min_s"] / seconds,
                    "rtf_max": t["max_s"] / seconds,
                }
            )
    return rows


@torch.inference_mode()
def attention_share(model: SpeechEnhancer, seconds: float) -> float:
    """Share of one forward's time spent inside the bottleneck's attention modules (hooks)."""
    spent = [0.0]
    starts: list[float] = []
    handles = []
    for mha in model.attention_modules():
        handles.append(mha.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter())))
        handles.append(mha.register_forward_hook(lambda *_: spent.__setitem__(0, spent[0] + time.perf_counter() - starts.pop())))
    wave = 0.1 * torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0))
    model(wave)
    t0 = time.perf_counter()
    spent[0] = 0.0
    model(wave)
    total = time.perf_counter() - t0
    for h in handles:
        h.remove()
    return spent[0] / total


BREAKDOWN_CATEGORIES = ("stft", "attention", "bottleneck_other", "dense_blocks", "other_convs")


class _ExclusiveClock:
    """Self time per category: a stack of active categories, each interval charged to the innermost.

    ``enter(c)`` charges the time since the last event to the category on top of the stack and
    pushes ``c``; ``leave()`` charges it to the top and pops. A nested timed module (attention
    inside a conformer block, a dense block inside the encoder) therefore stops its parent's clock
    while it runs, and no interval is counted twice.
    """

    def __init__(self) -> None:
        self.spent: dict[str, float] = dict.fromkeys(BREAKDOWN_CATEGORIES, 0.0)
        self.stack: list[str] = []
        self.last = 0.0

    def reset(self) -> None:
        self.spent = dict.fromkeys(BREAKDOWN_CATEGORIES, 0.0)
        self.stack.clear()

    def enter(self, category: str) -> None:
        now = time.perf_counter()
        if self.stack:
            self.spent[self.stack[-1]] += now - self.last
        self.stack.append(category)
        self.last = now

    def leave(self) -> None:
        now = time.perf_counter()
        self.spent[self.stack.pop()] += now - self.last
        self.last = now


def _timed_method(clock: _ExclusiveClock, method: Callable[..., Any], category: str) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        clock.enter(category)
        try:
            return method(*args, **kwargs)
        finally:
            clock.leave()

    return timed


def time_breakdown(model: SpeechEnhancer, seconds: float, repeats: int = 3, warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """Where one whole-model forward's time goes, per layer type: batch 1, CPU, ``seconds`` of audio.

    The wave is ``0.1·randn`` (generator seeded with ``seed``); the model runs in eval mode under
    ``torch.inference_mode()`` with the current ``torch.get_num_threads()``. Forward pre/post hooks
    (and, for the two steps that are methods rather than modules, ``mask`` and ``bottleneck``,
    temporary wrappers on the instance) charge each interval to the innermost timed part that is
    running, so nested parts are never counted twice. Categories (self time):

    - ``"stft"``: everything of the forward outside :meth:`SpeechEnhancer.mask` — peak
      normalisation, STFT, the quaternion input ``[0, |X|, Re X, Im X]``, the mask application,
      iSTFT and the rescaling;
    - ``"attention"``: the multi-head attention modules (:meth:`SpeechEnhancer.attention_modules`:
      ``QuaternionMultiheadAttention`` or ``nn.MultiheadAttention``), projections included;
    - ``"bottleneck_other"``: the rest of :meth:`SpeechEnhancer.bottleneck` — feed-forward
      networks, conformer convolution modules, layer norms, residual adds and the reshapes
      between the time and the frequency blocks;
    - ``"dense_blocks"``: the ``DenseBlock`` modules of encoder and decoder (their 2-D
      convolutions, batch norms, PReLU, gating and concatenation);
    - ``"other_convs"``: the rest of :meth:`SpeechEnhancer.mask` — transitions, the strided and
      the transposed convolution, 1×1 convolutions and batch norms of encoder, skip fusion (its
      concatenation included) and decoder, and the mask head.

    ``"unattributed"`` is the total minus the five (the model's own hook calls and the call glue
    around them); ``"total"`` is the whole forward, hooks included. Each value is the median over
    ``repeats`` timed forwards, after ``warmup`` untimed ones; shares are of ``total_s``.

    Returns ``{"seconds": {category: s}, "share": {category: fraction}, "total_s", "audio_s",
    "rtf", "threads", "repeats"}``. All hooks and wrappers are removed again, and the model's
    train/eval mode restored, also on error.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("time_breakdown times a model on the CPU")
    wave = 0.1 * torch.randn(1, int(round(seconds * 16000)), generator=torch.Generator().manual_seed(seed))
    clock = _ExclusiveClock()
    timed_modules: list[tuple[nn.Module, str]] = [(model, "stft")]
    timed_modules += [(m, "attention") for m in model.attention_modules()]
    timed_modules += [(m, "dense_blocks") for m in model.modules() if isinstance(m, DenseBlock)]
    handles = []
    was_training = model.training
    shadowed = {name: model.__dict__[name] for name in ("mask", "bottleneck") if name in model.__dict__}
    runs: list[dict[str, float]] = []
    try:
        for module, category in timed_modules:
            handles.append(module.register_forward_pre_hook(lambda *_, c=category: clock.enter(c)))
            handles.append(module.register_forward_hook(lambda *_: clock.leave()))
        model.mask = _timed_method(clock, model.mask, "other_convs")  # type: ignore[method-assign]
        model.bottleneck = _timed_method(clock, model.bottleneck, "bottleneck_other")  # type: ignore[method-assign]
        model.eval()
        with torch.inference_mode():
            for i in range(warmup + repeats):
                clock.reset()
                t0 = time.perf_counter()
                model(wave)
                total = time.perf_counter() - t0
                if i >= warmup:
                    run = dict(clock.spent)
                    run["unattributed"] = total - sum(clock.spent.values())
                    run["total"] = total
                    runs.append(run)
    finally:
        for h in handles:
            h.remove()
        for name in ("mask", "bottleneck"):
            model.__dict__.pop(name, None)
        model.__dict__.update(shadowed)
        model.train(was_training)
    secs = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    total_s = secs["total"]
    return {
        "seconds": secs,
        "share": {key: value / total_s for key, value in secs.items()},
        "total_s": total_s,
        "audio_s": seconds,
        "rtf": total_s / seconds,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }


def release_params() -> dict[str, int]:
    """Parameter counts of the release-sized QConformer, QTransformer and real Conformer."""
    return {
        "qconformer": count_parameters(SpeechEnhancer(release_config("conformer"))),
        "qtransformer": count_parameters(SpeechEnhancer(release_config("transformer"))),
        "real_conformer": count_parameters(SpeechEnhancer(release_config(kind="real"))),
    }


def release_timing(cfg: SpeechExperimentConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Release-sized models (untrained): attention layers at every length, whole models at one length.

    - ``attention``: one time-axis and one frequency-axis release attention layer at the exact
      bottleneck shapes, interleaved: shared, Hamilton (fused) and Hamilton with materialised maps
      (only where the maps fit in ``maps_limit_gb``; otherwise the row records why not).
    - ``whole``: the whole release-sized model, shared and Hamilton interleaved, at
      ``release_whole_s`` (a direct measurement).
    - ``composed``: RTF at every length as (whole − attention)·L/``release_whole_s`` + attention(L),
      with the non-attention part taken from the shared model; at ``release_whole_s`` the direct
      values are reported beside it.
    """
    rel = release_config()
    out: dict[str, Any] = {"params": release_params(), "attention": [], "whole": [], "composed": [], "maps_skipped": []}
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        mhas = {
            s: QuaternionMultiheadAttention(rel.d_model, rel.num_heads, score=s, batch_first=True).eval() for s in ("hamilton", "shared")
        }
    attn_time: dict[tuple[str, float], float] = {}
    for i, seconds in enumerate(cfg.timing_lengths):
        t = int(round(seconds * 16000)) // HOP + 1
        x_time = torch.randn(FREQ_BOTTLENECK, t, rel.d_model, generator=gen)
        x_freq = torch.randn(t, FREQ_BOTTLENECK, rel.d_model, generator=gen)
        fns: dict[str, Callable[[], Any]] = {}
        for s, mha in mhas.items():
            fns[s] = lambda m=mha: (m(x_time, x_time, x_time, need_weights=False), m(x_freq, x_freq, x_freq, need_weights=False))
        need = 2 * maps_bytes(rel, seconds)  # the maps and their scores
        if need <= cfg.maps_limit_gb * 2**30:
            fns["hamilton_maps"] = lambda m=mhas["hamilton"]: (
                m(x_time, x_time, x_time, average_attn_weights=False),
                m(x_freq, x_freq, x_freq, average_attn_weights=False),
            )
        else:
            out["maps_skipped"].append({"seconds": seconds, "needs_gb": need / 2**30, "limit_gb": cfg.maps_limit_gb})
        with torch.inference_mode():
            timed = summary(time_interleaved(fns, repeats=cfg.timing_repeats, warmup=cfg.timing_warmup if i == 0 else 0))
        for s, row in timed.items():
            # one time-axis and one frequency-axis layer per call; the release has n_time_blocks of each
            per_model = row["median_s"] * rel.n_time_blocks
            attn_time[(s, seconds)] = per_model
            out["attention"].append({"score": s, "seconds": seconds, "frames": t, **row, "model_attention_s": per_model})
        log(f"  release attention layers at {seconds} s: " + ", ".join(f"{s} {attn_time[(s, seconds)]:.3f} s" for s in timed))
    whole_s = cfg.release_whole_s
    for family, bottleneck in (("qconformer", "conformer"), ("qtransformer", "transformer")):
        models = {}
        for s in ("hamilton", "shared"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                models[s] = SpeechEnhancer(release_config(bottleneck, score=s)).eval()
        wave = 0.1 * torch.randn(1, int(round(whole_s * 16000)), generator=gen)
        with torch.inference_mode():
            for m in models.values():
                m(wave[:, :16000])  # warm-up on one second
            timed = summary(time_interleaved({s: (lambda m=m: m(wave)) for s, m in models.items()}, repeats=cfg.release_whole_repeats))
        for s, row in timed.items():
            out["whole"].append({"family": family, "score": s, "seconds": whole_s, **row, "rtf": row["median_s"] / whole_s})
        log(
            f"  release {family} whole model at {whole_s} s: hamilton {timed['hamilton']['median_s']:.2f} s, "
            f"shared {timed['shared']['median_s']:.2f} s"
        )
        rest = timed["shared"]["median_s"] - attn_time.get(("shared", whole_s), 0.0)
        for seconds in cfg.timing_lengths:
            row = {"family": family, "seconds": seconds}
            for s in ("hamilton", "shared", "hamilton_maps"):
                if (s, seconds) not in attn_time:
                    continue
                total = rest * seconds / whole_s + attn_time[(s, seconds)]
                row[f"rtf_{s}"] = total / seconds
                row[f"attention_share_{s}"] = attn_time[(s, seconds)] / total
            row["reduction_pct"] = 100 * (1 - row["rtf_shared"] / row["rtf_hamilton"])
            if "rtf_hamilton_maps" in row:
                row["reduction_vs_maps_pct"] = 100 * (1 - row["rtf_shared"] / row["rtf_hamilton_maps"])
            if seconds == whole_s:
                row["rtf_hamilton_direct"] = timed["hamilton"]["median_s"] / seconds
                row["rtf_shared_direct"] = timed["shared"]["median_s"] / seconds
                row["reduction_direct_pct"] = 100 * (1 - row["rtf_shared_direct"] / row["rtf_hamilton_direct"])
            out["composed"].append(row)
    return out


def memory_table(cfg: SpeechExperimentConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Peak memory of one whole-model forward at the longest length: trained sizes and release size."""
    longest = max(cfg.timing_lengths)
    rows = []
    cases: list[tuple[str, str, SpeechModelConfig, bool]] = []
    for v in cfg.variants:
        if VARIANTS[v]["kind"] == "quaternion":
            mc = model_config(cfg.model, v)
            cases.append(("trained", v, mc, False))
            if VARIANTS[v]["score"] == "hamilton" and 2 * maps_bytes(mc, longest) <= cfg.maps_limit_gb * 2**30:
                cases.append(("trained", v + "_maps", mc, True))
    if cfg.release_timing and cfg.release_memory:
        for family, bottleneck in (("qtransformer", "transformer"), ("qconformer", "conformer")):
            for s in ("hamilton", "shared"):
                cases.append(("release", f"{family}_{s}", release_config(bottleneck, score=s), False))
    for size, name, mc, maps in cases:
        r = peak_memory(mc, longest, cfg.threads, materialise_maps=maps)
        rows.append({"size": size, "model": name, "seconds": longest, **r})
        log(f"  peak memory {size} {name} at {longest} s: " + (f"{r['peak_bytes'] / 2**20:.0f} MiB" if r["ok"] else r["error"]))
    return rows


def breakdown_table(cfg: SpeechExperimentConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """:func:`time_breakdown` of the release-sized QTransformer and QConformer, Hamilton and shared
    scores, at ``cfg.breakdown_s`` seconds with ``cfg.threads`` threads (random weights: time does
    not depend on their values)."""
    rows = []
    for family in ("transformer", "conformer"):
        for score in ("hamilton", "shared"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = SpeechEnhancer(release_config(family, score=score)).eval()
            r = time_breakdown(model, cfg.breakdown_s, repeats=cfg.breakdown_repeats, warmup=1, seed=cfg.seed)
            rows.append({"family": f"q{family}", "score": score, **r})
            log(f"[speech] time breakdown, release-size q{family} {score} at {cfg.breakdown_s} s: RTF {r['rtf']:.3f}")
    return rows
