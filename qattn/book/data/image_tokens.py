"""Text-and-image token sequences for a tiny CogView-like model: a caption, then the image's codes.

CogView trains a transformer on sequences ``[text tokens, image tokens]``, the image tokens being
a VQ-VAE's codes in raster order. Here the images are the generated Sort-of-CLEVR scenes of the
VQA chapter (:func:`qattn.book.data.vqa.make_sort_of_clevr`: six objects of six fixed colours,
each a square or a circle, on white), and the "text" is a caption READ FROM THE PIXELS, one token
per colour: which quadrant of the image its object lies in and which shape it has::

    token(colour c, quadrant q, shape s) = 8·c + 2·q + s      (c < 6, q < 4, s ∈ {0 square, 1 circle})

so the caption vocabulary has ``CAPTION_VOCAB = 48`` tokens and every caption ``CAPTION_LENGTH =
6`` (colour order of :data:`~qattn.book.data.vqa.SORT_OF_CLEVR_COLOURS`). The quadrant is that of
the object's pixel centroid; the shape follows from its pixel count (a square of side ``2h + 1``
covers more pixels than the inscribed circle of radius ``h``). Image codes ``0 … codes − 1``
become tokens ``CAPTION_VOCAB + code``.

>>> import numpy as np
>>> from qattn.book.data.vqa import make_sort_of_clevr
>>> train, _, _, _ = make_sort_of_clevr(4, 1, 1, seed=0, size=64, questions_per_scene=2)
>>> captions = scene_captions(train.images)
>>> captions.shape, bool(((captions // 8) == np.arange(6)).all())
((4, 6), True)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from qattn.book.data.vqa import SORT_OF_CLEVR_COLOURS

__all__ = ["CAPTION_VOCAB", "CAPTION_LENGTH", "scene_captions", "describe_caption", "token_sequences"]

CAPTION_LENGTH = len(SORT_OF_CLEVR_COLOURS)
CAPTION_VOCAB = 8 * CAPTION_LENGTH
_QUADRANTS = ("top left", "top right", "bottom left", "bottom right")


def scene_captions(images: np.ndarray) -> np.ndarray:
    """``(N, 6)`` int64 caption tokens of uint8 scenes ``(N, 3, H, W)`` (see the module docstring).

    Raises ``ValueError`` if the images are not ``(N, 3, H, W)`` uint8 or an object's colour is
    missing from a scene (not a Sort-of-CLEVR scene).
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, 3, H, W) scenes, got {images.dtype} {images.shape}")
    n, _, height, width = images.shape
    half = max(2, height // 16)  # the objects' half-size in make_sort_of_clevr
    threshold = ((2 * half + 1) ** 2 + np.pi * half**2) / 2  # between the circle's and the square's pixel counts
    yy, xx = np.mgrid[0:height, 0:width]
    captions = np.zeros((n, CAPTION_LENGTH), dtype=np.int64)
    for c, rgb in enumerate(SORT_OF_CLEVR_COLOURS.values()):
        inside = (images == np.array(rgb, dtype=np.uint8)[None, :, None, None]).all(1)  # (N, H, W)
        count = inside.sum((1, 2))
        if (count == 0).any():
            raise ValueError(f"scene(s) {np.flatnonzero(count == 0)[:5].tolist()} have no {list(SORT_OF_CLEVR_COLOURS)[c]} object")
        cy = (inside * yy).sum((1, 2)) / count
        cx = (inside * xx).sum((1, 2)) / count
        quadrant = 2 * (cy >= height / 2) + (cx >= width / 2)
        circle = count < threshold
        captions[:, c] = 8 * c + 2 * quadrant + circle
    return captions


def describe_caption(caption: np.ndarray | list[int]) -> str:
    """The caption in words, e.g. ``"red circle top left, green square bottom right, ..."``."""
    words = []
    for token in caption:
        c, rest = divmod(int(token), 8)
        quadrant, circle = divmod(rest, 2)
        words.append(f"{list(SORT_OF_CLEVR_COLOURS)[c]} {'circle' if circle else 'square'} {_QUADRANTS[quadrant]}")
    return ", ".join(words)


def token_sequences(captions: np.ndarray | Tensor, codes: Tensor) -> Tensor:
    """``(N, 6 + h·w)`` int64: the caption, then the image codes ``(N, h, w)`` in raster order, shifted by ``CAPTION_VOCAB``."""
    captions = torch.as_tensor(captions, dtype=torch.int64)
    if captions.dim() != 2 or codes.dim() != 3 or captions.shape[0] != codes.shape[0]:
        raise ValueError(f"captions must be (N, 6) and codes (N, h, w) for the same N, got {tuple(captions.shape)}, {tuple(codes.shape)}")
    return torch.cat([captions, CAPTION_VOCAB + codes.flatten(1).to(torch.int64)], 1)
