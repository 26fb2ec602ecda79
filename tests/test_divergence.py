"""The attention-divergence utilities: exact zero for identical maps, known values, masks, errors."""

import math

import pytest
import torch

from qattn.metrics import divergence_by_layer, js_divergence, layer_divergence, mean_pairwise_js, repeat_components


def _random_maps(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).mul(3).softmax(-1)


def test_identical_maps_give_exactly_zero():
    one = _random_maps(2, 3, 5, 7)  # (B, H, N, S)
    four = repeat_components(one)  # (B, H, 4, N, S), four identical maps
    assert four.shape == (2, 3, 4, 5, 7)
    rows = mean_pairwise_js(four, component_dim=2)
    assert rows.shape == (2, 3, 5)
    assert torch.equal(rows, torch.zeros_like(rows))  # exactly, not approximately
    assert layer_divergence(one) == 0.0 and layer_divergence(four) == 0.0


def test_negative_control_different_maps_are_positive():
    maps = _random_maps(2, 3, 4, 5, 7, seed=1)  # four independent maps per row
    rows = mean_pairwise_js(maps, component_dim=2)
    assert (rows > 0.01).all() and (rows <= 1).all()
    assert layer_divergence(maps) > 0.01


def test_known_values():
    # disjoint supports: 1 bit; a distribution against itself: 0; a half-overlap case by hand
    assert float(js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))) == pytest.approx(1.0)
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.0, 0.5, 0.5])
    expected = 0.5 * (0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.5)) * 2
    assert float(js_divergence(p, q)) == pytest.approx(expected)
    # symmetric
    a, b = _random_maps(7, seed=2), _random_maps(7, seed=3)
    assert float(js_divergence(a, b)) == pytest.approx(float(js_divergence(b, a)))


def test_mean_is_over_the_six_pairs():
    maps = _random_maps(4, 6, seed=4)  # four distributions, component dim 0
    pairs = [float(js_divergence(maps[a], maps[b])) for a in range(4) for b in range(a + 1, 4)]
    assert len(pairs) == 6
    assert float(mean_pairwise_js(maps, component_dim=0)) == pytest.approx(sum(pairs) / 6)


def test_query_mask_leaves_rows_out():
    maps = repeat_components(_random_maps(1, 1, 3, 4)).clone()
    maps[0, 0, 0, 2] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # row 2 of component r differs
    maps[0, 0, 1, 2] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    assert layer_divergence(maps) > 0
    assert layer_divergence(maps, torch.tensor([[False, False, True]])) == 0.0
    with pytest.raises(ValueError, match="no query row"):
        layer_divergence(maps, torch.tensor([[True, True, True]]))
    with pytest.raises(ValueError, match="query_mask"):
        layer_divergence(maps, torch.tensor([[False, True]]))


def test_divergence_by_layer_and_errors():
    layers = [_random_maps(1, 2, 4, 3, 3), _random_maps(1, 2, 3, 3)]
    values = divergence_by_layer(layers)
    assert values[0] > 0 and values[1] == 0.0
    with pytest.raises(ValueError, match="component_dim"):
        mean_pairwise_js(_random_maps(2, 3), component_dim=-1)
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_js(_random_maps(1, 3), component_dim=0)
    with pytest.raises(ValueError, match="weights must be"):
        layer_divergence(_random_maps(3, 3))
