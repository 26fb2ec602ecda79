"""Concentration strength / fluctuation and their losses: hand-computed values, gradients into a soft
prompt, a negative control, the supervised contrastive loss against a loop, Hamilton weights, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qattn.attention import QuaternionMultiheadAttention
from qattn.metrics.concentration import (
    concentration,
    decoding_rows,
    fluctuation_loss,
    strength_and_fluctuation,
    strength_loss,
    supervised_contrastive_loss,
)

torch.set_num_threads(1)  # a timing measurement shares this machine


def _random_maps(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).mul(2).softmax(-1)


# -- hand-computed values ------------------------------------------------------------------------

# one example, two heads, four positions; rows are queries and sum to 1
HAND = torch.tensor(
    [
        [
            [
                [1.0, 0.0, 0.0, 0.0],
                [0.5, 0.5, 0.0, 0.0],
                [0.2, 0.2, 0.6, 0.0],
                [0.1, 0.2, 0.3, 0.4],
            ],
            [
                [1.0, 0.0, 0.0, 0.0],
                [0.25, 0.75, 0.0, 0.0],
                [0.0, 0.5, 0.5, 0.0],
                [0.5, 0.25, 0.125, 0.125],
            ],
        ]
    ]
)  # (1, 2, 4, 4)
PROMPT = torch.tensor([True, True, False, False])


def test_hand_computed_map():
    assert HAND.shape == (1, 2, 4, 4)
    # decoding token at 3: head 0 puts 0.1 + 0.2 = 0.3 on the prompt, head 1 0.5 + 0.25 = 0.75
    assert concentration(HAND, 3, PROMPT).tolist() == pytest.approx([(0.3 + 0.75) / 2])  # 0.525
    # decoding token at 2: head 0 0.2 + 0.2 = 0.4, head 1 0.0 + 0.5 = 0.5
    assert concentration(HAND, torch.tensor([2]), PROMPT[None]).tolist() == pytest.approx([0.45])
    # the head-averaged row itself
    assert decoding_rows(HAND, 3)[0].tolist() == pytest.approx([0.3, 0.225, 0.2125, 0.2625])
    # the input positions 2, 3 get the rest of the row: 1 - 0.525
    assert strength_loss(HAND, 3, ~PROMPT).item() == pytest.approx(0.475)


def _two_position_layer(prompt_mass: list[float]) -> torch.Tensor:
    """(B, 1, 2, 2) weights whose decoding row (position 1) puts ``prompt_mass[b]`` on position 0."""
    c = torch.tensor(prompt_mass, dtype=torch.float64)
    row = torch.stack([c, 1 - c], -1)  # (B, 2)
    return torch.stack([torch.tensor([1.0, 0.0], dtype=torch.float64).expand_as(row), row], 1)[:, None]


def test_strength_and_fluctuation_known_values():
    prompt = torch.tensor([True, False])
    constant = _two_position_layer([0.3, 0.3, 0.3])
    known = _two_position_layer([0.2, 0.4, 0.6, 0.8])
    out = strength_and_fluctuation([constant[:3]], 1, prompt)
    assert out["strength"].tolist() == pytest.approx([0.3])
    assert out["fluctuation"].tolist() == pytest.approx([0.0], abs=1e-12)

    out = strength_and_fluctuation([known, known.flip(0)], 1, prompt)
    assert out["concentration"].shape == (2, 4)
    assert out["strength"].tolist() == pytest.approx([0.5, 0.5])
    # population std: deviations ±0.3, ±0.1 → sqrt((0.09 + 0.01 + 0.01 + 0.09) / 4)
    assert out["fluctuation"].tolist() == pytest.approx([math.sqrt(0.05)] * 2)
    sample = strength_and_fluctuation(known, 1, prompt, unbiased=True)
    assert sample["strength"].shape == () and sample["fluctuation"].item() == pytest.approx(math.sqrt(0.2 / 3))


def test_strength_loss_deep_layer_selection():
    layers = [_random_maps(2, 3, 5, 5, seed=s) for s in range(3)]
    inputs = torch.tensor([False, False, True, True, False])
    per_layer = [concentration(w, 4, inputs).mean().item() for w in layers]
    assert strength_loss(layers, 4, inputs, deep_layers=[2]).item() == pytest.approx(per_layer[2])
    assert strength_loss(layers, 4, inputs, deep_layers=[1, -1]).item() == pytest.approx((per_layer[1] + per_layer[2]) / 2)
    assert strength_loss(layers, 4, inputs).item() == pytest.approx(sum(per_layer) / 3)


# -- a tiny model with a trainable soft prompt ---------------------------------------------------


class TinyPromptModel(nn.Module):
    """Two frozen attention layers over ``[prompt (K), input (T), decoding token (1)]``; only the prompt trains."""

    def __init__(self, kind: str, batch: int = 6, k: int = 3, t: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        if kind == "real":
            e = 8
            self.layers = nn.ModuleList(nn.MultiheadAttention(e, 2, batch_first=True) for _ in range(2))
        else:
            e = 16
            self.layers = nn.ModuleList(QuaternionMultiheadAttention(e, 2, score="hamilton", batch_first=True) for _ in range(2))
        self.layers.requires_grad_(False)
        self.prompt = nn.Parameter(0.5 * torch.randn(k, e))
        self.register_buffer("inputs", torch.randn(batch, t, e))
        # one decoding token per example: with a shared one, layer 0's prompt row would differ across
        # examples only by its softmax normaliser, i.e. not at all after normalisation (no fluctuation)
        self.register_buffer("decoder", torch.randn(batch, 1, e))
        n = k + t + 1
        pos = torch.arange(n)
        self.prompt_mask, self.input_mask, self.decoding = pos < k, (pos >= k) & (pos < k + t), n - 1
        self.labels = torch.arange(batch) % 2

    def forward(self) -> list[torch.Tensor]:
        b = self.inputs.shape[0]
        x = torch.cat([self.prompt.expand(b, -1, -1), self.inputs, self.decoder], 1)
        weights = []
        for layer in self.layers:
            out, w = layer(x, x, x, need_weights=True, average_attn_weights=False)
            x = x + out
            weights.append(w)
        return weights

    def prompt_concentration(self) -> float:
        with torch.no_grad():
            return strength_and_fluctuation(self(), self.decoding, self.prompt_mask)["strength"].mean().item()


# SGD step sizes per model (nn.MultiheadAttention's small initial weights give smaller gradients)
STRENGTH_LR = {"real": 20.0, "hamilton": 5.0}
FLUCTUATION_LR = {"real": 20.0, "hamilton": 2.0}


def _sgd(model: TinyPromptModel, loss_fn, lr: float, steps: int = 25) -> None:
    opt = torch.optim.SGD([model.prompt], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model()).backward()
        opt.step()


@pytest.mark.parametrize("kind", ["real", "hamilton"])
def test_gradients_reach_the_prompt(kind):
    model = TinyPromptModel(kind)
    weights = model()
    expected = (6, 2, 8, 8) if kind == "real" else (6, 2, 4, 8, 8)
    assert all(w.shape == expected for w in weights)
    losses = {
        "strength": strength_loss(weights, model.decoding, model.input_mask, deep_layers=[1]),
        "fluctuation": fluctuation_loss(weights, model.decoding, model.prompt_mask, model.labels, deep_layers=[0, 1]),
    }
    for name, loss in losses.items():
        (grad,) = torch.autograd.grad(loss, model.prompt, retain_graph=True)
        assert grad.abs().sum() > 1e-6, name


@pytest.mark.parametrize("kind", ["real", "hamilton"])
def test_strength_loss_raises_prompt_concentration(kind):
    model = TinyPromptModel(kind)
    before = model.prompt_concentration()
    _sgd(model, lambda w: strength_loss(w, model.decoding, model.input_mask), STRENGTH_LR[kind])
    after = model.prompt_concentration()
    assert after > before + 0.1, (before, after)


def test_negative_control_wrong_positions_lower_prompt_concentration():
    # the strength loss fed the PROMPT positions as "input": optimising it drains the prompt
    model = TinyPromptModel("real")
    before = model.prompt_concentration()
    _sgd(model, lambda w: strength_loss(w, model.decoding, model.prompt_mask), STRENGTH_LR["real"])
    after = model.prompt_concentration()
    assert after < before - 0.03, (before, after)


@pytest.mark.parametrize("kind", ["real", "hamilton"])
@pytest.mark.parametrize("combine", ["concat", "mean"])
def test_fluctuation_loss_decreases_under_sgd(kind, combine):
    model = TinyPromptModel(kind)

    def loss_fn(w):
        return fluctuation_loss(w, model.decoding, model.prompt_mask, model.labels, combine=combine)

    with torch.no_grad():
        before = loss_fn(model()).item()
    _sgd(model, loss_fn, FLUCTUATION_LR[kind], steps=10)
    with torch.no_grad():
        after = loss_fn(model()).item()
    assert after < before - 0.1, (before, after)


def test_fluctuation_loss_features_follow_the_documented_combination():
    layers = [_random_maps(4, 2, 6, 6, seed=s) for s in range(2)]
    labels = torch.tensor([0, 1, 0, 1])
    # per-example prompt positions at different places, three each, read in position order
    mask = torch.tensor(
        [
            [True, True, True, False, False, False],
            [False, True, True, True, False, False],
            [True, False, True, False, True, False],
            [False, False, False, True, True, True],
        ]
    )
    vectors = [torch.stack([decoding_rows(w, 5)[b][mask[b]] for b in range(4)]) for w in layers]  # each (4, 3)
    concat = supervised_contrastive_loss(torch.cat(vectors, 1), labels)
    mean = supervised_contrastive_loss((vectors[0] + vectors[1]) / 2, labels)
    assert fluctuation_loss(layers, 5, mask, labels).item() == pytest.approx(concat.item())
    assert fluctuation_loss(layers, 5, mask, labels, combine="mean").item() == pytest.approx(mean.item())
    assert concat.item() != pytest.approx(mean.item())


# -- supervised contrastive loss -----------------------------------------------------------------


def _supcon_loop(features: torch.Tensor, labels: list[int], tau: float) -> list[float | None]:
    """Per-anchor loss straight from Khosla et al. (eq. 2), None for an anchor without positives."""
    z = [f / f.norm() for f in features.double()]
    out = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            out.append(None)
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in others)
        out.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in positives) / len(positives))
    return out


def test_supcon_matches_the_loop():
    features = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = [0, 1, 0, 2, 1, 1, 2]  # every anchor has a positive
    for tau in (0.5, 0.1, 2.0):
        loop = _supcon_loop(features, labels, tau)
        assert supervised_contrastive_loss(features, torch.tensor(labels), tau).item() == pytest.approx(sum(loop) / len(loop))


def test_supcon_lower_when_classes_coincide():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    u, w = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    coincide = torch.stack([u, u, u, w, w, w])
    coincide_loss = supervised_contrastive_loss(coincide, labels).item()
    for seed in range(5):
        random = torch.randn(6, 3, generator=torch.Generator().manual_seed(seed))
        assert coincide_loss < supervised_contrastive_loss(random, labels).item()
    # the sign: swapping which examples share a class (same vectors) makes it worse
    assert supervised_contrastive_loss(coincide, torch.tensor([0, 1, 0, 1, 0, 1])).item() > coincide_loss


def test_supcon_anchors_without_positives_are_excluded():
    features = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = [0, 0, 1, 1, 2]  # anchor 4 has no positive
    loop = _supcon_loop(features, labels, 0.5)
    assert loop[4] is None
    kept = [v for v in loop if v is not None]
    loss = supervised_contrastive_loss(features, torch.tensor(labels)).item()
    assert loss == pytest.approx(sum(kept) / 4)
    assert loss != pytest.approx(sum(kept) / 5)  # not counted as a zero
    # no anchor with a positive: 0, and backward still works
    f = features.clone().requires_grad_(True)
    zero = supervised_contrastive_loss(f, torch.arange(5))
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(f.grad, torch.zeros_like(f))


# -- Hamilton-shaped weights ---------------------------------------------------------------------


def test_hamilton_weights_mean_and_each():
    w = _random_maps(3, 2, 4, 5, 5, seed=7)  # (B, H, 4, N, N)
    decoding = torch.tensor([4, 2, 0])
    prompt = torch.tensor([[True, True, False, False, False]] * 2 + [[False, False, True, True, False]])
    mean = concentration(w, decoding, prompt)
    each = concentration(w, decoding, prompt, components="each")
    assert mean.shape == (3,) and each.shape == (3, 4)
    torch.testing.assert_close(mean, concentration(w.mean(2), decoding, prompt))
    torch.testing.assert_close(each.mean(-1), mean)
    for c in range(4):
        torch.testing.assert_close(each[:, c], concentration(w[:, :, c], decoding, prompt))
    assert decoding_rows(w, decoding, "each").shape == (3, 4, 5)
    # a single-map layer counts as four identical maps under "each"
    single = concentration(w[:, :, 0], decoding, prompt, components="each")
    assert torch.equal(single, single[:, :1].expand(3, 4))
    out = strength_and_fluctuation([w, w[:, :, 1]], decoding, prompt, components="each")
    assert out["strength"].shape == (2, 4) and out["fluctuation"].shape == (2, 4)


@settings(max_examples=25)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    n=st.integers(2, 6),
    hamilton=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shapes_and_values_property(b, h, n, hamilton, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (b, h, 4, n, n) if hamilton else (b, h, n, n)
    w = torch.randn(*shape, generator=g).mul(2).softmax(-1)
    decoding = torch.randint(0, n, (b,), generator=g)
    prompt = torch.rand(b, n, generator=g) < 0.5
    prompt[:, 0] = True
    c = concentration(w, decoding, prompt)
    assert c.shape == (b,) and ((c >= -1e-6) & (c <= 1 + 1e-6)).all()
    maps = w.mean(2) if hamilton else w
    loop = [sum(maps[i, :, decoding[i], s].mean().item() for s in range(n) if prompt[i, s]) for i in range(b)]
    assert c.tolist() == pytest.approx(loop, abs=1e-5)
    # the prompt and the remaining positions share the whole row (position 0 is always prompt)
    prompt[:, -1] = False
    rest = ~prompt
    total = concentration(w, decoding, prompt) + concentration(w, decoding, rest)
    assert total.tolist() == pytest.approx([1.0] * b, abs=1e-5)
    assert decoding_rows(w, decoding).shape == (b, n)


# -- bad inputs ----------------------------------------------------------------------------------


def test_bad_inputs_are_refused():
    w = _random_maps(2, 2, 4, 4)
    prompt = torch.tensor([True, True, False, False])
    with pytest.raises(ValueError, match=r"weights must be .*\(B, H, N, S\).*got shape \(2, 4, 4\)"):
        concentration(w[0], 3, prompt)
    with pytest.raises(ValueError, match=r"Hamilton weights \(B, H, 4, N, S\).*got shape \(2, 2, 3, 4, 4\)"):
        concentration(_random_maps(2, 2, 3, 4, 4), 3, prompt)
    with pytest.raises(ValueError, match="summing to 1.*example 0, head 0"):
        concentration(w * 2, 3, prompt)
    concentration(w * 2, 3, prompt, check_rows=False)  # the check can be switched off
    with pytest.raises(ValueError, match="summing to 1"):
        concentration(torch.full_like(w, float("nan")), 3, prompt)
    with pytest.raises(ValueError, match=r"prompt_mask must be a bool tensor of shape \(B, S\) = \(2, 4\)"):
        concentration(w, 3, prompt[:3])
    with pytest.raises(ValueError, match="prompt_mask must be a bool"):
        concentration(w, 3, prompt.float())
    with pytest.raises(ValueError, match=r"decoding positions must lie in \[0, N\) = \[0, 4\)"):
        concentration(w, 4, prompt)
    with pytest.raises(ValueError, match="decoding positions"):
        concentration(w, torch.tensor([0, -1]), prompt)
    with pytest.raises(ValueError, match=r"decoding must be .*shape \(B,\) = \(2,\)"):
        concentration(w, torch.tensor([0, 1, 2]), prompt)
    with pytest.raises(ValueError, match=r"prompt_mask selects no position for example\(s\) \[1\]"):
        concentration(w, 3, torch.tensor([[True, False, False, False], [False] * 4]))
    with pytest.raises(ValueError, match="input_mask selects no position"):
        strength_loss([w], 3, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="components must be"):
        concentration(w, 3, prompt, components="all")
    labels = torch.tensor([0, 0])
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            fluctuation_loss([w], 3, prompt, labels, temperature=tau)
    with pytest.raises(ValueError, match=r"deep_layers \[2\] out of range for 2 layer\(s\)"):
        strength_loss([w, w], 3, ~prompt, deep_layers=[0, 2])
    with pytest.raises(ValueError, match=r"deep_layers \[-3\] out of range"):
        fluctuation_loss([w, w], 3, prompt, labels, deep_layers=[-3])
    with pytest.raises(ValueError, match="more than once"):
        strength_loss([w, w], 3, ~prompt, deep_layers=[1, -1])
    with pytest.raises(ValueError, match="non-empty sequence"):
        strength_loss([w, w], 3, ~prompt, deep_layers=[])
    with pytest.raises(ValueError, match="same number of prompt positions"):
        fluctuation_loss([w], 3, torch.tensor([[True, True, False, False], [True, False, False, False]]), labels)
    with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(B,\) = \(2,\)"):
        fluctuation_loss([w], 3, prompt, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="layers must be"):
        strength_and_fluctuation([], 3, prompt)
    with pytest.raises(ValueError, match="at least 2 inputs"):
        strength_and_fluctuation(w[:1], 3, prompt, unbiased=True)
