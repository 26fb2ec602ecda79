"""The spec types :class:`Mechanism` and :class:`FusionMechanism`, kept apart from :mod:`~qattn.attention.registry`.

Each mechanism module (``shared_score.py``, ``hamilton.py``, ...) builds its own ``MECHANISM``
from this class, and the registry imports those modules: defining the class here, in a module
that imports nothing of ``qattn``, keeps that import graph free of cycles. Use it through
:mod:`qattn.attention.registry` (or ``qattn.Mechanism``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["AttentionCore", "BufferDrawer", "FusionCore", "FusionMechanism", "Mechanism"]

MAPS_PER_HEAD = (1, 4)
_CAPABILITIES = ("returns_weights", "bool_mask", "float_mask", "per_query_mask", "causal", "cross_attention")
_CONTRACT_ARGUMENTS = ("q", "k", "v", "attn_mask", "dropout_p", "is_causal", "need_weights")


class AttentionCore(Protocol):
    """The functional core contract shared by every mechanism.

    ``q (B, H, N, 4, d_h)``, ``k (B, H, S, 4, d_h)``, ``v (B, H, S, 4, d_v)`` →
    ``(out (B, H, N, 4, d_v), weights or None)``; ``attn_mask`` broadcastable to
    ``(B, H, N, S)`` (bool True = NOT allowed, float = added to the scores); fully masked query
    rows give zeros, never NaN; ``weights`` (only with ``need_weights=True``) are taken before
    dropout.
    """

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        attn_mask: Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]: ...


class BufferDrawer(Protocol):
    """Draws the random state a layer keeps for a mechanism (e.g. hashing hyperplanes).

    ``draw(query_dim, options, generator)`` → ``{option name: tensor}``; ``query_dim`` is the
    flattened quaternion query size ``4·d_h``, ``options`` the layer's options (defaults merged),
    ``generator`` the source of randomness (None: torch's default generator, as for parameters).
    """

    def __call__(self, query_dim: int, options: Mapping[str, Any], generator: torch.Generator | None) -> dict[str, Tensor]: ...


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """One attention mechanism: its functional core and what that core supports.

    Every field is a keyword and has no default: a mechanism states all its capabilities.

    Parameters
    ----------
    name : str
        Registry key, the ``score=`` value of
        :class:`~qattn.attention.QuaternionMultiheadAttention`; a Python identifier, since
        variant names such as ``core_<name>`` are derived from it.
    core : AttentionCore
        ``core(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, need_weights=False)``
        on ``(B, H, N, 4, d_h)`` tensors, returning ``(out (B, H, N, 4, d_v), weights or None)``.
    summary : str
        One line for humans (tables, reprs).
    maps_per_head : {1, 4}
        Attention maps per head: the weights are ``(B, H, N, S)`` for 1 and ``(B, H, 4, N, S)``
        for 4 (see :meth:`weights_shape`).
    returns_weights : bool
        ``need_weights=True`` returns the weights (before dropout).
    bool_mask : bool
        Accepts a bool ``attn_mask`` (True = NOT allowed).
    float_mask : bool
        Accepts a float ``attn_mask`` (added to the scores).
    per_query_mask : bool
        Accepts masks that differ between queries; ``False``: only masks that are the same for
        every query (key masks, broadcastable to ``(B, H, 1, S)``) are accepted, others refused.
    causal : bool
        Honours ``is_causal=True`` (query ``i`` sees keys ``j ≤ i``).
    causal_only : bool
        Computes causal attention only (e.g. CogView's sparse attention, whose layout looks back
        only): the core requires ``is_causal=True`` and refuses ``False`` by name. Implies ``causal``.
    cross_attention : bool
        Accepts keys and values of a length ``S`` other than the queries' ``N``.
    exact : bool
        Computes softmax attention exactly; ``False`` for an approximation (e.g. clustered
        attention). The book's transformer variants use the exact mechanisms.
    options : Mapping[str, Any]
        The core's extra keyword arguments and their defaults (e.g. ``n_clusters``); empty for
        a core that has none. :class:`~qattn.attention.QuaternionMultiheadAttention` takes
        overrides as ``score_options``.
    draw_buffers : BufferDrawer or None
        For a mechanism with random state kept by the layer (e.g. hashing hyperplanes): draws
        it as ``{option name: tensor}``; the layer stores the tensors as buffers, passes them to
        the core as those options and redraws them only when asked. None: no such state.

    Examples
    --------
    >>> from qattn.attention.shared_score import shared_score_attention
    >>> spec = Mechanism(name="demo", core=shared_score_attention, summary="Shared scores again.", maps_per_head=1,
    ...                  returns_weights=True, bool_mask=True, float_mask=True, per_query_mask=True, causal=True,
    ...                  causal_only=False, cross_attention=True, exact=True, options={}, draw_buffers=None)
    >>> spec.weights_shape(2, 3, 5, 7)
    (2, 3, 5, 7)
    """

    name: str
    core: AttentionCore
    summary: str
    maps_per_head: int
    returns_weights: bool
    bool_mask: bool
    float_mask: bool
    per_query_mask: bool
    causal: bool
    causal_only: bool
    cross_attention: bool
    exact: bool
    options: Mapping[str, Any]
    draw_buffers: BufferDrawer | None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                f"name must be a non-empty Python identifier (it forms variant names such as 'core_<name>'), got {self.name!r}"
            )
        if not callable(self.core):
            raise TypeError(f"core of mechanism {self.name!r} must be callable, got {type(self.core).__name__}")
        if not isinstance(self.summary, str) or not self.summary.strip() or "\n" in self.summary:
            raise ValueError(f"summary of mechanism {self.name!r} must be one non-empty line, got {self.summary!r}")
        if type(self.maps_per_head) is not int or self.maps_per_head not in MAPS_PER_HEAD:
            raise ValueError(f"maps_per_head of mechanism {self.name!r} must be one of {MAPS_PER_HEAD}, got {self.maps_per_head!r}")
        for name in _CAPABILITIES:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} of mechanism {self.name!r} must be a bool, got {value!r}")
        if not isinstance(self.causal_only, bool):
            raise TypeError(f"causal_only of mechanism {self.name!r} must be a bool, got {self.causal_only!r}")
        if self.causal_only and not self.causal:
            raise ValueError(f"mechanism {self.name!r} is causal_only but does not declare causal")
        if not isinstance(self.exact, bool):
            raise TypeError(f"exact of mechanism {self.name!r} must be a bool, got {self.exact!r}")
        if not isinstance(self.options, Mapping):
            raise TypeError(f"options of mechanism {self.name!r} must be a mapping of name → default, got {type(self.options).__name__}")
        for key in self.options:
            if not isinstance(key, str) or not key.isidentifier() or key in _CONTRACT_ARGUMENTS:
                raise ValueError(
                    f"option {key!r} of mechanism {self.name!r} must be a keyword name other than the contract's {_CONTRACT_ARGUMENTS}"
                )
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if self.draw_buffers is not None and not callable(self.draw_buffers):
            raise TypeError(f"draw_buffers of mechanism {self.name!r} must be callable or None, got {type(self.draw_buffers).__name__}")

    def capabilities(self) -> dict[str, bool]:
        """The declared capabilities by name, e.g. ``{"returns_weights": True, ...}``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in _CAPABILITIES}

    def resolve_options(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The core's options: the declared defaults updated with ``overrides``.

        Raises ``ValueError`` naming any override the core does not take, with the ones it takes.
        """
        overrides = {} if overrides is None else dict(overrides)
        unknown = sorted(set(overrides) - set(self.options))
        if unknown:
            allowed = tuple(self.options) or "none"
            raise ValueError(f"mechanism {self.name!r} takes no option(s) {unknown}; its options: {allowed}")
        return {**self.options, **overrides}

    def weights_shape(self, batch: int, heads: int, queries: int, keys: int) -> tuple[int, ...]:
        """Shape of the weights the core returns: ``(B, H, N, S)`` or ``(B, H, 4, N, S)``."""
        if self.maps_per_head == 1:
            return (batch, heads, queries, keys)
        return (batch, heads, self.maps_per_head, queries, keys)


class FusionCore(Protocol):
    """The functional core contract of the multimodal fusion mechanisms (attention pooling over M ≥ 2 modalities).

    ``fusion [F^m (B, L_m, K)]``, ``scores [S^m (B, L_m, r)]`` (one pair per modality), ``masks``
    ``[(B, L_m) bool or None]`` (True = padding) → ``(z (B, K), weights (B, L_1, …, L_M) or None)``;
    tuples holding a padding token get weight 0, and a sample with a fully padded modality gets
    ``z = 0``, never NaN. Extra keyword options as the spec declares.
    """

    def __call__(
        self, fusion: Any, scores: Any, masks: Any = None, need_weights: bool = False, **options: Any
    ) -> tuple[Tensor, Tensor | None]: ...


_FUSION_ARGUMENTS = ("fusion", "scores", "masks", "need_weights")


@dataclass(frozen=True, kw_only=True)
class FusionMechanism:
    """What the registry knows about a multimodal fusion mechanism (:class:`FusionCore` contract).

    Unlike the :class:`Mechanism` cores (one query sequence attending to one key sequence), these
    pool ``M ≥ 2`` modalities into one joint vector through one attention distribution over index
    tuples (multi-linear attention; bilinear attention is its ``M = 2`` case).

    Attributes
    ----------
    name : str
        Registry key, a Python identifier.
    core : FusionCore
        The functional core.
    summary : str
        One line for tables and error messages.
    exact : bool
        True if the core computes the joint softmax exactly (cost ``Π_m L_m``); False for an
        approximation (e.g. random features, linear in the lengths).
    returns_weights : bool
        Whether ``need_weights=True`` returns the ``(B, L_1, …, L_M)`` weights (False: refused by name).
    options : Mapping[str, Any]
        Extra keyword options of the core with their defaults.
    draw_buffers : callable or None
        ``draw(rank, options, generator) → {option: tensor}``: the random state a module keeps
        for the core (e.g. random features); None if it needs none.
    """

    name: str
    core: FusionCore
    summary: str
    exact: bool
    returns_weights: bool
    options: Mapping[str, Any]
    draw_buffers: Any

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name must be a non-empty Python identifier, got {self.name!r}")
        if not callable(self.core):
            raise TypeError(f"core of fusion mechanism {self.name!r} must be callable, got {type(self.core).__name__}")
        if not isinstance(self.summary, str) or not self.summary.strip() or "\n" in self.summary:
            raise ValueError(f"summary of fusion mechanism {self.name!r} must be one non-empty line, got {self.summary!r}")
        for flag in ("exact", "returns_weights"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} of fusion mechanism {self.name!r} must be a bool, got {getattr(self, flag)!r}")
        if not isinstance(self.options, Mapping):
            raise TypeError(f"options of fusion mechanism {self.name!r} must map name → default, got {type(self.options).__name__}")
        for key in self.options:
            if not isinstance(key, str) or not key.isidentifier() or key in _FUSION_ARGUMENTS:
                raise ValueError(
                    f"option {key!r} of fusion mechanism {self.name!r} must be a keyword name other than the contract's {_FUSION_ARGUMENTS}"
                )
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if self.draw_buffers is not None and not callable(self.draw_buffers):
            raise TypeError(f"draw_buffers of fusion {self.name!r} must be callable or None: got {type(self.draw_buffers).__name__}")

    def resolve_options(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The core's options: the declared defaults updated with ``overrides`` (unknown ones named in a ``ValueError``)."""
        overrides = {} if overrides is None else dict(overrides)
        unknown = sorted(set(overrides) - set(self.options))
        if unknown:
            allowed = tuple(self.options) or "none"
            raise ValueError(f"fusion mechanism {self.name!r} takes no option(s) {unknown}; its options: {allowed}")
        return {**self.options, **overrides}
