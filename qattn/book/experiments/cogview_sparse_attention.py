"""CogView's sparse attention and image tokenizer (Ding et al., NeurIPS 2021): what can be measured on a CPU.

Six parts, with :mod:`qattn.attention.cogview_sparse` (the layout, the sparse kernel and the
registered mechanisms ``cogview_sparse`` / ``cogview_sparse_hamilton``):

1. **The supplement's figure**: for the token O of a ``figure_text``-token caption followed by a
   ``figure_grid × figure_grid`` image, which keys it attends to (text, sampled image pivots, its
   window of blocks), and CogView2's 2-D local window (``local_kernel``) for contrast.
2. **Exactness**: the sparse kernel against dense attention under the explicit mask, float32, at
   ``figure`` scale (the largest absolute difference of the outputs).
3. **Cost**: forward CPU time of the sparse kernel against PyTorch's fused causal attention at
   ``timing_lengths`` (interleaved timing), the crossover length, and peak memory of one forward
   pass per variant at ``memory_lengths`` (each in a fresh process).
4. **The tokenizer study**: a small VQ-VAE on generated Sort-of-CLEVR scenes (64 × 64 →
   16 × 16 codes, ``vq_codes`` codes) trained with each quantiser of
   :data:`~qattn.book.models.vqvae.QUANTISERS` on the same batches: validation reconstruction
   loss and codebook perplexity against steps, final values, reconstructions of test scenes.
5. **A tiny autoregressive image-token model** (:class:`~qattn.book.models.image_tokens.ImageTokenModel`)
   on ``[caption, codes]`` sequences (captions read from the pixels,
   :mod:`qattn.book.data.image_tokens`; codes from the ``tokenizer`` quantiser's VQ-VAE), trained
   from the same initial weights on the same batches with full causal attention, CogView's sparse
   attention without and with the log correction (shared scores), and with Hamilton scores;
   validation loss against steps; test loss (bits per image token) with each model's own
   attention and with full attention of the same scores at inference, over ``ar_seeds`` training
   seeds (Student-t intervals over seeds; paired bootstrap over test sequences for the first).
6. **Approximation** of full causal attention by the sparse one on the full-attention model's
   real queries, keys and values (test sequences, every layer), against the pivot count ``P``,
   with and without the correction: relative output error, and its profile over query positions.
   The bias of CogView's constant correction ``log(s // P)`` per query position (equal logits;
   :func:`proofs.pivot_estimator.expected_ratio`) is computed for the same layout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from proofs.pivot_estimator import expected_ratio
from qattn.attention.cogview_sparse import (
    PivotWindowLayout,
    cogview_sparse_core,
    dense_masked_attention,
    local_window_mask_2d,
    pivot_bias,
    pivot_window_attention,
    pivot_window_mask,
    sample_pivots,
)
from qattn.attention.shared_score import shared_score_attention
from qattn.book.data.image_tokens import CAPTION_LENGTH, CAPTION_VOCAB, scene_captions, token_sequences
from qattn.book.data.vqa import make_sort_of_clevr
from qattn.book.harness.config import ExperimentConfig, choice
from qattn.book.harness.memory import peak_memory
from qattn.book.harness.timing import crossover, summary, time_interleaved
from qattn.book.harness.training import LoopConfig, StepLoss, evenly_spaced, fit, torch_threads
from qattn.book.headline import headline
from qattn.book.models.image_tokens import ImageTokenModel
from qattn.book.models.vqvae import QUANTISERS, train_vqvae
from qattn.book.stats import paired_bootstrap, seed_interval

__all__ = ["CogViewConfig", "config_for", "run", "figure_layout", "crossover", "sparse_workload", "AR_VARIANTS", "ASSETS"]

#: Files the run writes beside its results (the reconstructions the chapter shows).
ASSETS = ("cogview_reconstructions.npz",)

#: The autoregressive model's attention variants: name → (registered mechanism, log correction).
AR_VARIANTS: dict[str, tuple[str, bool | None]] = {
    "full": ("shared", None),
    "sparse": ("cogview_sparse", False),
    "sparse_corrected": ("cogview_sparse", True),
    "sparse_corrected_hamilton": ("cogview_sparse_hamilton", True),
}

#: The full causal attention each mechanism is evaluated with at inference: the same scores, every key.
FULL_COUNTERPART = {"shared": "shared", "cogview_sparse": "shared", "cogview_sparse_hamilton": "hamilton"}


@dataclass(frozen=True)
class CogViewConfig(ExperimentConfig):
    """Everything that defines a run of the chapter (see the module docstring)."""

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        "ci": {
            "timing_lengths": (1088, 2176),
            "timing_repeats": 3,
            "timing_min_time_s": 0.02,
            "memory_lengths": (1088,),
            "scenes_train": 96,
            "scenes_val": 16,
            "scenes_test": 24,
            "vq_codes": 64,
            "vq_hidden": 16,
            "vq_code_dim": 8,
            "vq_steps": 12,
            "vq_batch": 8,
            "vq_validations": 2,
            "ar_width": 16,
            "ar_depth": 1,
            "ar_heads": 2,
            "ar_steps": 8,
            "ar_batch": 8,
            "ar_validations": 2,
            "ar_seeds": 1,
            "approx_pivots": (6, 22, 70),
            "approx_draws": 1,
            "approx_sequences": 4,
            "bootstrap": 200,
        },
    }

    profile: str = "full"
    seed: int = 0
    figure_text: int = 64
    figure_grid: int = 32
    figure_window: int = 64
    figure_window_blocks: int = 2
    figure_pivots: int = 256
    figure_query: tuple[int, int] = (20, 16)
    local_kernel: int = 9
    heads: int = 4
    dim: int = 64
    timing_text: int = 64
    timing_lengths: tuple[int, ...] = (1088, 2176, 4224, 8192)
    timing_window: int = 64
    timing_window_blocks: int = 2
    timing_pivots: int = 256
    timing_repeats: int = 5
    timing_min_time_s: float = 0.2
    memory_lengths: tuple[int, ...] = (1088, 4224, 8192)
    scenes_train: int = 2000
    scenes_val: int = 200
    scenes_test: int = 400
    vq_codes: int = 512
    vq_code_dim: int = 32
    vq_hidden: int = 64
    vq_downsamples: int = 2
    vq_steps: int = 600
    vq_batch: int = 32
    vq_lr: float = 2e-3
    vq_validations: int = 6
    vq_shown: int = 4
    tokenizer: str = choice(QUANTISERS, "ema")
    ar_width: int = 64
    ar_depth: int = 2
    ar_heads: int = 4
    ar_steps: int = 600
    ar_batch: int = 16
    ar_lr: float = 2e-3
    ar_validations: int = 6
    ar_seeds: int = 3
    ar_window: int = 16
    ar_window_blocks: int = 2
    ar_pivots: int = 38
    approx_pivots: tuple[int, ...] = (6, 14, 22, 38, 70, 134)
    approx_draws: int = 3
    approx_sequences: int = 16
    approx_profile_pivots: int = 38
    bootstrap: int = 2000
    threads: int | None = 2


def config_for(profile: str, seed: int = 0, **overrides: Any) -> CogViewConfig:
    """The configuration of ``profile`` (``"ci"`` or ``"full"``), with optional overrides."""
    return CogViewConfig.for_profile(profile, seed, **overrides)


# -- 1. the figure and 2. exactness -------------------------------------------------------------


def figure_layout(cfg: CogViewConfig) -> PivotWindowLayout:
    """The layout of the supplement's figure: a caption, then the image grid in raster order."""
    length = cfg.figure_text + cfg.figure_grid**2
    return PivotWindowLayout(length, cfg.figure_text, cfg.figure_window, cfg.figure_window_blocks, cfg.figure_pivots)


