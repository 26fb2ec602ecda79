"""A generated trimodal sequence task whose label needs all three modalities at one time step.

A stand-in for multimodal sentiment data (aligned text, audio and video features, a sentiment
score in [−3, 3]), built so that a fusion model is tested on what multi-linear attention is for:
a multiplicative interaction of THREE modalities at a few local time steps, which no pair of
modalities determines.

Each example holds three aligned sequences of ``length`` steps and widths ``widths`` (e.g. 12, 8
and 6 features per step). Every token is Gaussian noise (standard deviation ``noise``); some
tokens carry a **mark**: a fixed unit direction ``u_m`` of their modality (strength ``marker``)
plus an **amplitude** ``a`` along a second fixed unit direction ``v_m ⊥ u_m``. Amplitudes are
``±`` a magnitude in ``[min_amplitude, 1]`` with a random sign. Per example:

- one **joint event** at time ``t*``: all three modalities are marked there;
- one **pair distractor** per pair of modalities ``(m, n)``, at its own time: only ``m`` and ``n``
  are marked there (so every pair of modalities co-occurs at two times, and only ``t*`` has all
  three);
- the label ``y = 3 · a_1(t*) · a_2(t*) · a_3(t*)`` (+ Gaussian noise ``label_noise``), clipped to
  ``[−3, 3]``. Its sign is the parity of three independent signs: no pair of modalities carries
  any information about it (a pair's signs are independent of the third), and a model that
  mixes ``t*`` with a pair distractor loses it.

The **shifted** variant (``shift = δ > 0``) displaces every event of the LAST modality by ``δ``
steps (its mark of ``t*`` sits at ``t* + δ``, as do its pair distractors'): the three modalities are
no longer aligned in time, so a prior that rewards equal time steps (the local sequential
constraint) points at the wrong tuples.

Event times are drawn without overlap (all four event times distinct, and, with a shift, also
distinct after shifting); the fixed directions come from ``spec_seed`` (the same for every split),
the examples from the split's own seed. Generation is deterministic: the same arguments give the
same tensors bit for bit.

>>> data = make_trimodal(4, seed=0)
>>> [tuple(x.shape) for x in data.inputs], tuple(data.labels.shape), tuple(data.event_times.shape)
([(4, 16, 12), (4, 16, 8), (4, 16, 6)], (4,), (4, 4, 3))
>>> bool(data.labels.abs().max() <= 3.0)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["TrimodalSpec", "TrimodalSet", "make_trimodal", "directions", "seven_class", "PAIRS"]

#: The pairs of modalities that get a distractor, in the order of ``event_times[:, 1:]``.
PAIRS = ((0, 1), (0, 2), (1, 2))


@dataclass(frozen=True)
class TrimodalSpec:
    """What defines the generated task (the same for every split of one experiment)."""

    length: int = 16
    widths: tuple[int, int, int] = (12, 8, 6)
    noise: float = 0.3
    marker: float = 1.5
    min_amplitude: float = 0.6
    positive: float = 0.8
    codes: int = 4
    label_noise: float = 0.05
    spec_seed: int = 1234

    def __post_init__(self) -> None:
        if len(self.widths) != 3 or any(int(w) < 2 for w in self.widths):
            raise ValueError(f"widths must be three feature counts ≥ 2 (a mark needs two directions), got {self.widths}")
        if self.length < 4:
            raise ValueError(f"length must be at least 4 (four distinct event times), got {self.length}")
        if not 0.0 <= self.min_amplitude <= 1.0:
            raise ValueError(f"min_amplitude must lie in [0, 1], got {self.min_amplitude}")
        if not 0.0 <= self.positive <= 1.0:
            raise ValueError(f"positive (the probability of a + sign) must lie in [0, 1], got {self.positive}")
        if self.noise < 0 or self.label_noise < 0:
            raise ValueError(f"noise and label_noise must be ≥ 0, got {self.noise} and {self.label_noise}")


@dataclass(frozen=True)
class TrimodalSet:
    """One split: ``inputs`` three ``(n, length, width_m)`` float32 tensors, ``labels (n,)`` in [−3, 3],
    ``event_times (n, 4, 3)`` long: per event (joint, then the pair distractors of :data:`PAIRS`) the
    time step of its mark in each modality (−1 where that modality is not marked)."""

    inputs: tuple[Tensor, Tensor, Tensor]
    labels: Tensor
    event_times: Tensor
    shift: int

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: Tensor | slice) -> tuple[list[Tensor], Tensor]:
        """The inputs and labels of the examples ``idx``."""
        return [x[idx] for x in self.inputs], self.labels[idx]


def directions(spec: TrimodalSpec) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per modality fixed orthonormal directions ``(u_m, v_m, E_m)``: the mark's, the amplitude's and
    the event code's (``E_m (d_m, codes)``)."""
    rng = np.random.default_rng(spec.spec_seed)
    out = []
    for width in spec.widths:
        q, _ = np.linalg.qr(rng.standard_normal((int(width), 2 + spec.codes)))
        out.append((q[:, 0], q[:, 1], q[:, 2:]))
    return out


