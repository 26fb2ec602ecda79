"""Concentrate Attention (Li et al., NeurIPS 2024) on a frozen all-MiniLM-L6-v2: pilot, soft prompts, hard prompts, quaternion link.

The setting is multi-source few-shot domain generalisation for binary sentiment with four
domains (:func:`load_domains`): three condition domains of drug reviews
(:mod:`qattn.book.data.drug_reviews`: contraception, mental health, other) and tweets
(:mod:`qattn.book.data.tweets`, polarity). Every domain in turn is the TARGET; from each of the
three SOURCE domains ``shots`` examples per class are drawn for training and ``shots`` per class
for validation (seeded per seed, :func:`few_shot`); the target's whole labelled set is the test
set (the tweets: a fixed stratified sample of ``tweets_size``, of 22,747). In-domain accuracy is
measured on the sources' remaining examples (at most ``in_domain_size`` per source domain).

The backbone (:mod:`qattn.book.models.minilm`) is frozen; ``[CLS]`` (position 0) is the decoding
slot read by a linear head; a prompt (soft or hard) sits at positions ``1..n``. Concentration,
strength (CS), fluctuation (CF) and the two losses are those of :mod:`qattn.metrics.concentration`
(our formalisation). Four parts, one :func:`run`:

1. **Soft prompts** (:func:`soft_prompt_job`): prompt tuning with the loss
   ``L = L_ce + λ_cs·L_cs + λ_cf·L_cf`` in four variants (:data:`SOFT_VARIANTS`: plain prompt
   tuning, + strength, + fluctuation, both), every leave-one-domain-out split, ``seeds`` seeds;
   the variants of one seed share the prompt's initialisation, the head's and the batch order
   (paired). Model selection on the sources' validation accuracy only. Target and in-domain
   accuracy, and CS / CF per layer of the trained prompt on held-out inputs.
2. **Hard prompts** (:func:`hard_prompt_job`, :func:`hard_prompts`): a pool of hand-written
   instructions, alone and followed by a short templated demonstration (:data:`HARD_PROMPTS`),
   each inserted as real tokens; the encoder's ``[CLS]`` output and the concentrations of every
   example are computed ONCE per prompt (the backbone is frozen and the prompt fixed), so a
   per-split, per-seed logistic-regression head (:func:`fit_logistic`) on the source shots is
   cheap. Filter then match: prompts ranked by a global concentration score on the source shots
   (ours: mean over the deep layers of CS − CF), the top ``keep`` kept, then a per-input selector
   — a LinUCB contextual bandit (:func:`linucb`; the paper uses multi-agent PPO) over the kept
   prompts, trained on the sources' validation shots with bandit feedback only — against a random
   kept prompt and the single prompt best on the sources' validation shots.
3. **The pilot** (in :func:`summarise`): across prompts, the Spearman correlation of CS and of CF
   per layer (on source data) with target accuracy, per split, with bootstrap intervals over
   prompts; for the hard prompts and for the trained soft prompts.
4. **The quaternion link** (:func:`quaternion_job`): the NLP chapter's quaternion Transformer
   (shared scores and Hamilton scores) with ``quaternion_prompt`` learned prompt tokens after
   ``<cls>``, trained on tweet polarity with and without both losses; CS / CF per layer on held-out
   tweets, per Hamilton component (the shared score has one map for all four).

>>> config_for("ci").seeds
1
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.book.data.common import stratified_split
from qattn.book.data.drug_reviews import DOMAINS as DRUG_DOMAINS
from qattn.book.data.drug_reviews import load_drug_reviews
from qattn.book.data.tweets import Tokenizer, load_tweets
from qattn.book.harness.config import ExperimentConfig, choice
from qattn.book.harness.training import LoopConfig, StepLoss, evenly_spaced, fit, torch_threads
from qattn.book.headline import headline
from qattn.book.models.minilm import DECODING_POSITION, SoftPromptClassifier, encode, load_minilm, ordinary_token_ids
from qattn.book.models.text import build_text_model
from qattn.book.stats import seed_interval
from qattn.metrics.concentration import fluctuation_loss, strength_and_fluctuation, strength_loss

__all__ = [
    "ConcentrateConfig",
    "DOMAINS",
    "HARD_PROMPTS",
    "SOFT_VARIANTS",
    "config_for",
    "few_shot",
    "fit_logistic",
    "hard_prompt_job",
    "linucb",
    "load_domains",
    "quaternion_job",
    "run",
    "soft_prompt_job",
    "spearman",
    "summarise",
]

DOMAINS = (*DRUG_DOMAINS, "tweets")

#: soft-prompt variants → (λ_cs, λ_cf) as multiples of the config's weights
SOFT_VARIANTS: dict[str, tuple[float, float]] = {
    "prompt_tuning": (0.0, 0.0),
    "strength": (1.0, 0.0),
    "fluctuation": (0.0, 1.0),
    "both": (1.0, 1.0),
}

_INSTRUCTIONS = (
    "review sentiment :",
    "is this opinion positive or negative ?",
    "classify the feeling of the following text .",
    "the writer of this text is",
    "answer with positive or negative .",
    "overall , the experience described here was",
    "read carefully and judge the attitude .",
    "how does the author feel ?",
)
_DEMONSTRATION = "example : it works great , positive . awful side effects , negative ."

#: the hard-prompt pool: every instruction alone and followed by the templated demonstration
HARD_PROMPTS: tuple[str, ...] = tuple(_INSTRUCTIONS) + tuple(f"{_DEMONSTRATION} {text}" for text in _INSTRUCTIONS)


@dataclass(frozen=True)
class ConcentrateConfig(ExperimentConfig):
    """Everything that defines the chapter's run (see the module notes)."""

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        "ci": {
            "seeds": 1,
            "shots": 8,
            "targets": ("contraception", "tweets"),
            "variants": ("prompt_tuning", "both"),
            "steps": 4,
            "validations": 1,
            "tweets_size": 64,
            "test_size": 48,
            "in_domain_size": 16,
            "hard_prompts": 4,
            "keep": 2,
            "bandit_passes": 2,
            "max_length": 24,
            "quaternion_steps": 5,
            "quaternion_train": 256,
            "quaternion_eval": 64,
            "bootstrap": 100,
        },
    }

    profile: str = "full"
    seed: int = 0
    threads: int | None = 2
    workers: int = 2
    # data
    targets: tuple[str, ...] = choice(DOMAINS, DOMAINS)
    shots: int = 16
    tweets_size: int = 600
    test_size: int | None = None  # cap on a target's test set (None: all of it)
    in_domain_size: int = 100
    max_length: int = 48
    # soft prompts
    variants: tuple[str, ...] = choice(SOFT_VARIANTS, tuple(SOFT_VARIANTS))
    seeds: int = 3
    n_prompt: int = 8
    steps: int = 48
    batch_size: int = 32
    lr: float = 0.01
    warmup_steps: int = 5
    validations: int = 6
    lambda_cs: float = 1.0
    lambda_cf: float = 1.0
    temperature: float = 0.5
    deep_layers: tuple[int, ...] = (3, 4, 5)
    # hard prompts
    hard_prompts: int = len(HARD_PROMPTS)
    keep: int = 4
    logistic_l2: float = 1e-2
    bandit_dims: int = 16
    bandit_alpha: float = 0.5
    bandit_passes: int = 5
    # quaternion link
    quaternion_prompt: int = 4
    quaternion_train: int = 8000
    quaternion_eval: int = 1000
    quaternion_steps: int = 250
    quaternion_batch: int = 64
    quaternion_lr: float = 2e-3
    # statistics
    bootstrap: int = 2000


