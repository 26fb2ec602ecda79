"""CogView's block-sparse causal attention (Ding et al., NeurIPS 2021): pivots and a window of blocks.

A sequence of ``s`` tokens, the first ``text`` of them text, the rest image tokens, is cut into
blocks of ``w`` tokens (``s`` divisible by ``w``). Query ``i`` in block ``g = i // w`` attends to

- its **window**: every earlier-or-same key ``j ≤ i`` of the ``t`` blocks ``g − t + 1 … g``;
- the **pivots** before its window: a per-sequence set of ``P`` key positions, every text token
  plus ``P − text`` image tokens sampled uniformly without replacement, that lie before the
  window's first token ``(g − t + 1)·w``.

One softmax over both parts. With ``log_correction`` the pivot logits get ``+ log(s // P)``, so
that each pivot stands in for the ``s / P`` tokens it was sampled from (an estimate; the chapter
of the book measures its bias). Cost per query ``O((P + t·w)·d)`` instead of ``O(s·d)``.

This module gives the layout (:class:`PivotWindowLayout`), the pivot sampler, the dense boolean
mask (the reference: every allowed pair), and :func:`pivot_window_attention`, which computes only
the allowed pairs: a gather of the pivot keys, and overlapping chunks of ``t·w`` keys per block
of ``w`` queries. Shapes: ``q, k (B, H, s, D)``, ``v (B, H, s, D_v)``; ``pivots (B, P)`` int64,
shared by the heads. Masks are bool with True = ALLOWED here (a layout, not a padding mask).

>>> layout = PivotWindowLayout(length=16, text=2, window=4, window_blocks=2, pivots=4)
>>> pivots = sample_pivots(layout, 1, torch.Generator().manual_seed(0))
>>> mask = pivot_window_mask(layout, pivots)
>>> mask.shape, bool(mask[0].tril().eq(mask[0]).all())  # causal
(torch.Size([1, 16, 16]), True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from qattn.attention._spec import Mechanism
from qattn.attention.hamilton import signed_key_copies

__all__ = [
    "MECHANISM",
    "PivotWindowLayout",
    "cogview_sparse_core",
    "draw_pivot_seed",
    "local_window_mask_2d",
    "sample_pivots",
    "pivot_window_mask",
    "pivot_bias",
    "pivot_window_attention",
    "pivot_window_shared_attention",
    "pivot_window_hamilton_attention",
    "dense_masked_attention",
]


@dataclass(frozen=True)
class PivotWindowLayout:
    """Where the text, the blocks and the pivots of a sequence lie.

    Attributes
    ----------
    length : ``s``, tokens in the sequence (text then image), a multiple of ``window``
    text : text tokens at the start (every one is a pivot)
    window : ``w``, queries per block
    window_blocks : ``t``, blocks in a query's window (its own and ``t − 1`` before)
    pivots : ``P``, pivots per sequence, text included
    """

    length: int
    text: int
    window: int
    window_blocks: int
    pivots: int

    def __post_init__(self) -> None:
        for name in ("length", "window", "window_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.length % self.window:
            raise ValueError(f"length must be divisible by window: length s = {self.length}, window w = {self.window}")
        if not 0 <= self.text <= self.length:
            raise ValueError(f"text must be in 0..length = 0..{self.length} (text longer than the sequence?), got {self.text}")
        image = self.length - self.text
        if not self.text <= self.pivots <= self.length:
            raise ValueError(
                f"pivots must count every text token and at most the {image} image tokens: "
                f"{self.text} ≤ pivots ≤ {self.length}, got {self.pivots} (pivots larger than the image part?)"
            )
        if self.pivots < 1:
            raise ValueError("pivots must be at least 1 (log(s // P) needs P ≥ 1)")

    @property
    def blocks(self) -> int:
        """Query blocks, ``s / w``."""
        return self.length // self.window

    @property
    def correction(self) -> float:
        """CogView's constant pivot correction, ``log(s // P)``."""
        return math.log(self.length // self.pivots)

    def window_start(self, positions: Tensor) -> Tensor:
        """First key of each query's window: ``max(0, (i // w − t + 1)·w)``."""
        return ((positions // self.window - self.window_blocks + 1) * self.window).clamp(min=0)


def sample_pivots(layout: PivotWindowLayout, batch: int, generator: torch.Generator, end: int | None = None) -> Tensor:
    """``(batch, P)`` sorted pivot positions per sequence: every text token, then ``P − text`` image tokens drawn without replacement.

    Image tokens are drawn from ``text … end − 1`` (``end`` defaults to the layout's length; a
    shorter ``end`` leaves the padding at the end of a sequence out of the draw).
    """
    end = layout.length if end is None else end
    if not layout.pivots <= end <= layout.length:
        raise ValueError(f"end must be in P … s = {layout.pivots} … {layout.length} (enough image tokens to draw from), got {end}")
    image = end - layout.text
    draws = layout.pivots - layout.text
    rows = []
    for _ in range(batch):
        chosen = torch.randperm(image, generator=generator)[:draws] + layout.text
        rows.append(torch.cat([torch.arange(layout.text), chosen.sort().values]))
    return torch.stack(rows)


def _check_pivots(layout: PivotWindowLayout, pivots: Tensor) -> None:
    if pivots.dim() != 2 or pivots.shape[1] != layout.pivots or pivots.dtype != torch.int64:
        raise ValueError(f"pivots must be int64 (B, P) with P = {layout.pivots}, got {pivots.dtype} {tuple(pivots.shape)}")
    if pivots.numel() and (int(pivots.min()) < 0 or int(pivots.max()) >= layout.length):
        raise ValueError(f"pivots must lie in [0, s) = [0, {layout.length})")


def _pivot_allowed(layout: PivotWindowLayout, pivots: Tensor) -> Tensor:
    """``(B, s, P)`` bool: pivot ``p`` lies before the window of query ``i``."""
    start = layout.window_start(torch.arange(layout.length, device=pivots.device))
    return pivots[:, None, :] < start[None, :, None]


def _pivot_pairs(layout: PivotWindowLayout, pivots: Tensor) -> Tensor:
    """``(B, s, s)`` bool: key ``j`` is a pivot and lies before the window of query ``i``."""
    _check_pivots(layout, pivots)
    i = torch.arange(layout.length, device=pivots.device)
    before = i[None, :] < layout.window_start(i)[:, None]  # (s, s)
    is_pivot = torch.zeros(pivots.shape[0], layout.length, dtype=torch.bool, device=pivots.device).scatter_(1, pivots, True)
    return before[None] & is_pivot[:, None, :]


def pivot_window_mask(layout: PivotWindowLayout, pivots: Tensor) -> Tensor:
    """The dense ``(B, s, s)`` bool mask, True where query ``i`` may attend to key ``j`` (window or pivot)."""
    i = torch.arange(layout.length, device=pivots.device)
    window = (i[None, :] <= i[:, None]) & (i[None, :] >= layout.window_start(i)[:, None])  # (s, s)
    return window[None] | _pivot_pairs(layout, pivots)


def pivot_bias(layout: PivotWindowLayout, pivots: Tensor) -> Tensor:
    """The dense ``(B, s, s)`` additive bias of the log correction: ``log(s // P)`` on the allowed pivot pairs, 0 elsewhere."""
    pairs = _pivot_pairs(layout, pivots)
    return torch.zeros(pairs.shape, dtype=torch.float64, device=pivots.device).masked_fill(pairs, layout.correction)


def dense_masked_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, bias: Tensor | None = None) -> Tensor:
    """The reference: full softmax attention restricted to ``allowed (B, s, s)`` (True = allowed), plus ``bias``."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias[:, None].to(scores.dtype)
    scores = scores.masked_fill(~allowed[:, None], -math.inf)
    return torch.softmax(scores, -1) @ v


def _overlapping_blocks(x: Tensor, window: int, blocks: int) -> Tensor:
    """``(B, H, s, D)`` → ``(B, H, s / w, t·w, D)``: for block ``g`` the keys of blocks ``g − t + 1 … g``
    (zeros before the start)."""
    batch, heads, length, dim = x.shape
    padded = torch.cat([x.new_zeros(batch, heads, (blocks - 1) * window, dim), x], 2)
    return padded.unfold(2, blocks * window, window).transpose(-1, -2)


def _pivot_window(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pivots: Tensor,
    layout: PivotWindowLayout,
    correction: float | None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The sparse computation: ``(out (B, H, s, D_v), dense weights (B, H, s, s) before dropout or None)``.

    ``correction`` is added to the pivot logits (None: nothing added).
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"q, k must be (B, H, s, D) and v (B, H, s, D_v), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    batch, heads, length, dim = q.shape
    if length != layout.length:
        raise ValueError(f"the sequence has {length} tokens but the layout {layout.length}")
    _check_pivots(layout, pivots)
    if pivots.shape[0] != batch:
        raise ValueError(f"pivots must have one row per sequence, B = {batch}, got {pivots.shape[0]}")
    scale = 1.0 / math.sqrt(dim)
    w, t = layout.window, layout.window_blocks

    index = pivots[:, None, :, None].expand(-1, heads, -1, dim)
    k_piv = k.gather(2, index)
    v_piv = v.gather(2, pivots[:, None, :, None].expand(-1, heads, -1, v.shape[-1]))
    s_piv = (q @ k_piv.transpose(-1, -2)) * scale  # (B, H, s, P)
    if correction is not None:
        s_piv = s_piv + correction
    s_piv = s_piv.masked_fill(~_pivot_allowed(layout, pivots)[:, None], -math.inf)

    q_blocks = q.view(batch, heads, layout.blocks, w, dim)
    k_win = _overlapping_blocks(k, w, t)  # (B, H, G, t·w, D)
    v_win = _overlapping_blocks(v, w, t)
    s_win = (q_blocks @ k_win.transpose(-1, -2)) * scale  # (B, H, G, w, t·w)
    row = torch.arange(w, device=q.device)[:, None]
    col = torch.arange(t * w, device=q.device)[None, :]
    causal = col <= row + (t - 1) * w  # key offset within the chunk vs query offset
    g = torch.arange(layout.blocks, device=q.device)[:, None, None]
    key = col[None] + (g - t + 1) * w  # (G, 1, t·w): the key position of each chunk column
    s_win = s_win.masked_fill(~(causal[None] & (key >= 0)), -math.inf)  # not the zero padding before the sequence

    scores = torch.cat([s_piv, s_win.reshape(batch, heads, length, t * w)], -1)
    probs = torch.softmax(scores, -1)
    weights = None
    if need_weights:
        weights = probs.new_zeros(batch, heads, length, length)
        weights.scatter_add_(-1, pivots[:, None, None, :].expand(-1, heads, length, -1), probs[..., : layout.pivots])
        window_keys = key.clamp(min=0).expand(layout.blocks, w, t * w).reshape(1, 1, length, t * w)
        weights.scatter_add_(-1, window_keys.expand(batch, heads, -1, -1), probs[..., layout.pivots :])  # 0 where masked
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    p_piv, p_win = probs[..., : layout.pivots], probs[..., layout.pivots :]
    out_win = p_win.reshape(batch, heads, layout.blocks, w, t * w) @ v_win
    return p_piv @ v_piv + out_win.reshape(batch, heads, length, v.shape[-1]), weights


def pivot_window_attention(
    q: Tensor, k: Tensor, v: Tensor, pivots: Tensor, layout: PivotWindowLayout, log_correction: bool = True
) -> Tensor:
    """CogView's sparse attention computing only the allowed pairs: ``(B, H, s, D_v)``.

    Equal to :func:`dense_masked_attention` under :func:`pivot_window_mask` (and
    :func:`pivot_bias` with ``log_correction``), at ``O(s·(P + t·w)·D)`` cost.
    """
    return _pivot_window(q, k, v, pivots, layout, layout.correction if log_correction else None)[0]


def pivot_window_shared_attention(
    q: Tensor, k: Tensor, v: Tensor, pivots: Tensor, layout: PivotWindowLayout, log_correction: bool = True
) -> Tensor:
    """The sparse attention with shared quaternion scores on ``(B, H, s, 4, d_h)`` tensors: ``(B, H, s, 4, d_v)``.

    The shared score is the dot product of the flattened ``4·d_h`` vectors (scaled by
    ``1 / sqrt(4·d_h)``), so one mask and one softmax serve the four value components.
    """
    out = pivot_window_attention(q.flatten(-2), k.flatten(-2), v.flatten(-2), pivots, layout, log_correction)
    return out.unflatten(-1, (4, v.shape[-1]))


def pivot_window_hamilton_attention(
    q: Tensor, k: Tensor, v: Tensor, pivots: Tensor, layout: PivotWindowLayout, log_correction: bool = True
) -> Tensor:
    """The sparse attention with Hamilton (component-wise) scores: four maps under ONE mask, ``(B, H, s, 4, d_v)``.

    Map ``m`` scores the flattened query against the ``m``-th signed key copy
    (:func:`qattn.attention.hamilton.signed_key_copies`) and aggregates value component ``m``.
    """
    qf = q.flatten(-2)
    keys = signed_key_copies(k)  # (B, H, 4, s, 4·d_h)
    maps = [pivot_window_attention(qf, keys[:, :, m], v[..., m, :], pivots, layout, log_correction) for m in range(4)]
    return torch.stack(maps, dim=-2)


def local_window_mask_2d(height: int, width: int, kernel: int, causal: bool = True) -> Tensor:
    """CogView2's local attention on a token grid, for contrast: ``(h·w, h·w)`` bool, True = ALLOWED.

    Token ``(r, c)`` (raster index ``r·width + c``) attends to the tokens ``(r', c')`` with
    ``|r − r'| ≤ kernel // 2`` and ``|c − c'| ≤ kernel // 2``; with ``causal`` only to those at or
    before it in raster order. Unlike CogView's 1-D window, neighbours above stay in reach
    however wide the image is.
    """
    for name, value in (("height", height), ("width", width), ("kernel", kernel)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd (a window centred on its token), got {kernel}")
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    half = kernel // 2
    near = ((rows[:, None] - rows[None, :]).abs() <= half) & ((cols[:, None] - cols[None, :]).abs() <= half)
    if causal:
        index = torch.arange(height * width)
        near &= index[None, :] <= index[:, None]
    return near


# -- the registered core ------------------------------------------------------------------------


def draw_pivot_seed(query_dim: int, options: Mapping[str, Any], generator: torch.Generator | None) -> dict[str, Tensor]:
    """The random state a layer keeps: ``{"pivot_seed": int64 scalar}``, from which each call draws its pivots.

    A layer's pivots then stay the same from call to call (for the same batch and length) until
    :meth:`~qattn.attention.QuaternionMultiheadAttention.redraw_buffers` draws a new seed, e.g.
    once per training step as CogView resamples its pivots.
    """
    return {"pivot_seed": torch.randint(0, 2**62, (), generator=generator, dtype=torch.int64)}


def _sparse_inputs(
    name: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
    is_causal: bool,
    text: int,
    window: int,
    window_blocks: int,
    n_pivots: int | None,
    log_correction: bool,
    pivot_positions: Tensor | None,
    pivot_seed: int | Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, PivotWindowLayout, float | None]:
    """Checks the call and pads ``s`` up to a multiple of ``window``: ``(q, k, v, pivots, layout, correction)``."""
    if not is_causal:
        raise ValueError(f"{name} is causal by construction (pivots and windows look back only): call it with is_causal=True")
    if attn_mask is not None:
        raise ValueError(f"{name} takes no attn_mask: its pivot + window layout is the mask (got a {tuple(attn_mask.shape)} mask)")
    if q.dim() != 5 or k.shape[:3] != q.shape[:3] or v.shape[:3] != q.shape[:3] or k.shape[-2:] != q.shape[-2:]:
        raise ValueError(
            f"{name} is self-attention on q, k (B, H, s, 4, d_h) and v (B, H, s, 4, d_v) of one length s; "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    batch, length = q.shape[0], q.shape[2]
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    if not 0 <= text <= length:
        raise ValueError(f"text must be in 0 … s = 0 … {length} (text longer than the sequence?), got {text}")
    padded = -(-length // window) * window
    if pivot_positions is not None:
        pivots = torch.as_tensor(pivot_positions, device=q.device)
        pivots = pivots.expand(batch, -1) if pivots.dim() == 1 else pivots
        if pivots.dtype != torch.int64 or pivots.dim() != 2 or pivots.shape[0] != batch:
            raise ValueError(f"pivot_positions must be int64 (P,) or (B, P) with B = {batch}, got {pivots.dtype} {tuple(pivots.shape)}")
        if pivots.numel() and (int(pivots.min()) < 0 or int(pivots.max()) >= length):
            raise ValueError(f"pivot_positions must lie in [0, s) = [0, {length})")
        layout = PivotWindowLayout(padded, text, window, window_blocks, pivots.shape[1])
    else:
        count = max(1, text, length // 4) if n_pivots is None else n_pivots
        if not isinstance(count, int) or not text <= count <= length:
            raise ValueError(f"n_pivots must be an int in text … s = {text} … {length} (every text token is a pivot), got {count!r}")
        layout = PivotWindowLayout(padded, text, window, window_blocks, count)
        generator = torch.Generator().manual_seed(int(pivot_seed))
        pivots = sample_pivots(layout, batch, generator, end=length).to(q.device)
    pad = (0, 0, 0, 0, 0, padded - length)
    correction = math.log(length // layout.pivots) if log_correction else None
    return F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), pivots, layout, correction


def cogview_sparse_core(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    need_weights: bool = False,
    *,
    text: int = 0,
    window: int = 64,
    window_blocks: int = 2,
    n_pivots: int | None = None,
    log_correction: bool = True,
    pivot_positions: Tensor | None = None,
    pivot_seed: int | Tensor = 0,
) -> tuple[Tensor, Tensor | None]:
    """The registered ``"cogview_sparse"`` core: CogView's pivot + window attention with shared quaternion scores.

    ``q, k (B, H, s, 4, d_h)``, ``v (B, H, s, 4, d_v)`` → ``(out (B, H, s, 4, d_v), weights
    (B, H, s, s) or None)``. Causal self-attention only: ``is_causal`` must be True and
    ``attn_mask`` None (the layout is the mask). ``s`` need not be a multiple of ``window``: the
    sequence is padded at its end (padding is never attended to by a real query).

    Options: ``text`` leading text tokens (all pivots), ``window`` ``w`` and ``window_blocks``
    ``t`` of the local window, ``n_pivots`` ``P`` (default ``max(1, text, s // 4)``),
    ``log_correction`` (``+ log(s // P)`` on pivot logits), ``pivot_positions`` fixed pivots
    ``(P,)`` or ``(B, P)`` (else each sequence draws its own from ``pivot_seed``).
    """
    length = q.shape[2]
    q, k, v, pivots, layout, correction = _sparse_inputs(
        "cogview_sparse", q, k, v, attn_mask, is_causal, text, window, window_blocks, n_pivots, log_correction, pivot_positions, pivot_seed
    )
    out, weights = _pivot_window(q.flatten(-2), k.flatten(-2), v.flatten(-2), pivots, layout, correction, dropout_p, need_weights)
    out = out[:, :, :length].unflatten(-1, (4, v.shape[-1]))
    return out, None if weights is None else weights[:, :, :length, :length]


MECHANISM = Mechanism(
    name="cogview_sparse",
    core=cogview_sparse_core,
    summary="CogView's sparse attention (Ding et al.): text and sampled pivot tokens plus a causal window of blocks, shared scores.",
    maps_per_head=1,
    returns_weights=True,
    bool_mask=False,
    float_mask=False,
    per_query_mask=False,
    causal=True,
    causal_only=True,
    cross_attention=False,
    exact=False,
    options={
        "text": 0,
        "window": 64,
        "window_blocks": 2,
        "n_pivots": None,
        "log_correction": True,
        "pivot_positions": None,
        "pivot_seed": 0,
    },
    draw_buffers=draw_pivot_seed,
)
"""Registry spec of CogView's sparse attention with shared scores (see :mod:`qattn.attention.registry`)."""
