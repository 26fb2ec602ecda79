"""A small VQ-VAE with the four quantisers of CogView's tokenizer study (Ding et al., NeurIPS 2021).

CogView compares ways of training the image tokenizer's codebook and reports that the
reconstruction losses converge to similar levels. The chapter reproduces the comparison at small
scale on 64×64 Sort-of-CLEVR scenes; this module holds the model, the four quantisers, the
codebook-usage statistics and the training run (through the book's one loop,
:func:`qattn.book.harness.training.fit`).

Shapes: images ``(B, 3, H, W)`` floats in [0, 1]; the encoder divides ``H`` and ``W`` by
``2**downsamples`` (64 → 16 for 2, 8 for 3), giving a grid ``(h, w)`` of ``D = code_dim``-vectors
``z`` (``K = codes`` logits for ``"gumbel"``); a codebook ``E`` is ``(K, D)``; codes are int64
``(B, h, w)``. Reconstruction loss: the mean squared error over all pixels and channels.

Quantisers (:data:`QUANTISERS`), each with a stop-gradient ``sg`` and ``β = 0.25``:

- ``"nearest"`` (:class:`NearestQuantiser`): ``k = argmin_j ‖z − e_j‖²``, ``z_q = e_k`` passed on
  with the straight-through estimator ``z + sg(e_k − z)``; loss ``‖sg(z) − e_k‖² + β ‖z − sg(e_k)‖²``
  (van den Oord et al., 2017).
- ``"ema"`` (:class:`EMAQuantiser`): the same assignment; the codebook is not trained by the
  optimiser but set to exponential moving averages of the vectors assigned to each code (decay
  ``γ = 0.99``, Laplace smoothing ``ε = 1e-5``); loss ``β ‖z − sg(e_k)‖²``.
- ``"gumbel"`` (:class:`GumbelQuantiser`): the encoder gives logits ``ℓ`` over the ``K`` codes;
  training uses the Gumbel-softmax relaxation ``y = softmax((ℓ + g) / τ)``, ``z_q = y E``, with a
  small KL term to the uniform prior; evaluation takes the hard code ``argmax ℓ``.
- ``"fixed"`` (:class:`FixedQuantiser`): a codebook drawn once and frozen;
  nearest assignment, straight-through, loss ``β ‖z − sg(e_k)‖²``.

A new model's codebook is uniform in ``[−1/K, 1/K]`` (van den Oord et al.'s choice). On these
mostly white scenes that start collapses: every encoder vector is nearest to the same code
(measured: 1–2 codes used after 250 steps). :func:`train_vqvae` therefore starts the three
nearest-neighbour codebooks from the untrained encoder's own vectors (k-means++ seeding,
:meth:`VQVAE.initialise_codebook`; the fixed codebook is drawn that way once and then frozen), so
the quantisers still differ only in how the codebook is (or is not) trained afterwards. The
Gumbel quantiser assigns codes by logits and keeps its start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qattn.book.harness.training import LoopConfig, StepLoss, evenly_spaced, fit

__all__ = [
    "QUANTISERS",
    "BETA",
    "EMA_DECAY",
    "EMA_EPSILON",
    "GUMBEL_KL_WEIGHT",
    "Quantised",
    "NearestQuantiser",
    "EMAQuantiser",
    "GumbelQuantiser",
    "FixedQuantiser",
    "VQVAE",
    "codebook_perplexity",
    "codes_used",
    "gumbel_temperature",
    "as_float_images",
    "train_vqvae",
]

QUANTISERS = ("nearest", "gumbel", "ema", "fixed")
BETA = 0.25
EMA_DECAY = 0.99
EMA_EPSILON = 1e-5
GUMBEL_KL_WEIGHT = 5e-4


# --------------------------------------------------------------------------- initialisation


@torch.no_grad()
def _initialise_(module: nn.Module, generator: torch.Generator) -> None:
    """Draw every convolution of ``module`` from ``generator``, in module order.

    PyTorch's default initialisation (Kaiming-uniform weights with ``a = √5``, biases uniform in
    ``±1/√fan_in``), but drawn from ``generator`` instead of the global state.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)


