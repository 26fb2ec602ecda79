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
