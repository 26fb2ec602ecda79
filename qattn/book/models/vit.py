"""A small quaternion Vision Transformer (and its real counterparts) for 28×28 grey images.

How pixels become quaternions
-----------------------------
The image is cut into non-overlapping ``p × p`` patches (``p`` even; the image is zero-padded
evenly to a multiple of ``p``). Inside a patch, each 2×2 block of neighbouring pixels is ONE
quaternion unit: the top-left pixel is its real part ``r``, top-right ``i``, bottom-left ``j``,
bottom-right ``k``. A patch is thus ``(p/2)²`` quaternion units, stored in the blocked layout
``[r(u) | i(u) | j(u) | k(u)]`` with ``u = (p/2)²`` (each component block in row-major order of
the 2×2 blocks): a real vector of ``p²`` numbers (:func:`quaternion_patches`). The patch
embedding ``QuaternionLinear(p², E)`` then mixes the four polyphase sub-images of the patch by
Hamilton products. The real variants embed the same ``p²`` vector with ``nn.Linear``.

Model: patch embedding, a learned class token and position embeddings (real numbers of width
``E``, i.e. ``E/4`` quaternions in the blocked layout), an :class:`~qattn.book.models.blocks.Encoder`,
and a real linear head on the class token.

>>> import torch
>>> model = VisionTransformer("hamilton", width=32, depth=1, num_heads=2, generator=torch.Generator().manual_seed(0))
>>> logits, maps = model(torch.rand(3, 28, 28), need_weights=True)
>>> logits.shape, maps[0].shape      # 7×7 patches + class token = 50 tokens; 4 component maps
(torch.Size([3, 10]), torch.Size([3, 2, 4, 50, 50]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.book.models.blocks import VARIANTS, Encoder, count_parameters, initialise_, make_linear, matched_width

__all__ = ["quaternion_patches", "VisionTransformer", "build_vit"]


def quaternion_patches(images: Tensor, patch_size: int) -> Tensor:
    """Cut images into patches of quaternion units, blocked layout (see the module docstring).

    Parameters
    ----------
    images : (B, H, W) real tensor
    patch_size : even patch side ``p``

    Returns
    -------
    (B, N, p²) tensor, ``N = ceil(H/p)·ceil(W/p)`` patches in row-major order, each
    ``[r | i | j | k]`` with ``(p/2)²`` units per component.

    >>> x = torch.arange(16.).reshape(1, 4, 4)
    >>> quaternion_patches(x, 4)[0, 0].tolist()   # r = pixels (even, even), i = (even, odd), ...
    [0.0, 2.0, 8.0, 10.0, 1.0, 3.0, 9.0, 11.0, 4.0, 6.0, 12.0, 14.0, 5.0, 7.0, 13.0, 15.0]
    """
    if patch_size <= 0 or patch_size % 2:
        raise ValueError(f"patch_size must be a positive even number, got {patch_size}")
    if images.dim() != 3:
        raise ValueError(f"images must be (B, H, W), got shape {tuple(images.shape)}")
    b, h, w = images.shape
    p, q = patch_size, patch_size // 2
    pad_h, pad_w = (-h) % p, (-w) % p
    if pad_h or pad_w:
        images = F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    gh, gw = images.shape[1] // p, images.shape[2] // p
    # (B, gh, q, 2 [row parity], gw, q, 2 [column parity])
    x = images.reshape(b, gh, q, 2, gw, q, 2)
    # → (B, gh, gw, row parity, column parity, q, q): component index = 2·row parity + column parity
    x = x.permute(0, 1, 4, 3, 6, 2, 5)
    return x.reshape(b, gh * gw, p * p)


class VisionTransformer(nn.Module):
    """ViT classifier in one of the four variants of :mod:`qattn.book.models.blocks`.

    Parameters
    ----------
    variant : ``"shared"``, ``"hamilton"``, ``"real_same_width"`` or ``"real_same_params"``
    image_size : side of the square input images
    patch_size : even patch side ``p``
    width : feature size ``E``
    depth, num_heads, ffn_mult, dropout : encoder settings
    num_classes : output classes
    generator : initialises every parameter (:func:`~qattn.book.models.blocks.initialise_`); models of the
        same shape built from generators in the same state are identical

    Shapes: images ``(B, H, W)`` → logits ``(B, num_classes)``, and with ``need_weights`` one
    attention tensor per layer over the ``N + 1`` tokens (class token first).
    """

    def __init__(
        self,
        variant: str,
        image_size: int = 28,
        patch_size: int = 4,
        width: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        ffn_mult: int = 2,
        dropout: float = 0.0,
        num_classes: int = 10,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.image_size, self.patch_size = variant, image_size, patch_size
        grid = -(-image_size // patch_size)
        self.grid = grid
        self.patch_embed = make_linear(variant, patch_size * patch_size, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        self.encoder = Encoder(variant, width, depth, num_heads, ffn_mult, dropout)
        self.head = nn.Linear(width, num_classes)
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        initialise_(self, generator)
        with torch.no_grad():
            nn.init.trunc_normal_(self.pos_embed, std=0.02, generator=generator)
            nn.init.trunc_normal_(self.cls_token, std=0.02, generator=generator)

    def forward(self, images: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``(B, H, W)`` images → ``(B, num_classes)`` logits and the per-layer attention maps."""
        x = self.patch_embed(quaternion_patches(images, self.patch_size))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x, maps = self.encoder(x, need_weights=need_weights)
        return self.head(x[:, 0]), maps


def build_vit(variant: str, width: int = 64, generator: torch.Generator | None = None, **kwargs) -> VisionTransformer:
    """A :class:`VisionTransformer` of ``variant``; ``width`` is the quaternion models' width.

    ``"real_same_params"`` gets the width (a multiple of ``num_heads``) whose model has the
    parameter count closest to the quaternion model of ``width``; every other variant uses ``width``.
    """
    if variant == "real_same_params":
        heads = kwargs.get("num_heads", 4)
        target = count_parameters(VisionTransformer("shared", width=width, **kwargs))
        width = matched_width(lambda w: VisionTransformer(variant, width=w, **kwargs), target, heads, width)
    return VisionTransformer(variant, width=width, generator=generator, **kwargs)