def _uniform_codebook(codes: int, code_dim: int, generator: torch.Generator) -> Tensor:
    """A ``(codes, code_dim)`` codebook uniform in ``[−1/K, 1/K]``."""
    return (torch.rand(codes, code_dim, generator=generator) * 2.0 - 1.0) / codes


# --------------------------------------------------------------------------- quantisers


@dataclass
class Quantised:
    """A quantiser's output: ``z_q`` ``(B, D, h, w)`` for the decoder, ``codes`` ``(B, h, w)`` int64
    (the hard codes) and ``loss`` (scalar: the quantiser's own terms, added to the reconstruction loss)."""

    z_q: Tensor
    codes: Tensor
    loss: Tensor


def _nearest_codes(z: Tensor, codebook: Tensor) -> Tensor:
    """``argmin_j ‖z − e_j‖²`` per position: ``z`` ``(B, D, h, w)``, codebook ``(K, D)`` → ``(B, h, w)`` int64.

    ``‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²`` (``‖z‖²`` dropped: the same for every code).
    """
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    distances = (codebook * codebook).sum(1) - 2.0 * flat @ codebook.t()
    return distances.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])


def _lookup(codes: Tensor, codebook: Tensor) -> Tensor:
    """``E[codes]`` as a grid: codes ``(B, h, w)`` → ``(B, D, h, w)``.

    ``index_select``, not ``codebook[codes]``: advanced indexing's backward is a scatter-add that
    is not deterministic on a multi-threaded CPU (two trainings of the same seed differed).
    """
    return codebook.index_select(0, codes.flatten()).view(*codes.shape, -1).permute(0, 3, 1, 2)


