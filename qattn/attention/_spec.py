"""The :class:`Mechanism` spec type, kept apart from :mod:`~qattn.attention.registry`.

Each mechanism module (``shared_score.py``, ``hamilton.py``, ...) builds its own ``MECHANISM``
from this class, and the registry imports those modules: defining the class here, in a module
that imports nothing of ``qattn``, keeps that import graph free of cycles. Use it through
:mod:`qattn.attention.registry` (or ``qattn.Mechanism``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

from torch import Tensor

__all__ = ["AttentionCore", "Mechanism"]

MAPS_PER_HEAD = (1, 4)
_CAPABILITIES = ("returns_weights", "bool_mask", "float_mask", "causal", "cross_attention")


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
    causal : bool
        Honours ``is_causal=True`` (query ``i`` sees keys ``j ≤ i``).
    cross_attention : bool
        Accepts keys and values of a length ``S`` other than the queries' ``N``.

    Examples
    --------
    >>> from qattn.attention.shared_score import shared_score_attention
    >>> spec = Mechanism(name="demo", core=shared_score_attention, summary="Shared scores again.", maps_per_head=1,
    ...                  returns_weights=True, bool_mask=True, float_mask=True, causal=True, cross_attention=True)
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
    causal: bool
    cross_attention: bool

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

    def capabilities(self) -> dict[str, bool]:
        """The declared capabilities by name, e.g. ``{"returns_weights": True, ...}``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in _CAPABILITIES}

    def weights_shape(self, batch: int, heads: int, queries: int, keys: int) -> tuple[int, ...]:
        """Shape of the weights the core returns: ``(B, H, N, S)`` or ``(B, H, 4, N, S)``."""
        if self.maps_per_head == 1:
            return (batch, heads, queries, keys)
        return (batch, heads, self.maps_per_head, queries, keys)