def config_for(profile: str, seed: int = 0, **overrides: Any) -> ConcentrateConfig:
    """The configuration of ``profile`` (``"ci"`` or ``"full"``), with optional overrides."""
    return ConcentrateConfig.for_profile(profile, seed, **overrides)


# -- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """One domain's labelled texts (labels 0 negative, 1 positive)."""

    name: str
    texts: tuple[str, ...]
    labels: np.ndarray


def load_domains(cfg: ConcentrateConfig) -> dict[str, Domain]:
    """The four domains: drug reviews by condition domain (all of each), and ``tweets_size`` tweets.

    The tweets are a stratified sample of the polarity corpus (fixed by ``cfg.seed``). With
    ``test_size`` set (ci), every domain is cut to a stratified sample of at most
    ``test_size + 4·shots`` examples.
    """
    reviews = load_drug_reviews()
    out: dict[str, Domain] = {}
    for name in DRUG_DOMAINS:
        part = reviews.domain(name)
        out[name] = Domain(name, tuple(part.texts), np.asarray(part.labels))
    tweets = load_tweets("polarity")
    keep, _ = stratified_split(tweets.labels, (cfg.tweets_size / len(tweets.labels),), cfg.seed + 11)
    out["tweets"] = Domain("tweets", tuple(tweets.texts[i] for i in keep), tweets.labels[keep])
    if cfg.test_size is not None:
        for name, d in list(out.items()):
            size = cfg.test_size + 4 * cfg.shots
            if size < len(d.labels):
                idx, _ = stratified_split(d.labels, (size / len(d.labels),), cfg.seed + 13)
                out[name] = Domain(name, tuple(d.texts[i] for i in idx), d.labels[idx])
    return out


def few_shot(labels: np.ndarray, shots: int, seed: int, rest_size: int | None = None) -> dict[str, np.ndarray]:
    """Indices of ``shots`` training and ``shots`` validation examples per class, and the rest.

    Drawn by ``numpy.random.default_rng(seed)`` per class; ``rest`` (the in-domain test pool when
    the domain is a source) is cut to a random ``rest_size`` if given. All sorted.

    >>> parts = few_shot(np.array([0, 1] * 20), 4, seed=0)
    >>> [len(parts[k]) for k in ("train", "val", "rest")]
    [8, 8, 24]
    """
    rng = np.random.default_rng(seed)
    train, val, rest = [], [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < 2 * shots:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than 2 × shots = {2 * shots}")
        train.append(idx[:shots])
        val.append(idx[shots : 2 * shots])
        rest.append(idx[2 * shots :])
    rest_all = np.concatenate(rest)
    if rest_size is not None and rest_size < len(rest_all):
        rest_all = rng.choice(rest_all, rest_size, replace=False)
    return {"train": np.sort(np.concatenate(train)), "val": np.sort(np.concatenate(val)), "rest": np.sort(rest_all)}


@dataclass(frozen=True)
class SplitData:
    """One leave-one-domain-out split for one seed: (texts, labels, domain names) per part."""

    target: str
    train: tuple[list[str], Tensor]
    val: tuple[list[str], Tensor]
    in_domain: tuple[list[str], Tensor]
    test: tuple[list[str], Tensor]


def make_split(domains: Mapping[str, Domain], target: str, seed: int, cfg: ConcentrateConfig) -> SplitData:
    """The sources' shots (train, validation), the sources' rest (in-domain test) and the target's whole set (test)."""
    if target not in domains:
        raise ValueError(f"target must be one of {tuple(domains)}, got {target!r}")
    parts: dict[str, tuple[list[str], list[int]]] = {k: ([], []) for k in ("train", "val", "rest")}
    for offset, name in enumerate(domains):
        if name == target:
            continue
        d = domains[name]
        chosen = few_shot(d.labels, cfg.shots, seed * 100 + offset, cfg.in_domain_size)
        for key, idx in chosen.items():
            parts[key][0].extend(d.texts[i] for i in idx)
            parts[key][1].extend(int(d.labels[i]) for i in idx)
    t = domains[target]

    def pack(texts: list[str], labels: Sequence[int]) -> tuple[list[str], Tensor]:
        return list(texts), torch.as_tensor(np.asarray(labels, dtype=np.int64))

    return SplitData(
        target,
        pack(*parts["train"]),
        pack(*parts["val"]),
        pack(*parts["rest"]),
        pack(list(t.texts), t.labels),
    )


# -- the backbone, per worker process ---------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _backbone() -> tuple[Any, nn.Module, Tensor]:
    """The tokenizer (left truncation: a review's verdict tends to come last), the frozen encoder and the ordinary token ids."""
    tokenizer, model = load_minilm()
    tokenizer.truncation_side = "left"
    return tokenizer, model, ordinary_token_ids(tokenizer)


def _batches(texts: Sequence[str], size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, len(texts))) for i in range(0, len(texts), size)]