class _NearestBase(nn.Module):
    """Shared by the quantisers with nearest assignment: ``assign``, ``lookup``, straight-through."""

    codebook: Tensor
    input_channels: int

    def assign(self, z: Tensor) -> Tensor:
        """Hard codes ``(B, h, w)`` int64 of encoder vectors ``z`` ``(B, D, h, w)``."""
        return _nearest_codes(z, self.codebook)

    def lookup(self, codes: Tensor) -> Tensor:
        """Codebook vectors ``(B, D, h, w)`` of ``codes`` ``(B, h, w)``."""
        return _lookup(codes, self.codebook)

    def _straight_through(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(z + sg(e_k − z), k, e_k)``: forward value ``e_k``, gradient of the identity to ``z``."""
        codes = self.assign(z)
        e = self.lookup(codes)
        return z + (e - z).detach(), codes, e


class NearestQuantiser(_NearestBase):
    """Nearest codebook vector with a trained codebook (van den Oord et al., 2017).

    ``k = argmin_j ‖z − e_j‖²``; ``z_q = z + sg(e_k − z)``; loss ``mean ‖sg(z) − e_k‖² + β mean ‖z − sg(e_k)‖²``
    (means over all elements of ``(B, D, h, w)``).
    """

    def __init__(self, codes: int, code_dim: int, generator: torch.Generator, beta: float = BETA) -> None:
        super().__init__()
        self.codebook = nn.Parameter(_uniform_codebook(codes, code_dim, generator))
        self.beta = beta
        self.input_channels = code_dim

    def forward(self, z: Tensor, tau: float = 1.0) -> Quantised:
        z_q, codes, e = self._straight_through(z)
        loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())
        return Quantised(z_q, codes, loss)


class FixedQuantiser(_NearestBase):
    """A random codebook, drawn at initialisation and frozen (a buffer: no optimiser, no update).

    ``k = argmin_j ‖z − e_j‖²``; ``z_q = z + sg(e_k − z)``; loss ``β mean ‖z − sg(e_k)‖²``.
    """

    def __init__(self, codes: int, code_dim: int, generator: torch.Generator, beta: float = BETA) -> None:
        super().__init__()
        self.register_buffer("codebook", _uniform_codebook(codes, code_dim, generator))
        self.beta = beta
        self.input_channels = code_dim

    def forward(self, z: Tensor, tau: float = 1.0) -> Quantised:
        z_q, codes, e = self._straight_through(z)
        return Quantised(z_q, codes, self.beta * F.mse_loss(z, e))


class EMAQuantiser(_NearestBase):
    """Nearest assignment; the codebook follows exponential moving averages (training mode only).

    State: counts ``N`` ``(K,)`` and sums ``m`` ``(K, D)``, starting as if each code had been
    assigned its own vector once (``N = 1``, ``m = E``). A training forward quantises with the
    current codebook, then, with ``n_j`` the batch's assignments to code ``j`` and ``s_j`` the sum
    of their vectors (van den Oord et al., 2017, appendix A.1; Laplace smoothing as in Razavi et
    al., 2019)::

        N_j ← γ N_j + (1 − γ) n_j          m_j ← γ m_j + (1 − γ) s_j
        Ñ_j = (N_j + ε) / (n + K ε) · n    with n = Σ_j N_j
        e_j ← m_j / Ñ_j

    Loss ``β mean ‖z − sg(e_k)‖²`` (the codebook gets no gradient).
    """

    codebook: Tensor
    ema_count: Tensor
    ema_sum: Tensor

    def __init__(
        self,
        codes: int,
        code_dim: int,
        generator: torch.Generator,
        beta: float = BETA,
        decay: float = EMA_DECAY,
        epsilon: float = EMA_EPSILON,
    ) -> None:
        super().__init__()
        codebook = _uniform_codebook(codes, code_dim, generator)
        self.register_buffer("codebook", codebook)
        self.register_buffer("ema_count", torch.ones(codes))
        self.register_buffer("ema_sum", codebook.clone())
        self.beta, self.decay, self.epsilon = beta, decay, epsilon
        self.input_channels = code_dim

    @torch.no_grad()
    def update(self, z: Tensor, codes: Tensor) -> None:
        """One moving-average step from encoder vectors ``z`` ``(B, D, h, w)`` and their ``codes`` ``(B, h, w)``."""
        k = self.codebook.shape[0]
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        one_hot = F.one_hot(codes.reshape(-1), k).to(flat.dtype)  # (B·h·w, K)
        self.ema_count.mul_(self.decay).add_(one_hot.sum(0), alpha=1.0 - self.decay)
        self.ema_sum.mul_(self.decay).add_(one_hot.t() @ flat, alpha=1.0 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (total + k * self.epsilon) * total
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))

    def forward(self, z: Tensor, tau: float = 1.0) -> Quantised:
        z_q, codes, e = self._straight_through(z)
        loss = self.beta * F.mse_loss(z, e)
        if self.training:
            self.update(z, codes)
        return Quantised(z_q, codes, loss)


class GumbelQuantiser(nn.Module):
    """Gumbel-softmax relaxation over ``K`` codes (the encoder gives logits ``ℓ`` ``(B, K, h, w)``).

    Training: ``y = softmax((ℓ + g) / τ)`` over the codes, ``g`` standard Gumbel noise (torch's
    global generator), ``z_q = Σ_j y_j e_j`` (a soft one-hot times the trained codebook).
    Evaluation: the hard code ``k = argmax ℓ``, ``z_q = e_k``. Loss: ``w · mean KL(q ‖ uniform)``
    with ``q = softmax(ℓ)``, i.e. ``w · mean Σ_j q_j log(K q_j)`` over positions (``w`` =
    :data:`GUMBEL_KL_WEIGHT`). The hard codes reported are ``argmax ℓ`` in both modes.
    """

    def __init__(self, codes: int, code_dim: int, generator: torch.Generator, kl_weight: float = GUMBEL_KL_WEIGHT) -> None:
        super().__init__()
        self.codebook = nn.Parameter(_uniform_codebook(codes, code_dim, generator))
        self.kl_weight = kl_weight
        self.input_channels = codes

    def assign(self, logits: Tensor) -> Tensor:
        """Hard codes ``argmax ℓ`` ``(B, h, w)`` int64 of logits ``(B, K, h, w)``."""
        return logits.argmax(1)

    def lookup(self, codes: Tensor) -> Tensor:
        """Codebook vectors ``(B, D, h, w)`` of ``codes`` ``(B, h, w)``."""
        return _lookup(codes, self.codebook)

    def kl_to_uniform(self, logits: Tensor) -> Tensor:
        """``mean over positions of Σ_j q_j log(K q_j)``, ``q = softmax(ℓ)`` over the codes (dim 1)."""
        log_q = F.log_softmax(logits, dim=1)
        return (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(1).mean()

    def forward(self, logits: Tensor, tau: float = 1.0) -> Quantised:
        codes = self.assign(logits)
        if self.training:
            soft = F.gumbel_softmax(logits, tau=tau, hard=False, dim=1)  # (B, K, h, w)
            z_q = torch.einsum("bkhw,kd->bdhw", soft, self.codebook)
        else:
            z_q = self.lookup(codes)
        return Quantised(z_q, codes, self.kl_weight * self.kl_to_uniform(logits))


_QUANTISER_CLASSES: dict[str, type[nn.Module]] = {
    "nearest": NearestQuantiser,
    "gumbel": GumbelQuantiser,
    "ema": EMAQuantiser,
    "fixed": FixedQuantiser,
}


# --------------------------------------------------------------------------- the model


class _Residual(nn.Module):
    """``x + conv1×1(relu(conv3×3(relu(x))))``, ``hidden`` channels in and out, ``hidden // 2`` inside."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden, max(1, hidden // 2), 3, padding=1), nn.ReLU(), nn.Conv2d(max(1, hidden // 2), hidden, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _encoder(hidden: int, out_channels: int, downsamples: int) -> nn.Sequential:
    """``(B, 3, H, W)`` → ``(B, out_channels, H / 2^s, W / 2^s)``: ``s`` stride-2 4×4 convolutions with
    ReLU, a 3×3 convolution, a residual block, ReLU and a 1×1 projection."""
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(downsamples):
        layers += [nn.Conv2d(channels, hidden, 4, stride=2, padding=1), nn.ReLU()]
        channels = hidden
    layers += [nn.Conv2d(hidden, hidden, 3, padding=1), _Residual(hidden), nn.ReLU(), nn.Conv2d(hidden, out_channels, 1)]
    return nn.Sequential(*layers)


def _decoder(hidden: int, code_dim: int, downsamples: int) -> nn.Sequential:
    """``(B, D, h, w)`` → ``(B, 3, h·2^s, w·2^s)``, the encoder mirrored: a 3×3 convolution, a residual
    block, ReLU, then ``s`` stride-2 4×4 transposed convolutions (ReLU between; linear output)."""
    layers: list[nn.Module] = [nn.Conv2d(code_dim, hidden, 3, padding=1), _Residual(hidden), nn.ReLU()]
    for i in range(downsamples):
        last = i == downsamples - 1
        layers.append(nn.ConvTranspose2d(hidden, 3 if last else hidden, 4, stride=2, padding=1))
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VQVAE(nn.Module):
    """Convolutional VQ-VAE: encoder → quantiser (one of :data:`QUANTISERS`) → decoder.

    Parameters
    ----------
    quantiser : ``"nearest"``, ``"gumbel"``, ``"ema"`` or ``"fixed"`` (see the module docstring)
    codes : codebook size ``K``
    code_dim : codebook vector size ``D``
    hidden : channels of the convolutions
    downsamples : stride-2 stages; a 64×64 image gives a ``64 / 2^downsamples`` grid of codes
    generator : draws every initial parameter and the codebook (default: seeded 0); torch's
        global random state is not touched

    Attributes
    ----------
    tau : Gumbel-softmax temperature (``"gumbel"`` only; the training loop sets it per step)

    >>> model = VQVAE("nearest", codes=16, code_dim=4, hidden=8)
    >>> out = model(torch.rand(2, 3, 64, 64))
    >>> tuple(out["recon"].shape), tuple(out["codes"].shape), out["codes"].dtype
    ((2, 3, 64, 64), (2, 16, 16), torch.int64)
    """

    def __init__(
        self,
        quantiser: str,
        codes: int = 512,
        code_dim: int = 32,
        hidden: int = 64,
        downsamples: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if quantiser not in QUANTISERS:
            raise ValueError(f"quantiser must be one of {QUANTISERS}, got {quantiser!r}")
        for name, value, least in (("codes", codes, 2), ("code_dim", code_dim, 1), ("hidden", hidden, 2), ("downsamples", downsamples, 1)):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.kind, self.n_codes, self.code_dim, self.downsamples = quantiser, codes, code_dim, downsamples
        self.tau = 1.0
        with torch.random.fork_rng(devices=[]):  # the layers' default initialisation draws from the global state
            encoder_out = codes if quantiser == "gumbel" else code_dim
            self.encoder = _encoder(hidden, encoder_out, downsamples)
            self.decoder = _decoder(hidden, code_dim, downsamples)
        _initialise_(self.encoder, generator)
        _initialise_(self.decoder, generator)
        self.quantiser = _QUANTISER_CLASSES[quantiser](codes, code_dim, generator)

    @torch.no_grad()
    def initialise_codebook(self, images: Tensor, generator: torch.Generator) -> None:
        """Data-dependent start of a nearest-neighbour codebook: ``K`` of the encoder's vectors on ``images``.

        k-means++ seeding: the first vector drawn uniformly, each next one with probability
        proportional to its squared distance to the nearest one already chosen, so the codebook
        starts spread over what the encoder produces (white background and objects alike) instead
        of collapsing onto one code. For ``"nearest"``, ``"ema"`` (its averages restart from these
        vectors) and ``"fixed"`` (drawn once here, then frozen); ``"gumbel"`` assigns codes by its
        logits and keeps its codebook.
        """
        if self.kind == "gumbel":
            return
        self._check_images(images)
        z = self.encoder(images).permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        chosen = [int(torch.randint(len(z), (1,), generator=generator))]
        nearest = ((z - z[chosen[0]]) ** 2).sum(1)
        for _ in range(self.n_codes - 1):
            weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
            j = int(torch.multinomial(weights, 1, generator=generator))
            chosen.append(j)
            nearest = torch.minimum(nearest, ((z - z[j]) ** 2).sum(1))
        codebook = z[chosen].clone()
        self.quantiser.codebook.copy_(codebook)
        if isinstance(self.quantiser, EMAQuantiser):
            self.quantiser.ema_sum.copy_(codebook)
            self.quantiser.ema_count.fill_(1.0)

    @property
    def factor(self) -> int:
        """How much the encoder shrinks each side: ``2**downsamples``."""
        return 2**self.downsamples

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floats in [0, 1] (see as_float_images), got dtype {images.dtype}")
        h, w = images.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"image height and width must be multiples of 2**downsamples = {self.factor}, got {h}×{w}")

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Reconstruct ``images`` ``(B, 3, H, W)`` (floats in [0, 1]).

        Returns ``recon`` ``(B, 3, H, W)`` (unclamped), ``recon_loss`` (mean squared error),
        ``quantiser_loss`` (the quantiser's own terms), ``loss = recon_loss + quantiser_loss``
        and ``codes`` ``(B, H / 2^s, W / 2^s)`` int64.
        """
        self._check_images(images)
        q = self.quantiser(self.encoder(images), tau=self.tau)
        recon = self.decoder(q.z_q)
        recon_loss = F.mse_loss(recon, images)
        return {"recon": recon, "recon_loss": recon_loss, "quantiser_loss": q.loss, "loss": recon_loss + q.loss, "codes": q.codes}

    def encode(self, images: Tensor) -> Tensor:
        """Hard codes ``(B, H / 2^s, W / 2^s)`` int64 of ``images`` (evaluation semantics in either mode, no state update)."""
        self._check_images(images)
        return self.quantiser.assign(self.encoder(images))

    def decode(self, codes: Tensor) -> Tensor:
        """Images ``(B, 3, h·2^s, w·2^s)`` from codes ``(B, h, w)`` (integers in ``[0, K)``)."""
        if not isinstance(codes, Tensor) or codes.dim() != 3 or codes.is_floating_point() or codes.is_complex():
            shape = (tuple(codes.shape), codes.dtype) if isinstance(codes, Tensor) else type(codes).__name__
            raise ValueError(f"codes must be a (B, h, w) integer tensor, got {shape}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.n_codes):
            raise ValueError(f"codes must lie in [0, {self.n_codes}), got values in [{int(codes.min())}, {int(codes.max())}]")
        return self.decoder(self.quantiser.lookup(codes.long()))


# --------------------------------------------------------------------------- codebook usage


def _check_codes(codes: Tensor, n_codes: int) -> Tensor:
    flat = torch.as_tensor(codes).reshape(-1)
    if flat.is_floating_point() or flat.is_complex():
        raise ValueError(f"codes must be integers, got dtype {flat.dtype}")
    if flat.numel() == 0:
        raise ValueError("codes must not be empty")
    if int(flat.min()) < 0 or int(flat.max()) >= n_codes:
        raise ValueError(f"codes must lie in [0, {n_codes}), got values in [{int(flat.min())}, {int(flat.max())}]")
    return flat.long()


def codebook_perplexity(codes: Tensor, n_codes: int) -> float:
    """``exp(H)`` of the code usage, ``H = −Σ_j p_j log p_j`` with ``p_j`` the share of ``codes`` (any
    shape) equal to ``j``: ``n`` for uniform use of ``n`` codes, 1 for a single code.

    >>> round(codebook_perplexity(torch.arange(8), 16), 9), codebook_perplexity(torch.zeros(5, dtype=torch.long), 16)
    (8.0, 1.0)
    """
    counts = torch.bincount(_check_codes(codes, n_codes), minlength=n_codes).double()
    p = counts[counts > 0] / counts.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def codes_used(codes: Tensor) -> int:
    """Number of distinct codes in ``codes`` (any shape).

    >>> codes_used(torch.tensor([[3, 3], [1, 7]]))
    3
    """
    return int(torch.as_tensor(codes).unique().numel())


# --------------------------------------------------------------------------- training


def gumbel_temperature(step: int, steps: int, start: float = 1.0, end: float = 1.0 / 16) -> float:
    """Exponential annealing of the Gumbel-softmax temperature: ``start · (end / start)^(step / steps)``.

    >>> gumbel_temperature(0, 100), gumbel_temperature(50, 100), gumbel_temperature(100, 100)
    (1.0, 0.25, 0.0625)
    """
    return start * (end / start) ** (min(step, steps) / max(1, steps))


def as_float_images(images: np.ndarray | Tensor) -> Tensor:
    """``(N, 3, H, W)`` images as float32 in [0, 1]: uint8 divided by 255, floats kept as they are.

    >>> as_float_images(np.full((1, 3, 2, 2), 255, dtype=np.uint8)).max().item()
    1.0
    """
    t = torch.as_tensor(images)
    if t.dim() != 4 or t.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.is_floating_point():
        return t.float()
    raise ValueError(f"images must be uint8 (0..255) or floats in [0, 1], got dtype {t.dtype}")


@torch.no_grad()
def _validation_scores(model: VQVAE, images: Tensor, batch: int) -> dict[str, float]:
    """Mean squared reconstruction error of ``images`` (per element, over all of them), the perplexity
    and the number of codes used by their hard codes (model in whatever mode the caller set)."""
    squared, count, codes = 0.0, 0, []
    for start in range(0, len(images), batch):
        out = model(images[start : start + batch])
        squared += float(F.mse_loss(out["recon"], images[start : start + batch], reduction="sum"))
        count += images[start : start + batch].numel()
        codes.append(out["codes"])
    used = torch.cat(codes)
    mse = squared / count
    return {"neg_val_recon": -mse, "val_recon": mse, "perplexity": codebook_perplexity(used, model.n_codes), "codes_used": codes_used(used)}


def _batches(images: Tensor, steps: int, batch: int, generator: torch.Generator) -> Iterator[Tensor]:
    """``steps`` batches of ``batch`` images, read along successive permutations (one per epoch)."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(order) < batch:
            order = torch.cat([order, torch.randperm(len(images), generator=generator)])
        yield images[order[:batch]]
        order = order[batch:]


def train_vqvae(
    train_images: np.ndarray | Tensor,
    val_images: np.ndarray | Tensor,
    quantiser: str,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    validations: int,
    codes: int = 512,
    code_dim: int = 32,
    hidden: int = 64,
    downsamples: int = 2,
    init_images: int = 64,
    log: Callable[[str], None] | None = print,
) -> tuple[VQVAE, dict[str, Any]]:
    """Train a :class:`VQVAE` with ``quantiser`` by the book's loop (:func:`~qattn.book.harness.training.fit`).

    The same initial encoder/decoder weights (generator seeded ``seed``) and the same batches (a
    permutation per epoch from a generator seeded ``seed``) for every quantiser of a comparison;
    AdamW, warm-up over ``steps // 20`` steps then cosine decay; validation before training and at
    ``validations`` evenly spaced steps; the state with the lowest validation reconstruction error
    is kept. Gumbel: the temperature follows :func:`gumbel_temperature` by step. The
    nearest-neighbour codebooks start from the untrained encoder's vectors on ``init_images``
    training images (:meth:`VQVAE.initialise_codebook`): from the uniform ``[−1/K, 1/K]`` start
    every vector maps to the same code and the codebook collapses (measured: 1–2 codes used).

    Returns
    -------
    the trained model (eval mode) and a dict: ``curve`` (per validation: ``step``, ``train_loss``
    (the minimised loss since the previous validation; None at step 0), ``val_recon``,
    ``perplexity``, ``codes_used``, ``train_s`` (training wall-clock so far, validations
    excluded)), ``train_recon`` (every step's reconstruction MSE, comparable across quantisers),
    ``final`` (``val_recon``, ``perplexity``, ``codes_used`` of the kept state), ``best_step``,
    ``train_time_s``, ``steps``, ``batch``.
    """
    if steps < 1 or batch < 1 or validations < 1:
        raise ValueError(f"steps, batch and validations must be >= 1, got {steps}, {batch}, {validations}")
    train_x, val_x = as_float_images(train_images), as_float_images(val_images)
    model = VQVAE(quantiser, codes, code_dim, hidden, downsamples, generator=torch.Generator().manual_seed(seed))
    start = torch.Generator().manual_seed(seed + 1)
    model.initialise_codebook(train_x[torch.randperm(len(train_x), generator=start)[:init_images]], start)
    clock = {"validation_s": 0.0, "start": time.perf_counter(), "step": 0}
    curve: list[dict[str, Any]] = []

    def validate(m: torch.nn.Module) -> dict[str, float]:
        tick = time.perf_counter()
        scores = _validation_scores(model, val_x, max(batch, 64))
        train_s = tick - clock["start"] - clock["validation_s"]
        clock["validation_s"] += time.perf_counter() - tick
        curve.append({"train_s": train_s, **{k: scores[k] for k in ("val_recon", "perplexity", "codes_used")}})
        return scores

    def loss_fn(m: torch.nn.Module, images: Tensor) -> StepLoss:
        model.tau = gumbel_temperature(clock["step"], steps)
        clock["step"] += 1
        out = model(images)
        return StepLoss(out["loss"], weight=len(images), terms={"recon": out["recon_loss"]})

    loop = LoopConfig(
        steps=steps,
        lr=lr,
        warmup_steps=steps // 20,
        decay="cosine",
        validate_at=(0, *evenly_spaced(steps, validations)),
        dropout_seed=seed,
    )
    batches = _batches(train_x, steps, batch, torch.Generator().manual_seed(seed))
    result = fit(model, batches, loss_fn, validate, loop, select="neg_val_recon", log=log, name=f"VQ-VAE {quantiser}")
    for point, entry in zip(curve, result.history):
        point["step"], point["train_loss"] = entry["step"], entry["train_loss"]
    best = next(e for e in result.history if e["step"] == result.best_step)
    return model, {
        "curve": [{k: p[k] for k in ("step", "train_loss", "val_recon", "perplexity", "codes_used", "train_s")} for p in curve],
        "train_recon": [t["recon"] for t in result.step_terms],
        "final": {k: best[k] for k in ("val_recon", "perplexity", "codes_used")},
        "best_step": result.best_step,
        "train_time_s": result.train_time_s,
        "steps": steps,
        "batch": batch,
    }
