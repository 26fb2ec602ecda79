"""Multi-linear attention (MAN, our reconstruction): the ARF approximation, its cost, and a trimodal task.

Four parts, one :func:`run`:

1. **Approximation** (:func:`approximation`): on random attention factors, the relative error of
   ARF's joint feature ``z`` and of each modality's marginal attention (``α_m(i)``, the weights
   summed over the other modalities; L1 distance) against the exact multi-linear attention, for
   ``R`` random features, ``M ∈ {2, 3, 4}`` modalities (the same number of index tuples each),
   i.i.d. and orthogonal features; mean over feature draws; the log-log slope against ``R``.
2. **Cost** (:func:`scaling`): forward time (interleaved) and peak memory (fresh process) of exact
   and ARF attention for ``M = 3`` against the length of every modality; exact attention only
   while its ``L³`` tuples stay under a declared budget.
3. **The quaternion link** (:func:`quaternion_link`): with shared quaternion scores a tuple's
   exponent ``Σ_{m<n} Re(s^m ⊗ conj(s^n))`` is a sum of real dot products, which ARF factorises; a
   trilinear quaternion score ``Re(s¹ ⊗ s² ⊗ s³)`` is not a sum of pairwise terms (SymPy: a mixed
   third derivative is non-zero), so ARF of the pairwise kernel converges to a DIFFERENT attention.
4. **The trimodal task** (:func:`trimodal`, :mod:`qattn.book.data.trimodal`): seven fusion models
   (:mod:`qattn.book.models.multimodal`), aligned and shifted variants, ``seeds`` seeds each,
   trained with :func:`qattn.book.harness.training.fit` (L1 loss, model selection on validation
   MAE only), tested once; metrics of the multimodal sentiment literature (MAE, Pearson r, binary
   and 7-class accuracy, weighted F1); paired differences over seeds with Student-t intervals; and
   for the first seed's exact MAN with the local constraint, its test error when ARF with ``R``
   features replaces the exact attention at inference.

The identity ARF rests on is checked symbolically by ``proofs/arf_identity.py``, run here too.

>>> config_for("ci").seeds
2
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
import sympy as sp
import torch
from torch import Tensor, nn

from proofs import arf_identity
from qattn.attention.multilinear import arf_multilinear_attention, draw_features, multilinear_attention
from qattn.book.data.trimodal import TrimodalSet, TrimodalSpec, make_trimodal, seven_class
from qattn.book.harness.config import ExperimentConfig, choice
from qattn.book.harness.memory import peak_memory
from qattn.book.harness.timing import summary, time_interleaved
from qattn.book.harness.training import LoopConfig, StepLoss, evenly_spaced, fit, torch_threads
from qattn.book.headline import headline
from qattn.book.models.multimodal import FUSION_MODELS, build_fusion_model, count_parameters
from qattn.book.stats import seed_interval
from qattn.quaternion import conj, hamilton, split

__all__ = [
    "MultilinearConfig",
    "config_for",
    "run",
    "approximation",
    "scaling",
    "quaternion_link",
    "trimodal",
    "trimodal_job",
    "arf_marginals",
    "exact_marginals",
    "sentiment_metrics",
    "scaling_workload",
    "COMPARISONS",
]

#: The paired comparisons of the trimodal task, declared before the runs: (name, model a, model b);
#: the difference is a − b in test MAE (negative: a is better), paired by seed.
COMPARISONS = (
    ("M-way (exact, local) − pairwise BAN", "man_local", "pairwise_ban"),
    ("M-way (exact) − pairwise BAN", "man", "pairwise_ban"),
    ("local constraint, exact: with − without", "man_local", "man"),
    ("local constraint, ARF: with − without", "man_arf_local", "man_arf"),
    ("M-way (exact, local) − early-fusion LSTM", "man_local", "early_fusion_lstm"),
)


@dataclass(frozen=True)
class MultilinearConfig(ExperimentConfig):
    """Everything that defines the chapter's run (see the module notes for the four parts)."""

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {},
        "ci": {
            "approx_features": (8, 32, 128),
            "approx_modalities": (2, 3),
            "approx_draws": 4,
            "scaling_lengths": (8, 32, 128),
            "scaling_repeats": 3,
            "link_features": (8, 64),
            "link_draws": 2,
            "approx_score_scales": (0.5,),
            "models": ("pairwise_ban", "man", "man_local"),
            "train_size": 600,
            "val_size": 200,
            "test_size": 300,
            "seeds": 2,
            "steps": 30,
            "validations": 2,
            "inference_features": (64, 256),
        },
    }

    profile: str = "full"
    seed: int = 0
    threads: int | None = 2
    workers: int = 2
    # 1. approximation
    approx_modalities: tuple[int, ...] = choice((2, 3, 4), (2, 3, 4))
    approx_tuples: int = 4096
    approx_features: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    approx_draws: int = 16
    approx_batch: int = 4
    approx_rank: int = 16
    approx_joint: int = 8
    approx_score_scales: tuple[float, ...] = (0.5, 1.0)
    # 2. cost
    scaling_lengths: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    scaling_exact_max_tuples: int = 2**24
    scaling_features: int = 256
    scaling_rank: int = 16
    scaling_joint: int = 16
    scaling_repeats: int = 5
    # 3. quaternion link
    link_length: int = 12
    link_units: int = 4
    link_features: tuple[int, ...] = (8, 32, 128, 512, 2048, 8192)
    link_draws: int = 8
    # 4. trimodal task
    shift: int = 3
    train_size: int = 4000
    val_size: int = 1000
    test_size: int = 2000
    models: tuple[str, ...] = choice(FUSION_MODELS, FUSION_MODELS)
    seeds: int = 5
    hidden: int = 32
    joint: int = 16
    rank: int = 16
    features: int = 256
    lmf_rank: int = 4
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    validations: int = 8
    inference_features: tuple[int, ...] = (64, 256, 1024, 4096)