def _masses(model: SoftPromptClassifier, maps: Sequence[Tensor], mask: Tensor) -> Tensor:
    """Per layer and example, the decoding row's mass on [CLS], the prompt and the input text: (layers, B, 3)."""
    prompt, text = model.prompt_mask(mask), model.input_mask(mask)
    out = []
    for w in maps:
        row = w[:, :, DECODING_POSITION].mean(1)  # (B, N)
        out.append(torch.stack([row[:, 0], (row * prompt).sum(-1), (row * text).sum(-1)], -1))
    return torch.stack(out)


def _evaluate(model: SoftPromptClassifier, texts: Sequence[str], labels: Tensor, max_length: int, batch: int = 64) -> dict[str, Any]:
    """Accuracy, cross-entropy, per-layer masses (CLS / prompt / input) and CLS features on a text set, no gradients."""
    tokenizer = _backbone()[0]
    logits, masses = [], []
    with torch.no_grad():
        for a, b in _batches(texts, batch):
            ids, mask = encode(tokenizer, texts[a:b], max_length=max_length)
            out, maps = model(ids, mask, need_weights=True)
            logits.append(out)
            masses.append(_masses(model, maps, mask))
    logits_t = torch.cat(logits)
    return {
        "accuracy": float((logits_t.argmax(-1) == labels).double().mean()),
        "ce": float(F.cross_entropy(logits_t, labels)),
        "masses": torch.cat(masses, 1),  # (layers, n, 3)
    }


def _concentration_summary(masses: Tensor) -> dict[str, list[float]]:
    """CS and CF (population std) per layer from (layers, n, 3) masses; also the mean CLS / input mass."""
    prompt = masses[..., 1].double()
    return {
        "strength": prompt.mean(1).tolist(),
        "fluctuation": prompt.std(1, correction=0).tolist(),
        "cls_mass": masses[..., 0].double().mean(1).tolist(),
        "input_mass": masses[..., 2].double().mean(1).tolist(),
    }


# -- 1. soft prompts -------------------------------------------------------------------------------


def soft_prompt_job(config: dict[str, Any], target: str, seed: int, variant: str) -> dict[str, Any]:
    """One soft-prompt run on one thread: train on the sources' shots, test on the target and in-domain."""
    cfg = ConcentrateConfig.from_dict(config)
    if variant not in SOFT_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(SOFT_VARIANTS)}, got {variant!r}")
    with torch_threads(1):
        started = time.perf_counter()
        tokenizer, backbone, vocab = _backbone()
        split = make_split(load_domains(cfg), target, seed, cfg)
        model = SoftPromptClassifier(
            backbone, n_prompt=cfg.n_prompt, seed=1000 + seed, vocab_ids=vocab, cls_token_id=tokenizer.cls_token_id
        )
        w_cs, w_cf = SOFT_VARIANTS[variant]
        w_cs, w_cf = w_cs * cfg.lambda_cs, w_cf * cfg.lambda_cf
        texts, labels = split.train
        order = torch.Generator().manual_seed(2000 + seed)  # the same batches for every variant of this seed
        per_epoch = max(1, len(texts) // cfg.batch_size)

        def batches():
            perm: list[int] = []
            for _ in range(cfg.steps):
                if len(perm) < cfg.batch_size:
                    perm = perm + torch.randperm(len(texts), generator=order).tolist()
                chosen, perm = perm[: cfg.batch_size], perm[cfg.batch_size :]
                yield chosen

        def loss_fn(m: nn.Module, chosen: list[int]) -> StepLoss:
            ids, mask = encode(tokenizer, [texts[i] for i in chosen], max_length=cfg.max_length)
            y = labels[chosen]
            logits, maps = m(ids, mask, need_weights=True)
            ce = F.cross_entropy(logits, y)
            cs = strength_loss(maps, DECODING_POSITION, m.input_mask(mask), cfg.deep_layers)
            cf = fluctuation_loss(maps, DECODING_POSITION, m.prompt_mask(mask), y, cfg.deep_layers, cfg.temperature)
            return StepLoss(ce + w_cs * cs + w_cf * cf, weight=float(len(chosen)), terms={"ce": ce, "cs": cs, "cf": cf})

        def validate(m: nn.Module) -> dict[str, Any]:
            r = _evaluate(m, *split.val, cfg.max_length)
            return {"score": r["accuracy"] - 1e-3 * r["ce"], "val_accuracy": r["accuracy"], "val_ce": r["ce"]}

        loop = LoopConfig(
            steps=cfg.steps,
            lr=cfg.lr,
            optimizer="adam",
            warmup_steps=cfg.warmup_steps,
            decay="cosine",
            grad_clip=1.0,
            validate_at=evenly_spaced(cfg.steps, cfg.validations),
            steps_per_epoch=per_epoch,
            dropout_seed=seed,
        )
        result = fit(model, batches(), loss_fn, validate, loop, select="score", name=f"{variant} → {target} seed {seed}")
        test = _evaluate(model, *split.test, cfg.max_length)
        in_domain = _evaluate(model, *split.in_domain, cfg.max_length)
        terms = result.step_terms
        record = {
            "target": target,
            "seed": seed,
            "variant": variant,
            "lambda_cs": w_cs,
            "lambda_cf": w_cf,
            "curve": [{k: h[k] for k in ("step", "train_loss", "val_accuracy", "val_ce")} for h in result.history],
            "terms_first": terms[0] if terms else None,
            "terms_last": {k: float(np.mean([t[k] for t in terms[-5:]])) for k in terms[-1]} if terms else None,
            "best_step": result.best_step,
            "train_time_s": result.train_time_s,
            "test_accuracy": test["accuracy"],
            "in_domain_accuracy": in_domain["accuracy"],
            "test": _concentration_summary(test["masses"]),
            "in_domain": _concentration_summary(in_domain["masses"]),
            "test_size": len(split.test[0]),
            "in_domain_size": len(split.in_domain[0]),
            "deep_concentration_test": test["masses"][list(cfg.deep_layers), :, 1].mean(0).round(decimals=4).tolist(),
            "wall_s": time.perf_counter() - started,
        }
    return record


# -- 2. hard prompts ----------------------------------------------------------------------------------


def _hard_classifier(prompt: str, n_prompt_hint: int = 1) -> SoftPromptClassifier:
    """A :class:`SoftPromptClassifier` whose prompt is the word embeddings of ``prompt``'s tokens (a hard prompt)."""
    tokenizer, backbone, _ = _backbone()
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the hard prompt {prompt!r} has no tokens")
    model = SoftPromptClassifier(backbone, n_prompt=len(ids), init="normal", cls_token_id=tokenizer.cls_token_id)
    with torch.no_grad():
        model.prompt.copy_(backbone.get_input_embeddings().weight[torch.tensor(ids)])
    return model


def _encode_all(model: SoftPromptClassifier | None, texts: Sequence[str], max_length: int, batch: int = 64) -> tuple[Tensor, Tensor | None]:
    """Final [CLS] states (n, D) and per-layer decoding masses (layers, n, 3) of ``texts``; no prompt if ``model`` is None."""
    tokenizer, backbone, _ = _backbone()
    feats, masses = [], []
    with torch.no_grad():
        for a, b in _batches(texts, batch):
            ids, mask = encode(tokenizer, texts[a:b], max_length=max_length)
            if model is None:
                out = backbone(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), return_dict=True)
                feats.append(out.last_hidden_state[:, DECODING_POSITION])
                continue
            words = backbone.get_input_embeddings()(ids)
            embeds = torch.cat([words[:, :1], model.prompt.unsqueeze(0).expand(len(ids), -1, -1), words[:, 1:]], 1)
            ext = model.extend_attention_mask(mask)
            out = backbone(
                inputs_embeds=embeds, attention_mask=ext, token_type_ids=torch.zeros_like(ext), output_attentions=True, return_dict=True
            )
            feats.append(out.last_hidden_state[:, DECODING_POSITION])
            masses.append(_masses(model, out.attentions, mask))
    return torch.cat(feats), (torch.cat(masses, 1) if masses else None)