def _event_times(rng: np.random.Generator, length: int, shift: int) -> np.ndarray:
    """Four distinct base times in ``[0, length − shift)`` (joint event first), so shifted marks stay inside."""
    return rng.choice(length - shift, size=4, replace=False)


def make_trimodal(n: int, seed: int, shift: int = 0, spec: TrimodalSpec | None = None) -> TrimodalSet:
    """``n`` examples of the task (see the module notes), generated from ``seed``.

    Raises ``ValueError`` for ``n < 1``, a negative shift, or one that leaves fewer than four
    event times (``length − shift < 4``).
    """
    spec = TrimodalSpec() if spec is None else spec
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if shift < 0 or spec.length - shift < 4:
        raise ValueError(f"shift must lie in 0..{spec.length - 4} (four distinct event times must fit), got {shift}")
    dirs = directions(spec)
    rng = np.random.default_rng(seed)
    inputs = [spec.noise * rng.standard_normal((n, spec.length, int(w))) for w in spec.widths]
    labels = np.empty(n)
    times = np.full((n, 4, 3), -1, dtype=np.int64)
    for i in range(n):
        base = _event_times(rng, spec.length, shift)
        members = [(0, 1, 2), *PAIRS]
        signs = np.where(rng.random((4, 3)) < spec.positive, 1.0, -1.0)
        magnitudes = rng.uniform(spec.min_amplitude, 1.0, size=(4, 3))
        codes = rng.standard_normal((4, spec.codes))
        codes /= np.linalg.norm(codes, axis=-1, keepdims=True).clip(min=1e-12)
        for e, modalities in enumerate(members):
            for m in modalities:
                t = int(base[e]) + (shift if m == 2 else 0)
                u, v, code = dirs[m]
                amplitude = signs[e, m] * magnitudes[e, m]
                inputs[m][i, t] += spec.marker * (u + code @ codes[e]) + amplitude * v
                times[i, e, m] = t
        joint = signs[0] * magnitudes[0]
        labels[i] = 3.0 * float(np.prod(joint)) + spec.label_noise * rng.standard_normal()
    labels = np.clip(labels, -3.0, 3.0)
    tensors = tuple(torch.from_numpy(x.astype(np.float32)) for x in inputs)
    return TrimodalSet(tensors, torch.from_numpy(labels.astype(np.float32)), torch.from_numpy(times), shift)  # type: ignore[arg-type]


def seven_class(y: Tensor) -> Tensor:
    """The 7-class label of the multimodal sentiment literature: ``round(clip(y, −3, 3))`` shifted to 0..6."""
    return torch.round(y.clamp(-3.0, 3.0)).long() + 3
