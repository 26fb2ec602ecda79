"""Clustered attention (Vyas, Katharopoulos, Fleuret, NeurIPS 2020): how close, and how fast on a CPU.

Two measurements with :mod:`qattn.attention.clustered`:

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

Not yet here (later parts of the chapter): the inference-time swap into a trained model,
training with clustered attention, and the quaternion Hamilton variant's shared clustering.
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

from qattn.attention.clustered import cluster_queries, clustered_attention, clustered_hamilton_attention, random_planes
from qattn.book.harness.config import ExperimentConfig
from qattn.book.harness.memory import peak_memory
from qattn.book.harness.timing import summary, time_interleaved
from qattn.book.harness.training import torch_threads
from qattn.book.headline import headline

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


def approximation(cfg: ClusteredConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Row L1 distance and output error against full attention for every (C, top_k) of the config."""
    gen = torch.Generator().manual_seed(cfg.seed)
    q, k, v = mixture_inputs(cfg, cfg.length, gen)
    scores = q @ k.transpose(-1, -2) / math.sqrt(cfg.dim)
    full_rows = torch.softmax(scores, -1)
    full_out = full_rows @ v
    planes = random_planes(cfg.dim, cfg.bits, gen)
    rows, violations, checked = [], 0, 0
    for c in cfg.clusters:
        n_clusters = cfg.length if c == 0 else c
        if c == 0:
            labels = torch.arange(cfg.length).expand(1, cfg.heads, -1).contiguous()
        else:
            labels = cluster_queries(q, n_clusters, planes, cfg.iterations, torch.Generator().manual_seed(cfg.seed + c))
        used = int(max(len(torch.unique(labels[0, h])) for h in range(cfg.heads)))
        plain_gap = None
        for top_k in cfg.top_ks:
            out, weights = clustered_attention(q, k, v, labels, n_clusters, top_k=min(top_k, cfg.length), need_weights=True)
            gap = (weights - full_rows).abs().sum(-1)  # (1, H, N)
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
            f"[clustered_attention] C={'N' if c == 0 else c}: "
            + ", ".join(f"top_k {r['top_k']}: L1 {r['row_l1_mean']:.3f}" for r in rows if r["clusters"] == n_clusters)
        )
    return {"rows": rows, "proposition_violations": violations, "proposition_checked": checked}


def crossover(lengths: list[int], faster: list[bool]) -> int | None:
    """The smallest length from which ``faster`` holds at every larger length measured, or None.

    >>> crossover([256, 512, 1024, 2048], [False, True, False, True]), crossover([1, 2], [False, False])
    (2048, None)
    """
    result = None
    for n, ok in zip(reversed(lengths), reversed(faster)):
        if not ok:
            break
        result = n
    return result


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


def run(config: ClusteredConfig | Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Both measurements; returns JSON-ready metrics with ``headline``."""
    cfg = ClusteredConfig.coerce(config)
    start = time.perf_counter()
    with torch_threads(cfg.threads):
        approx = approximation(cfg, log)
        timed = timing(cfg, log)
        timed["backward_rows"] = backward_timing(cfg, log)
        mem = memory(cfg, log)
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
    return {
        "approximation": approx,
        "timing": timed,
        "memory": mem,
        "threads": torch.get_num_threads() if cfg.threads is None else cfg.threads,
        "wall_s": time.perf_counter() - start,
        "headline": heads,
    }
