"""Attention concentration on a prompt: strength, fluctuation and the two training losses.

After *Concentrate Attention* (Li et al., NeurIPS 2024): prompts that draw much attention from
the deep layers (high concentration strength) and whose attention is stable across inputs (low
concentration fluctuation) generalise better to unseen domains. The paper states these ideas in
words and code; the exact formalisation below (which token, which average, which spread, how
layers combine) is OURS.

Notation: one layer's attention weights ``A`` of shape ``(B, H, N, S)`` (rows = queries, each
row a distribution over the ``S`` keys; ``S = N`` for self-attention), or ``(B, H, 4, N, S)``
for Hamilton (component-wise) quaternion attention, whose four maps ``A_r, A_i, A_j, A_k`` are
indexed by the third axis. ``d_b`` is the position of the DECODING token of example ``b`` (the
mask slot of a masked LM, the last token of a causal LM) and ``P_b`` the set of prompt positions.

Decoding row (head-averaged; for Hamilton weights per component ``c`` or averaged over ``c``)::

    ā_b = 1/H Σ_h A[b, h, d_b, :]                       (S,)

Concentration of example ``b`` on the prompt, and per layer ``l`` over the ``B`` inputs::

    c_b = Σ_{s ∈ P_b} ā_b[s]                            ∈ [0, 1]
    CS  = 1/B Σ_b c_b                                   (concentration strength)
    CF  = sqrt(1/(B - δ) Σ_b (c_b - CS)²)               (concentration fluctuation)

CF is the POPULATION standard deviation (``δ = 0``) by default, a property of the inputs at hand
(0 for a single input); ``unbiased=True`` gives the sample standard deviation (``δ = 1``).

Losses, over a set ``D`` of deep layers (``ā^l`` the component-averaged decoding row of layer l):

- strength loss ``L_CS = 1/|D| Σ_{l∈D} 1/B Σ_b Σ_{s ∈ I_b} ā^l_b[s]``: the mass the decoding
  token puts on the INPUT text positions ``I_b``; minimising it moves mass onto the prompt.
- fluctuation loss ``L_CF``: the supervised contrastive loss (Khosla et al. 2020, the ``L_out``
  form) with temperature ``τ = 0.5`` on one vector per example, the decoding row restricted to the
  prompt positions (in position order), ``v_b = (ā^l_b[s])_{s ∈ P_b}``, combined over ``D`` by
  concatenation (default) or by averaging the rows first; see :func:`fluctuation_loss`.

Both losses take attention tensors only, so they apply to any transformer whose weights can be
read out (``need_weights=True, average_attn_weights=False`` for ``nn.MultiheadAttention`` and
:class:`~qattn.attention.QuaternionMultiheadAttention`).

>>> import torch
>>> w = torch.full((1, 1, 3, 3), 1 / 3)                  # uniform attention, one head
>>> float(concentration(w, 2, torch.tensor([True, True, False])))
0.6666...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "concentration",
    "decoding_rows",
    "fluctuation_loss",
    "strength_and_fluctuation",
    "strength_loss",
    "supervised_contrastive_loss",
]

Components = Literal["mean", "each"]
Layers = Tensor | Sequence[Tensor]
HAMILTON_COMPONENTS = 4


def _check_weights(weights: Tensor) -> None:
    if not isinstance(weights, Tensor) or not weights.is_floating_point():
        raise ValueError(f"weights must be a floating-point tensor, got {type(weights).__name__} {getattr(weights, 'dtype', '')}")
    ok = weights.dim() == 4 or (weights.dim() == 5 and weights.shape[2] == HAMILTON_COMPONENTS)
    if not ok or weights.numel() == 0:
        raise ValueError(
            "weights must be one layer's attention (B, H, N, S) or Hamilton weights (B, H, 4, N, S) "
            f"(rows = queries, non-empty), got shape {tuple(weights.shape)}"
        )


def _decoding_index(decoding: int | Tensor, batch: int, queries: int, device: torch.device) -> Tensor:
    """The decoding position of every example as a ``(B,)`` int64 tensor, range-checked against ``N``."""
    if isinstance(decoding, bool):
        raise ValueError(f"decoding must be an int or a (B,) integer tensor, got {decoding!r}")
    if isinstance(decoding, int):
        index = torch.full((batch,), decoding, dtype=torch.long, device=device)
    elif isinstance(decoding, Tensor) and not decoding.is_floating_point() and not decoding.is_complex() and decoding.dtype != torch.bool:
        if decoding.dim() == 0:
            index = decoding.to(device=device, dtype=torch.long).expand(batch)
        elif decoding.shape == (batch,):
            index = decoding.to(device=device, dtype=torch.long)
        else:
            raise ValueError(f"decoding must be an int or an integer tensor of shape (B,) = ({batch},), got shape {tuple(decoding.shape)}")
    else:
        raise ValueError(
            f"decoding must be an int or a (B,) integer tensor, got {type(decoding).__name__} {getattr(decoding, 'dtype', '')}"
        )
    if ((index < 0) | (index >= queries)).any():
        raise ValueError(f"decoding positions must lie in [0, N) = [0, {queries}), got {index.tolist()}")
    return index


def _position_mask(mask: Tensor, batch: int, keys: int, name: str, device: torch.device) -> Tensor:
    """A ``(B, S)`` bool mask from a ``(B, S)`` or ``(S,)`` one; every example must keep a position."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape not in ((batch, keys), (keys,)):
        raise ValueError(
            f"{name} must be a bool tensor of shape (B, S) = ({batch}, {keys}) or (S,) = ({keys},), "
            f"got {type(mask).__name__} {tuple(getattr(mask, 'shape', ()))} {getattr(mask, 'dtype', '')}"
        )
    mask = mask.to(device).expand(batch, keys)
    empty = (~mask.any(-1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{name} selects no position for example(s) {empty.tolist()}; every example needs at least one")
    return mask


def decoding_rows(
    weights: Tensor,
    decoding: int | Tensor,
    components: Components = "mean",
    check_rows: bool = True,
    atol: float = 1e-4,
) -> Tensor:
    """The decoding token's attention row of every example, averaged over heads.

    Parameters
    ----------
    weights : (B, H, N, S) one layer's attention weights, or (B, H, 4, N, S) Hamilton weights
    decoding : the decoding position of each example, an int (all examples) or a (B,) integer
        tensor, each in ``[0, N)``
    components : for Hamilton weights, ``"mean"``: the mean map over the four components;
        ``"each"``: one row per component. A single-map layer ``(B, H, N, S)`` (e.g. the shared
        score, which uses one map for all four components) counts as four identical maps under
        ``"each"``, as in :func:`~qattn.metrics.divergence.repeat_components`.
    check_rows : check that the selected rows are distributions: entries ``≥ -atol`` and each
        head's (and component's) row summing to 1 within ``atol`` (NaN fails)
    atol : tolerance of that check

    Returns
    -------
    ``ā_b = 1/H Σ_h A[b, h, d_b, :]``: ``(B, S)`` for ``"mean"``, ``(B, 4, S)`` for ``"each"``.
    """
    _check_weights(weights)
    if components not in ("mean", "each"):
        raise ValueError(f"components must be 'mean' or 'each', got {components!r}")
    batch, queries = weights.shape[0], weights.shape[-2]
    index = _decoding_index(decoding, batch, queries, weights.device)
    if weights.dim() == 4:
        weights = weights.unsqueeze(2)  # (B, H, 1, N, S): one map
    picked = weights[torch.arange(batch, device=weights.device), :, :, index]  # (B, H, C, S)
    if check_rows:
        sums = picked.sum(-1)
        bad = ~((sums - 1).abs() <= atol) | ~(picked.amin(-1) >= -atol)
        if bad.any():
            b, h, c = bad.nonzero()[0].tolist()
            where = f"example {b}, head {h}" + (f", component {c}" if picked.shape[2] > 1 else "")
            raise ValueError(
                f"attention rows must be distributions (non-negative, summing to 1 within atol={atol}); "
                f"the decoding row of {where} sums to {float(sums[b, h, c]):.6g} with minimum {float(picked[b, h, c].min()):.6g} "
                "(pass check_rows=False to skip this check)"
            )
    rows = picked.mean(1)  # (B, C, S), head average
    if components == "mean":
        return rows.mean(1)
    return rows.expand(batch, HAMILTON_COMPONENTS, rows.shape[-1])


def concentration(
    weights: Tensor,
    decoding: int | Tensor,
    prompt_mask: Tensor,
    components: Components = "mean",
    check_rows: bool = True,
) -> Tensor:
    """Attention mass the decoding token puts on the prompt, per example: ``c_b = Σ_{s ∈ P_b} ā_b[s]``.

    Parameters
    ----------
    weights, decoding, components, check_rows : as in :func:`decoding_rows`
    prompt_mask : (B, S) or (S,) bool, True at the prompt positions (keys); every example needs one

    Returns
    -------
    ``(B,)`` in ``[0, 1]``, or ``(B, 4)`` per Hamilton component for ``components="each"`` (whose
    mean over the last axis is the ``"mean"`` result: the sum over positions is linear).
    """
    return _mass(weights, decoding, prompt_mask, "prompt_mask", components, check_rows)


def _mass(weights: Tensor, decoding: int | Tensor, mask: Tensor, name: str, components: Components, check_rows: bool) -> Tensor:
    """The decoding rows' mass on the positions of ``mask`` (named ``name`` in errors): (B,) or (B, 4)."""
    rows = decoding_rows(weights, decoding, components, check_rows)
    keep = _position_mask(mask, rows.shape[0], rows.shape[-1], name, rows.device)
    if rows.dim() == 3:
        keep = keep.unsqueeze(1)
    return (rows * keep).sum(-1)


def _as_layers(layers: Layers) -> tuple[list[Tensor], bool]:
    """The layers as a list, and whether a single tensor was given."""
    if isinstance(layers, Tensor):
        return [layers], True
    layers = list(layers)
    if not layers or not all(isinstance(w, Tensor) for w in layers):
        raise ValueError("layers must be one layer's weights (a tensor) or a non-empty sequence of tensors")
    return layers, False


def strength_and_fluctuation(
    layers: Layers,
    decoding: int | Tensor,
    prompt_mask: Tensor,
    components: Components = "mean",
    unbiased: bool = False,
    check_rows: bool = True,
) -> dict[str, Tensor]:
    """Concentration strength (mean over inputs) and fluctuation (standard deviation over inputs) per layer.

    Parameters
    ----------
    layers : one layer's weights, or a sequence of ``L`` layers' weights (each as in
        :func:`decoding_rows`; all with the same batch)
    decoding, prompt_mask, components, check_rows : as in :func:`concentration`
    unbiased : False (default): population standard deviation ``sqrt(1/B Σ (c_b - CS)²)``;
        True: sample standard deviation (divisor ``B - 1``, needs ``B ≥ 2``)

    Returns
    -------
    dict with ``"concentration"`` ``(L, B)``, ``"strength"`` ``(L,)`` and ``"fluctuation"``
    ``(L,)``; with ``components="each"`` a component axis follows: ``(L, B, 4)``, ``(L, 4)``,
    ``(L, 4)``. A single tensor gives the same without the leading ``L`` axis.
    """
    layer_list, single = _as_layers(layers)
    values = torch.stack([concentration(w, decoding, prompt_mask, components, check_rows) for w in layer_list])  # (L, B[, 4])
    if unbiased and values.shape[1] < 2:
        raise ValueError(f"the sample standard deviation (unbiased=True) needs at least 2 inputs, got B = {values.shape[1]}")
    result = {
        "concentration": values,
        "strength": values.mean(1),
        "fluctuation": values.std(1, correction=1 if unbiased else 0),
    }
    return {k: v[0] for k, v in result.items()} if single else result


def _deep_indices(deep_layers: Sequence[int] | None, count: int) -> list[int]:
    if deep_layers is None:
        return list(range(count))
    indices = list(deep_layers)
    if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ValueError(f"deep_layers must be a non-empty sequence of ints (layer indices), got {deep_layers!r}")
    bad = [i for i in indices if not -count <= i < count]
    if bad:
        raise ValueError(f"deep_layers {bad} out of range for {count} layer(s): indices must lie in [-{count}, {count})")
    normal = [i % count for i in indices]
    if len(set(normal)) != len(normal):
        raise ValueError(f"deep_layers {indices} name a layer more than once")
    return normal


def strength_loss(
    layers: Layers,
    decoding: int | Tensor,
    input_mask: Tensor,
    deep_layers: Sequence[int] | None = None,
    check_rows: bool = True,
) -> Tensor:
    """Concentration-strength loss: the attention mass the decoding token puts on the INPUT text.

    ``L_CS = 1/|D| Σ_{l ∈ D} 1/B Σ_b Σ_{s ∈ I_b} ā^l_b[s]``, with ``ā^l`` the head- (and, for
    Hamilton weights, component-) averaged decoding row of layer ``l``. Rows sum to 1, so
    minimising the mass on the input pushes it onto the other positions, the prompt above all
    when the input and the prompt make up (nearly) the whole sequence.

    Parameters
    ----------
    layers : one layer's weights or a sequence of them, as in :func:`strength_and_fluctuation`
    decoding : as in :func:`decoding_rows`
    input_mask : (B, S) or (S,) bool, True at the input-text positions (NOT the prompt)
    deep_layers : indices into ``layers`` of the deep layers ``D`` (negative ones count from the
        end, as in Python); None: all given layers
    check_rows : as in :func:`decoding_rows`

    Returns
    -------
    scalar tensor in ``[0, 1]``, differentiable w.r.t. the weights.
    """
    layer_list, _ = _as_layers(layers)
    chosen = _deep_indices(deep_layers, len(layer_list))
    masses = [_mass(layer_list[i], decoding, input_mask, "input_mask", "mean", check_rows).mean() for i in chosen]
    return torch.stack(masses).mean()


def supervised_contrastive_loss(features: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, ``L_out``) on cosine similarities.

    With ``z_b = f_b / ‖f_b‖``, ``A(i)`` all examples but ``i`` and ``P(i) = {p ∈ A(i): y_p = y_i}``::

        ℓ_i = -1/|P(i)| Σ_{p ∈ P(i)} log( exp(z_i·z_p / τ) / Σ_{a ∈ A(i)} exp(z_i·z_a / τ) )
        L   = mean of ℓ_i over the anchors with |P(i)| > 0

    Minimised: positives are pulled together, the rest pushed apart. Anchors without positives
    are left out of the mean; if no anchor has one, the loss is 0 (still attached to the graph,
    so ``backward`` works and gives zero gradients). A zero feature vector has similarity 0.

    Parameters
    ----------
    features : (B, D) one vector per example, ``B ≥ 2``
    labels : (B,) integer class labels
    temperature : ``τ > 0``
    """
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] < 2 or not features.is_floating_point():
        raise ValueError(f"features must be a floating-point (B, D) tensor with B ≥ 2, got shape {tuple(getattr(features, 'shape', ()))}")
    batch = features.shape[0]
    if (
        not isinstance(labels, Tensor)
        or labels.shape != (batch,)
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"labels must be an integer tensor of shape (B,) = ({batch},), "
            f"got {type(labels).__name__} {tuple(getattr(labels, 'shape', ()))} {getattr(labels, 'dtype', '')}"
        )
    if not (isinstance(temperature, int | float) and temperature > 0 and temperature != float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    z = F.normalize(features, dim=-1)
    logits = z @ z.T / temperature  # (B, B)
    eye = torch.eye(batch, dtype=torch.bool, device=features.device)
    log_prob = logits - logits.masked_fill(eye, float("-inf")).logsumexp(-1, keepdim=True)
    labels = labels.to(features.device)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    counts = positive.sum(-1)
    has = counts > 0
    if not has.any():
        return logits.sum() * 0.0
    per_anchor = -(log_prob * positive).sum(-1)[has] / counts[has]
    return per_anchor.mean()


def fluctuation_loss(
    layers: Layers,
    decoding: int | Tensor,
    prompt_mask: Tensor,
    labels: Tensor,
    deep_layers: Sequence[int] | None = None,
    temperature: float = 0.5,
    combine: Literal["concat", "mean"] = "concat",
    check_rows: bool = True,
) -> Tensor:
    """Concentration-fluctuation loss: supervised contrastive loss on the decoding token's prompt attention.

    Each example's vector is its decoding row restricted to the prompt positions, in position
    order, ``v^l_b = (ā^l_b[s])_{s ∈ P_b}`` (head- and, for Hamilton weights, component-averaged),
    so every example must have the same number ``K`` of prompt positions (the k-th entry is the
    k-th prompt token). Deep layers ``D`` combine by

    - ``"concat"`` (default): ``f_b = [v^{l_1}_b, ..., v^{l_|D|}_b]`` of length ``K·|D|``, then
      normalised as a whole, so a layer with more mass on the prompt weighs more;
    - ``"mean"``: ``f_b = 1/|D| Σ_l v^l_b`` of length ``K``.

    The loss is :func:`supervised_contrastive_loss` of ``f`` (cosine similarity, temperature
    ``τ``), with the standard sign: it is minimised, pulling same-class examples' prompt
    attention together. The official code's two implementation paths are reported to disagree on
    this sign (not re-checked here); this one follows Khosla et al.

    Parameters
    ----------
    layers, decoding, deep_layers, check_rows : as in :func:`strength_loss`
    prompt_mask : (B, S) or (S,) bool, True at the prompt positions, the same count per example
    labels : (B,) integer class labels defining the positives
    temperature : ``τ > 0`` (0.5 as in the paper)
    combine : ``"concat"`` or ``"mean"``, how the deep layers' vectors combine
    """
    if combine not in ("concat", "mean"):
        raise ValueError(f"combine must be 'concat' or 'mean', got {combine!r}")
    if not (isinstance(temperature, int | float) and temperature > 0 and temperature != float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    layer_list, _ = _as_layers(layers)
    chosen = _deep_indices(deep_layers, len(layer_list))
    vectors = []
    for i in chosen:
        rows = decoding_rows(layer_list[i], decoding, "mean", check_rows)  # (B, S)
        batch, keys = rows.shape
        mask = _position_mask(prompt_mask, batch, keys, "prompt_mask", rows.device)
        counts = mask.sum(-1)
        if (counts != counts[0]).any():
            raise ValueError(
                "prompt_mask must select the same number of prompt positions in every example for the "
                f"fluctuation loss, got {counts.tolist()}"
            )
        vectors.append(rows[mask].view(batch, int(counts[0])))  # row-major: position order per example
    stacked = torch.stack(vectors)  # (|D|, B, K)
    features = stacked.mean(0) if combine == "mean" else stacked.transpose(0, 1).flatten(1)
    return supervised_contrastive_loss(features, labels, temperature)
