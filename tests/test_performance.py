"""The benchmark: variants compute the same attention, measurements are well-formed, a tiny run works."""

import json

import pytest
import torch

from qattn.book.experiments import performance as bench


@pytest.mark.parametrize(
    "family",
    [
        ["hamilton", "hamilton_maps", "hamilton_reference"],
        ["core_hamilton", "core_hamilton_maps", "core_hamilton_reference"],
        ["shared"],
        ["core_shared"],
    ],
)
def test_variants_of_one_mechanism_agree(family):
    outputs = [bench.make_variant(v, 32, 2, 2, 9, "cpu", seed=3)[0]() for v in family]
    for out in outputs[1:]:
        assert torch.allclose(out, outputs[0], atol=1e-5)


def test_shared_module_equals_release_layout_only_by_construction_not_by_value():
    shared = bench.make_variant("shared", 32, 2, 1, 5, "cpu")[0]()
    release = bench.make_variant("shared_release", 32, 2, 1, 5, "cpu")[0]()
    assert shared.shape == release.shape and not torch.allclose(shared, release)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown variant"):
        bench.make_variant("flash", 32, 2, 1, 4, "cpu")
    with pytest.raises(ValueError, match="profile must be 'ci' or 'full'"):
        bench.BenchConfig.for_profile("huge")


def test_interleaved_timing_statistics_are_consistent():
    stats = bench.time_variants(["shared", "hamilton"], 32, 2, 1, 16, backward=True, warmup=1, repeats=3)
    for s in stats.values():
        assert s["repeats"] == 3 and 0 < s["min_s"] <= s["median_s"] <= s["max_s"]


def test_fast_calls_are_repeated_until_the_time_budget_and_never_past_the_cap():
    # A tiny call takes well under a millisecond: 0.05 s of samples needs many more than 3 of them,
    # the slow 16-matmul reference needs fewer; the cap bounds both.
    stats = bench.time_variants(
        ["core_shared", "core_hamilton_reference"], 32, 2, 1, 8, backward=False, warmup=1, repeats=3, min_time_s=0.05, max_repeats=40
    )
    for s in stats.values():
        assert 3 <= s["repeats"] <= 40
        assert s["repeats"] == 40 or s["repeats"] * s["max_s"] >= 0.05  # stopped by the cap or by the budget
    assert stats["core_shared"]["repeats"] > 3
    no_budget = bench.time_variants(["core_shared"], 32, 2, 1, 8, backward=False, warmup=0, repeats=3, min_time_s=0.0)
    assert no_budget["core_shared"]["repeats"] == 3
    with pytest.raises(ValueError, match="repeats <= max_repeats"):
        bench.time_variants(["core_shared"], 32, 2, 1, 8, backward=False, warmup=0, repeats=5, max_repeats=4)


def test_materialised_hamilton_maps_take_more_memory_than_the_shared_core():
    shared = bench.measure_memory("core_shared", 64, 4, 1, 1024)
    maps = bench.measure_memory("core_hamilton_maps", 64, 4, 1, 1024)
    assert shared["ok"] and maps["ok"]
    # four (H, N, N) float32 maps = 4·4·1024²·4 B = 64 MiB at least; the fused shared core holds none.
    assert maps["peak_bytes"] >= 64 * 2**20 > 4 * shared["peak_bytes"]


def test_longest_sequence_respects_the_cap():
    result = bench.longest_sequence("core_hamilton_maps", 64, 4, cap_bytes=96 * 2**20, time_limit_s=30, start=256)
    assert result["limited_by"] == "memory" and 256 <= result["longest"] < result["first_failure"]
    assert all(p["ok"] == (p["length"] <= result["longest"]) for p in result["probes"])
    # the cap is what stops it: the longest successful probe stayed under it
    assert max(p["peak_bytes"] for p in result["probes"] if p["ok"]) <= 96 * 2**20


def test_tiny_run_is_json_serialisable_with_headlines():
    cfg = bench.BenchConfig.for_profile(
        "ci",
        grid_embed_dims=[32],
        grid_batches=[1, 2],
        grid_lengths=[16, 64],
        grid_max_work_backward=2 * 16 * 16,
        layer_cases=[["linear", 16, 16, 0]],
        profile_cells=[[32, 1, 16, True]],
        mechanism_variants=["sdpa", "shared", "clustered"],
        mechanism_lengths=[64, 128],
        mechanism_memory_lengths=[],
        mechanism_longest_time_limit_s=0.05,
        mechanism_longest_start=64,
        lengths=[32, 256],
        warmup=0,
        repeats=2,
        memory_lengths=[64],
        memory_variants=["shared", "hamilton"],
        longest_variants=[],
        variants=["torch_mha", "shared", "hamilton", "hamilton_maps", "core_shared", "core_hamilton"],
    )
    logs = []
    result = bench.run(cfg, log=logs.append)
    json.dumps(result, allow_nan=False)
    assert {r["variant"] for r in result["timings"]} == set(cfg.variants)
    assert any("forward_backward" == r["mode"] for r in result["timings"])
    names = [h["name"] for h in result["headline"]]
    assert "shared / torch MHA forward time, worst N >= 256" in names and "hamilton / shared forward time, N=256" in names
    assert all(h["kind"] == "ratio" and isinstance(h["target_met"], bool) for h in result["headline"])
    assert result["machine"]["flops_per_s"] > 0 and all(0 < a["fraction_of_matmul"] for a in result["achieved"])
    assert logs and "shared" in bench.format_table(result)


