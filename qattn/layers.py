"""Quaternion linear and convolution layers on the blocked layout (see :mod:`qattn.quaternion`).

A quaternion layer holds four real weights ``W_r, W_i, W_j, W_k`` of shape
``(out/4, in/4, *kernel)`` and computes ``y = W ⊗ x`` (weight on the LEFT) at every position:
the four weights are assembled into the real block matrix of :func:`qattn.quaternion.left_matrix`
(by :func:`qattn.quaternion.left_matrices`, one autograd node)
and applied with ONE call of ``F.linear`` / ``F.conv*``. The layer has a quarter of the
parameters of the real layer of the same size and the same number of multiplications.
Sizes are given in real units and must be multiples of 4.

Initialisation (Parcollet et al., 2019), done in torch and driven by a ``torch.Generator``:
modulus ``~ s · chi(4)``; a random unit pure-quaternion axis ``u`` (uniform on the sphere);
phase ``θ ~ U(−π, π)``; ``W_r = mod·cos θ`` and ``W_(i,j,k) = mod·u_(i,j,k)·sin θ``, with
``s = 1/sqrt(2·fan_in)`` ("he") or ``s = 1/sqrt(2·(fan_in + fan_out))`` ("glorot"), fans counted
in quaternion units times the kernel size. Biases are per real output feature and start at 0.

Examples
--------
>>> import torch
>>> layer = QuaternionLinear(8, 12)
>>> layer(torch.randn(5, 8)).shape
torch.Size([5, 12])
>>> sum(p.numel() for p in layer.parameters())   # 8·12/4 weights + 12 biases
36
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.quaternion import left_matrices

__all__ = [
    "BlockCache",
    "quaternion_init_",
    "QuaternionLinear",
    "QuaternionConv1d",
    "QuaternionConv2d",
    "QuaternionConvTranspose2d",
]

InitName = Literal["he", "glorot"]
_INITS = ("he", "glorot")


def _check_features(name: str, value: int) -> int:
    if not isinstance(value, int) or value <= 0 or value % 4 != 0:
        raise ValueError(f"{name} must be a positive multiple of 4 (real units of the blocked layout), got {value!r}")
    return value // 4


@torch.no_grad()
def quaternion_init_(
    weights: tuple[Tensor, Tensor, Tensor, Tensor],
    fan_in: int,
    fan_out: int,
    criterion: InitName = "he",
    generator: torch.Generator | None = None,
) -> None:
    """Fill four same-shaped weight tensors in place with Parcollet's quaternion initialisation.

    Parameters
    ----------
    weights : tuple of Tensor
        The ``(W_r, W_i, W_j, W_k)`` tensors, all of the same shape.
    fan_in, fan_out : int
        Fans in quaternion units (times the kernel size for convolutions).
    criterion : {"he", "glorot"}
        ``s = 1/sqrt(2·fan_in)`` or ``s = 1/sqrt(2·(fan_in+fan_out))``.
    generator : torch.Generator, optional
        The source of randomness; torch's default generator otherwise.
    """
    if criterion not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {criterion!r}")
    w_r = weights[0]
    shape, dtype, device = w_r.shape, w_r.dtype, w_r.device
    s = 1.0 / math.sqrt(2.0 * fan_in) if criterion == "he" else 1.0 / math.sqrt(2.0 * (fan_in + fan_out))

    def normal(*size: int) -> Tensor:
        return torch.randn(*size, generator=generator, dtype=torch.float64, device="cpu")

    modulus = s * normal(4, *shape).pow(2).sum(0).sqrt()  # s · chi(4 degrees of freedom)
    axis = normal(3, *shape)
    axis = axis / axis.norm(dim=0, keepdim=True).clamp_min(1e-12)  # uniform on the unit sphere
    phase = (torch.rand(*shape, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * math.pi
    values = (modulus * phase.cos(), *(modulus * phase.sin() * axis))
    for w, value in zip(weights, values):
        w.copy_(value.to(dtype=dtype, device=device))


class BlockCache:
    """Caches a tensor assembled from parameters while no gradient can flow through it.

    When autograd is off (``torch.no_grad`` / ``torch.inference_mode``) or no source parameter
    requires grad, the assembled tensor is rebuilt only when a parameter changed: the key is
    each parameter's storage pointer and in-place version counter, which optimiser steps and
    ``load_state_dict`` increment. With autograd on, it is rebuilt at every call (the graph must
    reach the parameters). Writing through ``param.data`` bypasses the version counter: after
    such a write, call :meth:`clear`.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: Tensor | None = None

    def clear(self) -> None:
        """Forget the cached tensor."""
        self._key, self._value = None, None

    def get(self, params: tuple[Tensor, ...], build) -> Tensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return build()
        first = params[0]
        key = (first.dtype, first.device, *[(p.data_ptr(), p._version) for p in params])
        if key != self._key or self._value is None:
            with torch.no_grad():
                self._value = build()
            self._key = key
        return self._value


