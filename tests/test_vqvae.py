"""The VQ-VAE of the CogView tokenizer chapter: shapes, the four quantisers, codebook usage, training."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qattn.book.data.vqa import make_sort_of_clevr
from qattn.book.harness.training import torch_threads
from qattn.book.models.vqvae import (
    BETA,
    EMA_DECAY,
    EMA_EPSILON,
    QUANTISERS,
    VQVAE,
    EMAQuantiser,
    as_float_images,
    codebook_perplexity,
    codes_used,
    train_vqvae,
)

TINY = {"codes": 16, "code_dim": 4, "hidden": 8}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def scenes():
    train, val, _, _ = make_sort_of_clevr(32, 8, 1, seed=0, size=64, questions_per_scene=2)
    return train.images, val.images


@pytest.fixture(scope="module")
def images(scenes):
    return as_float_images(scenes[0][:4])


def tiny(quantiser: str, seed: int = 0, **kwargs) -> VQVAE:
    return VQVAE(quantiser, **{**TINY, **kwargs}, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("downsamples, side", [(2, 16), (3, 8)])
@pytest.mark.parametrize("quantiser", QUANTISERS)
def test_shapes(quantiser, downsamples, side, images):
    model = tiny(quantiser, downsamples=downsamples)
    out = model(images)
    assert out["recon"].shape == (4, 3, 64, 64)
    assert out["codes"].shape == (4, side, side) and out["codes"].dtype == torch.int64
    assert out["loss"].dim() == 0 and out["recon_loss"].dim() == 0
    assert torch.isclose(out["loss"], out["recon_loss"] + out["quantiser_loss"])
    assert torch.isclose(out["recon_loss"], F.mse_loss(out["recon"], images))
    codes = model.encode(images)
    assert codes.shape == (4, side, side) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < TINY["codes"]
    assert model.decode(codes).shape == (4, 3, 64, 64)


def test_initialisation_from_the_generator_alone():
    state = torch.get_rng_state()
    a, b, other = tiny("nearest", seed=3), tiny("nearest", seed=3), tiny("nearest", seed=4)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not drawn from
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert not torch.equal(a.encoder[0].weight, other.encoder[0].weight)
    assert not torch.equal(a.quantiser.codebook, other.quantiser.codebook)
    # the quantisers of a comparison start from the same encoder, decoder and codebook
    ema, fixed = tiny("ema", seed=3), tiny("fixed", seed=3)
    for m in (ema, fixed):
        for (name, x), (_, y) in zip(a.encoder.state_dict().items(), m.encoder.state_dict().items()):
            assert torch.equal(x, y), name
        for (name, x), (_, y) in zip(a.decoder.state_dict().items(), m.decoder.state_dict().items()):
            assert torch.equal(x, y), name
        assert torch.equal(a.quantiser.codebook, m.quantiser.codebook)


@pytest.mark.parametrize("quantiser", ["nearest", "fixed", "ema"])
def test_straight_through_passes_the_decoder_gradient_to_the_encoder(quantiser, images):
    model = tiny(quantiser).train()
    z = model.encoder(images)
    z.retain_grad()
    nearest = model.quantiser.lookup(model.quantiser.assign(z)).detach()  # before an EMA update
    q = model.quantiser(z)
    q.z_q.retain_grad()
    # forward value: the codebook vectors of the nearest codes
    assert torch.allclose(q.z_q, nearest, atol=1e-6)
    F.mse_loss(model.decoder(q.z_q), images).backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert torch.equal(z.grad, q.z_q.grad)  # the identity's gradient
    assert float(model.encoder[0].weight.grad.abs().sum()) > 0


def test_nearest_loss_terms(images):
    model = tiny("nearest").train()
    z = model.encoder(images)
    q = model.quantiser(z)
    e = model.quantiser.lookup(q.codes)
    assert torch.allclose(q.loss, (1 + BETA) * F.mse_loss(z, e))
    # the codes are the nearest ones: no codebook vector is strictly closer
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, TINY["code_dim"])
    distances = torch.cdist(flat, model.quantiser.codebook.detach())
    chosen = distances.gather(1, q.codes.reshape(-1, 1)).squeeze(1)
    assert bool((chosen <= distances.min(1).values + 1e-6).all())


def test_ema_update_matches_a_hand_computation():
    quantiser = EMAQuantiser(3, 2, torch.Generator().manual_seed(0))
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    quantiser.codebook.copy_(codebook)
    quantiser.ema_sum.copy_(codebook)
    quantiser.ema_count.fill_(1.0)
    # three vectors (B=1, D=2, h=1, w=3): the first nearest to code 0, the others to code 1; code 2 unused
    z = torch.tensor([[0.1, 0.1], [0.9, 0.2], [1.2, -0.1]]).t().reshape(1, 2, 1, 3)

    quantiser.eval()
    out = quantiser(z)
    assert out.codes.tolist() == [[[0, 1, 1]]]
    assert torch.equal(quantiser.codebook, codebook)  # no update in eval mode

    quantiser.train()
    out = quantiser(z)
    assert out.codes.tolist() == [[[0, 1, 1]]]
    # quantised with the codebook as it was before the update
    assert torch.allclose(out.z_q, torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]).t().reshape(1, 2, 1, 3))
    assert torch.isclose(out.loss, torch.tensor(BETA * ((0.01 + 0.01) + (0.01 + 0.04) + (0.04 + 0.01)) / 6))
    g, eps = EMA_DECAY, EMA_EPSILON
    counts = [g * 1 + (1 - g) * 1, g * 1 + (1 - g) * 2, g * 1 + (1 - g) * 0]
    sums = [[(1 - g) * 0.1, (1 - g) * 0.1], [g * 1 + (1 - g) * 2.1, (1 - g) * 0.1], [0.0, g * 1]]
    total = sum(counts)
    smoothed = [(c + eps) / (total + 3 * eps) * total for c in counts]
    expected = [[s / n for s in row] for row, n in zip(sums, smoothed)]
    assert torch.allclose(quantiser.ema_count, torch.tensor(counts))
    assert torch.allclose(quantiser.ema_sum, torch.tensor(sums))
    assert torch.allclose(quantiser.codebook, torch.tensor(expected), atol=1e-7)
    # the unused code barely moves, the used ones move towards their vectors
    assert quantiser.codebook[2].tolist() == pytest.approx([0.0, 1.0], abs=1e-4)
    assert 0.0 < float(quantiser.codebook[1, 1]) < 0.1 and float(quantiser.codebook[1, 0]) > 1.0


def test_fixed_codebook_is_frozen_while_the_others_move(images):
    moved = {}
    for quantiser in ("nearest", "fixed", "ema"):
        model = tiny(quantiser).train()
        before = model.quantiser.codebook.detach().clone()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            optimiser.zero_grad()
            model(images)["loss"].backward()
            optimiser.step()
        moved[quantiser] = not torch.equal(model.quantiser.codebook, before)
        trained = any(p is model.quantiser.codebook for p in model.parameters())
        assert trained == (quantiser == "nearest"), quantiser
    assert moved == {"nearest": True, "fixed": False, "ema": True}


def test_gumbel_eval_takes_the_hard_argmax_and_training_samples(images):
    model = tiny("gumbel").eval()
    with torch.no_grad():
        out = model(images)
        assert torch.equal(out["codes"], model.encoder(images).argmax(1))
        assert torch.equal(out["recon"], model.decode(model.encode(images)))
        assert torch.equal(model(images)["recon"], out["recon"])  # deterministic
        model.train()
        model.tau = 0.5
        torch.manual_seed(0)
        first = model(images)["recon"]
        second = model(images)["recon"]
    assert not torch.equal(first, second)  # Gumbel noise in training mode
    assert not torch.allclose(first, out["recon"])  # soft codes, not the hard ones
    assert torch.equal(model.encode(images), out["codes"])  # encode: hard codes in either mode


@pytest.mark.parametrize("quantiser", ["nearest", "ema", "fixed"])
def test_encode_decode_round_trip(quantiser, images):
    model = tiny(quantiser).eval()
    with torch.no_grad():
        out = model(images)
        assert torch.equal(model.encode(images), out["codes"])
        assert torch.allclose(model.decode(out["codes"]), out["recon"], atol=1e-5)


def test_perplexity_and_codes_used():
    assert codebook_perplexity(torch.arange(7).repeat(3), 10) == pytest.approx(7.0)
    assert codebook_perplexity(torch.full((4, 5), 2), 10) == pytest.approx(1.0)
    p = (0.75, 0.25)
    assert codebook_perplexity(torch.tensor([0, 0, 0, 1]), 2) == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)))
    skewed = codebook_perplexity(torch.tensor([0, 0, 0, 0, 0, 1, 2, 3]), 4)
    assert 1.0 < skewed < 4.0 - 0.5  # negative control: non-uniform use of 4 codes is not 4
    assert codes_used(torch.tensor([[5, 5, 1], [1, 0, 5]])) == 3 and codes_used(torch.zeros(3, dtype=torch.long)) == 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: VQVAE("kmeans"), r"quantiser must be one of .*'nearest'.*got 'kmeans'"),
        (lambda: VQVAE("nearest", codes=1), r"codes must be an integer >= 2, got 1"),
        (lambda: tiny("nearest")(torch.rand(3, 64, 64)), r"images must be a \(B, 3, H, W\) tensor, got \(3, 64, 64\)"),
        (lambda: tiny("nearest")(torch.rand(2, 1, 64, 64)), r"images must be a \(B, 3, H, W\) tensor, got \(2, 1, 64, 64\)"),
        (lambda: tiny("nearest")(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)), r"images must be floats .* got dtype torch.uint8"),
        (lambda: tiny("nearest")(torch.rand(2, 3, 64, 62)), r"multiples of 2\*\*downsamples = 4, got 64×62"),
        (lambda: tiny("nearest").encode(torch.rand(2, 3, 30, 30)), r"multiples of 2\*\*downsamples = 4, got 30×30"),
        (lambda: tiny("nearest").decode(torch.zeros(2, 16)), r"codes must be a \(B, h, w\) integer tensor"),
        (lambda: tiny("nearest").decode(torch.full((1, 4, 4), 16)), r"codes must lie in \[0, 16\), got values in \[16, 16\]"),
        (lambda: codebook_perplexity(torch.tensor([0, 3]), 3), r"codes must lie in \[0, 3\), got values in \[0, 3\]"),
        (lambda: codebook_perplexity(torch.tensor([0.0]), 3), r"codes must be integers"),
        (lambda: as_float_images(np.zeros((2, 64, 64, 3), dtype=np.uint8)), r"images must be \(N, 3, H, W\), got shape \(2, 64, 64, 3\)"),
        (lambda: as_float_images(np.zeros((2, 3, 8, 8), dtype=np.int32)), r"uint8 .* or floats .* got dtype torch.int32"),
    ],
)
def test_bad_inputs_are_refused_with_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def run(scenes, quantiser: str):
    train, val = scenes
    return train_vqvae(train, val, quantiser, steps=30, batch=8, lr=3e-3, seed=0, validations=3, log=None, codes=32, code_dim=8, hidden=16)


@pytest.fixture(scope="module")
def runs(scenes):
    state = torch.get_rng_state()
    out = {q: run(scenes, q) for q in QUANTISERS}
    assert torch.equal(torch.get_rng_state(), state)  # training draws under a forked generator
    return out


@pytest.mark.parametrize("quantiser", QUANTISERS)
def test_training_lowers_the_validation_reconstruction_loss(quantiser, runs, scenes):
    model, result = runs[quantiser]
    curve = result["curve"]
    assert [p["step"] for p in curve] == [0, 10, 20, 30]
    assert curve[0]["train_loss"] is None and all(p["train_loss"] is not None for p in curve[1:])
    assert min(p["val_recon"] for p in curve[1:]) < curve[0]["val_recon"]
    assert result["final"]["val_recon"] < curve[0]["val_recon"]
    assert len(result["train_recon"]) == 30 and result["train_recon"][-1] < result["train_recon"][0]
    assert all(1.0 <= p["perplexity"] <= p["codes_used"] + 1e-9 for p in curve)
    assert result["steps"] == 30 and result["batch"] == 8 and result["train_time_s"] > 0
    assert all(a["train_s"] <= b["train_s"] for a, b in zip(curve, curve[1:]))
    # the returned model is the kept state: its validation score is the final one
    val = as_float_images(scenes[1])
    with torch.no_grad():
        assert F.mse_loss(model(val)["recon"], val).item() == pytest.approx(result["final"]["val_recon"], rel=1e-5)


@pytest.mark.parametrize("quantiser", ["gumbel", "ema"])
def test_training_is_deterministic(quantiser, runs, scenes):
    _, first = runs[quantiser]
    _, second = run(scenes, quantiser)

    def without_clock(curve):
        return [{k: v for k, v in p.items() if k != "train_s"} for p in curve]

    assert without_clock(first["curve"]) == without_clock(second["curve"])
    assert first["train_recon"] == second["train_recon"] and first["final"] == second["final"]


@pytest.mark.parametrize("quantiser", ["nearest", "gumbel"])
def test_codebook_gradients_are_bitwise_repeatable_on_two_threads(quantiser):
    # many positions share a code: the lookup's backward must not be a multi-threaded scatter-add
    # (with codebook[codes] instead of index_select, two trainings of one seed differed)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = VQVAE(quantiser, codes=8, code_dim=16, hidden=16, generator=torch.Generator().manual_seed(0))
        images = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        grads = []
        for _ in range(4):
            model.zero_grad(set_to_none=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(2)
                model(images)["loss"].backward()
            grads.append(model.quantiser.codebook.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