def hard_prompt_job(config: dict[str, Any], index: int) -> dict[str, Any]:
    """Encode every domain's texts once under hard prompt ``index`` (−1: no prompt), one thread.

    Returns per domain the [CLS] features (n, D) as float32 arrays and, for a prompt, the
    decoding masses (layers, n, 3).
    """
    cfg = ConcentrateConfig.from_dict(config)
    with torch_threads(1):
        started = time.perf_counter()
        domains = load_domains(cfg)
        model = None if index < 0 else _hard_classifier(HARD_PROMPTS[index])
        out: dict[str, Any] = {"index": index, "domains": {}}
        for name, d in domains.items():
            feats, masses = _encode_all(model, d.texts, cfg.max_length)
            out["domains"][name] = {"features": feats.float().numpy(), "masses": None if masses is None else masses.float().numpy()}
        out["tokens"] = 0 if model is None else model.n_prompt
        out["wall_s"] = time.perf_counter() - started
    return out


def fit_logistic(x: Tensor, y: Tensor, l2: float, iterations: int = 100) -> Callable[[Tensor], Tensor]:
    """Binary L2-regularised logistic regression (features standardised on ``x``) by L-BFGS; returns a scorer ``x → logit``.

    Minimises ``mean BCE(w·z + b, y) + l2·‖w‖²`` with ``z`` the standardised features; deterministic.
    """
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")
    target = y.double()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, target) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_, b_ = w.detach(), b.detach()
    return lambda q: ((q.double() - mean) / std) @ w_ + b_


