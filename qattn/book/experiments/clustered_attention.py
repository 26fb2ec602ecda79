"""Clustered attention (Vyas, Katharopoulos, Fleuret, NeurIPS 2020): how close, and how fast on a CPU.

Six measurements with :mod:`qattn.attention.clustered` (and the registered mechanisms):

1. **Approximation**: queries from a Gaussian mixture (``mixture_components`` centres, within-centre
   spread ``query_noise``), keys and values Gaussian; for every number of clusters ``C`` in
   ``clusters`` (``0`` stands for ``C = N``, every query its own cluster) and every ``top_k`` in
   ``top_ks`` (``0``: plain clustered attention), the mean L1 distance of the attention rows to
   full attention and the relative error of the output. The paper's Proposition 2 (improved
   clustered rows are never farther from the full rows than plain clustered ones) is checked on
   every query of every setting.
2. **CPU time** of one forward pass against the sequence length ``N``: full attention (torch's fused
   ``scaled_dot_product_attention``), clustered (hashing and k-means included) and improved
   clustered at ``timing_clusters`` and ``timing_top_k``, interleaved (:mod:`qattn.book.harness.timing`),
   and the crossover length from which each is faster than full attention. Also timed: the
   clustering alone (hashing and k-means) and clustered attention with Hamilton scores (four maps
   from ONE clustering of the quaternion queries), which give the time one shared clustering saves
   over clustering once per map.

3. **Forward + backward time** (gradients with respect to queries, keys and values) at
   ``backward_lengths``, interleaved the same way.
4. **Peak memory** of one forward pass per variant and length (``memory_lengths``), each in a
   fresh process (:func:`qattn.book.harness.memory.peak_memory`: the rise of the resident set).

5. **The swap into a trained model**: a small quaternion encoder (shared scores,
   :class:`~qattn.book.models.key_tasks.KeyTaskModel`) trained with full attention on the two key
   tasks of :mod:`qattn.book.data.key_tasks` (a classification whose answer every position finds in
   the same place, and a span extraction whose boundaries need each position's own neighbours),
   then answering with clustered / improved clustered attention (``swap_clusters``,
   ``swap_top_k``) at inference only (:func:`qattn.attention.swap_attention`): test scores over
   ``swap_draws`` draws of the hyperplanes and the drop with a paired bootstrap interval. The
   trained span model's real queries, keys and values get the approximation study of (1), and
   one head's full, clustered and improved maps are kept for the figure.
6. **Training with clustered attention**: the same encoder trained on the key-presence task at
   ``train_length`` tokens with full, clustered and improved clustered attention, from the same
   initial weights on the same batches: validation score against training wall-clock, test
   score and its difference to full attention with a paired bootstrap interval.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from qattn.attention import swap_attention
from qattn.attention.clustered import cluster_queries, clustered_attention, clustered_hamilton_attention, random_planes
from qattn.book.data.key_tasks import KeyTaskSpec, key_presence, key_span
from qattn.book.harness.config import ExperimentConfig, choice
from qattn.book.harness.memory import peak_memory
from qattn.book.harness.timing import crossover, summary, time_interleaved
from qattn.book.harness.training import LoopConfig, StepLoss, evenly_spaced, fit, torch_threads
from qattn.book.headline import headline
from qattn.book.models.key_tasks import TASKS, KeyTaskModel
from qattn.book.stats import paired_bootstrap

__all__ = ["ClusteredConfig", "config_for", "run", "mixture_inputs", "approximation", "timing", "crossover", "forward_workload", "memory"]


@dataclass(frozen=True)
class ClusteredConfig(ExperimentConfig):
    """Everything that defines a run of the chapter (see the module docstring)."""

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        "ci": {
            "length": 256,
            "clusters": (1, 4, 16, 0),
            "top_ks": (0, 8),
            "timing_lengths": (256, 512, 1024),
            "timing_repeats": 3,
            "timing_min_time_s": 0.02,
            "timing_clusters": 16,
            "backward_lengths": (256, 512),
            "memory_lengths": (512,),
            "task_length": 64,
            "task_steps": 60,
            "presence_steps": 30,
            "task_batch": 16,
            "task_val": 100,
            "task_test": 200,
            "task_validations": 3,
            "swap_clusters": 8,
            "swap_top_k": 8,
            "swap_draws": 1,
            "maps_sequences": 2,
            "train_length": 128,
            "train_steps": 20,
            "train_batch": 8,
            "train_clusters": 8,
            "train_top_k": 8,
            "bootstrap": 200,
        },
    }

    profile: str = "full"
    seed: int = 0
    heads: int = 4
    dim: int = 64
    length: int = 1024
    mixture_components: int = 16
    query_noise: float = 0.3
    clusters: tuple[int, ...] = (1, 4, 16, 64, 0)
    top_ks: tuple[int, ...] = (0, 8, 32)
    bits: int = 31
    iterations: int = 10
    timing_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384)
    timing_clusters: int = 100
    timing_top_k: int = 32
    timing_repeats: int = 5
    timing_min_time_s: float = 0.2
    backward_lengths: tuple[int, ...] = (1024, 4096, 8192)
    memory_lengths: tuple[int, ...] = (1024, 4096, 16384)
    task_length: int = 128
    task_fillers: int = 8
    task_keys: int = 4
    task_records: int = 2
    task_max_span: int = 6
    task_width: int = 64
    task_depth: int = 2
    task_heads: int = 4
    task_steps: int = 3000
    presence_steps: int = 600
    task_batch: int = 32
    task_lr: float = 2e-3
    task_val: int = 300
    task_test: int = 2000
    task_validations: int = 6
    swap_clusters: int = 25
    swap_top_k: int = 32
    swap_draws: int = 3
    maps_sequences: int = 8
    maps_head: int = 0
    train_task: str = choice(TASKS, "presence")
    train_length: int = 1024
    train_steps: int = 150
    train_batch: int = 16
    train_clusters: int = 25
    train_top_k: int = 32
    bootstrap: int = 2000
    threads: int | None = 2


def config_for(profile: str, seed: int = 0, **overrides: Any) -> ClusteredConfig:
    """The configuration of ``profile`` (``"ci"`` or ``"full"``), with optional overrides."""
    return ClusteredConfig.for_profile(profile, seed, **overrides)


def mixture_inputs(cfg: ClusteredConfig, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``q, k, v`` of shape ``(1, heads, length, dim)``: mixture queries, Gaussian keys and values."""
    centres = torch.randn(1, cfg.heads, cfg.mixture_components, cfg.dim, generator=generator)
    which = torch.randint(cfg.mixture_components, (1, cfg.heads, length), generator=generator)
    q = centres.gather(2, which[..., None].expand(-1, -1, -1, cfg.dim))
    q = q + cfg.query_noise * torch.randn(1, cfg.heads, length, cfg.dim, generator=generator)
    k = torch.randn(1, cfg.heads, length, cfg.dim, generator=generator)
    v = torch.randn(1, cfg.heads, length, cfg.dim, generator=generator)
    return q, k, v


