"""``QuaternionMultiheadAttention``: the multi-head layer around the registered cores (shared, Hamilton, ...).

Queries, keys and values come from :class:`~qattn.layers.QuaternionLinear` projections; the
output goes through one more. The score variant is a constructor argument, the name of a
registered mechanism (:func:`~qattn.attention.registry.mechanism_names`: ``score="shared"``,
``"hamilton"``, ...), whose functional core the layer calls; so two layers that differ only in
their scores have identical parameters and, built under the same seed, identical initial values.

Head layout (``head_split``)
----------------------------
``"components"`` (default): each head owns ``d_h = embed_dim / (4·num_heads)`` quaternion units
of EVERY component; heads are cut inside each component block::

    (B, N, 4·n) → (B, N, 4, H, d_h) → (B, H, N, 4, d_h)

``"release"``: the official release's layout, kept as a named ablation. Heads are cut straight
from the blocked vector, head ``h`` takes the slice ``[h·E/H, (h+1)·E/H)``, read as ``(4, d_h)``.
With ``embed_dim = 64`` and 4 heads, head ``h`` then sees only quaternion component ``h``, and
its "shared" score is a single-component dot product.

Interface and masks follow ``torch.nn.MultiheadAttention``: inputs ``(N, B, E)`` (or
``(B, N, E)`` with ``batch_first=True``, or unbatched ``(N, E)``); a bool mask is True where
attention is NOT allowed and a float mask is added to the scores; ``attn_mask`` is ``(N, S)`` or
``(B·num_heads, N, S)``; ``key_padding_mask`` is ``(B, S)``. Differences: ``is_causal=True``
without ``attn_mask`` applies the causal mask (torch raises instead); a query whose keys are
all masked gets a zero output (torch gives NaN); returned weights are taken before dropout.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.attention import _masks
from qattn.attention.registry import Mechanism, get_mechanism, mechanism_names
from qattn.layers import BlockCache, QuaternionLinear
from qattn.quaternion import left_matrices

__all__ = ["QuaternionMultiheadAttention", "swap_attention", "head_order", "HEAD_SPLITS"]

HeadSplit = Literal["components", "release"]
HEAD_SPLITS = ("components", "release")


def head_order(embed_dim: int, num_heads: int, head_split: str, device: torch.device | str | None = None) -> Tensor:
    """Blocked feature index of each position in head-major order ``(H, 4, d_h)``.

    ``x[..., head_order(...)]`` reorders a blocked ``(..., E)`` tensor so that head ``h`` owns
    the contiguous slice ``[h·E/H, (h+1)·E/H)``, read as ``(4, d_h)``.

    >>> head_order(16, 2, "components").tolist()   # head 0: r0 r1 i0 i1 j0 j1 k0 k1
    [0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15]
    """
    d = embed_dim // (4 * num_heads)
    if head_split == "release":
        return torch.arange(embed_dim, device=device)
    idx = torch.arange(embed_dim, device=device).view(4, num_heads, d)  # blocked: (component, head, unit)
    return idx.transpose(0, 1).flatten()


class QuaternionMultiheadAttention(nn.Module):
    """Multi-head quaternion attention with any registered score (e.g. shared: one softmax; Hamilton: four).

    Parameters
    ----------
    embed_dim : int
        Model width in real units; a multiple of ``4·num_heads``.
    num_heads : int
        Number of heads; each has ``d_h = embed_dim / (4·num_heads)`` quaternion units.
    score : str
        The name of a registered mechanism, one of
        :func:`~qattn.attention.registry.mechanism_names`: ``"shared"``: Re(q ⊗ k̄), one softmax
        shared by the four components (the paper); ``"hamilton"``: Tay et al.'s four
        Hamilton-product score maps and four softmaxes.
    score_options : Mapping[str, Any], optional
        Overrides of the mechanism's options (``get_mechanism(score).options``), e.g.
        ``{"n_clusters": 25}`` for clustered attention; an option the core does not take is an
        error that lists the ones it does.
    generator : torch.Generator, optional
        Draws the random state a mechanism keeps (``Mechanism.draw_buffers``, e.g. the hashing
        hyperplanes of clustered attention), stored as buffers; None: torch's default generator,
        as for the parameters. :meth:`redraw_buffers` draws them again; nothing else does.
    head_split : {"components", "release"}
        ``"components"`` (default) or ``"release"`` (the ablation of the module docstring).
    dropout : float
        Dropout probability on the attention weights, active only in training mode.
    bias : bool
        Learnable biases in the four projections.
    batch_first : bool
        Inputs are ``(B, N, E)`` instead of ``(N, B, E)``.
    device, dtype
        Factory arguments of the parameters.

    Notes
    -----
    ``forward`` returns ``(output, weights)``. Weights are the core's: ``(B, H, N, S)`` for a
    mechanism with one map per head (shared) and ``(B, H, 4, N, S)`` for one with four
    (Hamilton; see ``Mechanism.maps_per_head``), averaged over heads to ``(B, N, S)`` /
    ``(B, 4, N, S)`` when ``average_attn_weights`` is True, or ``None`` if not ``need_weights``.

    Examples
    --------
    >>> torch.manual_seed(0) is not None
    True
    >>> mha = QuaternionMultiheadAttention(64, 4, score="shared", batch_first=True)
    >>> x = torch.randn(2, 10, 64)
    >>> out, w = mha(x, x, x)
    >>> out.shape, w.shape
    (torch.Size([2, 10, 64]), torch.Size([2, 10, 10]))
    >>> out, w = QuaternionMultiheadAttention(64, 4, score="hamilton", batch_first=True)(x, x, x)
    >>> w.shape
    torch.Size([2, 4, 10, 10])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        score: str = "shared",
        head_split: HeadSplit = "components",
        score_options: Mapping[str, Any] | None = None,
        generator: torch.Generator | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if not isinstance(embed_dim, int) or embed_dim <= 0 or embed_dim % (4 * num_heads) != 0:
            raise ValueError(
                f"embed_dim must be a positive multiple of 4·num_heads = {4 * num_heads} "
                f"(each head needs whole quaternion units of every component), got {embed_dim!r}"
            )
        if score not in mechanism_names():
            raise ValueError(f"score must be one of {mechanism_names()} (the registered mechanisms), got {score!r}")
        if head_split not in HEAD_SPLITS:
            raise ValueError(f"head_split must be one of {HEAD_SPLITS}, got {head_split!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_units = embed_dim // (4 * num_heads)
        self.score, self.head_split = score, head_split
        self.dropout, self.batch_first = dropout, batch_first
        factory = {"bias": bias, "device": device, "dtype": dtype}
        self.q_proj = QuaternionLinear(embed_dim, embed_dim, **factory)
        self.k_proj = QuaternionLinear(embed_dim, embed_dim, **factory)
        self.v_proj = QuaternionLinear(embed_dim, embed_dim, **factory)
        self.out_proj = QuaternionLinear(embed_dim, embed_dim, **factory)
        self._qkv_cache, self._out_cache = BlockCache(), BlockCache()
        self.score_options = get_mechanism(score).resolve_options(score_options)
        self._buffer_names: tuple[str, ...] = ()
        self.redraw_buffers(generator)

    def redraw_buffers(self, generator: torch.Generator | None = None) -> None:
        """Draw the mechanism's random state again (e.g. clustered attention's hyperplanes).

        A mechanism without such state (``Mechanism.draw_buffers`` None) has nothing to draw.
        Each tensor is a buffer (saved in the state dict, moved by ``.to``) passed to the core
        as the option of the same name.
        """
        draw = self.mechanism.draw_buffers
        if draw is None:
            return
        reference = self.q_proj.weight_r
        drawn = draw(4 * self.head_units, self.score_options, generator)
        for name, tensor in drawn.items():
            if name not in self.score_options:
                raise ValueError(
                    f"mechanism {self.score!r} drew a buffer {name!r} that is not one of its options {tuple(self.score_options)}"
                )
            self.register_buffer(
                name, tensor.to(device=reference.device, dtype=reference.dtype if tensor.is_floating_point() else tensor.dtype)
            )
        self._buffer_names = tuple(drawn)

    def with_score(
        self, score: str, score_options: Mapping[str, Any] | None = None, generator: torch.Generator | None = None
    ) -> QuaternionMultiheadAttention:
        """A copy of this layer with the same projections and another mechanism.

        The inference-time swap: a layer trained with full attention (``"shared"``) answers with,
        e.g., ``layer.with_score("improved_clustered", {"n_clusters": 25})``. The copy owns its
        parameters (deep copies); this layer is unchanged.
        """
        get_mechanism(score)  # the error lists the registered names
        swapped = copy.deepcopy(self)
        swapped._use_score(score, score_options, generator)
        return swapped

    def _use_score(self, score: str, score_options: Mapping[str, Any] | None, generator: torch.Generator | None) -> None:
        """Switch THIS layer to the mechanism ``score`` in place (its old buffers dropped, new ones drawn)."""
        options = get_mechanism(score).resolve_options(score_options)
        for name in self._buffer_names:
            delattr(self, name)
        self.score, self.score_options, self._buffer_names = score, options, ()
        self.redraw_buffers(generator)

    @property
    def mechanism(self) -> Mechanism:
        """The registry spec of this layer's ``score`` (its core is what ``forward`` calls)."""
        return get_mechanism(self.score)

    def extra_repr(self) -> str:
        shown = {k: v for k, v in self.score_options.items() if k not in self._buffer_names and v is not None}
        options = f", score_options={shown}" if shown else ""
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, score={self.score!r}{options}, head_split={self.head_split!r}"

    # -- head layout -------------------------------------------------------------------------
    def split_heads(self, x: Tensor) -> Tensor:
        """``(B, L, E)`` → ``(B, H, L, 4, d_h)`` according to ``head_split``."""
        h, d = self.num_heads, self.head_units
        if self.head_split == "components":
            return x.unflatten(-1, (4, h, d)).permute(0, 3, 1, 2, 4)
        return x.unflatten(-1, (h, 4, d)).permute(0, 2, 1, 3, 4)

    def merge_heads(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`split_heads`: ``(B, H, L, 4, d_v)`` → ``(B, L, E)``."""
        if self.head_split == "components":
            return x.permute(0, 2, 3, 1, 4).flatten(2)
        return x.permute(0, 2, 1, 3, 4).flatten(2)

    # -- projections -------------------------------------------------------------------------
    # forward never permutes activations: the projection weights' rows (and the output
    # projection's columns) are reordered once into head-major order (H, 4, d_h), so that the
    # projected tensors split into heads as views, exactly as in torch's MultiheadAttention.
    def head_major(self, t: Tensor, dim: int) -> Tensor:
        """Axis ``dim`` of ``t`` (blocked, length E) in head-major order ``(H, 4, d_h)``.

        The same as ``t.index_select(dim, head_order(...))``, done as a reshape and transpose, whose
        backward is a plain copy (an index's backward is a scatter-add, several times slower).
        """
        if self.head_split == "release":
            return t
        h, d = self.num_heads, self.head_units
        return t.unflatten(dim, (4, h, d)).transpose(dim, dim + 1).flatten(dim, dim + 2)

    def _projection_parameters(self, projections: tuple[QuaternionLinear, ...]) -> tuple[Tensor, ...]:
        params: list[Tensor] = []
        for proj in projections:
            params.extend(proj.components())
            bias = proj._parameters.get("bias")
            if bias is not None:
                params.append(bias)
        return tuple(params)

    def _packed_qkv(self) -> tuple[Tensor, Tensor | None]:
        """q, k, v block matrices with rows in head-major order, stacked ``(3E, E)``, and biases ``(3E,)``.

        One :func:`~qattn.quaternion.left_matrices` node assembles all three; with biases, weight
        and bias are views of one ``(3E, E + 1)`` matrix (the bias its last column).
        """
        projections = (self.q_proj, self.k_proj, self.v_proj)
        heads = None if self.head_split == "release" else self.num_heads
        has_bias = self.q_proj.bias is not None

        def build() -> tuple[Tensor, Tensor | None]:
            weights = torch.stack([w for p in projections for w in p.components()]).unflatten(0, (3, 4))
            if not has_bias:
                return left_matrices(weights, row_heads=heads).flatten(0, 1), None
            bias = torch.stack([p.bias for p in projections])
            return left_matrices(weights, row_heads=heads, bias=bias)

        return self._qkv_cache.get(self._projection_parameters(projections), build)

    def _output_weight(self) -> Tensor:
        """Output block matrix with columns in head-major order ``(E, E)``."""
        comps = self.out_proj.components()
        heads = None if self.head_split == "release" else self.num_heads
        return self._out_cache.get(comps, lambda: left_matrices(torch.stack(comps).unsqueeze(0), col_heads=heads).squeeze(0))

    def _project_heads(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, L, E)`` inputs → q, k, v as ``(B, H, L, 4, d_h)`` views; ONE fused ``F.linear``
        for self-attention (query, key and value the same tensor), one per input otherwise."""
        weight, bias = self._packed_qkv()
        if query is key and key is value:
            projected = F.linear(query, weight, bias).chunk(3, dim=-1)
        else:
            e = self.embed_dim
            projected = tuple(
                F.linear(t, weight[i * e : (i + 1) * e], None if bias is None else bias[i * e : (i + 1) * e])
                for i, t in enumerate((query, key, value))
            )
        h, d = self.num_heads, self.head_units
        return tuple(t.unflatten(-1, (h, 4, d)).transpose(1, 2) for t in projected)  # type: ignore[return-value]

    def project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The three quaternion projections of ``(B, L, E)`` inputs, as ``(B, L, E)`` blocked tensors."""
        return self.q_proj(query), self.k_proj(key), self.v_proj(value)

    # -- masks -------------------------------------------------------------------------------
    def _merge_masks(
        self, attn_mask: Tensor | None, key_padding_mask: Tensor | None, b: int, n: int, s: int, dtype: torch.dtype
    ) -> Tensor | None:
        """User masks → one additive mask broadcastable to ``(B, H, N, S)``."""
        mask = None
        if attn_mask is not None:
            _masks.check_mask_dtype(attn_mask, "attn_mask")
            if attn_mask.shape == (n, s):
                mask = _masks.to_additive(attn_mask, dtype)
            elif attn_mask.shape == (b * self.num_heads, n, s):
                mask = _masks.to_additive(attn_mask, dtype).unflatten(0, (b, self.num_heads))
            else:
                raise ValueError(
                    f"attn_mask must have shape (N, S) = ({n}, {s}) or (B·num_heads, N, S) = "
                    f"({b * self.num_heads}, {n}, {s}), got {tuple(attn_mask.shape)}"
                )
        if key_padding_mask is not None:
            _masks.check_mask_dtype(key_padding_mask, "key_padding_mask")
            if key_padding_mask.shape != (b, s):
                raise ValueError(f"key_padding_mask must have shape (B, S) = ({b}, {s}), got {tuple(key_padding_mask.shape)}")
            padding = _masks.to_additive(key_padding_mask, dtype)[:, None, None, :]
            mask = padding if mask is None else mask + padding
        return mask

    def _core_options(self) -> dict[str, Any]:
        """The keyword options passed to the core: the resolved options, buffers in place."""
        if not self.score_options:
            return {}
        return {**self.score_options, **{name: getattr(self, name) for name in self._buffer_names}}

    # -- forward -----------------------------------------------------------------------------
    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend ``query`` to ``key``/``value``; shapes and masks as in ``nn.MultiheadAttention``."""
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError(
                "query, key and value must all be 3-D (batched) or all 2-D (unbatched), got shapes "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        unbatched = query.dim() == 2
        self_attention = query is key and key is value  # keep the identity through the reshapes
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if self_attention:
            key = value = query
        b, n, e = query.shape
        s = key.shape[1]
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.shape[-1] != self.embed_dim:
                raise ValueError(f"{name} must have last dimension embed_dim={self.embed_dim}, got {t.shape[-1]}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != b:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} must share batch and length with query batch {b}")

        mask = self._merge_masks(attn_mask, key_padding_mask, b, n, s, query.dtype)
        q, k, v = self._project_heads(query, key, value)
        out, weights = self.mechanism.core(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
            need_weights=need_weights,
            **self._core_options(),
        )
        out = F.linear(out.transpose(1, 2).flatten(2), self._output_weight(), self.out_proj.bias)

        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if unbatched:
            out = out.squeeze(0)
            weights = weights.squeeze(0) if weights is not None else None
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def swap_attention(
    model: nn.Module, score: str, score_options: Mapping[str, Any] | None = None, generator: torch.Generator | None = None
) -> nn.Module:
    """A copy of ``model`` whose every :class:`QuaternionMultiheadAttention` uses the mechanism ``score``.

    The inference-time swap of a trained model: the projections are kept, only the way the
    scores become weights changes (:meth:`QuaternionMultiheadAttention.with_score`). ``model``
    is unchanged; buffers the new mechanism keeps (e.g. hyperplanes) are drawn from
    ``generator``, layer after layer. Raises ``ValueError`` if the model has no such layer.

    >>> layer = QuaternionMultiheadAttention(16, 2, batch_first=True)
    >>> swap_attention(nn.Sequential(layer), "clustered", {"n_clusters": 4})[0].score, layer.score
    ('clustered', 'shared')
    """
    get_mechanism(score)  # the error lists the registered names
    swapped = copy.deepcopy(model)
    # each parent's attention children, parent by parent (the order the buffers are drawn in)
    layers = [child for module in swapped.modules() for child in module.children() if isinstance(child, QuaternionMultiheadAttention)]
    if isinstance(swapped, QuaternionMultiheadAttention):
        layers.insert(0, swapped)
    for layer in layers:
        layer._use_score(score, score_options, generator)
    if not layers:
        raise ValueError(f"model has no QuaternionMultiheadAttention layer to swap to {score!r}")
    return swapped