def linucb(contexts: Tensor, rewards: Tensor, alpha: float, passes: int, seed: int) -> Tensor:
    """Train a disjoint LinUCB contextual bandit (Li et al. 2010) with bandit feedback; return its ridge weights (arms, d).

    ``contexts`` (n, d), ``rewards`` (n, arms) in {0, 1}: the reward of every arm for every context,
    of which the bandit only sees the one of the arm it picks. Over ``passes`` shuffled passes it
    picks ``argmax_a θ_a·x + α √(xᵀ A_a⁻¹ x)`` (ties: the lower arm), observes that reward and
    updates ``A_a += x xᵀ``, ``b_a += r x``. At test time a context goes to ``argmax_a θ_a·x``.
    """
    n, d = contexts.shape
    arms = rewards.shape[1]
    x_all = contexts.double()
    a_inv = torch.eye(d, dtype=torch.float64).repeat(arms, 1, 1)
    b = torch.zeros(arms, d, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(passes):
        for i in torch.randperm(n, generator=generator).tolist():
            x = x_all[i]
            theta = torch.einsum("aij,aj->ai", a_inv, b)
            bonus = torch.einsum("i,aij,j->a", x, a_inv, x).clamp_min(0).sqrt()
            arm = int(torch.argmax(theta @ x + alpha * bonus))
            r = float(rewards[i, arm])
            ax = a_inv[arm] @ x
            a_inv[arm] -= torch.outer(ax, ax) / (1 + x @ ax)  # Sherman-Morrison
            b[arm] += r * x
    return torch.einsum("aij,aj->ai", a_inv, b)


def _prompt_accuracies(
    encoded: Mapping[int, Mapping[str, Any]], domains: Mapping[str, Domain], target: str, seed: int, cfg: ConcentrateConfig
) -> dict[str, Any]:
    """For one split and seed: every prompt's head on the sources' shots, its accuracies, and its per-example correctness."""
    sources = [n for n in domains if n != target]
    picks = {n: few_shot(domains[n].labels, cfg.shots, seed * 100 + list(domains).index(n), cfg.in_domain_size) for n in sources}

    def gather(index: int, part: str) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for n in sources:
            idx = picks[n][part]
            xs.append(torch.from_numpy(encoded[index]["domains"][n]["features"][idx]))
            ys.append(torch.from_numpy(domains[n].labels[idx]))
        return torch.cat(xs), torch.cat(ys)

    rows, correct_val, correct_test = [], [], []
    y_test = torch.from_numpy(domains[target].labels)
    for index in sorted(i for i in encoded if i >= 0):
        x_tr, y_tr = gather(index, "train")
        x_va, y_va = gather(index, "val")
        score = fit_logistic(x_tr, y_tr, cfg.logistic_l2)
        ok_val = ((score(x_va) > 0).long() == y_va).double()
        ok_test = ((score(torch.from_numpy(encoded[index]["domains"][target]["features"])) > 0).long() == y_test).double()
        masses = np.concatenate(
            [encoded[index]["domains"][n]["masses"][:, np.concatenate([picks[n]["train"], picks[n]["val"]])] for n in sources], axis=1
        )
        summary = _concentration_summary(torch.from_numpy(masses))
        deep = list(cfg.deep_layers)
        rows.append(
            {
                "prompt": index,
                "val_accuracy": float(ok_val.mean()),
                "test_accuracy": float(ok_test.mean()),
                "source": summary,
                "global_score": float(np.mean([summary["strength"][i] - summary["fluctuation"][i] for i in deep])),
            }
        )
        correct_val.append(ok_val)
        correct_test.append(ok_test)
    x_ctx, _ = gather(-1, "val")
    return {"rows": rows, "correct_val": torch.stack(correct_val, 1), "correct_test": torch.stack(correct_test, 1), "context_val": x_ctx}


def hard_prompts(cfg: ConcentrateConfig, encoded: Mapping[int, Mapping[str, Any]], domains: Mapping[str, Domain]) -> dict[str, Any]:
    """Filter then match, for every split and seed (see the module notes)."""
    out: dict[str, Any] = {"splits": []}
    for target in cfg.targets:
        for s in range(cfg.seeds):
            seed = cfg.seed + s
            acc = _prompt_accuracies(encoded, domains, target, seed, cfg)
            rows = acc["rows"]
            kept = sorted(range(len(rows)), key=lambda i: (-rows[i]["global_score"], i))[: cfg.keep]
            best_val = max(range(len(rows)), key=lambda i: (rows[i]["val_accuracy"], -i))
            # contexts: the no-prompt [CLS] features, projected on the sources' top principal directions
            ctx_val = acc["context_val"].double()
            mean = ctx_val.mean(0)
            _, _, v = torch.linalg.svd(ctx_val - mean, full_matrices=False)
            proj = v[: cfg.bandit_dims].T

            def context(x: Tensor, mean: Tensor = mean, proj: Tensor = proj) -> Tensor:
                z = (x.double() - mean) @ proj
                return torch.cat([z / z.norm(dim=1, keepdim=True).clamp_min(1e-9), torch.ones(len(z), 1, dtype=torch.float64)], 1)

            theta = linucb(context(ctx_val), acc["correct_val"][:, kept], cfg.bandit_alpha, cfg.bandit_passes, seed)
            ctx_test = context(torch.from_numpy(encoded[-1]["domains"][target]["features"]))
            choice = torch.argmax(ctx_test @ theta.T, dim=1)
            chosen_correct = acc["correct_test"][:, kept].gather(1, choice[:, None]).squeeze(1)
            out["splits"].append(
                {
                    "target": target,
                    "seed": seed,
                    "prompts": rows,
                    "kept": kept,
                    "best_on_validation": best_val,
                    "selector_accuracy": float(chosen_correct.mean()),
                    "selector_choices": torch.bincount(choice, minlength=len(kept)).tolist(),
                    "random_kept_accuracy": float(acc["correct_test"][:, kept].mean()),
                    "best_single_accuracy": rows[best_val]["test_accuracy"],
                    "mean_pool_accuracy": float(np.mean([r["test_accuracy"] for r in rows])),
                    "oracle_single_accuracy": max(r["test_accuracy"] for r in rows),
                    "test_size": int(len(domains[target].labels)),
                }
            )
    return out


# -- 4. the quaternion link ---------------------------------------------------------------------------------


def quaternion_job(config: dict[str, Any], variant: str, with_losses: bool) -> dict[str, Any]:
    """The NLP chapter's quaternion Transformer with learned prompt tokens after ``<cls>``, on tweet polarity, one thread.

    ``quaternion_prompt`` new token ids follow ``<cls>``: their embeddings are the prompt (trained
    with the model). With ``with_losses`` both concentration losses (weights ``lambda_cs``,
    ``lambda_cf``, every layer deep) join the cross-entropy. Returns CS / CF per layer on held-out
    tweets, per Hamilton component (``components="each"``) and for the mean map.
    """
    cfg = ConcentrateConfig.from_dict(config)
    with torch_threads(1):
        started = time.perf_counter()
        tweets = load_tweets("polarity")
        n_train, n_eval = cfg.quaternion_train, cfg.quaternion_eval
        train_idx, eval_idx, _ = stratified_split(tweets.labels, (n_train / len(tweets.labels), n_eval / len(tweets.labels)), cfg.seed + 21)
        max_len, k = 32, cfg.quaternion_prompt
        tokenizer = Tokenizer.fit([tweets.texts[i] for i in train_idx], min_freq=2, max_size=8000, max_len=max_len)
        vocab = len(tokenizer)

        def tensors(idx: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
            ids, pad = tokenizer.encode([tweets.texts[i] for i in idx], length=max_len)
            ids, pad = torch.from_numpy(ids), torch.from_numpy(pad)
            prompt = torch.arange(vocab, vocab + k).expand(len(idx), k)
            ids = torch.cat([ids[:, :1], prompt, ids[:, 1:]], 1)
            pad = torch.cat([pad[:, :1], torch.zeros(len(idx), k, dtype=torch.bool), pad[:, 1:]], 1)
            return ids, pad, torch.from_numpy(tweets.labels[idx])

        train, held = tensors(train_idx), tensors(eval_idx)
        model = build_text_model(
            variant,
            width=64,
            vocab_size=vocab + k,
            num_classes=2,
            depth=2,
            num_heads=4,
            ffn_mult=2,
            dropout=0.1,
            max_len=max_len + k,
            generator=torch.Generator().manual_seed(cfg.seed + 31),
        )
        depth = len(model.encoder.blocks)
        prompt_mask = torch.zeros(max_len + k, dtype=torch.bool)
        prompt_mask[1 : 1 + k] = True
        order = torch.Generator().manual_seed(cfg.seed + 41)

        def batches():
            for _ in range(cfg.quaternion_steps):
                yield torch.randint(0, len(train[2]), (cfg.quaternion_batch,), generator=order)

        def loss_fn(m: nn.Module, idx: Tensor) -> StepLoss:
            ids, pad, y = train[0][idx], train[1][idx], train[2][idx]
            logits, maps = m(ids, pad, need_weights=with_losses)
            ce = F.cross_entropy(logits, y)
            if not with_losses:
                return StepLoss(ce, weight=float(len(idx)))
            text_mask = ~pad
            text_mask[:, : 1 + k] = False
            cs = strength_loss(maps, 0, text_mask, None, check_rows=False)
            cf = fluctuation_loss(maps, 0, prompt_mask, y, None, cfg.temperature, check_rows=False)
            return StepLoss(ce + cfg.lambda_cs * cs + cfg.lambda_cf * cf, weight=float(len(idx)))

        def validate(m: nn.Module) -> dict[str, Any]:
            logits, _ = m(held[0], held[1])
            return {"accuracy": float((logits.argmax(-1) == held[2]).double().mean())}

        loop = LoopConfig(
            steps=cfg.quaternion_steps,
            lr=cfg.quaternion_lr,
            optimizer="adamw",
            weight_decay=0.05,
            warmup_steps=10,
            decay="cosine",
            grad_clip=1.0,
            validate_at=(cfg.quaternion_steps,),
            dropout_seed=cfg.seed,
        )
        fit(model, batches(), loss_fn, validate, loop, select="accuracy", name=f"{variant} quaternion")
        with torch.no_grad():
            logits, maps = model(held[0], held[1], need_weights=True)
        each = strength_and_fluctuation(maps, 0, prompt_mask, components="each", check_rows=True)
        mean = strength_and_fluctuation(maps, 0, prompt_mask, components="mean", check_rows=True)
    return {
        "variant": variant,
        "with_losses": with_losses,
        "accuracy": float((logits.argmax(-1) == held[2]).double().mean()),
        "layers": depth,
        "strength_each": each["strength"].tolist(),  # (layers, 4)
        "fluctuation_each": each["fluctuation"].tolist(),
        "strength": mean["strength"].tolist(),
        "fluctuation": mean["fluctuation"].tolist(),
        "map_shape": list(maps[0].shape),
        "wall_s": time.perf_counter() - started,
    }


# -- 3. statistics: the pilot and the comparisons --------------------------------------------------------


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN if either side is constant.

    >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 25]), 3)
    0.8
    """

    def ranks(v: Sequence[float]) -> np.ndarray:
        a = np.asarray(v, dtype=float)
        order = a.argsort(kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=float)
        for value in np.unique(a):
            tie = a == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _bootstrap_spearman(x: Sequence[float], y: Sequence[float], draws: int, seed: int) -> dict[str, float]:
    """Spearman's ρ with a 95 % percentile bootstrap interval over the pairs (resampled together)."""
    x_a, y_a = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        idx = rng.integers(0, len(x_a), len(x_a))
        rho = spearman(x_a[idx], y_a[idx])
        if not math.isnan(rho):
            values.append(rho)
    rho = spearman(x_a, y_a)
    low, high = np.percentile(values, [2.5, 97.5]).tolist() if values else [float("nan")] * 2
    return {"rho": rho, "low": low, "high": high, "n": len(x_a)}