def test_grid_respects_its_work_bounds_and_ratios_come_from_one_cell():
    """Cells past the work bound are not run; each ratio is the two medians of the same cell."""
    cfg = bench.BenchConfig.for_profile(
        "ci", grid_embed_dims=[32], grid_batches=[1, 4], grid_lengths=[8, 32], grid_max_work=4 * 32 * 32 - 1,
        grid_max_work_backward=8 * 8, warmup=0, grid_repeats=1, grid_min_time_s=0.0,
    )  # fmt: skip
    rows = bench.grid(cfg, log=lambda _: None)
    cells = {(r["batch"], r["length"], r["mode"]) for r in rows}
    assert (4, 32, "forward") not in cells and (1, 32, "forward") in cells, "forward bound B·N² < 4·32²"
    assert {c for c in cells if c[2] == "forward_backward"} == {(1, 8, "forward_backward")}
    assert {r["variant"] for r in rows} == set(bench.GRID_VARIANTS)
    for c in bench.grid_ratios(rows):
        t = {r["variant"]: r["median_s"] for r in rows if (r["batch"], r["length"], r["mode"]) == (c["batch"], c["length"], c["mode"])}
        assert c["ratio"] == t["shared"] / t["torch_mha"]


def test_sdpa_variant_is_softmax_attention():
    forward, (q, k, v) = bench.make_variant("sdpa", 32, 2, 2, 7, "cpu", seed=1)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 16**0.5, dim=-1)
    assert torch.allclose(forward(), weights @ v, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d", "conv_transpose2d"])
def test_layer_pairs_have_the_same_real_shape_and_a_quarter_of_the_weights(kind):
    pair = bench.make_layer_pair(kind, 2, 8, 5)
    out_q, out_r = pair["quaternion"](pair["input"]), pair["real"](pair["input"])
    assert out_q.shape == out_r.shape
    weights_q = sum(p.numel() for n, p in pair["quaternion"].named_parameters() if n != "bias")
    assert weights_q * 4 == pair["real"].weight.numel()
    with pytest.raises(ValueError, match="unknown layer kind"):
        bench.make_layer_pair("conv3d", 2, 8, 5)


def test_every_mechanism_variant_runs_with_the_output_of_its_kind():
    """All comparison variants build and run to finite outputs: attention layers (B, N, E), torch's
    fused call (B, H, N, E/H), the multi-linear pooling (B, K) (its exactness is tested in its own module)."""
    shapes = {}
    for name in bench.MECHANISM_VARIANTS:
        out = bench.make_variant(name, 32, 2, 1, 24, "cpu", seed=2)[0]()
        assert torch.isfinite(out).all(), name
        shapes[name] = tuple(out.shape)
    assert shapes["sdpa"] == (1, 2, 24, 16) and shapes["multilinear"] == shapes["multilinear_arf"] == (1, 32)
    assert all(shapes[n] == (1, 24, 32) for n in bench.MECHANISM_VARIANTS if n not in ("sdpa", "multilinear", "multilinear_arf"))


def test_fitted_exponent_recovers_a_power_law_and_needs_two_points():
    lengths = [512, 1024, 2048, 4096]
    assert bench.fitted_exponent(lengths, [n**1.5 for n in lengths]) == pytest.approx(1.5)
    assert bench.fitted_exponent([4096], [1.0]) is None


def test_mechanism_sweep_drops_a_variant_predicted_past_its_time_limit():
    cfg = bench.BenchConfig.for_profile(
        "ci", mechanism_variants=["shared", "hamilton_maps"], mechanism_embed_dim=16, mechanism_lengths=[64, 4096],
        mechanism_time_limit_s=1e-4, mechanism_memory_lengths=[], mechanism_longest_time_limit_s=1e-3,
        mechanism_longest_start=64, warmup=0, repeats=1, min_time_s=0.0,
    )  # fmt: skip
    result = bench.mechanism_sweep(cfg, log=lambda _: None)
    assert {r["length"] for r in result["timings"]} == {64}, "at 4096 both are predicted past 0.1 ms"
    assert set(result["longest"]) == {"shared", "hamilton_maps"}


def test_the_left_matrix_ablation_is_the_shared_layer_bitwise():
    """The ablation differs from the shared layer only in how it assembles the same weights."""
    (f_new, leaves_new), (f_old, leaves_old) = (bench.make_variant(v, 32, 2, 2, 9, "cpu", seed=5) for v in ("shared", "shared_left_matrix"))
    out_new, out_old = f_new(), f_old()
    assert torch.equal(out_new, out_old)
    grads_new = torch.autograd.grad(out_new.square().sum(), leaves_new)
    grads_old = torch.autograd.grad(out_old.square().sum(), leaves_old)
    assert all(torch.equal(a, b) for a, b in zip(grads_new, grads_old))


def test_longest_sequence_halves_when_the_start_does_not_fit():
    """Starting far above what fits, the search comes down instead of reporting 0."""
    result = bench.longest_sequence("core_hamilton_maps", 16, 1, cap_bytes=64 * 2**20, time_limit_s=5.0, start=8192)
    assert 0 < result["longest"] < 8192 and result["limited_by"] == "memory"
    assert result["probes"][0]["length"] == 8192 and not result["probes"][0]["ok"]