def config_for(profile: str, seed: int = 0, **overrides: Any) -> MultilinearConfig:
    """The configuration of ``profile`` (``"ci"`` or ``"full"``), with optional overrides."""
    return MultilinearConfig.for_profile(profile, seed, **overrides)


# -- 1. approximation ---------------------------------------------------------------------------


def exact_marginals(scores: Sequence[Tensor]) -> list[Tensor]:
    """Each modality's marginal of the exact joint weights: ``α_m (B, L_m)``."""
    fusion = [torch.ones(s.shape[0], s.shape[1], 1, dtype=s.dtype) for s in scores]
    _, weights = multilinear_attention(fusion, scores, need_weights=True)
    assert weights is not None
    m = len(scores)
    return [weights.sum(dim=tuple(a + 1 for a in range(m) if a != i)) for i in range(m)]


def arf_marginals(scores: Sequence[Tensor], features: Tensor) -> list[Tensor]:
    """ARF estimates of each modality's marginal attention ``α_m (B, L_m)``, stabilised as the ARF core.

    ``α_m(i) ∝ (1/R) Σ_ω φ_ω(x_{m,i}) Π_{n≠m} Σ_j φ_ω(x_{n,j})``, normalised over ``i``.
    """
    r = scores[0].shape[-1]
    omega = features.to(scores[0].dtype)
    logs = []
    for s in scores:
        x = s * r**-0.25
        logs.append(x @ omega.T - 0.5 * x.pow(2).sum(-1, keepdim=True))  # (B, L, R)
    tops = [lp.max(1, keepdim=True).values for lp in logs]
    exps = [torch.exp(lp - c) for lp, c in zip(logs, tops)]
    sums = [e.sum(1) for e in exps]  # (B, R)
    total = torch.stack([c[:, 0] for c in tops]).sum(0)  # (B, R)
    weight = torch.exp(total - total.max(-1, keepdim=True).values)
    out = []
    for i, e in enumerate(exps):
        others = math.prod(sums[j] for j in range(len(exps)) if j != i) * weight  # (B, R)
        marginal = torch.einsum("blr,br->bl", e, others)
        out.append(marginal / marginal.sum(-1, keepdim=True))
    return out


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def approximation(cfg: MultilinearConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """ARF's relative errors against exact attention, per ``M``, score scale, ``R`` and feature kind (see the module notes).

    The attention factors are Gaussian with standard deviation ``scale`` per component: at
    ``scale = 1`` and rank ``r`` the pairwise logits have standard deviation about 1; the variance of
    ARF's estimates grows like ``exp(‖Σ_m x_m‖²)``, so larger scores need many more features.
    """
    rows: list[dict[str, Any]] = []
    slopes: dict[str, float] = {}
    b, r, k = cfg.approx_batch, cfg.approx_rank, cfg.approx_joint
    for m in cfg.approx_modalities:
        length = round(cfg.approx_tuples ** (1 / m))
        for scale in cfg.approx_score_scales:
            gen = torch.Generator().manual_seed(cfg.seed + 100 + m)
            fusion = [torch.rand(b, length, k, generator=gen, dtype=torch.float64) for _ in range(m)]
            scores = [scale * torch.randn(b, length, r, generator=gen, dtype=torch.float64) for _ in range(m)]
            z, _ = multilinear_attention(fusion, scores)
            marginals = exact_marginals(scores)
            for orthogonal in (False, True):
                kind = "orthogonal" if orthogonal else "iid"
                for n in cfg.approx_features:
                    z_err, m_err = [], []
                    for draw in range(cfg.approx_draws):
                        gen_f = torch.Generator().manual_seed(cfg.seed + 10_000 * m + 97 * draw + n)
                        features = draw_features(r, n, gen_f, orthogonal, dtype=torch.float64)
                        approx = arf_multilinear_attention(fusion, scores, features)
                        z_err.append(float(((approx - z).norm(dim=-1) / z.norm(dim=-1)).mean()))
                        est = arf_marginals(scores, features)
                        m_err.append(float(np.mean([(e - t).abs().sum(-1).mean().item() for e, t in zip(est, marginals)])))
                    rows.append(
                        {
                            "modalities": m,
                            "length": length,
                            "scale": scale,
                            "features": n,
                            "kind": kind,
                            "z_error": float(np.mean(z_err)),
                            "marginal_error": float(np.mean(m_err)),
                        }
                    )
                mine = [row for row in rows if row["modalities"] == m and row["kind"] == kind and row["scale"] == scale]
                slopes[f"M={m}, {kind}, score scale {scale}"] = _slope([row["features"] for row in mine], [row["z_error"] for row in mine])
            top = [row for row in rows if row["modalities"] == m and row["scale"] == scale and row["features"] == cfg.approx_features[-1]]
            log(
                f"[multilinear_attention] approximation M={m} (L={length}), scale {scale}: z error at R={cfg.approx_features[-1]} "
                + ", ".join(f"{row['kind']} {row['z_error']:.4f}" for row in top)
            )
    return {"rows": rows, "slopes": slopes}


# -- 2. cost ------------------------------------------------------------------------------------


def _scaling_inputs(cfg: MultilinearConfig, length: int) -> tuple[list[Tensor], list[Tensor], Tensor]:
    gen = torch.Generator().manual_seed(cfg.seed + 7 + length)
    fusion = [torch.rand(1, length, cfg.scaling_joint, generator=gen) for _ in range(3)]
    scores = [torch.randn(1, length, cfg.scaling_rank, generator=gen) for _ in range(3)]
    features = draw_features(cfg.scaling_rank, cfg.scaling_features, gen)
    return fusion, scores, features


def _scaling_call(variant: str, fusion: list[Tensor], scores: list[Tensor], features: Tensor) -> Tensor:
    if variant == "exact":
        return multilinear_attention(fusion, scores)[0]
    return arf_multilinear_attention(fusion, scores, features)


def scaling_workload(variant: str, length: int, config: dict[str, Any]) -> Callable[[], Any]:
    """The memory probe's workload (:func:`qattn.book.harness.memory.peak_memory`): inputs built, one forward to measure."""
    cfg = MultilinearConfig.from_dict(config)
    fusion, scores, features = _scaling_inputs(cfg, length)

    def call() -> None:
        with torch.inference_mode():
            _scaling_call(variant, fusion, scores, features)

    return call


def scaling(cfg: MultilinearConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Forward time and peak memory of exact and ARF multi-linear attention, ``M = 3``, against the length."""
    rows: list[dict[str, Any]] = []
    for n in cfg.scaling_lengths:
        fusion, scores, features = _scaling_inputs(cfg, n)
        variants = ["arf"] + (["exact"] if n**3 <= cfg.scaling_exact_max_tuples else [])
        with torch.inference_mode():
            stats = time_interleaved(
                {v: (lambda v=v, f=fusion, s=scores, w=features: _scaling_call(v, f, s, w)) for v in variants},
                repeats=cfg.scaling_repeats,
                warmup=1,
                min_time_s=0.05,
                max_repeats=50,
            )
        timed = summary(stats)
        for v in variants:
            probe = peak_memory(
                "qattn.book.experiments.multilinear_attention:scaling_workload",
                {"variant": v, "length": n, "config": cfg.to_dict()},
                threads=cfg.threads,
            )
            rows.append({"length": n, "variant": v, **timed[v], "memory": probe})
        log(
            f"[multilinear_attention] cost L={n}: "
            + ", ".join(
                f"{row['variant']} {1e3 * row['median_s']:.2f} ms, {row['memory'].get('peak_bytes', 0) / 2**20:.1f} MiB"
                for row in rows
                if row["length"] == n
            )
        )

    def exponent(variant: str, key: Callable[[dict[str, Any]], float], start: int) -> float | None:
        mine = [row for row in rows if row["variant"] == variant and row["length"] >= start]
        return _slope([row["length"] for row in mine], [key(row) for row in mine]) if len(mine) >= 2 else None

    longest = max(cfg.scaling_lengths)
    tail = sorted(cfg.scaling_lengths)[len(cfg.scaling_lengths) // 2]  # fit over the upper half of the lengths
    exact_lengths = [row["length"] for row in rows if row["variant"] == "exact"]
    return {
        "rows": rows,
        "fit_from": tail,
        "arf_time_exponent": exponent("arf", lambda row: row["median_s"], tail),
        "exact_time_exponent": exponent("exact", lambda row: row["median_s"], min(tail, max(exact_lengths) // 2))
        if exact_lengths
        else None,
        "longest_exact": max(exact_lengths) if exact_lengths else None,
        "longest": longest,
    }


# -- 3. the quaternion link -----------------------------------------------------------------------


def _quaternion_symbols(name: str) -> list[sp.Symbol]:
    return list(sp.symbols(f"{name}0:4", real=True))


def _sym_hamilton(p: Sequence[sp.Expr], q: Sequence[sp.Expr]) -> list[sp.Expr]:
    p0, p1, p2, p3 = p
    q0, q1, q2, q3 = q
    return [
        p0 * q0 - p1 * q1 - p2 * q2 - p3 * q3,
        p0 * q1 + p1 * q0 + p2 * q3 - p3 * q2,
        p0 * q2 - p1 * q3 + p2 * q0 + p3 * q1,
        p0 * q3 + p1 * q2 - p2 * q1 + p3 * q0,
    ]


def pairwise_separability() -> dict[str, Any]:
    """Is a score a sum of pairwise terms? ``f(p, q, r)`` is one iff every mixed third derivative
    ``∂³f / ∂p_a ∂q_b ∂r_c`` vanishes. Checked symbolically for the shared pairwise sum
    ``Re(p q̄) + Re(p r̄) + Re(q r̄)`` (all 64 vanish) and the trilinear ``Re(p ⊗ q ⊗ r)`` (they do not)."""
    p, q, r = _quaternion_symbols("p"), _quaternion_symbols("q"), _quaternion_symbols("r")

    def re_conj(a: Sequence[sp.Expr], b: Sequence[sp.Expr]) -> sp.Expr:
        return sum(x * y for x, y in zip(a, b))

    shared = re_conj(p, q) + re_conj(p, r) + re_conj(q, r)
    trilinear = _sym_hamilton(_sym_hamilton(p, q), r)[0]

    def nonzero(f: sp.Expr) -> int:
        return sum(1 for a in p for b in q for c in r if sp.simplify(sp.diff(f, a, b, c)) != 0)

    return {
        "trilinear_expression": str(sp.expand(trilinear)),
        "shared_nonzero_third_derivatives": nonzero(shared),
        "trilinear_nonzero_third_derivatives": nonzero(trilinear),
        "derivatives": 64,
    }


def trilinear_logits(quats: Sequence[Tensor]) -> Tensor:
    """``Σ_units Re(s¹_i ⊗ s²_j ⊗ s³_k) / √(4·units)`` for all tuples: ``(B, L_1, L_2, L_3)``; ``quats[m] (B, L_m, 4·units)`` blocked."""
    p, q, r = quats
    pq = hamilton(p[:, :, None, :], q[:, None, :, :])  # (B, L1, L2, 4u)
    # Re(a ⊗ b) = Σ_c a_c · conj(b)_c
    logits = torch.einsum("bijcu,bkcu->bijk", split(pq), split(conj(r)))
    return logits / math.sqrt(p.shape[-1])


def quaternion_link(cfg: MultilinearConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """ARF on shared quaternion scores (it converges) and against a trilinear quaternion score (it cannot)."""
    gen = torch.Generator().manual_seed(cfg.seed + 31)
    b, n, units = cfg.approx_batch, cfg.link_length, cfg.link_units
    quats = [0.6 * torch.randn(b, n, 4 * units, generator=gen, dtype=torch.float64) for _ in range(3)]
    fusion = [torch.rand(b, n, cfg.approx_joint, generator=gen, dtype=torch.float64) for _ in range(3)]
    # shared scores: the pairwise exponent Σ Re(s^m ⊗ conj(s^n)) / √(4u) is a dot product of the flattened factors
    z_shared, _ = multilinear_attention(fusion, quats)
    logits = trilinear_logits(quats).reshape(b, -1)
    weights = torch.softmax(logits, -1).reshape(b, n, n, n)
    z_trilinear = torch.einsum("bxyz,bxk,byk,bzk->bk", weights, *fusion)
    rows = []
    for count in cfg.link_features:
        errors_shared, errors_trilinear = [], []
        for draw in range(cfg.link_draws):
            features = draw_features(
                4 * units, count, torch.Generator().manual_seed(cfg.seed + 500 + 13 * draw + count), dtype=torch.float64
            )
            approx = arf_multilinear_attention(fusion, quats, features)
            errors_shared.append(float(((approx - z_shared).norm(dim=-1) / z_shared.norm(dim=-1)).mean()))
            errors_trilinear.append(float(((approx - z_trilinear).norm(dim=-1) / z_trilinear.norm(dim=-1)).mean()))
        rows.append({"features": count, "shared_error": float(np.mean(errors_shared)), "trilinear_error": float(np.mean(errors_trilinear))})
    gap = float(((z_shared - z_trilinear).norm(dim=-1) / z_trilinear.norm(dim=-1)).mean())
    separability = pairwise_separability()
    log(
        f"[multilinear_attention] quaternion link: ARF error at R={rows[-1]['features']}: shared {rows[-1]['shared_error']:.4f}, "
        f"trilinear {rows[-1]['trilinear_error']:.4f} (exact shared vs trilinear: {gap:.4f}); mixed third derivatives non-zero: "
        f"shared {separability['shared_nonzero_third_derivatives']}, trilinear {separability['trilinear_nonzero_third_derivatives']} of 64"
    )
    return {
        "rows": rows,
        "exact_gap": gap,
        "shared_slope": _slope([row["features"] for row in rows], [row["shared_error"] for row in rows]),
        "trilinear_slope": _slope([row["features"] for row in rows], [row["trilinear_error"] for row in rows]),
        "separability": separability,
    }


# -- 4. the trimodal task -------------------------------------------------------------------------


def sentiment_metrics(prediction: Tensor, label: Tensor) -> dict[str, float]:
    """MAE, Pearson r, binary accuracy and weighted F1 (positive vs negative, examples labelled 0 left out) and
    7-class accuracy (rounded scores in [−3, 3]), as the multimodal sentiment literature reports them."""
    p, y = prediction.double(), label.double()
    mae = float((p - y).abs().mean())
    pearson = float(torch.corrcoef(torch.stack([p, y]))[0, 1]) if p.std() > 0 else 0.0
    nonzero = y != 0
    truth, guess = y[nonzero] > 0, p[nonzero] > 0
    accuracy2 = float((truth == guess).double().mean())
    f1 = 0.0
    for positive in (True, False):
        t, g = truth == positive, guess == positive
        tp = float((t & g).sum())
        precision = tp / max(float(g.sum()), 1.0)
        recall = tp / max(float(t.sum()), 1.0)
        f1 += (2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0) * float(t.double().mean())
    accuracy7 = float((seven_class(p) == seven_class(y)).double().mean())
    return {"mae": mae, "pearson": pearson, "accuracy2": accuracy2, "f1": f1, "accuracy7": accuracy7}


@torch.no_grad()
def _predict(model: nn.Module, data: TrimodalSet, batch: int = 500) -> Tensor:
    model.eval()
    return torch.cat([model([x[i : i + batch] for x in data.inputs]) for i in range(0, len(data), batch)])


def _train(
    cfg: MultilinearConfig, name: str, seed: int, train: TrimodalSet, val: TrimodalSet, log: Callable[[str], None]
) -> tuple[nn.Module, dict[str, Any]]:
    spec = TrimodalSpec()
    model = build_fusion_model(
        name,
        spec.widths,
        spec.length,
        seed,
        hidden=cfg.hidden,
        joint=cfg.joint,
        rank=cfg.rank,
        features=cfg.features,
        lmf_rank=cfg.lmf_rank,
    )
    order = torch.Generator().manual_seed(seed + 77)  # the same batches for every model of this seed

    def batches():
        for _ in range(cfg.steps):
            yield torch.randint(0, len(train), (cfg.batch_size,), generator=order)

    def loss_fn(m: nn.Module, idx: Tensor) -> StepLoss:
        xs, y = train.take(idx)
        return StepLoss((m(xs) - y).abs().mean(), weight=float(len(idx)))

    def validate(m: nn.Module) -> dict[str, Any]:
        return {"neg_val_mae": -float((_predict(m, val) - val.labels).abs().mean())}

    loop = LoopConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        optimizer="adam",
        warmup_steps=cfg.warmup_steps,
        decay="cosine",
        grad_clip=1.0,
        validate_at=evenly_spaced(cfg.steps, cfg.validations),
        dropout_seed=seed,
    )
    result = fit(model, batches(), loss_fn, validate, loop, select="neg_val_mae", log=None, name=f"{name} seed {seed}")
    curve = [{"step": h["step"], "val_mae": -h["neg_val_mae"], "train_loss": h["train_loss"]} for h in result.history]
    return model, {
        "curve": curve,
        "best_step": result.best_step,
        "train_time_s": result.train_time_s,
        "parameters": count_parameters(model),
    }


def _joint_mass(model: nn.Module, data: TrimodalSet, limit: int = 500) -> float | None:
    """Mean exact attention weight on the joint event's tuple (MAN models), or None."""
    attention = getattr(model, "attention", None)
    if attention is None or len(attention) != 1:
        return None
    att = attention[0]
    xs = [enc(x[:limit]) for enc, x in zip(model.encoders, data.inputs)]
    with torch.no_grad():
        fusion, scores = att.factors(xs)
        _, weights = multilinear_attention(fusion, scores, need_weights=True)
    t = data.event_times[:limit, 0]
    rows = torch.arange(len(t))
    assert weights is not None
    return float(weights[rows, t[:, 0], t[:, 1], t[:, 2]].mean())


@torch.no_grad()
def _with_arf(model: nn.Module, data: TrimodalSet, count: int, seed: int) -> dict[str, float]:
    """Test metrics of a trained exact MAN model whose attention is replaced by ARF with ``count`` features."""
    att = model.attention[0]
    xs = [enc(x) for enc, x in zip(model.encoders, data.inputs)]
    fusion, scores = att.factors(xs)
    exact, _ = multilinear_attention(fusion, scores)
    features = draw_features(att.rank, count, torch.Generator().manual_seed(seed))
    approx = arf_multilinear_attention(fusion, scores, features)
    prediction = model.head(approx)[:, 0]
    out = sentiment_metrics(prediction, data.labels)
    out["z_error"] = float(((approx - exact).norm(dim=-1) / exact.norm(dim=-1).clamp(min=1e-12)).mean())
    return out


@functools.lru_cache(maxsize=8)
def _task_split(n: int, seed: int, shift: int) -> TrimodalSet:
    """One split of the task, generated once per process (the jobs of a worker share it)."""
    return make_trimodal(n, seed, shift)


def _splits(cfg: MultilinearConfig, shift: int) -> tuple[TrimodalSet, TrimodalSet, TrimodalSet]:
    return (
        _task_split(cfg.train_size, cfg.seed + 1, shift),
        _task_split(cfg.val_size, cfg.seed + 2, shift),
        _task_split(cfg.test_size, cfg.seed + 3, shift),
    )


def trimodal_job(config: dict[str, Any], shift: int, seed: int, name: str, swap_arf: bool) -> dict[str, Any]:
    """One training run of the task, on one thread: the unit :func:`trimodal` spreads over worker processes.

    Returns the run's record (curve, selection, test metrics, weight on the joint event) and, with
    ``swap_arf``, the test metrics of the trained model with ARF swapped in at inference.
    """
    cfg = MultilinearConfig.from_dict(config)
    with torch_threads(1):
        train, val, test = _splits(cfg, shift)
        started = time.perf_counter()
        model, info = _train(cfg, name, seed, train, val, print)
        metrics = sentiment_metrics(_predict(model, test), test.labels)
        record = {"model": name, "seed": seed, **info, "test": metrics, "joint_mass": _joint_mass(model, test)}
        record["wall_s"] = time.perf_counter() - started
        swapped = [{"features": n, **_with_arf(model, test, n, cfg.seed + 900 + n)} for n in cfg.inference_features] if swap_arf else []
    return {"record": record, "arf_inference": swapped}


def trimodal(cfg: MultilinearConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every model on the aligned and the shifted task, ``seeds`` seeds each (see the module notes).

    The runs are independent and single-threaded (these small models run faster on one thread than
    on two); ``workers`` processes run them side by side. Every run is seeded by its own
    (seed, model), so the results do not depend on how the runs are scheduled.
    """
    out: dict[str, Any] = {"variants": {}}
    variants = (("aligned", 0), ("shifted", cfg.shift))
    jobs = [(variant, shift, cfg.seed + index, name) for variant, shift in variants for index in range(cfg.seeds) for name in cfg.models]
    results: dict[tuple[str, int, str], dict[str, Any]] = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=context) as pool:
        futures = {
            pool.submit(trimodal_job, cfg.to_dict(), shift, seed, name, seed == cfg.seed and name == "man_local"): (variant, seed, name)
            for variant, shift, seed, name in jobs
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            variant, seed, name = futures[future]
            results[(variant, seed, name)] = future.result()
            rec = results[(variant, seed, name)]["record"]
            mass = rec["joint_mass"]
            log(
                f"[multilinear_attention] ({done}/{len(jobs)}) {variant} seed {seed} {name}: MAE {rec['test']['mae']:.3f}, "
                f"Acc-2 {rec['test']['accuracy2']:.3f}, r {rec['test']['pearson']:.3f}"
                + (f", joint-event mass {mass:.3f}" if mass is not None else "")
                + f" ({rec['wall_s']:.0f} s)"
            )
    for variant, shift in variants:
        train, _, test = _splits(cfg, shift)
        runs = [results[(v, s, n)]["record"] for v, _, s, n in jobs if v == variant]
        arf_inference = next(
            (results[(v, s, n)]["arf_inference"] for v, _, s, n in jobs if v == variant and results[(v, s, n)]["arf_inference"]), []
        )
        summary_rows: dict[str, Any] = {}
        for name in cfg.models:
            mine = [r for r in runs if r["model"] == name]
            summary_rows[name] = {
                key: seed_interval([r["test"][key] for r in mine]) for key in ("mae", "pearson", "accuracy2", "accuracy7", "f1")
            } | {"parameters": mine[0]["parameters"], "train_time_s": float(np.mean([r["train_time_s"] for r in mine]))}
            masses = [r["joint_mass"] for r in mine if r["joint_mass"] is not None]
            if masses:
                summary_rows[name]["joint_mass"] = seed_interval(masses)
        comparisons = {}
        for label, a, b in COMPARISONS:
            if a in cfg.models and b in cfg.models:
                first = {r["seed"]: r["test"]["mae"] for r in runs if r["model"] == a}
                second = {r["seed"]: r["test"]["mae"] for r in runs if r["model"] == b}
                comparisons[label] = {"a": a, "b": b, **seed_interval([first[s] - second[s] for s in sorted(first)])}
        majority = float((test.labels > 0).double().mean())
        out["variants"][variant] = {
            "shift": shift,
            "runs": runs,
            "summary": summary_rows,
            "comparisons": comparisons,
            "arf_inference": arf_inference,
            "constant_prediction_mae": float((test.labels - train.labels.median()).abs().mean()),
            "majority_accuracy2": max(majority, 1 - majority),
        }
    return out


# -- run ------------------------------------------------------------------------------------------


def _headlines(m: dict[str, Any], cfg: MultilinearConfig) -> list[dict[str, Any]]:
    approx, cost, link, task = m["approximation"], m["scaling"], m["quaternion_link"], m["trimodal"]["variants"]
    top = max(cfg.approx_features)
    rows = []
    mild = min(cfg.approx_score_scales)
    for key, slope in approx["slopes"].items():
        target = ("<=", -0.4) if key.endswith(f"score scale {mild}") else None
        rows.append(headline(f"ARF error slope in log-log against R, {key}", slope, 0.1, note="−0.5: the Monte Carlo rate", target=target))
    for mm in cfg.approx_modalities:
        at = {r["kind"]: r["z_error"] for r in approx["rows"] if r["modalities"] == mm and r["features"] == top and r["scale"] == mild}
        name = f"orthogonal / i.i.d. ARF error at R={top}, M={mm}, score scale {mild}"
        rows.append(headline(name, at["orthogonal"] / at["iid"], 0.2, kind="ratio", target=("<=", 1.0)))
    if cost["arf_time_exponent"] is not None:
        rows.append(
            headline(
                f"ARF time exponent in the length, L ≥ {cost['fit_from']}", cost["arf_time_exponent"], 0.2, target=("<=", 1.1), note="M = 3"
            )
        )
    if cost["exact_time_exponent"] is not None:
        rows.append(headline("exact time exponent in the length", cost["exact_time_exponent"], 0.5, note="M = 3; L³ tuples"))
    rows.append(
        headline(
            "trilinear quaternion score: non-zero mixed third derivatives (of 64)",
            link["separability"]["trilinear_nonzero_third_derivatives"],
            0.0,
        )
    )
    rows.append(
        headline(
            "shared quaternion scores: non-zero mixed third derivatives (of 64)",
            link["separability"]["shared_nonzero_third_derivatives"],
            0.0,
        )
    )
    last = link["rows"][-1]
    rows.append(
        headline(
            f"ARF error against the trilinear quaternion attention, R={last['features']}", last["trilinear_error"], 0.5, kind="relative"
        )
    )
    rows.append(
        headline(f"ARF error against the shared quaternion attention, R={last['features']}", last["shared_error"], 0.5, kind="relative")
    )
    for variant, data in task.items():
        for name, s in data["summary"].items():
            rows.append(
                headline(f"{variant}: test MAE, {name}", s["mae"]["mean"], 0.1, kind="relative", note=f"mean of {s['mae']['seeds']} seeds")
            )
        for label, c in data["comparisons"].items():
            rows.append(
                headline(
                    f"{variant}: {label}, test MAE difference", c["mean"], 0.1, note=f"95% t interval [{c['low']:.3f}, {c['high']:.3f}]"
                )
            )
            rows.append(headline(f"{variant}: {label}, upper end of the 95% interval", c["high"], 0.1))
    return rows


def run(config: MultilinearConfig | Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """All four parts and the ARF identity's proof; returns JSON-serialisable metrics."""
    cfg = MultilinearConfig.coerce(config)
    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    with torch_threads(cfg.threads):
        t = time.perf_counter()
        metrics["proof"] = {"statements": arf_identity.prove()}
        metrics["proof"]["time_s"] = time.perf_counter() - t
        held = metrics["proof"]["statements"]
        log(f"[multilinear_attention] ARF identity: {sum(held.values())}/{len(held)} statements as expected")
        for part, fn in (
            ("approximation", approximation),
            ("scaling", scaling),
            ("quaternion_link", quaternion_link),
            ("trimodal", trimodal),
        ):
            t = time.perf_counter()
            metrics[part] = fn(cfg, log)
            metrics[part]["time_s"] = time.perf_counter() - t
            log(f"[multilinear_attention] {part} done ({metrics[part]['time_s']:.0f} s)")
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["headline"] = _headlines(metrics, cfg)
    return metrics
