"""The speech enhancer of the paper's release, scaled by :class:`SpeechModelConfig`.

Data flow for a wave ``(B, n)`` at 16 kHz::

    peak-normalise → STFT (n_fft 400, hop 100, Hann, centred; F = 201)
    → input [0, |X|, Re X, Im X]                                      (B, 4, T, F)
    → encoder: dilated dense blocks (time dilations 1, 2, 4), transitions,
      frequency down-sampling (stride (1, 2): F → F′ = 101), 1×1 conv  (B, D, T, F′)
    → bottleneck: blocks along time on (B·F′, T, D), then along frequency on (B·T, F′, D)
    → skip fusion: concat with the encoder output, 1×1 conv          (B, D, T, F′)
    → decoder: dense blocks (dilations 8, 4, 2), transposed conv F′ → F  (B, C, T, F)
    → mask head: 3×3 conv, PReLU, real 1×1 convs → tanh → (m₀, m₁)      (B, 2, T, F)
    → Ŝ = |X|·m₀·exp(j(∠X + π·m₁)) = m₀·X·exp(jπ·m₁) → iSTFT → × peak
      (``mask="magnitude"``: one 1×1 conv → sigmoid → m₀ ∈ (0, 1), Ŝ = m₀·X)

``kind="quaternion"`` builds every layer from :mod:`qattn.layers` (blocked r|i|j|k channels),
with the quaternion batch norm of the release (:class:`QuaternionBatchNorm2d`) and
:class:`~qattn.attention.QuaternionMultiheadAttention` with ``score="shared"``, ``"hamilton"``
or any other registered mechanism; ``kind="real"`` replaces each layer by its real counterpart of
the same size (about 4× the parameters). Channel concatenations of quaternion tensors are done
per component (:func:`cat_channels`), so the result is again in the blocked layout; the gated
linear unit of the conformer convolution module splits each component in halves likewise.

The release-sized configurations (:func:`release_config`) have about 0.80 M (Conformer) and
0.63 M (Transformer) parameters, matching the paper's 0.80 M / 0.62 M.

Examples
--------
>>> cfg = SpeechModelConfig(growth=8, dense_width=16, d_model=16, num_heads=2, ffn_dim=32, conv_kernel=3,
...                         n_time_blocks=1, n_freq_blocks=1)
>>> model = SpeechEnhancer(cfg).eval()
>>> model(torch.randn(2, 1600)).shape
torch.Size([2, 1600])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.attention import QuaternionMultiheadAttention, mechanism_names
from qattn.book.models.blocks import count_parameters  # the one definition, re-exported here
from qattn.layers import QuaternionConv1d, QuaternionConv2d, QuaternionConvTranspose2d, QuaternionLinear

__all__ = [
    "N_FFT",
    "HOP",
    "SpeechModelConfig",
    "release_config",
    "QuaternionBatchNorm2d",
    "cat_channels",
    "stft",
    "istft",
    "quaternion_input",
    "apply_mask",
    "SpeechEnhancer",
    "RecurrentMaskEstimator",
    "count_parameters",
]

N_FFT, HOP = 400, 100


@dataclass(frozen=True)
class SpeechModelConfig:
    """Sizes and variant of :class:`SpeechEnhancer` (release values as defaults).

    Parameters
    ----------
    kind : ``"quaternion"`` or ``"real"`` (every layer replaced by its real counterpart).
    bottleneck : ``"conformer"`` or ``"transformer"`` blocks.
    score : a registered mechanism, one of :func:`~qattn.attention.registry.mechanism_names`
        (``"shared"``, ``"hamilton"``, ...; quaternion attention only).
    growth : channels added by each dense block (a multiple of 4).
    dense_width : width of the 1×1 conv inside each dense block (release: 4·growth).
    d_model, num_heads, ffn_dim : bottleneck width, heads, feed-forward width.
    conv_kernel : kernel of the conformer's 1-D convolution (odd).
    n_time_blocks, n_freq_blocks : bottleneck blocks along time, then along frequency.
    encoder_dilations, decoder_dilations : time dilations of the dense blocks.
    dropout : dropout of the dense blocks (Dropout2d) and the bottleneck.
    attn_dropout : dropout on the attention weights (release: ``dropout``; 0 lets every variant use
        the fused kernels in training too).
    head_split : head layout of the quaternion attention (``"components"`` or ``"release"``).
    mask : ``"release"``: gain and phase rotation, both ``tanh``-bounded (:func:`apply_mask`);
        ``"magnitude"``: a gain in (0, 1) (``sigmoid``) on the noisy phase. The release's mask starts
        near gain 0 with a random rotation of every bin, and in our runs the narrow models trained
        with it for a few hundred steps stayed at or below the noisy input; the magnitude mask
        starts at gain ≈ 0.5 on the noisy phase and learned (the chapter's sanity checks).
    input_compression : exponent ``c`` of the input magnitudes: the input is
        ``[0, |X|^c, Re, Im of |X|^c·e^{j∠X}]`` (release: 1, the raw spectrum; 0.3 compresses the
        spectrum's dynamic range as is common in enhancement models).
    """

    kind: Literal["quaternion", "real"] = "quaternion"
    bottleneck: Literal["conformer", "transformer"] = "conformer"
    score: str = "hamilton"
    growth: int = 64
    dense_width: int = 256
    d_model: int = 64
    num_heads: int = 4
    ffn_dim: int = 256
    conv_kernel: int = 31
    n_time_blocks: int = 2
    n_freq_blocks: int = 2
    encoder_dilations: tuple[int, ...] = (1, 2, 4)
    decoder_dilations: tuple[int, ...] = (8, 4, 2)
    dropout: float = 0.1
    attn_dropout: float = 0.1
    head_split: Literal["components", "release"] = "components"
    mask: Literal["release", "magnitude"] = "release"
    input_compression: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("quaternion", "real"):
            raise ValueError(f"kind must be 'quaternion' or 'real', got {self.kind!r}")
        if self.bottleneck not in ("conformer", "transformer"):
            raise ValueError(f"bottleneck must be 'conformer' or 'transformer', got {self.bottleneck!r}")
        if self.score not in mechanism_names():
            raise ValueError(f"score must be one of {mechanism_names()} (the registered mechanisms), got {self.score!r}")
        for name in ("growth", "dense_width", "d_model", "ffn_dim"):
            value = getattr(self, name)
            if value <= 0 or value % 4:
                raise ValueError(f"{name} must be a positive multiple of 4, got {value}")
        if self.d_model % (4 * self.num_heads):
            raise ValueError(f"d_model must be a multiple of 4·num_heads = {4 * self.num_heads}, got {self.d_model}")
        if self.conv_kernel % 2 != 1:
            raise ValueError(f"conv_kernel must be odd, got {self.conv_kernel}")
        if self.mask not in ("release", "magnitude"):
            raise ValueError(f"mask must be 'release' or 'magnitude', got {self.mask!r}")
        if not 0.0 < self.input_compression <= 1.0:
            raise ValueError(f"input_compression must be in (0, 1], got {self.input_compression}")

    def replace(self, **changes: Any) -> SpeechModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def release_config(bottleneck: str = "conformer", kind: str = "quaternion", score: str = "hamilton") -> SpeechModelConfig:
    """The release's sizes: growth 64, d_model 64, 4 heads, 2 + 2 bottleneck blocks."""
    return SpeechModelConfig(kind=kind, bottleneck=bottleneck, score=score)  # type: ignore[arg-type]


# -- signal front end -----------------------------------------------------------------------------


def stft(wave: Tensor) -> Tensor:
    """``(B, n)`` → complex ``(B, T, F)`` with n_fft 400, hop 100, Hann, centred, F = 201, T = n//100 + 1."""
    window = torch.hann_window(N_FFT, device=wave.device, dtype=wave.dtype)
    return torch.stft(wave, N_FFT, HOP, N_FFT, window, center=True, return_complex=True).transpose(1, 2)


def istft(spec: Tensor, length: int) -> Tensor:
    """Inverse of :func:`stft`: complex ``(B, T, F)`` → ``(B, length)``."""
    window = torch.hann_window(N_FFT, device=spec.device, dtype=spec.real.dtype)
    return torch.istft(spec.transpose(1, 2), N_FFT, HOP, N_FFT, window, center=True, length=length)


def quaternion_input(spec: Tensor, compression: float = 1.0) -> Tensor:
    """The pure quaternion input ``[0, |Y|, Re Y, Im Y]`` of ``Y = |X|^c·e^{j∠X}`` (``c = compression``;
    ``c = 1``: ``Y = X``): complex ``(B, T, F)`` → ``(B, 4, T, F)``.

    >>> x = torch.tensor([[[3 + 4j]]])
    >>> quaternion_input(x).flatten().tolist(), [round(v, 4) for v in quaternion_input(x, 0.5).flatten().tolist()]
    ([0.0, 5.0, 3.0, 4.0], [0.0, 2.2361, 1.3416, 1.7889])
    """
    if compression != 1.0:
        mag = spec.abs()
        spec = spec * ((mag + 1e-8) ** (compression - 1.0))
    mag = spec.abs()
    return torch.stack([torch.zeros_like(mag), mag, spec.real, spec.imag], dim=1)


def apply_mask(spec: Tensor, mask: Tensor) -> Tensor:
    """Magnitude gain and phase rotation: ``Ŝ = |X|·m₀·exp(j(∠X + π·m₁))``; with a one-channel mask,
    the gain alone on the noisy phase: ``Ŝ = m₀·X``.

    Parameters
    ----------
    spec : complex ``(B, T, F)`` noisy spectrum ``X``.
    mask : ``(B, 2, T, F)`` with ``m₀`` (gain) and ``m₁`` (rotation in units of π), both in [−1, 1]
        (the release's mask), or ``(B, 1, T, F)`` with the gain ``m₀`` alone.

    >>> x = torch.tensor([[[1 + 1j]]])
    >>> apply_mask(x, torch.tensor([[[[0.5]], [[0.5]]]]))   # half the magnitude, +90°
    tensor([[[-0.5000+0.5000j]]])
    >>> apply_mask(x, torch.tensor([[[[0.5]]]]))   # half the magnitude, noisy phase
    tensor([[[0.5000+0.5000j]]])
    """
    if mask.shape[1] == 1:
        return spec * mask[:, 0]
    if mask.shape[1] != 2:
        raise ValueError(f"mask must have 1 (gain) or 2 (gain, rotation) channels, got shape {tuple(mask.shape)}")
    gain, rotation = mask[:, 0], mask[:, 1]
    return spec * torch.polar(gain, math.pi * rotation)


# -- building blocks ------------------------------------------------------------------------------


def cat_channels(tensors: list[Tensor], quaternion: bool, dim: int = 1) -> Tensor:
    """Concatenate along channels; quaternion tensors per component so the result stays blocked.

    >>> a, b = torch.arange(4.0).view(1, 4), torch.arange(4.0, 12.0).view(1, 8)
    >>> cat_channels([a, b], quaternion=True).tolist()   # r: a0 b0 b1 | i: a1 b2 b3 | ...
    [[0.0, 4.0, 5.0, 1.0, 6.0, 7.0, 2.0, 8.0, 9.0, 3.0, 10.0, 11.0]]
    """
    if not quaternion:
        return torch.cat(tensors, dim=dim)
    parts = [t.unflatten(dim, (4, t.shape[dim] // 4)) for t in tensors]
    return torch.cat(parts, dim=dim + 1).flatten(dim, dim + 1)


class QuaternionBatchNorm2d(nn.Module):
    """The release's quaternion batch norm on ``(B, C, H, W)`` blocked channels.

    One mean per real channel (each component of each quaternion channel) and one variance per
    quaternion channel, the mean squared quaternion deviation ``E‖x − μ‖²``; a learnable gain per
    quaternion channel (``C/4``) and a bias per real channel (``C``); running statistics with
    ``momentum`` as in ``nn.BatchNorm2d``.

    >>> QuaternionBatchNorm2d(8)(torch.randn(3, 8, 5, 5)).shape
    torch.Size([3, 8, 5, 5])
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"channels must be a multiple of 4, got {channels}")
        self.channels, self.eps, self.momentum = channels, eps, momentum
        n = channels // 4
        self.gamma = nn.Parameter(torch.ones(n))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(4, n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = x.view(b, 4, c // 4, h, w)
        if self.training:
            mean = q.mean(dim=(0, 3, 4))
            var = (q - mean[None, :, :, None, None]).pow(2).sum(1).mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.gamma / torch.sqrt(var + self.eps)
        out = (q - mean[None, :, :, None, None]) * scale[None, None, :, None, None]
        return out.reshape(b, c, h, w) + self.beta[None, :, None, None]


class _Ops:
    """Layer factory: quaternion layers or their real counterparts of the same (real) sizes."""

    def __init__(self, quaternion: bool) -> None:
        self.quaternion = quaternion

    def linear(self, i: int, o: int, bias: bool = True) -> nn.Module:
        return QuaternionLinear(i, o, bias=bias) if self.quaternion else nn.Linear(i, o, bias=bias)

    def conv1d(self, i: int, o: int, k: int, padding: int = 0, bias: bool = True) -> nn.Module:
        cls = QuaternionConv1d if self.quaternion else nn.Conv1d
        return cls(i, o, k, padding=padding, bias=bias)

    def conv2d(
        self, i: int, o: int, k: int, stride: tuple[int, int] = (1, 1), padding: Any = 0, dilation: Any = 1, bias: bool = True
    ) -> nn.Module:
        cls = QuaternionConv2d if self.quaternion else nn.Conv2d
        return cls(i, o, k, stride=stride, padding=padding, dilation=dilation, bias=bias)

    def conv_transpose2d(self, i: int, o: int, k: int, stride: tuple[int, int], padding: int) -> nn.Module:
        cls = QuaternionConvTranspose2d if self.quaternion else nn.ConvTranspose2d
        return cls(i, o, k, stride=stride, padding=padding)

    def batch_norm(self, c: int) -> nn.Module:
        return QuaternionBatchNorm2d(c) if self.quaternion else nn.BatchNorm2d(c)

    def cat(self, tensors: list[Tensor], dim: int = 1) -> Tensor:
        return cat_channels(tensors, self.quaternion, dim)

    def glu(self, x: Tensor) -> Tensor:
        """GLU over the last dim; for quaternion tensors each component is split in halves."""
        if not self.quaternion:
            return F.glu(x, dim=-1)
        q = x.unflatten(-1, (4, x.shape[-1] // 4))
        return F.glu(q, dim=-1).flatten(-2)


def _halve(c: int) -> int:
    return max(4, (c // 2) // 4 * 4)


class DenseBlock(nn.Module):
    """1×1 conv → BN → PReLU; gated pair of 3×3 convs (time dilation ``d``); BN → PReLU → Dropout2d;
    concatenated with the input: ``(B, C, T, F)`` → ``(B, C + growth, T, F)``."""

    def __init__(self, ops: _Ops, in_ch: int, growth: int, width: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.ops = ops
        self.pre = nn.Sequential(ops.conv2d(in_ch, width, 1), ops.batch_norm(width), nn.PReLU())
        pad = (dilation, 1)
        self.conv = ops.conv2d(width, growth, 3, padding=pad, dilation=(dilation, 1))
        self.gate = ops.conv2d(width, growth, 3, padding=pad, dilation=(dilation, 1))
        self.post = nn.Sequential(ops.batch_norm(growth), nn.PReLU(), nn.Dropout2d(dropout))

    def forward(self, x: Tensor) -> Tensor:
        h = self.pre(x)
        h = self.post(self.conv(h) * torch.sigmoid(self.gate(h)))
        return self.ops.cat([x, h])


def _transition(ops: _Ops, c: int) -> nn.Module:
    return nn.Sequential(ops.batch_norm(c), nn.PReLU(), ops.conv2d(c, _halve(c), 1))


class _Attention(nn.Module):
    """Self-attention on ``(B, N, D)`` batch-first, quaternion or real; returns (out, maps or None)."""

    def __init__(self, cfg: SpeechModelConfig) -> None:
        super().__init__()
        self.quaternion = cfg.kind == "quaternion"
        if self.quaternion:
            self.mha: nn.Module = QuaternionMultiheadAttention(
                cfg.d_model, cfg.num_heads, score=cfg.score, head_split=cfg.head_split, dropout=cfg.attn_dropout, batch_first=True
            )
        else:
            self.mha = nn.MultiheadAttention(cfg.d_model, cfg.num_heads, dropout=cfg.attn_dropout, batch_first=True)

    def forward(self, x: Tensor, maps_for: int = 0) -> tuple[Tensor, Tensor | None]:
        """``maps_for > 0``: also return per-head maps of that many evenly spaced sequences of the batch."""
        out = self.mha(x, x, x, need_weights=False)[0]
        if maps_for <= 0:
            return out, None
        idx = torch.linspace(0, x.shape[0] - 1, min(maps_for, x.shape[0])).round().long().unique()
        xs = x[idx]
        return out, self.mha(xs, xs, xs, need_weights=True, average_attn_weights=False)[1]


class ConformerBlock(nn.Module):
    """Post-norm conformer block: ½FFN, MHA, convolution module, ½FFN, each ``LN(x + f(x))``."""

    def __init__(self, ops: _Ops, cfg: SpeechModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ops = ops
        self.ffn1 = self._ffn(ops, cfg)
        self.ffn2 = self._ffn(ops, cfg)
        self.attn = _Attention(cfg)
        self.conv_norm = nn.LayerNorm(d)
        self.conv_in = ops.linear(d, 2 * d)
        self.conv_depth = ops.conv1d(d, d, cfg.conv_kernel, padding=cfg.conv_kernel // 2, bias=False)
        self.conv_mid_norm = nn.LayerNorm(d)
        self.conv_out = ops.conv1d(d, d, 1)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(4))
        self.drop = nn.Dropout(cfg.dropout)

    @staticmethod
    def _ffn(ops: _Ops, cfg: SpeechModelConfig) -> nn.Module:
        return nn.Sequential(ops.linear(cfg.d_model, cfg.ffn_dim), nn.SiLU(), nn.Dropout(cfg.dropout), ops.linear(cfg.ffn_dim, cfg.d_model))

    def conv_module(self, x: Tensor) -> Tensor:
        h = self.ops.glu(self.conv_in(self.conv_norm(x)))  # (B, N, D)
        h = self.conv_depth(h.transpose(1, 2)).transpose(1, 2)
        h = F.silu(self.conv_mid_norm(h))
        return self.drop(self.conv_out(h.transpose(1, 2)).transpose(1, 2))

    def forward(self, x: Tensor, maps_for: int = 0) -> tuple[Tensor, Tensor | None]:
        x = self.norms[0](x + 0.5 * self.drop(self.ffn1(x)))
        a, maps = self.attn(x, maps_for)
        x = self.norms[1](x + self.drop(a))
        x = self.norms[2](x + self.conv_module(x))
        x = self.norms[3](x + 0.5 * self.drop(self.ffn2(x)))
        return x, maps


class TransformerBlock(nn.Module):
    """Post-norm transformer block: ``LN(x + MHA(x))``, ``LN(x + FFN(x))``."""

    def __init__(self, ops: _Ops, cfg: SpeechModelConfig) -> None:
        super().__init__()
        self.attn = _Attention(cfg)
        self.ffn = ConformerBlock._ffn(ops, cfg)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(2))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, maps_for: int = 0) -> tuple[Tensor, Tensor | None]:
        a, maps = self.attn(x, maps_for)
        x = self.norms[0](x + self.drop(a))
        x = self.norms[1](x + self.drop(self.ffn(x)))
        return x, maps


class SpeechEnhancer(nn.Module):
    """Dense encoder → time/frequency attention bottleneck → dense decoder → mask head (see module doc).

    ``forward(wave)`` maps ``(B, n)`` noisy waves to ``(B, n)`` enhanced waves;
    :meth:`forward_with_maps` also returns attention maps of each bottleneck block.
    """

    def __init__(self, cfg: SpeechModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ops = self.ops = _Ops(cfg.kind == "quaternion")
        enc: list[nn.Module] = []
        ch = 4
        for n, d in enumerate(cfg.encoder_dilations):
            enc.append(DenseBlock(ops, ch, cfg.growth, cfg.dense_width, d, cfg.dropout))
            ch += cfg.growth
            if n < len(cfg.encoder_dilations) - 1:
                enc.append(_transition(ops, ch))
                ch = _halve(ch)
        enc += [ops.conv2d(ch, ch, 3, stride=(1, 2), padding=1), ops.batch_norm(ch)]
        enc += [ops.conv2d(ch, cfg.d_model, 1), ops.batch_norm(cfg.d_model), nn.PReLU()]
        self.encoder = nn.Sequential(*enc)
        block = ConformerBlock if cfg.bottleneck == "conformer" else TransformerBlock
        self.time_blocks = nn.ModuleList(block(ops, cfg) for _ in range(cfg.n_time_blocks))
        self.freq_blocks = nn.ModuleList(block(ops, cfg) for _ in range(cfg.n_freq_blocks))
        self.skip = nn.Sequential(ops.conv2d(2 * cfg.d_model, cfg.d_model, 1), ops.batch_norm(cfg.d_model), nn.PReLU())
        dec: list[nn.Module] = []
        ch = cfg.d_model
        for n, d in enumerate(cfg.decoder_dilations):
            dec.append(DenseBlock(ops, ch, cfg.growth, cfg.dense_width, d, cfg.dropout))
            ch += cfg.growth
            if n < len(cfg.decoder_dilations) - 1:
                dec.append(_transition(ops, ch))
                ch = _halve(ch)
        dec += [ops.conv_transpose2d(ch, ch, 3, stride=(1, 2), padding=1), ops.batch_norm(ch)]
        self.decoder = nn.Sequential(*dec)
        if cfg.mask == "release":
            out: list[nn.Module] = [nn.Conv2d(ch, 2, 1), nn.Conv2d(2, 2, 1), nn.Tanh()]
        else:
            out = [nn.Conv2d(ch, 1, 1), nn.Sigmoid()]
        self.head = nn.Sequential(ops.conv2d(ch, ch, 3, padding=1, bias=False), nn.PReLU(), *out)

    # -- the network on spectra ------------------------------------------------------------------
    def bottleneck(self, z: Tensor, maps_for: int = 0) -> tuple[Tensor, list[Tensor | None], list[Tensor | None]]:
        """``(B, D, T, F′)`` → same shape; maps of the time blocks and of the frequency blocks."""
        b, d, t, f = z.shape
        x = (
            z.permute(0, 3, 2, 1).reshape(b * f, t, d).contiguous()
        )  # sequences along time (contiguous: a strided view makes the linear layers ~100x slower)
        time_maps = []
        for blk in self.time_blocks:
            x, m = blk(x, maps_for)
            time_maps.append(m)
        x = x.view(b, f, t, d).transpose(1, 2).reshape(b * t, f, d).contiguous()  # sequences along frequency
        freq_maps = []
        for blk in self.freq_blocks:
            x, m = blk(x, maps_for)
            freq_maps.append(m)
        return x.view(b, t, f, d).permute(0, 3, 1, 2).contiguous(), time_maps, freq_maps

    def mask(self, features: Tensor, maps_for: int = 0) -> tuple[Tensor, list[Tensor | None], list[Tensor | None]]:
        """Quaternion input ``(B, 4, T, F)`` → mask ``(B, 2, T, F)`` in [−1, 1] (``mask="release"``) or
        ``(B, 1, T, F)`` in (0, 1) (``mask="magnitude"``), and the attention maps."""
        enc = self.encoder(features)
        z, time_maps, freq_maps = self.bottleneck(enc, maps_for)
        z = self.skip(self.ops.cat([z, enc]))
        return self.head(self.decoder(z)), time_maps, freq_maps

    def forward_with_maps(self, wave: Tensor, maps_for: int = 0) -> tuple[Tensor, list[Tensor | None], list[Tensor | None]]:
        """Enhance ``(B, n)`` waves; also return the attention maps of ``maps_for`` sequences per block."""
        if wave.dim() != 2:
            raise ValueError(f"wave must have shape (batch, samples), got {tuple(wave.shape)}")
        if wave.shape[1] < N_FFT:
            raise ValueError(f"wave must have at least n_fft = {N_FFT} samples, got {wave.shape[1]}")
        peak = wave.abs().amax(dim=1, keepdim=True) + 1e-8
        spec = stft(wave / peak)
        mask, time_maps, freq_maps = self.mask(quaternion_input(spec, self.cfg.input_compression), maps_for)
        out = istft(apply_mask(spec, mask), wave.shape[1])
        return out * peak, time_maps, freq_maps

    def forward(self, wave: Tensor) -> Tensor:
        return self.forward_with_maps(wave)[0]

    def attention_modules(self) -> list[nn.Module]:
        """The multi-head attention modules of the bottleneck, time blocks first."""
        return [blk.attn.mha for blk in [*self.time_blocks, *self.freq_blocks]]


class RecurrentMaskEstimator(nn.Module):
    """A small real-valued baseline: a GRU over frames of compressed magnitudes → a gain in (0, 1).

    ``(B, n)`` wave → STFT (as :func:`stft`) → ``|X|^0.3`` per frame ``(B, T, F)`` → ``layers``-layer
    GRU of width ``hidden`` → linear → sigmoid gain ``(B, T, F)`` → ``gain·X`` → iSTFT. The sanity
    check a speech engineer runs first: a plain mask estimator trained with the same loss and
    batches must beat the noisy input, or the recipe (data, loss, mask) is at fault.

    >>> RecurrentMaskEstimator(hidden=16, layers=1)(torch.randn(2, 1600)).shape
    torch.Size([2, 1600])
    """

    def __init__(self, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        bins = N_FFT // 2 + 1
        self.gru = nn.GRU(bins, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, bins)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2:
            raise ValueError(f"wave must have shape (batch, samples), got {tuple(wave.shape)}")
        spec = stft(wave)
        h, _ = self.gru((spec.abs() + 1e-8) ** 0.3)
        return istft(spec * torch.sigmoid(self.out(h)), wave.shape[1])