def approximation_on(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    clusters: tuple[int, ...],
    top_ks: tuple[int, ...],
    planes: Tensor,
    iterations: int,
    seed: int,
    log: Callable[[str], None] = print,
    name: str = "",
) -> dict[str, Any]:
    """Row L1 distance and output error against full attention of ``q (B, H, N, D)`` etc. for every (C, top_k).

    ``C = 0`` stands for ``C = N`` (labels given: every query its own cluster); the paper's
    Proposition 2 is checked on every query row of every ``top_k > 0`` setting.
    """
    batch, heads, length, dim = q.shape
    scores = q @ k.transpose(-1, -2) / math.sqrt(dim)
    full_rows = torch.softmax(scores, -1)
    full_out = full_rows @ v
    rows, violations, checked = [], 0, 0
    for c in clusters:
        n_clusters = length if c == 0 else c
        if c == 0:
            labels = torch.arange(length).expand(batch, heads, -1).contiguous()
        else:
            labels = cluster_queries(q, n_clusters, planes, iterations, torch.Generator().manual_seed(seed + c))
        used = int(max(len(torch.unique(labels[b, h])) for b in range(batch) for h in range(heads)))
        plain_gap = None
        for top_k in top_ks:
            out, weights = clustered_attention(q, k, v, labels, n_clusters, top_k=min(top_k, length), need_weights=True)
            gap = (weights - full_rows).abs().sum(-1)  # (B, H, N)
            if top_k == 0:
                plain_gap = gap
            elif plain_gap is not None:
                violations += int((gap > plain_gap + 1e-6).sum())
                checked += gap.numel()
            rows.append(
                {
                    "clusters": n_clusters,
                    "clusters_label": "N" if c == 0 else str(c),
                    "clusters_used": used,
                    "top_k": top_k,
                    "row_l1_mean": float(gap.mean()),
                    "row_l1_max": float(gap.max()),
                    "output_rel_error": float((out - full_out).norm() / full_out.norm()),
                }
            )
        log(
            f"[clustered_attention] {name}C={'N' if c == 0 else c}: "
            + ", ".join(f"top_k {r['top_k']}: L1 {r['row_l1_mean']:.3f}" for r in rows if r["clusters"] == n_clusters)
        )
    return {"rows": rows, "proposition_violations": violations, "proposition_checked": checked}


