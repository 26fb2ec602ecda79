"""VQA experiment: BAN and its quaternion variants against unitary and co-attention baselines.

Two data sets (see :mod:`qattn.book.data.vqa`): easy-VQA (a published small benchmark) and generated
Sort-of-CLEVR scenes with relational questions. Every variant shares the trunk (CNN regions,
GRU question states) and differs only in its attention head; all variants of a data set see the
same data, seeds and budget. Training: Adam (by default its learning rate decays to 0 on a
cosine), batches of whole images with all their questions (the CNN runs once per image), gradient
clipping, cross-entropy on the single answer (the BAN paper uses binary cross-entropy on VQA 2.0's
soft scores; our answers are single labels). The
checkpoint is chosen on validation accuracy; test accuracy is measured once, for that checkpoint.

``run(config)`` returns per data set and variant: test accuracy overall and per question type
(mean ± std over seeds, and per seed), parameters, inference time (variants interleaved), the
entropy of each glimpse's joint map, the mean pairwise Jensen-Shannon divergence between the four
component maps of the Hamilton variant, the measured multiplications of the attention logits, and
the learning curves, and the grounding of the attention: the share of each glimpse's attention on
the regions that hold the object the question asks about (:func:`object_regions`), beside the
share a uniform map would give. Two controls on Sort-of-CLEVR: ``unitary_oracle``, whose attention
is given (uniform over the asked-about object's regions, :data:`ORACLE_VARIANTS`), and a
region-feature ablation (``clevr_ablation``: variants trained again with the cells' mean colour
among their region features, or without it).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from qattn.attention.bilinear import bilinear_logits
from qattn.book.data.vqa import RELATIONAL_TYPES, SORT_OF_CLEVR_COLOURS, VQASet, load_easy_vqa, make_sort_of_clevr
from qattn.book.harness.config import ExperimentConfig, choice
from qattn.book.harness.timing import summary, time_interleaved
from qattn.book.harness.training import LoopConfig, StepLoss, fit
from qattn.book.harness.workers import Job, run_jobs
from qattn.book.headline import headline
from qattn.book.models.blocks import count_parameters
from qattn.book.models.vqa import VQAConfig, VQAModel
from qattn.book.stats import seed_interval
from qattn.metrics import mean_pairwise_js

__all__ = [
    "VARIANTS",
    "PAIRED_COMPARISONS",
    "ORACLE_VARIANTS",
    "oracle_weights",
    "VQAExperimentConfig",
    "config_for",
    "build_model",
    "paired_difference",
    "train_variant",
    "variant_job",
    "run",
]

#: variant name → (head, score, glimpses)
VARIANTS: dict[str, tuple[str, str, int]] = {
    "unitary": ("unitary", "real", 1),
    "coattention": ("coattention", "real", 1),
    "ban1": ("ban", "real", 1),
    "ban2": ("ban", "real", 2),
    "ban4": ("ban", "real", 4),
    "qban_shared": ("ban", "shared", 2),
    "qban_hamilton": ("ban", "hamilton", 2),
    "unitary_oracle": ("unitary", "real", 1),
}

#: Controls, not attention mechanisms: the unitary model whose attention is GIVEN, uniform over the
#: regions that hold the asked-about object (:func:`object_regions`), in training and testing. It
#: separates "the trunk cannot answer" from "the attention does not find the object".
ORACLE_VARIANTS = ("unitary_oracle",)


@dataclass(frozen=True)
class VQAExperimentConfig(ExperimentConfig):
    """Everything one run of the chapter depends on (:class:`~qattn.book.harness.config.ExperimentConfig`).

    The profiles' ``seeds`` are offset by the seed given to :func:`config_for`; easy-VQA uses the
    first ``easy_seeds`` of them (its full training set makes a run several times longer), and
    Sort-of-CLEVR all of them (its orderings are judged on paired differences over seeds).

    ``colour_means``: region features with the cells' mean colour in place of three CNN channels
    (:class:`~qattn.book.models.vqa.RegionCNN`). ``clevr_ablation``: Sort-of-CLEVR variants trained
    a second time, with the opposite region features, for the first ``clevr_ablation_seeds`` seeds
    (same data, seeds and budget). ``decay``: the learning-rate schedule (constant, or cosine to
    0). ``workers``: with more than 1, every run trains in its own single-threaded process,
    ``workers`` side by side (:func:`variant_job`).
    """

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        "ci": {
            "seeds": (0,),
            "easy_limit_images": 150,
            "easy_epochs": 1,
            "clevr_sizes": (120, 30, 30),
            "clevr_epochs": 1,
            "clevr_variants": ("unitary", "coattention", "ban1", "ban2", "qban_shared", "qban_hamilton", "unitary_oracle"),
            "clevr_ablation": ("ban1",),
            "clevr_ablation_seeds": 1,
            "workers": 1,
        },
    }

    profile: str = "full"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    easy_seeds: int = 3
    easy_variants: tuple[str, ...] = choice(VARIANTS, ("ban2", "qban_shared", "qban_hamilton"))
    clevr_variants: tuple[str, ...] = choice(VARIANTS, tuple(VARIANTS))
    easy_limit_images: int | None = None
    easy_epochs: int = 10
    clevr_sizes: tuple[int, int, int] = (1600, 200, 200)
    clevr_epochs: int = 8
    clevr_ablation: tuple[str, ...] = choice(VARIANTS, ("ban2",))
    clevr_ablation_seeds: int = 3
    images_per_batch: int = 32
    lr: float = 2e-3
    decay: str = choice(("constant", "cosine"), "cosine")
    clip: float = 1.0
    d: int = 64
    channels: int = 32
    colour_means: bool = False
    threads: int = 2
    workers: int = 2
    data_seed: int = 0

    @classmethod
    def seeded(cls, values: dict[str, Any], seed: int) -> dict[str, Any]:
        """``seed`` offsets the model seeds of the profile."""
        seeds = values.get("seeds", cls.__dataclass_fields__["seeds"].default)  # type: ignore[attr-defined]
        return {**values, "seeds": tuple(seed + s for s in seeds)}


def config_for(profile: str, seed: int = 0, **overrides: Any) -> VQAExperimentConfig:
    """The ``ci`` (about a minute) or ``full`` profile; ``seed`` offsets the model seeds."""
    return VQAExperimentConfig.for_profile(profile, seed, **overrides)


def build_model(variant: str, data: VQASet, vocab_size: int, cfg: VQAExperimentConfig, colour_means: bool | None = None) -> VQAModel:
    """The model of ``variant`` for ``data``; ``colour_means`` (None: ``cfg.colour_means``) selects
    the region features (:class:`~qattn.book.models.vqa.RegionCNN`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {list(VARIANTS)}")
    head, score, glimpses = VARIANTS[variant]
    return VQAModel(
        VQAConfig(
            vocab_size=vocab_size,
            n_answers=len(data.answer_names),
            head=head,
            score=score,
            glimpses=glimpses,
            d_x=cfg.d,
            d_y=cfg.d,
            hidden=cfg.d,
            channels=cfg.channels,
            colour_means=cfg.colour_means if colour_means is None else colour_means,
        )
    )


def _image_batches(data: VQASet, images_per_batch: int, order: np.ndarray):
    """Yield (images, questions, local image index, answers, question ids) for groups of whole images."""
    by_image = np.argsort(data.image_index, kind="stable")
    starts = np.searchsorted(data.image_index[by_image], np.arange(len(data.images) + 1))
    for lo in range(0, len(order), images_per_batch):
        imgs = order[lo : lo + images_per_batch]
        qids = np.concatenate([by_image[starts[i] : starts[i + 1]] for i in imgs])
        local = np.searchsorted(np.sort(imgs), data.image_index[qids])
        imgs_sorted = np.sort(imgs)
        yield (
            torch.from_numpy(data.images[imgs_sorted]),
            torch.from_numpy(data.questions[qids]),
            torch.from_numpy(local),
            torch.from_numpy(data.answers[qids]),
            qids,
        )


def object_regions(data: VQASet, grid: int = 8, threshold: int = 30, named_colours: bool | None = None) -> np.ndarray:
    """Which regions hold the object a question asks about: ``(n_questions, grid²)`` bool, row-major like the model's regions.

    A region is the ``(H/grid) × (W/grid)`` pixel block the region grid assigns to it (the CNN's
    receptive fields are wider, so this is the nominal cell). The object's pixels:

    - Sort-of-CLEVR (every question names the colour of one object, from
      :data:`~qattn.book.data.vqa.SORT_OF_CLEVR_COLOURS`): the pixels of exactly that colour;
    - easy-VQA (one shape per image on a plain background): the pixels whose colour differs from
      the top-left corner's by more than ``threshold`` (sum of absolute RGB differences).

    ``named_colours``: use the first rule (default: when the data set has Sort-of-CLEVR's
    relational question types). A region holds the object if any of its pixels is the object's;
    a question whose object is not found (no such pixel) raises ``ValueError``.

    >>> from qattn.book.data.vqa import make_sort_of_clevr
    >>> test = make_sort_of_clevr(2, 2, 2, seed=0)[2]
    >>> masks = object_regions(test)
    >>> masks.shape, bool(masks.any(1).all())
    ((24, 64), True)
    """
    n_images, _, height, width = data.images.shape
    if height % grid or width % grid:
        raise ValueError(f"images of {height}×{width} pixels do not split into a {grid}×{grid} grid")
    if named_colours is None:
        named_colours = set(RELATIONAL_TYPES) <= set(data.type_names)
    named = [next((c for c in SORT_OF_CLEVR_COLOURS if f" {c} " in f" {t} "), None) if named_colours else None for t in data.texts]
    out = np.zeros((len(data), grid * grid), dtype=bool)

    def cells(pixels: np.ndarray) -> np.ndarray:
        return pixels.reshape(grid, height // grid, grid, width // grid).any(axis=(1, 3)).reshape(-1)

    for q, (image, colour) in enumerate(zip(data.image_index, named)):
        img = data.images[image].astype(np.int64)
        if colour is not None:
            pixels = (img == np.array(SORT_OF_CLEVR_COLOURS[colour])[:, None, None]).all(0)
        else:
            pixels = np.abs(img - img[:, :1, :1]).sum(0) > threshold
        if named_colours and colour is None:
            raise ValueError(f"question {q} names none of the colours {tuple(SORT_OF_CLEVR_COLOURS)}: {data.texts[q]!r}")
        out[q] = cells(pixels)
        if not out[q].any():
            raise ValueError(f"question {q}: no pixel of the asked-about object in image {image} ({data.texts[q]!r})")
    return out


def _region_marginal(maps: Tensor, head: str) -> Tensor:
    """Attention over regions per glimpse, ``(B, G, φ)``: BAN maps summed over tokens (Hamilton: mean of the 4 maps)."""
    if head != "ban":
        return maps[:, None]  # (B, 1, φ): one distribution over regions
    if maps.dim() == 5:
        maps = maps.mean(2)
    return maps.sum(-2)


def oracle_weights(data: VQASet) -> Tensor:
    """``(n_questions, φ)`` attention weights of the oracle control: uniform over the regions that
    hold the asked-about object (:func:`object_regions`), each row summing to 1."""
    mask = torch.from_numpy(object_regions(data)).float()
    return mask / mask.sum(-1, keepdim=True).clamp_min(1.0)


@torch.no_grad()
def _evaluate(model: VQAModel, data: VQASet, collect_maps: bool = False, oracle: Tensor | None = None) -> dict[str, Any]:
    """Accuracy overall and per question type (and with ``collect_maps`` the maps' statistics);
    ``oracle``: the questions' given region weights (:func:`oracle_weights`) for the oracle control."""
    model.eval()
    correct = np.zeros(len(data), dtype=bool)
    entropies: list[Tensor] = []
    divergences: list[Tensor] = []
    shares: list[Tensor] = []
    regions = object_regions(data) if collect_maps else None
    for images, questions, local, answers, qids in _image_batches(data, 64, np.arange(len(data.images))):
        logits, maps = model(images, questions, local, None if oracle is None else oracle[qids])
        correct[qids] = (logits.argmax(-1) == answers).numpy()
        if collect_maps:
            mask = torch.from_numpy(regions[qids]).to(maps.dtype)  # (B, φ)
            shares.append((_region_marginal(maps, model.config.head) * mask[:, None]).sum(-1))  # (B, G)
        if collect_maps and model.config.head == "ban":
            flat = maps.flatten(-2)  # (B, G[, 4], ρ·φ)
            entropy = -torch.xlogy(flat, flat).sum(-1)  # (B, G) or (B, G, 4) for the four Hamilton maps
            entropies.append(entropy.mean(-1) if entropy.dim() == 3 else entropy)
            if model.config.score == "hamilton":
                divergences.append(mean_pairwise_js(flat, component_dim=2))  # (B, G)
    per_type = {name: float(correct[data.types == t].mean()) for t, name in enumerate(data.type_names) if (data.types == t).any()}
    out: dict[str, Any] = {"accuracy": float(correct.mean()), "per_type": per_type}
    relational = np.isin(np.array(data.type_names)[data.types], RELATIONAL_TYPES)
    if relational.any():
        out["relational"] = float(correct[relational].mean())
        out["non_relational"] = float(correct[~relational].mean())
    if entropies:
        out["glimpse_entropy_nats"] = torch.cat(entropies).mean(0).tolist()
    if divergences:
        out["component_js_bits"] = torch.cat(divergences).mean(0).tolist()
    if shares:
        out["object_share"] = torch.cat(shares).mean(0).tolist()  # per glimpse
        out["object_share_uniform"] = float(regions.mean())
    return out


def train_variant(
    variant: str,
    train: VQASet,
    val: VQASet,
    test: VQASet,
    vocab_size: int,
    cfg: VQAExperimentConfig,
    epochs: int,
    seed: int,
    log: Callable[[str], None] = print,
    examples: list[int] | None = None,
    colour_means: bool | None = None,
) -> dict[str, Any]:
    """Train one variant with one seed (:func:`~qattn.book.harness.training.fit`: Adam, the
    config's learning-rate schedule, gradient clipping, validation after every epoch); select on validation; evaluate
    the test split once.

    ``examples``: test question ids whose attention maps (and predicted answers) are returned.
    ``colour_means``: the region features (None: ``cfg.colour_means``; see :func:`build_model`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initial values; the global RNG is left as it was
        model = build_model(variant, train, vocab_size, cfg, colour_means)
    given = {"train": oracle_weights(train), "val": oracle_weights(val), "test": oracle_weights(test)} if variant in ORACLE_VARIANTS else {}
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(train.images) / cfg.images_per_batch)
    loop = LoopConfig(
        steps=steps_per_epoch * epochs,
        lr=cfg.lr,
        optimizer="adam",
        decay=cfg.decay,
        grad_clip=cfg.clip,
        validate_at=tuple(steps_per_epoch * (e + 1) for e in range(epochs)),
        steps_per_epoch=steps_per_epoch,
        dropout_seed=seed,
    )

    def batches():
        for _ in range(epochs):
            yield from _image_batches(train, cfg.images_per_batch, rng.permutation(len(train.images)))

    def loss_fn(model: VQAModel, batch: tuple) -> StepLoss:
        images, questions, local, answers, qids = batch
        logits, _ = model(images, questions, local, given["train"][qids] if given else None)
        return StepLoss(F.cross_entropy(logits, answers))

    result = fit(
        model,
        batches(),
        loss_fn,
        lambda m: {"val_accuracy": _evaluate(m, val, oracle=given.get("val"))["accuracy"]},
        loop,
        select="val_accuracy",
        log=log,
        name=f"[vqa] {variant} seed {seed}",
        summarise_losses=lambda losses, _: float(np.mean(losses)),
    )  # the mean over the epoch's batches
    curve = [
        {"epoch": h["step"] // steps_per_epoch, "train_loss": h["train_loss"], "val_accuracy": h["val_accuracy"]} for h in result.history
    ]
    best_epoch = result.best_step // steps_per_epoch
    out = _evaluate(model, test, collect_maps=True, oracle=given.get("test"))
    if examples:
        out["examples"] = _examples(model, test, examples, given.get("test"))
    log(
        f"[vqa] {variant:14s} seed {seed}: val {result.best_score:.3f} (epoch {best_epoch}), "
        f"test {out['accuracy']:.3f}  ({result.wall_s:.0f} s)"
    )
    return {
        "seed": seed,
        "best_epoch": best_epoch,
        "val_accuracy": result.best_score,
        "train_time_s": result.wall_s,
        "curve": curve,
        **out,
        "parameters": count_parameters(model),
    }


@torch.no_grad()
def _examples(model: VQAModel, data: VQASet, qids: list[int], oracle: Tensor | None = None) -> list[dict[str, Any]]:
    """Attention maps of a few test questions, for the chapter's figures."""
    model.eval()
    out = []
    for q in qids:
        img = int(data.image_index[q])
        logits, maps = model(
            torch.from_numpy(data.images[img : img + 1]),
            torch.from_numpy(data.questions[q : q + 1]),
            torch.zeros(1, dtype=torch.long),
            None if oracle is None else oracle[q : q + 1],
        )
        n_tokens = int((data.questions[q] != 0).sum())
        out.append(
            {
                "question_id": int(q),
                "text": data.texts[q],
                "answer": data.answer_names[int(data.answers[q])],
                "predicted": data.answer_names[int(logits.argmax())],
                "maps": maps[0, ..., :n_tokens, :].tolist() if maps.dim() >= 4 else maps[0].tolist(),
            }
        )
    return out


def _logit_multiplications(variant: str, data: VQASet, vocab_size: int, cfg: VQAExperimentConfig) -> int | None:
    """Multiplications of the attention logits for one question, measured with FlopCounterMode."""
    if VARIANTS[variant][0] != "ban":
        return None
    model = build_model(variant, data, vocab_size, cfg).eval()
    rho, phi = data.questions.shape[1], 64
    u, v = torch.rand(1, rho, cfg.d), torch.rand(1, phi, cfg.d)
    with FlopCounterMode(display=False) as counter:
        bilinear_logits(u, v, model.ban.p, model.ban.bias, model.ban.score)
    return int(counter.get_total_flops() // 2)


@torch.no_grad()
def _time_inference(
    variants: list[str], data: VQASet, vocab_size: int, cfg: VQAExperimentConfig, repeats: int = 7
) -> dict[str, dict[str, float]]:
    """Forward time of a 16-image batch, variants interleaved; median/min/max seconds."""
    models = {v: build_model(v, data, vocab_size, cfg).eval() for v in variants}
    images, questions, local, _, _ = next(_image_batches(data, 16, np.arange(min(16, len(data.images)))))
    fns = {v: (lambda m=models[v]: m(images, questions, local)) for v in variants}
    return summary(time_interleaved(fns, repeats=repeats, warmup=1), keys=("median_s", "min_s", "max_s"))


def _pick_examples(data: VQASet, seed: int, per_type: int = 1) -> list[int]:
    """One test question of each type (deterministic), for the attention figures."""
    rng = np.random.default_rng(seed)
    return [int(rng.choice(np.flatnonzero(data.types == t))) for t in range(len(data.type_names)) if (data.types == t).any()][
        : 6 * per_type
    ]


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    out = {
        "accuracy": stats([r["accuracy"] for r in runs]),
        "parameters": runs[0]["parameters"],
        "per_type": {t: stats([r["per_type"][t] for r in runs]) for t in runs[0]["per_type"]},
    }
    for key in ("relational", "non_relational"):
        if key in runs[0]:
            out[key] = stats([r[key] for r in runs])
    for key in ("glimpse_entropy_nats", "component_js_bits", "object_share", "object_share_uniform"):
        if key in runs[0]:
            out[key] = np.mean([r[key] for r in runs], axis=0).tolist()
    return out


def _load(cfg: VQAExperimentConfig, name: str) -> tuple[VQASet, VQASet, VQASet, Any]:
    """``(train, val, test, vocabulary)`` of the data set ``name`` as ``cfg`` defines it."""
    if name == "easy_vqa":
        return load_easy_vqa(cfg.data_seed, limit_images=cfg.easy_limit_images)
    if name == "sort_of_clevr":
        return make_sort_of_clevr(*cfg.clevr_sizes, seed=cfg.data_seed)
    raise ValueError(f"unknown data set {name!r}; expected 'easy_vqa' or 'sort_of_clevr'")


def _plan(cfg: VQAExperimentConfig) -> dict[str, tuple[tuple[str, ...], int, tuple[int, ...]]]:
    """Per data set: its variants, epochs and seeds."""
    plan = {}
    if cfg.easy_variants:
        plan["easy_vqa"] = (cfg.easy_variants, cfg.easy_epochs, cfg.seeds[: cfg.easy_seeds])
    if cfg.clevr_variants:
        plan["sort_of_clevr"] = (cfg.clevr_variants, cfg.clevr_epochs, cfg.seeds)
    return plan


def variant_job(
    config: dict[str, Any], name: str, variant: str, seed: int, examples: list[int] | None, colour_means: bool | None = None
) -> dict[str, Any]:
    """:func:`train_variant` in a worker process: loads the data set ``name`` itself (a pure
    function of the config), trains ``variant`` with ``seed``, returns its run record."""
    cfg = VQAExperimentConfig.coerce(config)
    train, val, test, vocab = _load(cfg, name)
    epochs = _plan(cfg)[name][1]
    return train_variant(variant, train, val, test, len(vocab.words), cfg, epochs, seed, print, examples, colour_means)


#: Relative training cost per image and epoch (the longest jobs start first in the worker pool).
_COST = {"unitary": 0.4, "coattention": 0.45, "ban1": 0.7, "ban2": 1.0, "ban4": 1.75, "qban_shared": 1.1, "qban_hamilton": 4.4}


def run(config: VQAExperimentConfig | Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole chapter; returns JSON-serialisable metrics (see the module docstring).

    With ``workers`` > 1 every (data set, variant, seed) trains in its own single-threaded worker
    process (:func:`variant_job`), ``workers`` side by side; the inference timing runs here.
    """
    cfg = VQAExperimentConfig.coerce(config)
    torch.set_num_threads(cfg.threads)
    if not 1 <= cfg.easy_seeds:
        raise ValueError(f"easy_seeds must be at least 1, got {cfg.easy_seeds}")
    t0 = time.perf_counter()
    plan = _plan(cfg)
    datasets = {name: _load(cfg, name) for name in plan}
    log(f"[vqa] data ready in {time.perf_counter() - t0:.0f} s")
    examples = {name: _pick_examples(data[2], cfg.data_seed) for name, data in datasets.items()}
    # (data set, variant, seed, region features: None = the config's, or the ablation's opposite)
    keys = [(name, v, s, None) for name, (variants, _, seeds) in plan.items() for v in variants for s in seeds]
    ablation = not cfg.colour_means
    if "sort_of_clevr" in plan:
        keys += [("sort_of_clevr", v, s, ablation) for v in cfg.clevr_ablation for s in cfg.seeds[: cfg.clevr_ablation_seeds]]

    def shown(name: str, seed: int, features: bool | None) -> list[int] | None:
        return examples[name] if seed == plan[name][2][0] and features is None else None

    if cfg.workers == 1:
        records = []
        for name, v, s, features in keys:
            train, val, test, vocab = datasets[name]
            records.append(
                train_variant(v, train, val, test, len(vocab.words), cfg, plan[name][1], s, log, shown(name, s, features), features)
            )
    else:
        jobs = [
            Job(
                variant_job,
                (cfg.to_dict(), name, v, s, shown(name, s, features), features),
                _COST.get(v, 1.0) * plan[name][1] * len(datasets[name][0].images),
                f"{name} {v} seed {s}" + ("" if features is None else f" (colour means: {features})"),
            )
            for name, v, s, features in keys
        ]
        records = run_jobs(jobs, cfg.workers, log=lambda line: log(f"[vqa] {line}"))
    by_key = dict(zip(keys, records))
    metrics: dict[str, Any] = {}
    for name, (variants, _, seeds) in plan.items():
        train, val, test, vocab = datasets[name]
        runs = {v: [by_key[(name, v, s, None)] for s in seeds] for v in variants}
        timing = _time_inference(variants, test, len(vocab.words), cfg)
        metrics[name] = {
            "sizes": {
                "train_questions": len(train),
                "val_questions": len(val),
                "test_questions": len(test),
                "train_images": len(train.images),
                "answers": len(train.answer_names),
            },
            "type_names": train.type_names,
            "seeds": list(seeds),
            "variants": {
                v: {
                    **_summarise(runs[v]),
                    "runs": runs[v],
                    "inference": timing[v],
                    "logit_multiplications": _logit_multiplications(v, test, len(vocab.words), cfg),
                }
                for v in variants
            },
        }
        ablated = [k for k in keys if k[0] == name and k[3] is not None]
        if ablated:
            metrics[name]["ablation"] = {
                "colour_means": ablation,
                "variants": {
                    v: {**_summarise(mine), "runs": mine}
                    for v in dict.fromkeys(k[1] for k in ablated)
                    for mine in [[by_key[k] for k in ablated if k[1] == v]]
                },
            }
    metrics["headline"] = _headline(metrics)
    return metrics


#: Paired comparisons declared before the runs: (a, b, key) → a − b of a run's ``key``, paired by seed.
#: The paper's ordering on relational questions, and shared against Hamilton scores.
PAIRED_COMPARISONS = (
    ("coattention", "unitary", "relational"),
    ("ban1", "coattention", "relational"),
    ("ban2", "ban1", "relational"),
    ("ban4", "ban2", "relational"),
    ("ban2", "coattention", "relational"),
    ("ban2", "unitary", "relational"),
    ("qban_shared", "qban_hamilton", "accuracy"),
)


def paired_difference(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``a − b`` of ``key`` paired by seed, with a 95 % Student-t interval (:func:`qattn.book.stats.seed_interval`).

    >>> a = [{"seed": 0, "accuracy": 0.8}, {"seed": 1, "accuracy": 0.7}]
    >>> b = [{"seed": 1, "accuracy": 0.6}, {"seed": 0, "accuracy": 0.75}]
    >>> [round(x, 2) for x in paired_difference(a, b, "accuracy")["per_seed"]]
    [0.05, 0.1]
    """
    first = {r["seed"]: r[key] for r in runs_a}
    second = {r["seed"]: r[key] for r in runs_b}
    seeds = sorted(set(first) & set(second))
    if not seeds:
        raise ValueError(f"no seed in common between the two variants' runs (seeds {sorted(first)} and {sorted(second)})")
    return seed_interval([first[s] - second[s] for s in seeds])


def _headline(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []

    def add(name: str, value: float, tolerance: float, kind: str = "relative") -> None:
        if value is not None and math.isfinite(value):
            rows.append(headline(name, value, tolerance, kind))

    for ds, m in metrics.items():
        for v, r in m["variants"].items():
            add(f"{ds}: {v} test accuracy", r["accuracy"]["mean"], 0.05)
        var = m["variants"]
        for a, b, key in PAIRED_COMPARISONS:
            if a in var and b in var and (key == "accuracy" or key in var[a]):
                c = paired_difference(var[a]["runs"], var[b]["runs"], key)
                label = "relational " if key == "relational" else ""
                add(f"{ds}: {a} − {b} {label}test accuracy, mean paired difference", c["mean"], 0.05, "exact")
                add(f"{ds}: {a} − {b} {label}test accuracy, lower end of the 95% interval", c["low"], 0.05, "exact")
                add(f"{ds}: {a} − {b} {label}test accuracy, upper end of the 95% interval", c["high"], 0.05, "exact")
        for v, r in var.items():
            if "object_share" in r and r["object_share_uniform"] > 0:
                add(
                    f"{ds}: {v} attention on the asked-about object / uniform, glimpse 1",
                    r["object_share"][0] / r["object_share_uniform"],
                    0.3,
                )
        if "qban_shared" in var and "qban_hamilton" in var:
            add(
                f"{ds}: qban_hamilton / qban_shared inference time",
                var["qban_hamilton"]["inference"]["median_s"] / var["qban_shared"]["inference"]["median_s"],
                0.5,
                "ratio",
            )
            add(
                f"{ds}: qban_hamilton / qban_shared logit multiplications",
                var["qban_hamilton"]["logit_multiplications"] / var["qban_shared"]["logit_multiplications"],
                0,
                "exact",
            )
    return rows