def figure(cfg: CogViewConfig) -> dict[str, Any]:
    """What the token O attends to, key by key: 0 nothing, 1 text, 2 image pivot, 3 window; and CogView2's local window."""
    layout = figure_layout(cfg)
    pivots = sample_pivots(layout, 1, torch.Generator().manual_seed(cfg.seed))
    row, col = cfg.figure_query
    query = cfg.figure_text + row * cfg.figure_grid + col
    allowed = pivot_window_mask(layout, pivots)[0, query]
    is_pivot = torch.zeros(layout.length, dtype=torch.bool).scatter_(0, pivots[0], True)
    start = int(layout.window_start(torch.tensor(query)))
    keys = torch.arange(layout.length)
    kind = torch.zeros(layout.length, dtype=torch.int64)
    kind[allowed & (keys < cfg.figure_text)] = 1
    kind[allowed & (keys >= cfg.figure_text) & is_pivot & (keys < start)] = 2
    kind[allowed & (keys >= start)] = 3
    local = local_window_mask_2d(cfg.figure_grid, cfg.figure_grid, cfg.local_kernel)[row * cfg.figure_grid + col]
    return {
        "length": layout.length,
        "query": query,
        "query_cell": [row, col],
        "window_start": start,
        "kinds": kind.tolist(),
        "counts": {name: int((kind == i).sum()) for i, name in enumerate(("none", "text", "pivot", "window"))},
        "local_window_2d": local.nonzero().flatten().tolist(),
        "dense_causal_keys": query + 1,
    }