def _pilot(points: Sequence[Mapping[str, Any]], layers: int, cfg: ConcentrateConfig, key: str) -> dict[str, Any]:
    """ρ(CS_l, target accuracy) and ρ(CF_l, target accuracy) per layer, per split and pooled over splits (ranks within split).

    ``points``: dicts with ``target``, ``test_accuracy`` and ``key`` → {strength, fluctuation} per layer.
    """
    out: dict[str, Any] = {"per_split": {}, "pooled": {}}
    targets = sorted({p["target"] for p in points})
    for t in targets:
        mine = [p for p in points if p["target"] == t]
        acc = [p["test_accuracy"] for p in mine]
        out["per_split"][t] = {
            kind: [
                _bootstrap_spearman([p[key][kind][layer] for p in mine], acc, cfg.bootstrap, cfg.seed + layer) for layer in range(layers)
            ]
            for kind in ("strength", "fluctuation")
        }
    # pooled: mean of the per-split ρ, interval by resampling prompts within every split
    for kind in ("strength", "fluctuation"):
        rows = []
        for layer in range(layers):
            rhos = [out["per_split"][t][kind][layer]["rho"] for t in targets]
            rng = np.random.default_rng(cfg.seed + 100 + layer)
            draws = []
            for _ in range(cfg.bootstrap):
                vals = []
                for t in targets:
                    mine = [p for p in points if p["target"] == t]
                    idx = rng.integers(0, len(mine), len(mine))
                    vals.append(spearman([mine[i][key][kind][layer] for i in idx], [mine[i]["test_accuracy"] for i in idx]))
                vals = [v for v in vals if not math.isnan(v)]
                if vals:
                    draws.append(float(np.mean(vals)))
            finite = [r for r in rhos if not math.isnan(r)]
            low, high = np.percentile(draws, [2.5, 97.5]).tolist() if draws else [float("nan")] * 2
            rows.append({"rho": float(np.mean(finite)) if finite else float("nan"), "low": low, "high": high, "splits": len(finite)})
        out["pooled"][kind] = rows
    return out


