"""The attention mechanisms of ``qattn``, listed in one place.

Each mechanism module declares its own spec, ``MECHANISM = Mechanism(...)`` (name, functional
core, one-line summary, maps per head and what the core supports), and :data:`MECHANISMS` below
lists those specs. Adding a mechanism is one new module with its core and its ``MECHANISM``,
plus one entry in :data:`MECHANISMS`: :class:`~qattn.attention.QuaternionMultiheadAttention`
(``score=<name>``), the book's models and benchmark variants, and the contract tests
(``tests/test_registry.py``) then pick it up by name. The order of :data:`MECHANISMS` is the
order of :func:`mechanism_names`, hence of every table built from it.

Every core follows one contract (:class:`AttentionCore`)::

    core(q (B, H, N, 4, d_h), k (B, H, S, 4, d_h), v (B, H, S, 4, d_v),
         attn_mask=None, dropout_p=0.0, is_causal=False, need_weights=False)
        → (out (B, H, N, 4, d_v), weights (B, H, N, S) or (B, H, 4, N, S) or None)

Masks: bool True = NOT allowed, float masks are added to the scores; a query whose keys are all
masked gets zero output and zero weights, never NaN. A mechanism declares what it supports (its
``Mechanism`` fields): clustered attention, for one, takes key masks only (``per_query_mask``
False) and refuses causal ones; CogView's sparse attention is causal only (``causal_only``) and
takes no masks. A core may take extra keyword options with defaults
(``Mechanism.options``, e.g. ``n_clusters``), and random state a layer keeps as buffers
(``Mechanism.draw_buffers``, e.g. hashing hyperplanes).

Multimodal fusion mechanisms follow a second contract (:class:`FusionCore`): ``M ≥ 2``
modalities pooled into one joint vector by one attention over index tuples
(:data:`FUSION_MECHANISMS`, :func:`fusion_names`, :func:`get_fusion`; exact multi-linear attention
and its random-feature approximation).

Examples
--------
>>> import torch
>>> mechanism_names()
('shared', 'hamilton', 'clustered', 'improved_clustered', 'cogview_sparse', 'cogview_sparse_hamilton')
>>> mechanism_names(exact=True)
('shared', 'hamilton')
>>> spec = get_mechanism("hamilton")
>>> spec.maps_per_head, spec.returns_weights
(4, True)
>>> q, k, v = torch.randn(2, 3, 5, 4, 2), torch.randn(2, 3, 7, 4, 2), torch.randn(2, 3, 7, 4, 2)
>>> out, weights = spec.core(q, k, v, need_weights=True)
>>> tuple(out.shape), tuple(weights.shape) == spec.weights_shape(2, 3, 5, 7)
((2, 3, 5, 4, 2), True)
>>> get_mechanism("real")
Traceback (most recent call last):
    ...
ValueError: unknown attention mechanism 'real'; registered mechanisms: ('shared', 'hamilton', ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from qattn.attention import clustered, cogview_sparse, cogview_sparse_hamilton, hamilton, improved_clustered, multilinear, shared_score
from qattn.attention._spec import AttentionCore, BufferDrawer, FusionCore, FusionMechanism, Mechanism

__all__ = [
    "AttentionCore",
    "BufferDrawer",
    "FusionCore",
    "FusionMechanism",
    "Mechanism",
    "MECHANISMS",
    "FUSION_MECHANISMS",
    "get_mechanism",
    "mechanism_names",
    "get_fusion",
    "fusion_names",
]

MECHANISMS: tuple[Mechanism, ...] = (
    shared_score.MECHANISM,
    hamilton.MECHANISM,
    clustered.MECHANISM,
    improved_clustered.MECHANISM,
    cogview_sparse.MECHANISM,
    cogview_sparse_hamilton.MECHANISM,
)
"""Every registered mechanism, in display order: the one place a new mechanism is added."""

FUSION_MECHANISMS: tuple[FusionMechanism, ...] = (
    multilinear.MECHANISM,
    multilinear.ARF_MECHANISM,
)
"""Every registered multimodal fusion mechanism (:class:`FusionMechanism`, M ≥ 2 modalities pooled by one attention)."""


def _index(mechanisms: tuple, kind: type = Mechanism) -> Mapping[str, Any]:
    """Read-only ``name → spec`` map of ``mechanisms`` (all of type ``kind``); duplicate names are an error."""
    by_name: dict[str, Any] = {}
    for spec in mechanisms:
        if not isinstance(spec, kind):
            raise TypeError(f"expected {kind.__name__} specs, got {type(spec).__name__}")
        if spec.name in by_name:
            raise ValueError(f"mechanism name {spec.name!r} is registered twice")
        by_name[spec.name] = spec
    return MappingProxyType(by_name)


_BY_NAME = _index(MECHANISMS)
_FUSION_BY_NAME = _index(FUSION_MECHANISMS, FusionMechanism)


def mechanism_names(*, exact: bool | None = None) -> tuple[str, ...]:
    """Names of the registered mechanisms, in registry order.

    ``exact=True`` keeps the mechanisms that compute softmax attention exactly (the book's
    transformer variants), ``exact=False`` the approximations; None keeps all.

    >>> "shared" in mechanism_names()
    True
    >>> mechanism_names(exact=False)
    ('clustered', 'improved_clustered', 'cogview_sparse', 'cogview_sparse_hamilton')
    """
    if exact is not None and not isinstance(exact, bool):
        raise TypeError(f"exact must be True, False or None, got {exact!r}")
    return tuple(name for name, spec in _BY_NAME.items() if exact is None or spec.exact == exact)


def get_mechanism(name: str) -> Mechanism:
    """The spec of the mechanism called ``name``.

    Parameters
    ----------
    name : str
        One of :func:`mechanism_names`.

    Returns
    -------
    Mechanism
        Its spec; ``get_mechanism(name).core`` is the functional core.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the registered names.

    >>> get_mechanism("shared").maps_per_head
    1
    """
    if not isinstance(name, str) or name not in _BY_NAME:
        raise ValueError(f"unknown attention mechanism {name!r}; registered mechanisms: {mechanism_names()}")
    return _BY_NAME[name]


def fusion_names(*, exact: bool | None = None) -> tuple[str, ...]:
    """Names of the registered fusion mechanisms, in registry order (``exact`` filters as in :func:`mechanism_names`).

    >>> fusion_names(), fusion_names(exact=False)
    (('multilinear', 'multilinear_arf'), ('multilinear_arf',))
    """
    if exact is not None and not isinstance(exact, bool):
        raise TypeError(f"exact must be True, False or None, got {exact!r}")
    return tuple(name for name, spec in _FUSION_BY_NAME.items() if exact is None or spec.exact == exact)


def get_fusion(name: str) -> FusionMechanism:
    """The spec of the fusion mechanism called ``name`` (``ValueError`` listing the registered ones otherwise).

    >>> import torch
    >>> spec = get_fusion("multilinear_arf")
    >>> gen = torch.Generator().manual_seed(0)
    >>> fusion = [torch.rand(2, n, 4, generator=gen) for n in (3, 5)]
    >>> scores = [torch.randn(2, n, 6, generator=gen) for n in (3, 5)]
    >>> options = spec.resolve_options(spec.draw_buffers(6, spec.options, gen))
    >>> tuple(spec.core(fusion, scores, **options)[0].shape)
    (2, 4)
    >>> get_fusion("shared")
    Traceback (most recent call last):
        ...
    ValueError: unknown fusion mechanism 'shared'; registered fusion mechanisms: ('multilinear', 'multilinear_arf')
    """
    if not isinstance(name, str) or name not in _FUSION_BY_NAME:
        raise ValueError(f"unknown fusion mechanism {name!r}; registered fusion mechanisms: {fusion_names()}")
    return _FUSION_BY_NAME[name]