class _QuaternionWeights(nn.Module):
    """Holds ``weight_r, weight_i, weight_j, weight_k`` of shape ``(out/4, in/4, *kernel)`` and a bias."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: tuple[int, ...],
        bias: bool,
        init: InitName,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
        names: tuple[str, str] = ("in_features", "out_features"),
    ) -> None:
        super().__init__()
        n_in = _check_features(names[0], in_features)
        n_out = _check_features(names[1], out_features)
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        self.init = init
        factory = {"device": device, "dtype": dtype}
        shape = (n_out, n_in, *kernel)
        self.weight_r = nn.Parameter(torch.empty(shape, **factory))
        self.weight_i = nn.Parameter(torch.empty(shape, **factory))
        self.weight_j = nn.Parameter(torch.empty(shape, **factory))
        self.weight_k = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._fans = (n_in * math.prod(kernel), n_out * math.prod(kernel))
        self._block_cache = BlockCache()
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw the weights (Parcollet's initialisation) and zero the bias."""
        quaternion_init_(self.components(), *self._fans, criterion=self.init, generator=generator)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def components(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The four weight components ``(W_r, W_i, W_j, W_k)``."""
        p = self._parameters  # direct lookups: this runs at every forward
        return (p["weight_r"], p["weight_i"], p["weight_j"], p["weight_k"])  # type: ignore[return-value]

    def block_weight(self) -> Tensor:
        """The assembled real weight ``(out, in, *kernel)``: :func:`~qattn.quaternion.left_matrix` of the components.

        Assembled by :func:`~qattn.quaternion.left_matrices` (one autograd node). Without autograd
        (inference) it is assembled once and reused until a weight changes.
        """
        components = self.components()
        return self._block_cache.get(components, lambda: left_matrices(torch.stack(components).unsqueeze(0)).squeeze(0))


class QuaternionLinear(_QuaternionWeights):
    """Quaternion fully connected layer ``y = W ⊗ x + b`` on the blocked layout.

    Parameters
    ----------
    in_features, out_features : int
        Sizes in real units, multiples of 4.
    bias : bool
        Add a learnable real bias per output feature.
    init : {"he", "glorot"}
        The initialisation criterion (see :func:`quaternion_init_`).

    Notes
    -----
    Input ``(..., in_features)`` → output ``(..., out_features)``;
    ``in_features·out_features/4`` weights (+ ``out_features`` biases).

    >>> QuaternionLinear(4, 8, bias=False).block_weight().shape
    torch.Size([8, 4])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: InitName = "he",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.in_features, self.out_features = in_features, out_features
        super().__init__(in_features, out_features, (), bias, init, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input must have last dimension in_features={self.in_features}, got shape {tuple(x.shape)}")
        return F.linear(x, self.block_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, init={self.init!r}"


def _tuple(value: int | tuple[int, ...], n: int, name: str) -> tuple[int, ...]:
    out = (value,) * n if isinstance(value, int) else tuple(value)
    if len(out) != n:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")
    return out


class _QuaternionConv(_QuaternionWeights):
    _dims: int = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        bias: bool = True,
        init: InitName = "he",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        n = self._dims
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _tuple(kernel_size, n, "kernel_size")
        self.stride = _tuple(stride, n, "stride")
        self.padding = _tuple(padding, n, "padding")
        self.dilation = _tuple(dilation, n, "dilation")
        super().__init__(in_channels, out_channels, self.kernel_size, bias, init, device, dtype, ("in_channels", "out_channels"))

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != self._dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input must have shape (batch, in_channels={self.in_channels}, {self._dims} spatial dims), got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, init={self.init!r}"
        )


class QuaternionConv1d(_QuaternionConv):
    """Quaternion 1-D convolution: ``W ⊗ x`` over blocked channels at every kernel tap.

    Input ``(B, in_channels, L)`` → output ``(B, out_channels, L_out)`` as in ``nn.Conv1d``.

    >>> QuaternionConv1d(8, 4, kernel_size=3, padding=1)(torch.randn(2, 8, 10)).shape
    torch.Size([2, 4, 10])
    """

    _dims = 1

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return F.conv1d(x, self.block_weight(), self.bias, self.stride, self.padding, self.dilation)


class QuaternionConv2d(_QuaternionConv):
    """Quaternion 2-D convolution: ``W ⊗ x`` over blocked channels at every kernel tap.

    Input ``(B, in_channels, H, W)`` → output ``(B, out_channels, H_out, W_out)`` as in ``nn.Conv2d``.

    >>> QuaternionConv2d(4, 8, kernel_size=3, stride=(1, 2), padding=1)(torch.randn(1, 4, 5, 9)).shape
    torch.Size([1, 8, 5, 5])
    """

    _dims = 2

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return F.conv2d(x, self.block_weight(), self.bias, self.stride, self.padding, self.dilation)


class QuaternionConvTranspose2d(_QuaternionConv):
    """Quaternion 2-D transposed convolution (``W ⊗ x`` channel mixing at every tap).

    Input ``(B, in_channels, H, W)`` → output as in ``nn.ConvTranspose2d``; ``output_padding``
    is a keyword argument of the constructor.

    >>> QuaternionConvTranspose2d(8, 4, kernel_size=3, stride=(1, 2), padding=1)(torch.randn(1, 8, 5, 5)).shape
    torch.Size([1, 4, 5, 9])
    """

    _dims = 2

    def __init__(self, *args, output_padding: int | tuple[int, int] = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.output_padding = _tuple(output_padding, 2, "output_padding")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        # conv_transpose2d expects (in, out, kH, kW): the transpose of the channel-mixing matrix.
        weight = self.block_weight().transpose(0, 1)
        return F.conv_transpose2d(x, weight, self.bias, self.stride, self.padding, self.output_padding, 1, self.dilation)