def summarise(cfg: ConcentrateConfig, soft: Sequence[Mapping[str, Any]], hard: Mapping[str, Any], layers: int) -> dict[str, Any]:
    """Intervals of the soft-prompt comparisons, the losses' effect on CS/CF, hard-prompt comparisons, the pilot."""
    out: dict[str, Any] = {}
    by = {(r["target"], r["seed"], r["variant"]): r for r in soft}
    keys = sorted({(r["target"], r["seed"]) for r in soft})
    deep = list(cfg.deep_layers)

    def deep_mean(r: Mapping[str, Any], part: str, kind: str) -> float:
        return float(np.mean([r[part][kind][i] for i in deep]))

    table = {}
    for v in cfg.variants:
        mine = [by[k + (v,)] for k in keys]
        table[v] = {
            "target_accuracy": seed_interval([r["test_accuracy"] for r in mine]),
            "in_domain_accuracy": seed_interval([r["in_domain_accuracy"] for r in mine]),
            "strength_deep": seed_interval([deep_mean(r, "test", "strength") for r in mine]),
            "fluctuation_deep": seed_interval([deep_mean(r, "test", "fluctuation") for r in mine]),
            "per_target": {t: seed_interval([by[(t, s, v)]["test_accuracy"] for (tt, s) in keys if tt == t]) for t in cfg.targets},
        }
    out["soft_table"] = table
    comparisons = {}
    if "prompt_tuning" in cfg.variants:
        for v in cfg.variants:
            if v == "prompt_tuning":
                continue
            diff = [by[k + (v,)]["test_accuracy"] - by[k + ("prompt_tuning",)]["test_accuracy"] for k in keys]
            ind = [by[k + (v,)]["in_domain_accuracy"] - by[k + ("prompt_tuning",)]["in_domain_accuracy"] for k in keys]
            moves = {}
            for part in ("test", "in_domain"):
                ds = [deep_mean(by[k + (v,)], part, "strength") - deep_mean(by[k + ("prompt_tuning",)], part, "strength") for k in keys]
                dfl = [
                    deep_mean(by[k + (v,)], part, "fluctuation") - deep_mean(by[k + ("prompt_tuning",)], part, "fluctuation") for k in keys
                ]
                moves[part] = {
                    "strength": seed_interval(ds),
                    "fluctuation": seed_interval(dfl),
                    "strength_up_runs": int(sum(d > 0 for d in ds)),
                    "fluctuation_down_runs": int(sum(d < 0 for d in dfl)),
                    "runs": len(keys),
                }
            comparisons[v] = {"target_accuracy": seed_interval(diff), "in_domain_accuracy": seed_interval(ind), "moves": moves}
    out["soft_comparisons"] = comparisons
    splits = hard["splits"]
    out["hard_table"] = {
        key: seed_interval([s[key] for s in splits])
        for key in ("selector_accuracy", "random_kept_accuracy", "best_single_accuracy", "mean_pool_accuracy", "oracle_single_accuracy")
    }
    out["hard_comparisons"] = {
        "selector − random kept": seed_interval([s["selector_accuracy"] - s["random_kept_accuracy"] for s in splits]),
        "selector − best single (validation)": seed_interval([s["selector_accuracy"] - s["best_single_accuracy"] for s in splits]),
        "random kept − pool mean": seed_interval([s["random_kept_accuracy"] - s["mean_pool_accuracy"] for s in splits]),
    }
    # the pilot: hard prompts (accuracy averaged over seeds per prompt and split), trained soft prompts
    hard_points = []
    for t in cfg.targets:
        mine = [s for s in splits if s["target"] == t]
        for i in range(len(mine[0]["prompts"])):
            rows = [s["prompts"][i] for s in mine]
            hard_points.append(
                {
                    "target": t,
                    "prompt": i,
                    "test_accuracy": float(np.mean([r["test_accuracy"] for r in rows])),
                    "source": {kind: np.mean([r["source"][kind] for r in rows], axis=0).tolist() for kind in ("strength", "fluctuation")},
                }
            )
    soft_points = [{"target": r["target"], "test_accuracy": r["test_accuracy"], "source": r["in_domain"]} for r in soft]
    out["pilot"] = {
        "hard": _pilot(hard_points, layers, cfg, "source"),
        "soft": _pilot(soft_points, layers, cfg, "source"),
        "hard_points": hard_points,
    }
    return out


# -- run ----------------------------------------------------------------------------------------------


