"""Fusion models for the trimodal task (:mod:`qattn.book.data.trimodal`): one regression score per example.

Every model maps three aligned sequences ``x_m (B, T, d_m)`` to a score ``(B,)`` (the sentiment-like
label in [−3, 3]); they differ only in how the modalities are fused:

- ``early_fusion_lstm``: the three feature vectors of a time step concatenated, one LSTM over time,
  its last state → MLP (fusion before any modelling; order is the LSTM's).
- ``low_rank_fusion``: low-rank multimodal fusion (Liu et al., 2018), no attention: one LSTM per
  modality, its last state ``h_m`` with a 1 appended, and the rank-``q`` factorisation of the
  outer-product tensor ``Σ_i Π_m W_m^{(i)} [h_m, 1]`` (elementwise product over modalities) → MLP.
- ``pairwise_ban``: bilinear attention (one joint softmax over token pairs, the ``M = 2`` case of
  multi-linear attention) for each of the three pairs of modalities; the three pooled vectors
  concatenated → MLP.
- ``man``: multi-linear attention over all three modalities at once (exact, ``T³`` tuples).
- ``man_arf``: the same with addition random features (linear in ``T``).
- ``man_arf_local``: ``man_arf`` plus the local sequential constraint (a shared positional term
  in the attention factors that rewards temporally aligned tuples).

The attention models share one token encoder per modality (two linear layers with a learned
positional embedding in between, so that they can learn which time steps belong together) and one
head. Parameters are initialised from ``seed`` (under :func:`torch.random.fork_rng`; torch's global
state is left as it was), random features from the same seed.

>>> model = build_fusion_model("man_arf_local", widths=(12, 8, 6), length=16, seed=0)
>>> xs = [torch.randn(5, 16, d) for d in (12, 8, 6)]
>>> tuple(model(xs).shape)
(5,)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.attention.multilinear import MultilinearAttention

__all__ = ["FUSION_MODELS", "build_fusion_model", "count_parameters", "TokenEncoder", "AttentionFusion", "LowRankFusion", "EarlyFusionLSTM"]

#: The fusion models of the chapter, in display order.
FUSION_MODELS = ("early_fusion_lstm", "low_rank_fusion", "pairwise_ban", "man", "man_local", "man_arf", "man_arf_local")


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as random features are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _head(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 1))


class TokenEncoder(nn.Module):
    """``x (B, T, d) → (B, T, h)``: ``W_2 GELU(W_1 [x_t, c(t)])``, ``c(t)`` a fixed sinusoidal code of the
    time step (``time_code`` sine/cosine pairs, the same for every modality), so that the models can
    learn which time steps of different modalities belong together."""

    def __init__(self, in_dim: int, hidden: int, length: int, time_code: int = 4) -> None:
        super().__init__()
        steps = torch.arange(length, dtype=torch.float32)[:, None]
        freqs = torch.pi * 2.0 ** torch.arange(time_code, dtype=torch.float32) / length
        self.register_buffer("code", torch.cat([torch.sin(steps * freqs), torch.cos(steps * freqs)], -1), persistent=False)
        self.inp = nn.Linear(in_dim + 2 * time_code, hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.code.shape[0]:
            raise ValueError(f"sequence of length {x.shape[1]} is longer than the time code ({self.code.shape[0]} steps)")
        code = self.code[: x.shape[1]].expand(x.shape[0], -1, -1)
        return self.out(F.gelu(self.inp(torch.cat([x, code], -1))))


class AttentionFusion(nn.Module):
    """Token encoders, then multi-linear attention over all modalities (``pairwise=False``) or bilinear
    attention per pair of modalities (``pairwise=True``), then an MLP head."""

    def __init__(
        self,
        widths: Sequence[int],
        length: int,
        hidden: int,
        joint: int,
        rank: int,
        features: int | None,
        local: bool,
        pairwise: bool,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        m = len(widths)
        self.encoders = nn.ModuleList(TokenEncoder(d, hidden, length) for d in widths)
        self.pairs = [(i, j) for i in range(m) for j in range(i + 1, m)] if pairwise else [tuple(range(m))]
        self.attention = nn.ModuleList(
            MultilinearAttention([hidden] * len(group), joint, rank, features=features, local=local, generator=generator)
            for group in self.pairs
        )
        self.head = _head(joint * len(self.pairs), hidden)

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        tokens = [enc(x) for enc, x in zip(self.encoders, xs)]
        pooled = [att([tokens[i] for i in group]) for att, group in zip(self.attention, self.pairs)]
        return self.head(torch.cat(pooled, -1))[:, 0]


class LowRankFusion(nn.Module):
    """Low-rank multimodal fusion (no attention): per-modality LSTMs, ``Σ_i Π_m W_m^{(i)} [h_m, 1]``, MLP head."""

    def __init__(self, widths: Sequence[int], hidden: int, joint: int, rank: int) -> None:
        super().__init__()
        self.rank, self.joint = rank, joint
        self.lstms = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in widths)
        self.factors = nn.ModuleList(nn.Linear(hidden + 1, rank * joint) for _ in widths)
        self.head = _head(joint, hidden)

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        fused = None
        for lstm, factor, x in zip(self.lstms, self.factors, xs):
            _, (h, _) = lstm(x)
            state = F.pad(h[-1], (0, 1), value=1.0)  # [h_m, 1]
            part = factor(state).reshape(-1, self.rank, self.joint)
            fused = part if fused is None else fused * part
        assert fused is not None
        return self.head(fused.sum(1))[:, 0]


class EarlyFusionLSTM(nn.Module):
    """Early fusion: the modalities' features of each time step concatenated, one LSTM, MLP head."""

    def __init__(self, widths: Sequence[int], hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(sum(widths), hidden, batch_first=True)
        self.head = _head(hidden, hidden)

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        _, (h, _) = self.lstm(torch.cat(list(xs), -1))
        return self.head(h[-1])[:, 0]


def build_fusion_model(
    name: str,
    widths: Sequence[int],
    length: int,
    seed: int,
    hidden: int = 32,
    joint: int = 16,
    rank: int = 16,
    features: int = 256,
    lmf_rank: int = 4,
) -> nn.Module:
    """The fusion model ``name`` (one of :data:`FUSION_MODELS`), initialised from ``seed``.

    ``hidden``: encoder / LSTM width; ``joint``: the pooled width ``K``; ``rank``: the attention
    factors' width ``r``; ``features``: ARF's ``R``; ``lmf_rank``: low-rank fusion's rank.
    """
    if name not in FUSION_MODELS:
        raise ValueError(f"unknown fusion model {name!r}; expected one of {FUSION_MODELS}")
    widths = [int(w) for w in widths]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed + 1_000_003)  # the random features
        if name == "early_fusion_lstm":
            return EarlyFusionLSTM(widths, hidden)
        if name == "low_rank_fusion":
            return LowRankFusion(widths, hidden, joint, lmf_rank)
        if name == "pairwise_ban":
            return AttentionFusion(widths, length, hidden, joint, rank, None, False, True, generator)
        arf = None if name in ("man", "man_local") else features
        return AttentionFusion(widths, length, hidden, joint, rank, arf, name.endswith("_local"), False, generator)