def approximation(cfg: ClusteredConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Row L1 distance and output error against full attention for every (C, top_k) of the config, on mixture queries."""
    gen = torch.Generator().manual_seed(cfg.seed)
    q, k, v = mixture_inputs(cfg, cfg.length, gen)
    planes = random_planes(cfg.dim, cfg.bits, gen)
    return approximation_on(q, k, v, cfg.clusters, cfg.top_ks, planes, cfg.iterations, cfg.seed, log)


def timing(cfg: ClusteredConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Interleaved forward times of full, clustered and improved clustered attention at every length."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    planes = random_planes(cfg.dim, cfg.bits, gen)
    rows = []
    for i, n in enumerate(cfg.timing_lengths):
        q, k, v = mixture_inputs(cfg, n, gen)
        c = min(cfg.timing_clusters, n)
        top_k = min(cfg.timing_top_k, n)

        def clustered(top: int, q: Tensor = q, k: Tensor = k, v: Tensor = v, c: int = c) -> Callable[[], Any]:
            def call() -> Any:
                labels = cluster_queries(q, c, planes, cfg.iterations, torch.Generator().manual_seed(cfg.seed))
                return clustered_attention(q, k, v, labels, c, top_k=top)[0]

            return call

        def full(q: Tensor = q, k: Tensor = k, v: Tensor = v) -> Tensor:
            return F.scaled_dot_product_attention(q, k, v)

        def clustering(q: Tensor = q, c: int = c) -> Tensor:
            return cluster_queries(q, c, planes, cfg.iterations, torch.Generator().manual_seed(cfg.seed))

        def hamilton(q: Tensor = q, k: Tensor = k, v: Tensor = v, c: int = c) -> Tensor:
            quaternion = (t.unflatten(-1, (4, cfg.dim // 4)) for t in (q, k, v))
            generator = torch.Generator().manual_seed(cfg.seed)
            return clustered_hamilton_attention(*quaternion, n_clusters=c, planes=planes, iterations=cfg.iterations, generator=generator)[0]

        fns = {
            "full": full,
            "clustered": clustered(0),
            "improved": clustered(top_k),
            "clustering": clustering,
            "hamilton_clustered": hamilton,
        }
        with torch.inference_mode():
            timed = summary(time_interleaved(fns, repeats=cfg.timing_repeats, warmup=1 if i == 0 else 0, min_time_s=cfg.timing_min_time_s))
        for name, t in timed.items():
            rows.append({"length": n, "variant": name, "clusters": c, "top_k": top_k if name == "improved" else 0, **t})
        log(f"[clustered_attention] N={n}: " + ", ".join(f"{name} {t['median_s'] * 1e3:.1f} ms" for name, t in timed.items()))
    lengths = list(cfg.timing_lengths)
    med = {(r["variant"], r["length"]): r["median_s"] for r in rows}
    cross = {name: crossover(lengths, [med[(name, n)] < med[("full", n)] for n in lengths]) for name in ("clustered", "improved")}
    # Hamilton scores: clustering once per map would add three clusterings to the shared one
    saving = {str(n): 3 * med[("clustering", n)] / (med[("hamilton_clustered", n)] + 3 * med[("clustering", n)]) for n in lengths}
    return {"rows": rows, "crossover": cross, "hamilton_shared_clustering_saving": saving}


VARIANTS = ("full", "clustered", "improved")


def _call(variant: str, q: Tensor, k: Tensor, v: Tensor, cfg: ClusteredConfig, planes: Tensor) -> Tensor:
    """One forward pass of ``variant`` (the clustering included for the clustered ones)."""
    if variant == "full":
        return F.scaled_dot_product_attention(q, k, v)
    c = min(cfg.timing_clusters, q.shape[2])
    labels = cluster_queries(q, c, planes, cfg.iterations, torch.Generator().manual_seed(cfg.seed))
    return clustered_attention(q, k, v, labels, c, top_k=min(cfg.timing_top_k, k.shape[2]) if variant == "improved" else 0)[0]


def forward_workload(variant: str, length: int, config: dict[str, Any]) -> Callable[[], Any]:
    """The memory probe's workload (:func:`qattn.book.harness.memory.peak_memory`): inputs built, one forward to measure."""
    cfg = ClusteredConfig.from_dict(config)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    planes = random_planes(cfg.dim, cfg.bits, gen)
    q, k, v = mixture_inputs(cfg, length, gen)

    def call() -> None:
        with torch.inference_mode():
            _call(variant, q, k, v, cfg, planes)

    return call


def memory(cfg: ClusteredConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Peak extra resident memory of one forward pass per variant and length, each in a fresh process."""
    rows = []
    for n in cfg.memory_lengths:
        for variant in VARIANTS:
            probe = peak_memory(
                "qattn.book.experiments.clustered_attention:forward_workload",
                {"variant": variant, "length": n, "config": cfg.to_dict()},
                threads=cfg.threads,
            )
            rows.append({"length": n, "variant": variant, **probe})
        log(
            f"[clustered_attention] memory N={n}: "
            + ", ".join(
                f"{r['variant']} {r['peak_bytes'] / 2**20:.0f} MiB" if r.get("ok") else f"{r['variant']} failed"
                for r in rows
                if r["length"] == n
            )
        )
    return rows


def backward_timing(cfg: ClusteredConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Interleaved forward + backward times (gradients of q, k, v) at ``backward_lengths``."""
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    planes = random_planes(cfg.dim, cfg.bits, gen)
    rows = []
    for i, n in enumerate(cfg.backward_lengths):
        q, k, v = (t.requires_grad_() for t in mixture_inputs(cfg, n, gen))

        def step(variant: str, q: Tensor = q, k: Tensor = k, v: Tensor = v) -> Callable[[], None]:
            def call() -> None:
                for t in (q, k, v):
                    t.grad = None
                _call(variant, q, k, v, cfg, planes).sum().backward()

            return call

        timed = summary(
            time_interleaved(
                {name: step(name) for name in VARIANTS},
                repeats=cfg.timing_repeats,
                warmup=1 if i == 0 else 0,
                min_time_s=cfg.timing_min_time_s,
            )
        )
        rows += [{"length": n, "variant": name, **t} for name, t in timed.items()]
        log(
            f"[clustered_attention] forward+backward N={n}: "
            + ", ".join(f"{name} {t['median_s'] * 1e3:.1f} ms" for name, t in timed.items())
        )
    return rows


# -- a model trained in this book: the key tasks ------------------------------------------------

APPROXIMATIONS = ("clustered", "improved_clustered")


def key_spec(cfg: ClusteredConfig, length: int) -> KeyTaskSpec:
    """The key tasks' layout at ``length`` tokens (:mod:`qattn.book.data.key_tasks`)."""
    return KeyTaskSpec(length=length, fillers=cfg.task_fillers, keys=cfg.task_keys, records=cfg.task_records, max_span=cfg.task_max_span)


def task_split(cfg: ClusteredConfig, task: str, length: int, split: str, n: int) -> tuple[Tensor, Tensor]:
    """A split of a key task; each (task, length, split) has its own seeded generator, so splits never share a draw."""
    offset = {"train": 0, "val": 1, "test": 2}[split] + 10 * TASKS.index(task)
    generator = torch.Generator().manual_seed(1000 * cfg.seed + 100 + offset + length)
    make = key_presence if task == "presence" else key_span
    return make(key_spec(cfg, length), n, generator)


def task_loss(task: str, logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of the class (presence) or of the start and end positions (span, summed)."""
    if task == "presence":
        return F.cross_entropy(logits, target)
    return F.cross_entropy(logits[..., 0], target[:, 0]) + F.cross_entropy(logits[..., 1], target[:, 1])


def task_scores(model: torch.nn.Module, task: str, tokens: Tensor, target: Tensor, batch: int = 250) -> dict[str, Tensor]:
    """Per-example scores: ``correct`` (presence); ``exact`` (start and end right) and token ``f1`` (span)."""
    with torch.inference_mode():
        logits = torch.cat([model(tokens[i : i + batch]) for i in range(0, len(tokens), batch)])
    if task == "presence":
        return {"correct": (logits.argmax(1) == target).double()}
    start, end = logits[..., 0].argmax(1), logits[..., 1].argmax(1)
    exact = ((start == target[:, 0]) & (end == target[:, 1])).double()
    overlap = (torch.minimum(end, target[:, 1]) - torch.maximum(start, target[:, 0]) + 1).clamp(min=0).double()
    predicted = (end - start + 1).clamp(min=0).double()
    gold = (target[:, 1] - target[:, 0] + 1).double()
    precision = torch.where(predicted > 0, overlap / predicted.clamp(min=1), torch.zeros_like(overlap))
    recall = overlap / gold
    f1 = torch.where(overlap > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), torch.zeros_like(overlap))
    return {"exact": exact, "f1": f1}


def _main_metric(task: str) -> str:
    return "correct" if task == "presence" else "f1"


def train_key_model(
    cfg: ClusteredConfig,
    task: str,
    length: int,
    steps: int,
    batch: int,
    mechanism: str = "shared",
    options: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[KeyTaskModel, dict[str, Any]]:
    """Train a key-task model with ``mechanism`` (swapped in before training when not ``"shared"``).

    The same initial weights, batches and validation set for every mechanism of a comparison;
    the learning curve records the training wall-clock (validation excluded) at each validation.
    """
    spec = key_spec(cfg, length)
    model: torch.nn.Module = KeyTaskModel(
        task, spec.vocab, length, cfg.task_width, cfg.task_depth, cfg.task_heads, generator=torch.Generator().manual_seed(cfg.seed + 7)
    )
    if mechanism != "shared":
        model = swap_attention(model, mechanism, options, generator=torch.Generator().manual_seed(cfg.seed + 8))
    x_train, y_train = task_split(cfg, task, length, "train", steps * batch)
    x_val, y_val = task_split(cfg, task, length, "val", cfg.task_val)
    clock = {"validation_s": 0.0, "start": time.perf_counter()}
    curve: list[dict[str, float]] = []

    def validate(m: torch.nn.Module) -> dict[str, float]:
        tick = time.perf_counter()
        value = float(task_scores(m, task, x_val, y_val)[_main_metric(task)].mean())
        train_s = tick - clock["start"] - clock["validation_s"]
        clock["validation_s"] += time.perf_counter() - tick
        curve.append({"train_s": train_s, "val": value})
        return {"val": value}

    def loss_fn(m: torch.nn.Module, b: tuple[Tensor, Tensor]) -> StepLoss:
        return StepLoss(task_loss(task, m(b[0]), b[1]), weight=len(b[0]))

    batches = ((x_train[i * batch : (i + 1) * batch], y_train[i * batch : (i + 1) * batch]) for i in range(steps))
    loop = LoopConfig(
        steps=steps,
        lr=cfg.task_lr,
        warmup_steps=steps // 10,
        decay="cosine",
        grad_clip=1.0,
        validate_at=(0, *evenly_spaced(steps, cfg.task_validations)),
        dropout_seed=cfg.seed,
    )
    result = fit(model, batches, loss_fn, validate, loop, select="val", log=log, name=f"{task} N={length} {mechanism}")
    for point, entry in zip(curve, result.history):
        point["step"] = entry["step"]
    return model, {"curve": curve, "best_step": result.best_step, "train_time_s": result.train_time_s, "steps": steps, "batch": batch}


def swap_experiment(cfg: ClusteredConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The paper's swap at our scale: train with full attention, answer with clustered / improved clustered.

    Per task: the trained model's test scores with full attention and with each approximation
    (``swap_clusters``, ``swap_top_k``) over ``swap_draws`` draws of the hyperplanes, and the drop
    (full − swapped) with a paired bootstrap interval over the test examples (first draw).
    """
    out: dict[str, Any] = {}
    models: dict[str, KeyTaskModel] = {}
    for task in TASKS:
        steps = cfg.presence_steps if task == "presence" else cfg.task_steps
        model, training = train_key_model(cfg, task, cfg.task_length, steps, cfg.task_batch, log=log)
        models[task] = model
        x_test, y_test = task_split(cfg, task, cfg.task_length, "test", cfg.task_test)
        full = task_scores(model, task, x_test, y_test)
        rows = [{"mechanism": "full", "draw": 0, **{k: float(v.mean()) for k, v in full.items()}}]
        drops = {}
        for mechanism in APPROXIMATIONS:
            options = {"n_clusters": cfg.swap_clusters, **({"top_k": cfg.swap_top_k} if mechanism == "improved_clustered" else {})}
            for draw in range(cfg.swap_draws):
                swapped = swap_attention(model, mechanism, options, generator=torch.Generator().manual_seed(cfg.seed + 100 + draw))
                scores = task_scores(swapped, task, x_test, y_test)
                rows.append({"mechanism": mechanism, "draw": draw, **{k: float(v.mean()) for k, v in scores.items()}})
                if draw == 0:
                    drops[mechanism] = {
                        metric: paired_bootstrap(full[metric], scores[metric], cfg.bootstrap, seed=cfg.seed) for metric in full
                    }
        log(
            f"[clustered_attention] swap {task}: "
            + ", ".join(f"{r['mechanism']} {r[_main_metric(task)]:.3f}" for r in rows if r["draw"] == 0)
        )
        out[task] = {"training": training, "test_examples": cfg.task_test, "rows": rows, "drop": drops, "metric": _main_metric(task)}
    out["maps"] = trained_maps(cfg, models["span"], log)
    return out


def _layer_inputs(model: KeyTaskModel, tokens: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Each attention layer's flattened quaternion ``q, k, v`` ``(B, H, N, 4·d_h)`` on ``tokens``."""
    found = []
    with torch.inference_mode():
        x = model.tokens(tokens) + model.positions[: tokens.shape[1]]
        for block in model.encoder.blocks:
            attention = block.attention
            h = block.norm1(x)
            q, k, v = (attention.split_heads(t).flatten(-2) for t in attention.project(h, h, h))
            found.append((q, k, v))
            x, _ = block(x)
    return found


def trained_maps(cfg: ClusteredConfig, model: KeyTaskModel, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Queries, keys and values of the trained span model: the approximation study on them, and one head's maps.

    The approximation (row L1, output error against C and top_k) runs on every layer over
    ``maps_sequences`` test sequences, in float64 (Proposition 2 is checked exactly, not through
    float32 rounding); the figure data are the full, clustered and improved clustered maps of
    one head of the last layer on the first sequence, with its cluster labels.
    """
    tokens, _ = task_split(cfg, "span", cfg.task_length, "test", cfg.maps_sequences)
    layers = _layer_inputs(model, tokens)
    planes = random_planes(layers[0][0].shape[-1], cfg.bits, torch.Generator().manual_seed(cfg.seed + 5))
    approx = []
    for i, (q, k, v) in enumerate(layers):
        # in float64: Proposition 2 is an exact inequality, and float32 rows carry rounding of ~1e-6
        q64, k64, v64 = (t.double() for t in (q, k, v))
        rows = approximation_on(q64, k64, v64, cfg.clusters, cfg.top_ks, planes, cfg.iterations, cfg.seed, log, name=f"trained layer {i} ")
        approx.append({"layer": i, **rows})
    q, k, v = (t[:1, cfg.maps_head : cfg.maps_head + 1] for t in layers[-1])
    labels = cluster_queries(q, cfg.swap_clusters, planes, cfg.iterations, torch.Generator().manual_seed(cfg.seed))
    full = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    _, plain = clustered_attention(q, k, v, labels, cfg.swap_clusters, need_weights=True)
    _, improved = clustered_attention(q, k, v, labels, cfg.swap_clusters, top_k=min(cfg.swap_top_k, k.shape[2]), need_weights=True)

    def rounded(m: Tensor) -> list[list[float]]:
        return [[round(float(x), 3) for x in row] for row in m[0, 0]]

    return {
        "approximation": approx,
        "layer": len(layers) - 1,
        "head": cfg.maps_head,
        "labels": labels[0, 0].tolist(),
        "full": rounded(full),
        "clustered": rounded(plain),
        "improved": rounded(improved),
    }


def training_experiment(cfg: ClusteredConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Training WITH each mechanism on the long-sequence task: validation score against training wall-clock, test score.

    The same initial weights, batches and validation set for full (shared-score), clustered and
    improved clustered attention (``train_clusters``, ``train_top_k``); interval of the test
    difference to full attention by paired bootstrap.
    """
    task = cfg.train_task
    x_test, y_test = task_split(cfg, task, cfg.train_length, "test", cfg.task_test)
    runs: dict[str, Any] = {}
    scores: dict[str, Tensor] = {}
    for mechanism in ("shared", *APPROXIMATIONS):
        options = None
        if mechanism != "shared":
            options = {"n_clusters": cfg.train_clusters, **({"top_k": cfg.train_top_k} if mechanism == "improved_clustered" else {})}
        model, training = train_key_model(cfg, task, cfg.train_length, cfg.train_steps, cfg.train_batch, mechanism, options, log)
        per_example = task_scores(model, task, x_test, y_test)[_main_metric(task)]
        scores[mechanism] = per_example
        runs[mechanism] = {**training, "test": float(per_example.mean())}
        log(f"[clustered_attention] training {mechanism}: test {runs[mechanism]['test']:.3f} in {training['train_time_s']:.0f} s")
    for mechanism in APPROXIMATIONS:
        runs[mechanism]["test_difference_to_full"] = paired_bootstrap(scores[mechanism], scores["shared"], cfg.bootstrap, seed=cfg.seed)
    return {"task": task, "length": cfg.train_length, "metric": _main_metric(task), "test_examples": cfg.task_test, "runs": runs}


def run(config: ClusteredConfig | Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement of the module docstring; returns JSON-ready metrics with ``headline``."""
    cfg = ClusteredConfig.coerce(config)
    start = time.perf_counter()
    with torch_threads(cfg.threads):
        approx = approximation(cfg, log)
        timed = timing(cfg, log)
        timed["backward_rows"] = backward_timing(cfg, log)
        mem = memory(cfg, log)
        swap = swap_experiment(cfg, log)
        training = training_experiment(cfg, log)
    exact = [r for r in approx["rows"] if r["clusters"] == cfg.length]
    longest = max(cfg.timing_lengths)
    med = {(r["variant"], r["length"]): r["median_s"] for r in timed["rows"]}
    heads = []
    if exact:
        heads.append(
            headline("row L1 distance to full attention, every query its own cluster", max(r["row_l1_max"] for r in exact), tolerance=1e-5)
        )
    heads.append(
        headline(
            "queries where improved clustered is farther from full attention than clustered",
            approx["proposition_violations"],
            tolerance=0,
            note=f"the paper's Proposition 2, checked on {approx['proposition_checked']} query rows",
        )
    )
    heads.append(
        headline(
            f"time saved by one shared clustering for the four Hamilton maps, N={longest}",
            timed["hamilton_shared_clustering_saving"][str(longest)],
            tolerance=0.5,
            kind="ratio",
            note="share of the time of clustering each map separately (3 more clusterings) that sharing one clustering saves",
        )
    )
    for name in ("clustered", "improved"):
        heads.append(
            headline(
                f"full / {name} forward time, N={longest}",
                med[("full", longest)] / med[(name, longest)],
                tolerance=0.5,
                kind="ratio",
                note=f"C={min(cfg.timing_clusters, longest)}"
                + (f", top_k={cfg.timing_top_k}" if name == "improved" else "")
                + "; >1 means faster than torch's fused full attention on this CPU",
            )
        )
    peak = {(r["variant"], r["length"]): r.get("peak_bytes") for r in mem if r.get("ok")}
    top = max(cfg.memory_lengths)
    for name in ("clustered", "improved"):
        if peak.get(("full", top)) and peak.get((name, top)):
            heads.append(
                headline(
                    f"full / {name} peak forward memory, N={top}",
                    peak[("full", top)] / peak[(name, top)],
                    tolerance=0.5,
                    kind="ratio",
                    note="peak resident memory above the process's level before the call, fresh process each; >1: less than full",
                )
            )
    trained = swap["maps"]["approximation"]
    heads.append(
        headline(
            "queries where improved clustered is farther from full attention than clustered, trained span model",
            sum(a["proposition_violations"] for a in trained),
            tolerance=0,
            note=f"the paper's Proposition 2 on the trained model's queries in float64, "
            f"{sum(a['proposition_checked'] for a in trained)} query rows",
        )
    )
    names = {"presence": "key presence accuracy", "span": "key span F1"}
    for task in TASKS:
        for mechanism in APPROXIMATIONS:
            drop = swap[task]["drop"][mechanism][swap[task]["metric"]]
            label = "improved clustered" if mechanism == "improved_clustered" else "clustered"
            heads.append(
                headline(
                    f"swap drop, {names[task]}, {label} C={cfg.swap_clusters}",
                    drop["mean"],
                    tolerance=0.05,
                    kind="exact",
                    note=f"full − swapped on {cfg.task_test} test sequences of {cfg.task_length} tokens, "
                    f"95 % CI [{drop['low']:.3f}, {drop['high']:.3f}] (paired bootstrap)"
                    + (f", top_k={cfg.swap_top_k}" if mechanism == "improved_clustered" else ""),
                )
            )
    runs = training["runs"]
    improved = runs["improved_clustered"]["test_difference_to_full"]
    heads.append(
        headline(
            f"training, test accuracy difference improved clustered − full, N={cfg.train_length}",
            improved["mean"],
            tolerance=0.05,
            kind="exact",
            note=f"{cfg.train_steps} steps each, 95 % CI [{improved['low']:.3f}, {improved['high']:.3f}] (paired bootstrap, "
            f"{cfg.task_test} test sequences)",
        )
    )
    heads.append(
        headline(
            f"training time full / improved clustered, N={cfg.train_length}",
            runs["shared"]["train_time_s"] / runs["improved_clustered"]["train_time_s"],
            tolerance=0.5,
            kind="ratio",
            note=f"the same {cfg.train_steps} steps; >1: improved clustered trains faster on this CPU",
        )
    )
    return {
        "approximation": approx,
        "timing": timed,
        "memory": mem,
        "swap": swap,
        "training": training,
        "threads": torch.get_num_threads() if cfg.threads is None else cfg.threads,
        "wall_s": time.perf_counter() - start,
        "headline": heads,
    }
