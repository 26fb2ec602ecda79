"""Quaternion layers: block structure, equivalence with unit-by-unit Hamilton products, init, errors."""

import pytest
import torch
import torch.nn.functional as F

from qattn import quaternion as qt
from qattn.layers import (
    QuaternionConv1d,
    QuaternionConv2d,
    QuaternionConvTranspose2d,
    QuaternionLinear,
    quaternion_init_,
)


def unit_weight(layer, o: int, v: int, *tap: int) -> torch.Tensor:
    """The quaternion W[o, v] (at a kernel tap) as a single blocked unit (4,)."""
    return torch.stack([w[(o, v, *tap)] for w in layer.components()])


def hamilton_matvec(layer, x_units: torch.Tensor, *tap: int) -> torch.Tensor:
    """Σ_v W[o, v] ⊗ x_v for x_units (4, in_units) → (4, out_units), one unit product at a time."""
    n_out, n_in = layer.weight_r.shape[:2]
    out = torch.zeros(4, n_out, dtype=x_units.dtype)
    for o in range(n_out):
        for v in range(n_in):
            out[:, o] += qt.hamilton(unit_weight(layer, o, v, *tap), x_units[:, v])
    return out


def test_linear_equals_unit_by_unit_hamilton_product():
    torch.manual_seed(0)
    layer = QuaternionLinear(8, 12, dtype=torch.float64)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(3, 8, dtype=torch.float64)
    y = layer(x)
    for b in range(3):
        expected = qt.merge(hamilton_matvec(layer, qt.split(x[b]))) + layer.bias
        assert torch.allclose(y[b], expected)


def test_linear_parameter_counts():
    assert sum(p.numel() for p in QuaternionLinear(16, 32).parameters()) == 16 * 32 // 4 + 32
    assert sum(p.numel() for p in QuaternionLinear(16, 32, bias=False).parameters()) == 16 * 32 // 4
    assert QuaternionLinear(16, 32).weight_r.shape == (8, 4)


def test_block_weight_has_the_left_multiplication_structure():
    layer = QuaternionLinear(8, 4)
    m = layer.block_weight().detach()
    blocks = [[m[a : a + 1, 2 * b : 2 * b + 2] for b in range(4)] for a in range(4)]
    w_r, w_i, w_j, w_k = (w.detach() for w in layer.components())
    assert torch.equal(blocks[0][0], w_r) and torch.equal(blocks[0][1], -w_i)
    assert torch.equal(blocks[1][2], -w_k) and torch.equal(blocks[2][1], w_k) and torch.equal(blocks[3][1], -w_j)


@pytest.mark.parametrize("criterion", ["he", "glorot"])
def test_initialisation_variance_and_generator(criterion):
    layer = QuaternionLinear(1024, 512, init=criterion)
    fan_in, fan_out = 1024 // 4, 512 // 4
    s2 = 1 / (2 * fan_in) if criterion == "he" else 1 / (2 * (fan_in + fan_out))
    # E|W|² = 4 s² (chi with 4 degrees of freedom); shared equally by the four components on average.
    total = sum(w.detach().pow(2) for w in layer.components()).mean().item()
    assert total == pytest.approx(4 * s2, rel=0.03)
    w_r_share = layer.weight_r.detach().pow(2).mean().item() / total  # E cos²θ = 1/2
    assert w_r_share == pytest.approx(0.5, abs=0.03)
    assert layer.bias.abs().max() == 0

    state = torch.random.get_rng_state()
    layer.reset_parameters(generator=torch.Generator().manual_seed(7))
    first = [w.detach().clone() for w in layer.components()]
    layer.reset_parameters(generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, layer.components()))
    assert torch.equal(torch.random.get_rng_state(), state), "an explicit generator must leave the global RNG alone"
    layer.reset_parameters(generator=torch.Generator().manual_seed(8))
    assert not torch.equal(first[0], layer.weight_r)


def test_init_axis_is_a_unit_pure_quaternion():
    w = [torch.empty(50, 40, dtype=torch.float64) for _ in range(4)]
    quaternion_init_(tuple(w), 40, 50, generator=torch.Generator().manual_seed(0))
    modulus = torch.stack(w).norm(dim=0)
    imag = torch.stack(w[1:]).norm(dim=0)
    phase_sin = imag / modulus
    assert torch.allclose(w[0].abs() / modulus, (1 - phase_sin**2).sqrt(), atol=1e-9)