def _headlines(m: dict[str, Any], cfg: ConcentrateConfig) -> list[dict[str, Any]]:
    s = m["summary"]
    rows = []
    for v, t in s["soft_table"].items():
        rows.append(
            headline(
                f"soft prompts, {v}: target accuracy",
                t["target_accuracy"]["mean"],
                0.05,
                kind="relative",
                note=f"mean over {t['target_accuracy']['seeds']} (split, seed) runs",
            )
        )
    for v, c in s["soft_comparisons"].items():
        ta = c["target_accuracy"]
        rows.append(
            headline(
                f"soft prompts, {v} − prompt tuning: target accuracy difference",
                ta["mean"],
                0.05,
                note=f"95% t interval [{ta['low']:.4f}, {ta['high']:.4f}] over {ta['seeds']} paired runs",
            )
        )
        rows.append(headline(f"soft prompts, {v} − prompt tuning: lower end of the 95% interval", ta["low"], 0.05))
        rows.append(headline(f"soft prompts, {v} − prompt tuning: upper end of the 95% interval", ta["high"], 0.05))
        for part, where in (("test", "target"), ("in_domain", "in-domain")):
            mv = c["moves"][part]
            rows.append(
                headline(
                    f"soft prompts, {v}: share of runs whose deep-layer strength rose, {where} inputs",
                    mv["strength_up_runs"] / mv["runs"],
                    0.0,
                    note=f"{mv['strength_up_runs']} of {mv['runs']} paired runs",
                )
            )
            rows.append(
                headline(
                    f"soft prompts, {v}: share of runs whose deep-layer fluctuation fell, {where} inputs",
                    mv["fluctuation_down_runs"] / mv["runs"],
                    0.0,
                    note=f"{mv['fluctuation_down_runs']} of {mv['runs']} paired runs",
                )
            )
    for key, c in s["hard_comparisons"].items():
        rows.append(
            headline(
                f"hard prompts, {key}: target accuracy difference",
                c["mean"],
                0.05,
                note=f"95% t interval [{c['low']:.4f}, {c['high']:.4f}]",
            )
        )
        rows.append(headline(f"hard prompts, {key}: lower end of the 95% interval", c["low"], 0.05))
    deep = cfg.deep_layers[-1]
    for family in ("hard", "soft"):
        for kind in ("strength", "fluctuation"):
            p = s["pilot"][family]["pooled"][kind][deep]
            rows.append(
                headline(
                    f"pilot, {family} prompts: Spearman ρ of {kind} (layer {deep + 1}) with target accuracy",
                    p["rho"],
                    0.3,
                    note=f"mean over splits, bootstrap 95% [{p['low']:.2f}, {p['high']:.2f}]",
                )
            )
            end, value = ("lower", p["low"]) if kind == "strength" else ("upper", p["high"])
            rows.append(headline(f"pilot, {family} prompts: {end} end of the 95% interval of ρ({kind}, layer {deep + 1})", value, 0.3))
    for q in m["quaternion_link"]:
        label = f"quaternion link, {q['variant']}{' + losses' if q['with_losses'] else ''}"
        rows.append(headline(f"{label}: last-layer strength", q["strength"][-1], 0.3, kind="relative"))
    return rows


def _pool(cfg: ConcentrateConfig) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=multiprocessing.get_context("spawn"))


def run(config: ConcentrateConfig | Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """All four parts (see the module notes); returns JSON-serialisable metrics."""
    cfg = ConcentrateConfig.coerce(config)
    unknown = [v for v in cfg.variants if v not in SOFT_VARIANTS]
    bad_targets = [t for t in cfg.targets if t not in DOMAINS]
    if unknown or bad_targets:
        raise ValueError(f"variants must come from {tuple(SOFT_VARIANTS)} and targets from {DOMAINS}; got {unknown + bad_targets}")
    if not 1 <= cfg.hard_prompts <= len(HARD_PROMPTS) or not 1 <= cfg.keep <= cfg.hard_prompts:
        raise ValueError(f"need 1 ≤ keep ≤ hard_prompts ≤ {len(HARD_PROMPTS)}, got keep={cfg.keep}, hard_prompts={cfg.hard_prompts}")
    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    domains = load_domains(cfg)
    metrics["data"] = {
        name: {"size": len(d.labels), "negative": int((d.labels == 0).sum()), "positive": int((d.labels == 1).sum())}
        for name, d in domains.items()
    }
    jobs_soft = [(t, cfg.seed + s, v) for s in range(cfg.seeds) for t in cfg.targets for v in cfg.variants]
    jobs_hard = list(range(-1, cfg.hard_prompts))
    jobs_q = [(v, w) for v in ("shared", "hamilton") for w in (False, True)]
    soft: list[dict[str, Any]] = []
    encoded: dict[int, dict[str, Any]] = {}
    quaternion: list[dict[str, Any]] = []
    total = len(jobs_soft) + len(jobs_hard) + len(jobs_q)
    with _pool(cfg) as pool:
        futures: dict[concurrent.futures.Future, tuple[str, Any]] = {}
        for index in jobs_hard:
            futures[pool.submit(hard_prompt_job, cfg.to_dict(), index)] = ("hard", index)
        for job in jobs_q:
            futures[pool.submit(quaternion_job, cfg.to_dict(), *job)] = ("quaternion", job)
        for job in jobs_soft:
            futures[pool.submit(soft_prompt_job, cfg.to_dict(), *job)] = ("soft", job)
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            kind, job = futures[future]
            r = future.result()
            elapsed = time.perf_counter() - started
            if kind == "hard":
                encoded[job] = r
                what = "no prompt" if job < 0 else f"hard prompt {job} ({r['tokens']} tokens)"
                log(
                    f"[concentrate_attention] ({done}/{total}) encoded every domain under {what} "
                    f"({r['wall_s']:.0f} s; {elapsed:.0f} s in all)"
                )
            elif kind == "quaternion":
                quaternion.append(r)
                log(
                    f"[concentrate_attention] ({done}/{total}) quaternion link {job}: accuracy {r['accuracy']:.3f}, "
                    f"strength per layer {[round(x, 3) for x in r['strength']]} ({r['wall_s']:.0f} s)"
                )
            else:
                soft.append(r)
                log(
                    f"[concentrate_attention] ({done}/{total}) soft {r['variant']} → {r['target']} seed {r['seed']}: "
                    f"target {r['test_accuracy']:.3f}, in-domain {r['in_domain_accuracy']:.3f}, "
                    f"deep strength {np.mean([r['test']['strength'][i] for i in cfg.deep_layers]):.3f} "
                    f"({r['wall_s']:.0f} s; {elapsed:.0f} s in all)"
                )
    soft.sort(key=lambda r: (r["target"], r["seed"], r["variant"]))
    quaternion.sort(key=lambda r: (r["variant"], r["with_losses"]))
    layers = len(soft[0]["test"]["strength"])
    metrics["soft"] = soft
    metrics["hard"] = hard_prompts(cfg, encoded, domains)
    metrics["hard"]["prompts"] = [{"text": HARD_PROMPTS[i], "tokens": encoded[i]["tokens"]} for i in range(cfg.hard_prompts)]
    metrics["quaternion_link"] = quaternion
    metrics["summary"] = summarise(cfg, soft, metrics["hard"], layers)
    metrics["layers"] = layers
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["headline"] = _headlines(metrics, cfg)
    return metrics