def exactness(cfg: CogViewConfig) -> dict[str, float]:
    """Largest |sparse − dense under the mask| of the outputs at the figure's layout, float32, with and without the correction."""
    layout = figure_layout(cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    pivots = sample_pivots(layout, 2, gen)
    q, k, v = (torch.randn(2, cfg.heads, layout.length, cfg.dim // cfg.heads, generator=gen) for _ in range(3))
    allowed = pivot_window_mask(layout, pivots)
    out = {}
    for correction in (False, True):
        sparse = pivot_window_attention(q, k, v, pivots, layout, log_correction=correction)
        dense = dense_masked_attention(q.double(), k.double(), v.double(), allowed, pivot_bias(layout, pivots) if correction else None)
        out["corrected" if correction else "uncorrected"] = float((sparse.double() - dense).abs().max())
    return out


# -- 3. cost ------------------------------------------------------------------------------------


def _timing_layout(cfg: CogViewConfig, length: int) -> PivotWindowLayout:
    return PivotWindowLayout(length, cfg.timing_text, cfg.timing_window, cfg.timing_window_blocks, cfg.timing_pivots)


def _timing_inputs(cfg: CogViewConfig, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    layout = _timing_layout(cfg, length)
    q, k, v = (torch.randn(1, cfg.heads, length, cfg.dim, generator=generator) for _ in range(3))
    return q, k, v, sample_pivots(layout, 1, generator)


COST_VARIANTS = ("dense", "dense_materialised", "sparse")


def materialised_causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal attention with the ``s × s`` score matrix written out (as before fused kernels): ``softmax(q kᵀ / √d + mask) v``."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    causal = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(scores.masked_fill(causal, -math.inf), -1) @ v


def _cost_call(variant: str, q: Tensor, k: Tensor, v: Tensor, pivots: Tensor, layout: PivotWindowLayout) -> Tensor:
    if variant == "dense":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if variant == "dense_materialised":
        return materialised_causal_attention(q, k, v)
    return pivot_window_attention(q, k, v, pivots, layout)


def sparse_workload(variant: str, length: int, config: dict[str, Any]) -> Callable[[], Any]:
    """The memory probe's workload (:func:`qattn.book.harness.memory.peak_memory`): inputs built, one forward to measure."""
    cfg = CogViewConfig.from_dict(config)
    q, k, v, pivots = _timing_inputs(cfg, length, torch.Generator().manual_seed(cfg.seed + 2))
    layout = _timing_layout(cfg, length)

    def call() -> None:
        with torch.inference_mode():
            _cost_call(variant, q, k, v, pivots, layout)

    return call


def cost(cfg: CogViewConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Interleaved forward times of dense causal (fused) and sparse attention, the crossover, and peak memory."""
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    rows = []
    for i, n in enumerate(cfg.timing_lengths):
        q, k, v, pivots = _timing_inputs(cfg, n, gen)
        layout = _timing_layout(cfg, n)
        fns = {name: (lambda name=name, q=q, k=k, v=v, p=pivots, lay=layout: _cost_call(name, q, k, v, p, lay)) for name in COST_VARIANTS}
        with torch.inference_mode():
            timed = summary(time_interleaved(fns, repeats=cfg.timing_repeats, warmup=1 if i == 0 else 0, min_time_s=cfg.timing_min_time_s))
        for name, t in timed.items():
            rows.append({"length": n, "variant": name, **t})
        log(f"[cogview_sparse_attention] s={n}: " + ", ".join(f"{name} {t['median_s'] * 1e3:.1f} ms" for name, t in timed.items()))
    lengths = list(cfg.timing_lengths)
    med = {(r["variant"], r["length"]): r["median_s"] for r in rows}
    memory = []
    for n in cfg.memory_lengths:
        for variant in COST_VARIANTS:
            probe = peak_memory(
                "qattn.book.experiments.cogview_sparse_attention:sparse_workload",
                {"variant": variant, "length": n, "config": cfg.to_dict()},
                threads=cfg.threads,
            )
            memory.append({"length": n, "variant": variant, **probe})
        log(
            f"[cogview_sparse_attention] memory s={n}: "
            + ", ".join(f"{r['variant']} {r.get('peak_bytes', 0) / 2**20:.1f} MiB" for r in memory if r["length"] == n)
        )
    return {
        "rows": rows,
        "crossover": crossover(lengths, [med[("sparse", n)] < med[("dense", n)] for n in lengths]),
        "crossover_materialised": crossover(lengths, [med[("sparse", n)] < med[("dense_materialised", n)] for n in lengths]),
        "memory": memory,
        "keys_per_query": {
            "sparse_at_most": cfg.timing_pivots + cfg.timing_window * cfg.timing_window_blocks,
            "dense_mean": {str(n): (n + 1) / 2 for n in lengths},
        },
    }


# -- 4. the tokenizer study ---------------------------------------------------------------------


def scenes(cfg: CogViewConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 ``(N, 3, 64, 64)`` train, validation and test scenes."""
    train, val, test, _ = make_sort_of_clevr(
        cfg.scenes_train, cfg.scenes_val, cfg.scenes_test, seed=cfg.seed, size=64, questions_per_scene=2
    )
    return train.images, val.images, test.images


def tokenizer_study(
    cfg: CogViewConfig, images: tuple[np.ndarray, np.ndarray, np.ndarray], log: Callable[[str], None] = print
) -> tuple[dict[str, Any], Any, dict[str, np.ndarray]]:
    """Train the VQ-VAE with every quantiser on the same batches; returns ``(results, the tokenizer's model, shown images)``."""
    train, val, test = images
    runs: dict[str, Any] = {}
    shown = {"original": test[: cfg.vq_shown]}
    tokenizer = None
    for quantiser in QUANTISERS:
        model, result = train_vqvae(
            train,
            val,
            quantiser,
            steps=cfg.vq_steps,
            batch=cfg.vq_batch,
            lr=cfg.vq_lr,
            seed=cfg.seed,
            validations=cfg.vq_validations,
            codes=cfg.vq_codes,
            code_dim=cfg.vq_code_dim,
            hidden=cfg.vq_hidden,
            downsamples=cfg.vq_downsamples,
            log=log,
        )
        with torch.no_grad():
            test_images = torch.as_tensor(test).float() / 255
            recon = model.decode(model.encode(test_images))
            test_mse = float(F.mse_loss(recon, test_images))
        shown[quantiser] = (recon[: cfg.vq_shown].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        runs[quantiser] = {**result, "test_recon": test_mse}
        log(
            f"[cogview_sparse_attention] VQ-VAE {quantiser}: test MSE {test_mse:.5f}, "
            f"perplexity {result['final']['perplexity']:.1f}, codes used {result['final']['codes_used']}"
        )
        if quantiser == cfg.tokenizer:
            tokenizer = model
    return {"runs": runs, "quantisers": list(QUANTISERS), "codes": cfg.vq_codes}, tokenizer, shown


# -- 5. the autoregressive model ------------------------------------------------------------------


def _options(cfg: CogViewConfig, correction: bool | None) -> dict[str, Any] | None:
    if correction is None:
        return None
    return {
        "text": CAPTION_LENGTH,
        "window": cfg.ar_window,
        "window_blocks": cfg.ar_window_blocks,
        "n_pivots": cfg.ar_pivots,
        "log_correction": correction,
    }


def image_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """Per-sequence mean cross-entropy (nats) of the IMAGE tokens given everything before them: ``(B,)``."""
    predicted = logits[:, CAPTION_LENGTH - 1 : -1]  # position i predicts token i + 1
    target = tokens[:, CAPTION_LENGTH:]
    return F.cross_entropy(predicted.transpose(1, 2), target, reduction="none").mean(1)


def sequence_losses(model: ImageTokenModel, tokens: Tensor, batch: int = 64) -> Tensor:
    """``(N,)`` image-token losses (nats) of ``model`` on ``tokens``, without gradients."""
    with torch.no_grad():
        return torch.cat([image_token_loss(model(tokens[i : i + batch]), tokens[i : i + batch]) for i in range(0, len(tokens), batch)])


def train_image_model(
    cfg: CogViewConfig, variant: str, train: Tensor, val: Tensor, vocab: int, seed: int, log: Callable[[str], None] = print
) -> tuple[ImageTokenModel, dict[str, Any]]:
    """Train one variant of :data:`AR_VARIANTS` from the initial weights and batch order of ``seed`` (the same for every variant).

    New pivots are drawn for every batch, as CogView does.
    """
    score, correction = AR_VARIANTS[variant]
    model = ImageTokenModel(
        vocab,
        train.shape[1],
        cfg.ar_width,
        cfg.ar_depth,
        cfg.ar_heads,
        score=score,
        score_options=_options(cfg, correction),
        generator=torch.Generator().manual_seed(seed + 11),
    )
    pivot_gen = torch.Generator().manual_seed(seed + 12)
    model.redraw_pivots(pivot_gen)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 13))
    per_epoch = len(train) // cfg.ar_batch

    def batches():
        for step in range(cfg.ar_steps):
            j = step % per_epoch
            yield train[order[j * cfg.ar_batch : (j + 1) * cfg.ar_batch]]

    clock = {"validation_s": 0.0, "start": time.perf_counter()}
    curve: list[dict[str, float]] = []

    def validate(m: torch.nn.Module) -> dict[str, float]:
        tick = time.perf_counter()
        value = float(sequence_losses(m, val).mean())  # type: ignore[arg-type]
        curve.append({"train_s": tick - clock["start"] - clock["validation_s"], "val_loss": value})
        clock["validation_s"] += time.perf_counter() - tick
        return {"neg_val_loss": -value}

    def loss_fn(m: torch.nn.Module, b: Tensor) -> StepLoss:
        m.redraw_pivots(pivot_gen)  # type: ignore[operator]  # CogView draws new pivots for every batch
        return StepLoss(image_token_loss(m(b), b).mean(), weight=len(b))

    loop = LoopConfig(
        steps=cfg.ar_steps,
        lr=cfg.ar_lr,
        warmup_steps=cfg.ar_steps // 10,
        decay="cosine",
        grad_clip=1.0,
        validate_at=(0, *evenly_spaced(cfg.ar_steps, cfg.ar_validations)),
        dropout_seed=seed,
    )
    result = fit(model, batches(), loss_fn, validate, loop, select="neg_val_loss", log=log, name=f"image tokens {variant} seed {seed}")
    for point, entry in zip(curve, result.history):
        point["step"] = entry["step"]
    model.redraw_pivots(torch.Generator().manual_seed(seed + 14))  # fixed pivots for the evaluation
    return model, {"curve": curve, "best_step": result.best_step, "train_time_s": result.train_time_s, "steps": cfg.ar_steps}


def autoregressive(
    cfg: CogViewConfig, sequences: dict[str, Tensor], log: Callable[[str], None] = print
) -> tuple[dict[str, Any], ImageTokenModel]:
    """Every variant trained for ``ar_seeds`` seeds, then tested with its own attention and with full attention.

    Returns the results and the first seed's full-attention model. Per seed and variant: test
    bits per image token (mean over the test sequences) with the attention it was trained with and
    with full causal attention of the same scores (:data:`FULL_COUNTERPART`); across seeds: means
    with Student-t intervals of the seed-level values (the spread of retraining), and for the
    first seed paired bootstrap intervals over test sequences (the spread of the test set).
    """
    vocab = CAPTION_VOCAB + cfg.vq_codes
    bits = 1 / math.log(2)
    per_seed: dict[str, list[dict[str, Any]]] = {v: [] for v in AR_VARIANTS}
    first: dict[str, tuple[Tensor, Tensor]] = {}
    full_model: ImageTokenModel | None = None
    for index in range(cfg.ar_seeds):
        seed = cfg.seed + 1000 * index
        for variant, (score, _) in AR_VARIANTS.items():
            model, training = train_image_model(cfg, variant, sequences["train"], sequences["val"], vocab, seed, log)
            own = sequence_losses(model, sequences["test"]) * bits
            full = model if score == FULL_COUNTERPART[score] else model.with_attention(FULL_COUNTERPART[score])
            with_full = sequence_losses(full, sequences["test"]) * bits
            per_seed[variant].append(
                {**training, "seed": seed, "test_bits": float(own.mean()), "test_bits_full_attention": float(with_full.mean())}
            )
            if index == 0:
                first[variant] = (own, with_full)
                if variant == "full":
                    full_model = model
            log(
                f"[cogview_sparse_attention] image tokens {variant} seed {seed}: test {float(own.mean()):.3f} bits/token, "
                f"with full attention {float(with_full.mean()):.3f} ({training['train_time_s']:.0f} s)"
            )
    runs = {}
    for variant, rows in per_seed.items():
        runs[variant] = {
            "seeds": rows,
            "test_bits": float(np.mean([r["test_bits"] for r in rows])),
            "test_bits_full_attention": float(np.mean([r["test_bits_full_attention"] for r in rows])),
            "train_time_s": float(np.mean([r["train_time_s"] for r in rows])),
        }
    comparisons: dict[str, Any] = {}
    for variant in ("sparse", "sparse_corrected", "sparse_corrected_hamilton"):
        rows, full_rows = per_seed[variant], per_seed["full"]
        comparisons[f"{variant}_minus_full"] = seed_interval([r["test_bits"] - f["test_bits"] for r, f in zip(rows, full_rows)])
        comparisons[f"{variant}_full_attention_penalty"] = seed_interval([r["test_bits_full_attention"] - r["test_bits"] for r in rows])
        own, with_full = first[variant]
        comparisons[f"{variant}_full_attention_penalty_first_seed"] = paired_bootstrap(with_full, own, cfg.bootstrap, seed=cfg.seed)
    penalty = {v: [r["test_bits_full_attention"] - r["test_bits"] for r in per_seed[v]] for v in ("sparse", "sparse_corrected")}
    comparisons["penalty_uncorrected_minus_corrected"] = seed_interval(
        [a - b for a, b in zip(penalty["sparse"], penalty["sparse_corrected"])]
    )
    result = {
        "runs": runs,
        "comparisons": comparisons,
        "seeds": cfg.ar_seeds,
        "length": int(sequences["train"].shape[1]),
        "test_sequences": int(len(sequences["test"])),
        "options": _options(cfg, True),
    }
    assert full_model is not None
    return result, full_model


# -- 6. approximation on the trained model's queries, keys and values ----------------------------


def layer_inputs(model: ImageTokenModel, tokens: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Each attention layer's quaternion ``q, k, v`` ``(B, H, N, 4, d_h)`` on ``tokens`` (full causal attention)."""
    found = []
    with torch.inference_mode():
        x = model.tokens(tokens) + model.positions[: tokens.shape[1]]
        for block in model.blocks:
            attention = block.attention
            h = block.norm1(x)
            found.append(tuple(attention.split_heads(t) for t in attention.project(h, h, h)))
            x, _ = block(x)
    return found


def approximation(cfg: CogViewConfig, model: ImageTokenModel, tokens: Tensor, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Relative output error of sparse vs full causal attention against ``P``, with and without the correction."""
    inputs = layer_inputs(model, tokens[: cfg.approx_sequences])
    length = tokens.shape[1]
    references = [shared_score_attention(q.double(), k.double(), v.double(), is_causal=True)[0] for q, k, v in inputs]
    rows = []
    profile: dict[str, list[float]] = {}
    for pivots in cfg.approx_pivots:
        for correction in (False, True):
            errors, per_position = [], []
            for draw in range(cfg.approx_draws):
                for (q, k, v), ref in zip(inputs, references):
                    out, _ = cogview_sparse_core(
                        q.double(),
                        k.double(),
                        v.double(),
                        is_causal=True,
                        text=CAPTION_LENGTH,
                        window=cfg.ar_window,
                        window_blocks=cfg.ar_window_blocks,
                        n_pivots=pivots,
                        log_correction=correction,
                        pivot_seed=cfg.seed + 100 * draw + pivots,
                    )
                    errors.append(float((out - ref).norm() / ref.norm()))
                    per_position.append(((out - ref).norm(dim=(-2, -1)) / ref.norm(dim=(-2, -1)).clamp_min(1e-12)).mean((0, 1)))
            rows.append({"pivots": pivots, "corrected": correction, "output_rel_error": float(np.mean(errors))})
            if pivots == cfg.approx_profile_pivots:
                profile["corrected" if correction else "uncorrected"] = torch.stack(per_position).mean(0).tolist()
        pair = [r["output_rel_error"] for r in rows if r["pivots"] == pivots]
        log(f"[cogview_sparse_attention] P={pivots}: relative error {pair[0]:.4f} uncorrected, {pair[1]:.4f} corrected")
    layout = PivotWindowLayout(
        -(-length // cfg.ar_window) * cfg.ar_window, CAPTION_LENGTH, cfg.ar_window, cfg.ar_window_blocks, cfg.approx_profile_pivots
    )
    starts = layout.window_start(torch.arange(length)).tolist()
    bias = [
        expected_ratio(length, CAPTION_LENGTH, cfg.approx_profile_pivots, min(s, CAPTION_LENGTH), max(0, s - CAPTION_LENGTH))
        for s in starts
    ]
    return {
        "rows": rows,
        "profile_pivots": cfg.approx_profile_pivots,
        "position_error": profile,
        "constant_correction_ratio": [None if math.isnan(b) else b for b in bias],
        "sequences": int(min(cfg.approx_sequences, len(tokens))),
        "layers": len(inputs),
    }


# -- the run --------------------------------------------------------------------------------------


def run(
    config: CogViewConfig | Mapping[str, Any], save_dir: str | Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every measurement of the module docstring; returns JSON-ready metrics with ``headline``.

    With ``save_dir``, the reconstructions shown in the chapter go to
    ``<save_dir>/cogview_reconstructions.npz`` (listed under ``assets``).
    """
    cfg = CogViewConfig.coerce(config)
    start = time.perf_counter()
    with torch_threads(cfg.threads):
        fig = figure(cfg)
        exact = exactness(cfg)
        log(f"[cogview_sparse_attention] sparse vs dense under the mask, float32: max |difference| {max(exact.values()):.2e}")
        costs = cost(cfg, log)
        images = scenes(cfg)
        tokenizer_results, tokenizer, shown = tokenizer_study(cfg, images, log)
        with torch.no_grad():
            codes = {name: tokenizer.encode(torch.as_tensor(part).float() / 255) for name, part in zip(("train", "val", "test"), images)}
        sequences = {name: token_sequences(scene_captions(part), codes[name]) for name, part in zip(("train", "val", "test"), images)}
        ar, full_model = autoregressive(cfg, sequences, log)
        approx = approximation(cfg, full_model, sequences["test"], log)
    assets = []
    if save_dir is not None:
        path = Path(save_dir) / ASSETS[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **shown)
        tmp.replace(path)
        assets.append(path.name)

    heads = [
        headline(
            "sparse − dense attention under the same mask, largest |difference|, float32",
            max(exact.values()),
            tolerance=1e-5,
            note=f"s={fig['length']}, with and without the log correction; float64 dense reference",
        )
    ]
    med = {(r["variant"], r["length"]): r["median_s"] for r in costs["rows"]}
    longest = max(cfg.timing_lengths)
    heads.append(
        headline(
            f"dense causal / sparse forward time, s={longest}",
            med[("dense", longest)] / med[("sparse", longest)],
            tolerance=0.5,
            kind="ratio",
            note=f"P={cfg.timing_pivots}, window {cfg.timing_window_blocks}×{cfg.timing_window}; "
            f"dense = torch's fused causal attention; >1: sparse faster on this CPU; crossover s={costs['crossover']}",
        )
    )
    heads.append(
        headline(
            f"dense causal with written-out scores / sparse forward time, s={longest}",
            med[("dense_materialised", longest)] / med[("sparse", longest)],
            tolerance=0.5,
            kind="ratio",
            note="the s × s scores written out, as attention was computed before fused kernels; "
            f"crossover s={costs['crossover_materialised']}",
        )
    )
    peak = {(r["variant"], r["length"]): r.get("peak_bytes") for r in costs["memory"] if r.get("ok")}
    top = max(cfg.memory_lengths)
    for variant, label in (("dense", "dense causal"), ("dense_materialised", "dense causal with written-out scores")):
        if peak.get((variant, top)) and peak.get(("sparse", top)):
            heads.append(
                headline(
                    f"{label} / sparse peak forward memory, s={top}",
                    peak[(variant, top)] / peak[("sparse", top)],
                    tolerance=0.5,
                    kind="ratio",
                    note="peak resident memory above the process's level before the call, fresh process each; >1: sparse leaner",
                )
            )
    losses = {q: r["final"]["val_recon"] for q, r in tokenizer_results["runs"].items()}
    heads.append(
        headline(
            "largest / smallest final validation reconstruction loss over the quantisers",
            max(losses.values()) / min(losses.values()),
            tolerance=0.5,
            kind="ratio",
            note=", ".join(f"{q} {v:.4f}" for q, v in losses.items()) + f" (MSE, {cfg.vq_steps} steps each)",
        )
    )
    improved = sum(
        1
        for p in cfg.approx_pivots
        if next(r for r in approx["rows"] if r["pivots"] == p and r["corrected"])["output_rel_error"]
        < next(r for r in approx["rows"] if r["pivots"] == p and not r["corrected"])["output_rel_error"]
    )
    heads.append(
        headline(
            "pivot counts where the log correction lowers the error against full attention",
            improved / len(cfg.approx_pivots),
            tolerance=0.5,
            note=f"share of P in {list(cfg.approx_pivots)}, on the full-attention model's q, k, v ({approx['layers']} layers)",
        )
    )
    bits = ar["runs"]
    for variant in AR_VARIANTS:
        heads.append(
            headline(
                f"test bits per image token, {variant}",
                bits[variant]["test_bits"],
                tolerance=0.3,
                note=f"mean over {cfg.ar_seeds} training seeds; {ar['test_sequences']} test sequences of {ar['length']} tokens, "
                f"{cfg.ar_steps} steps",
            )
        )
    for variant in ("sparse", "sparse_corrected"):
        c = ar["comparisons"][f"{variant}_full_attention_penalty"]
        heads.append(
            headline(
                f"full attention at inference, change in bits per image token, {variant}",
                c["mean"],
                tolerance=0.3,
                note=f"trained sparse, evaluated with full causal attention; mean over {c['seeds']} training seeds, "
                f"95 % t-interval [{c['low']:.3f}, {c['high']:.3f}]",
            )
        )
    return {
        "figure": fig,
        "exactness": exact,
        "cost": costs,
        "tokenizer": tokenizer_results,
        "autoregressive": ar,
        "approximation": approx,
        "assets": assets,
        "threads": torch.get_num_threads() if cfg.threads is None else cfg.threads,
        "wall_s": time.perf_counter() - start,
        "headline": heads,
    }