def test_conv1d_equals_hamilton_at_every_tap():
    torch.manual_seed(1)
    conv = QuaternionConv1d(8, 4, kernel_size=3, stride=2, padding=2, dilation=2, dtype=torch.float64)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 8, 9, dtype=torch.float64)
    y = conv(x)
    xp = F.pad(x, (2, 2))
    for b in range(2):
        for pos in range(y.shape[-1]):
            acc = torch.zeros(4, 1, dtype=torch.float64)
            for t in range(3):
                acc += hamilton_matvec(conv, qt.split(xp[b, :, pos * 2 + t * 2], dim=0), t)
            assert torch.allclose(y[b, :, pos], acc.flatten() + conv.bias)


def test_conv2d_with_unit_kernel_equals_linear_per_pixel():
    torch.manual_seed(2)
    conv = QuaternionConv2d(8, 12, kernel_size=1, dtype=torch.float64)
    lin = QuaternionLinear(8, 12, dtype=torch.float64)
    with torch.no_grad():
        for wc, wl in zip(conv.components(), lin.components()):
            wc.copy_(wl[..., None, None])
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    assert torch.allclose(conv(x), lin(x.movedim(1, -1)).movedim(-1, 1))


def test_conv2d_matches_unfolded_hamilton():
    torch.manual_seed(3)
    conv = QuaternionConv2d(4, 8, kernel_size=(3, 2), padding=1, bias=False, dtype=torch.float64)
    x = torch.randn(1, 4, 4, 5, dtype=torch.float64)
    y = conv(x)
    xp = F.pad(x, (1, 1, 1, 1))
    i, j = 2, 3
    acc = torch.zeros(4, 2, dtype=torch.float64)
    for ki in range(3):
        for kj in range(2):
            acc += hamilton_matvec(conv, qt.split(xp[0, :, i + ki, j + kj], dim=0), ki, kj)
    assert torch.allclose(y[0, :, i, j], acc.flatten())


def test_conv_transpose2d_scatters_hamilton_products():
    torch.manual_seed(4)
    conv = QuaternionConvTranspose2d(8, 4, kernel_size=3, stride=(1, 2), padding=1, output_padding=(0, 1), dtype=torch.float64)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    y = conv(x)
    assert y.shape == (1, 4, 3, 8)
    expected = torch.zeros(4, 3 + 2, 8 + 2, dtype=torch.float64)  # padded canvas, crop by padding=1
    for i in range(3):
        for j in range(4):
            for ki in range(3):
                for kj in range(3):
                    expected[:, i + ki, j * 2 + kj] += hamilton_matvec(conv, qt.split(x[0, :, i, j], dim=0), ki, kj).flatten()
    expected = expected[:, 1 : 1 + 3, 1 : 1 + 8] + conv.bias[:, None, None]
    assert torch.allclose(y[0], expected)


def test_layers_gradcheck():
    torch.manual_seed(5)
    for layer, shape in (
        (QuaternionLinear(8, 4, dtype=torch.float64), (2, 8)),
        (QuaternionConv1d(4, 8, 3, padding=1, dtype=torch.float64), (1, 4, 5)),
        (QuaternionConv2d(4, 4, 3, stride=(1, 2), padding=1, dtype=torch.float64), (1, 4, 3, 4)),
        (QuaternionConvTranspose2d(4, 4, 3, stride=(1, 2), padding=1, dtype=torch.float64), (1, 4, 3, 3)),
    ):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        params = tuple(layer.parameters())

        def f(x, *p, layer=layer, params=params):
            return torch.func.functional_call(layer, {n: v for (n, _), v in zip(layer.named_parameters(), p)}, (x,))

        assert torch.autograd.gradcheck(f, (x, *(p.detach().requires_grad_() for p in params)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: QuaternionLinear(6, 8), "in_features must be a positive multiple of 4"),
        (lambda: QuaternionLinear(8, 10), "out_features must be a positive multiple of 4"),
        (lambda: QuaternionLinear(8, 8, init="xavier"), "init must be one of"),
        (lambda: QuaternionConv2d(4, 6, 3), "out_channels must be a positive multiple of 4"),
        (lambda: QuaternionConv1d(4, 4, (3, 3)), "kernel_size must be an int or a tuple of 1"),
    ],
)
def test_bad_layer_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_layer_inputs():
    with pytest.raises(ValueError, match="in_features=8"):
        QuaternionLinear(8, 8)(torch.zeros(2, 12))
    with pytest.raises(ValueError, match="in_channels=8"):
        QuaternionConv2d(8, 8, 3)(torch.zeros(1, 4, 5, 5))
