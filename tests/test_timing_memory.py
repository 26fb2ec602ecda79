"""The harness's one timing helper (interleaved, rotated, time budget) and one fresh-process memory probe."""

import time

import pytest
import torch

from qattn.book.harness.memory import peak_memory
from qattn.book.harness.timing import rotated, summary, time_interleaved


class FakeClock:
    """A clock that each callable advances by its own fixed cost; records the call order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def fn(self, name: str, cost: float):
        def call() -> None:
            self.calls.append(name)
            self.now += cost

        return call


def test_every_round_is_rotated_by_one_place_warmup_included():
    clock = FakeClock()
    fns = {n: clock.fn(n, 1.0) for n in "abc"}
    stats = time_interleaved(fns, repeats=2, warmup=1, clock=clock)
    rounds = [clock.calls[i : i + 3] for i in range(0, len(clock.calls), 3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert list(stats) == ["a", "b", "c"]
    assert all(s["repeats"] == 2 and s["samples"] == [1.0, 1.0] for s in stats.values())


def test_statistics_and_calls_per_sample():
    clock = FakeClock()
    costs = iter([1.0, 5.0, 3.0, 2.0, 4.0] * 3)

    def variable() -> None:
        clock.now += next(costs)

    stats = time_interleaved({"v": variable}, repeats=5, calls_per_sample=1, clock=clock)["v"]
    assert (stats["median_s"], stats["min_s"], stats["max_s"], stats["repeats"]) == (3.0, 1.0, 5.0, 5)
    clock2 = FakeClock()
    per = time_interleaved({"a": clock2.fn("a", 2.0)}, repeats=3, calls_per_sample=4, clock=clock2)["a"]
    assert per["samples"] == [2.0, 2.0, 2.0] and len(clock2.calls) == 12  # a sample: mean time of 4 calls
    assert summary({"a": per}) == {"a": {"median_s": 2.0, "min_s": 2.0, "max_s": 2.0, "repeats": 3}}


def test_time_budget_samples_fast_calls_more_and_stops_at_the_cap():
    clock = FakeClock()
    fns = {"fast": clock.fn("fast", 0.01), "slow": clock.fn("slow", 0.5), "tiny": clock.fn("tiny", 1e-6)}
    stats = time_interleaved(fns, repeats=3, min_time_s=1.0, max_repeats=50, clock=clock)
    assert stats["slow"]["repeats"] == 3  # 3 × 0.5 s already over the budget
    assert stats["fast"]["repeats"] == 50  # 0.01 s calls: capped before 1 s
    assert stats["tiny"]["repeats"] == 50
    clock2 = FakeClock()
    budget = time_interleaved({"x": clock2.fn("x", 0.1)}, repeats=2, min_time_s=0.45, max_repeats=100, clock=clock2)
    assert budget["x"]["repeats"] == 5  # until the samples add up to the budget
    # the ones still short of the budget stay interleaved: after "slow" is done they alternate
    tail = [c for c in clock.calls if c != "slow"][-10:]
    assert set(tail) == {"fast", "tiny"}


def test_sync_runs_around_every_sample():
    clock, events = FakeClock(), []
    fns = {"a": lambda: events.append("a")}
    time_interleaved(fns, repeats=2, warmup=1, sync=lambda: events.append("sync"), clock=clock)
    assert events == ["sync", "a", "sync"] * 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"repeats": 0}, ValueError, "repeats <= max_repeats"),
        ({"repeats": 5, "max_repeats": 4}, ValueError, "repeats <= max_repeats"),
        ({"repeats": 2, "warmup": -1}, ValueError, "warmup"),
        ({"repeats": 2, "calls_per_sample": 0}, ValueError, "calls_per_sample"),
        ({"repeats": 2, "min_time_s": -1.0}, ValueError, "min_time_s"),
        ({"repeats": 2.5}, ValueError, "repeats"),
    ],
)
def test_bad_timing_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        time_interleaved({"a": lambda: None}, **kwargs)


def test_empty_or_not_callable_is_refused():
    with pytest.raises(ValueError, match="at least one callable"):
        time_interleaved({}, repeats=1)
    with pytest.raises(TypeError, match="callable"):
        time_interleaved({"a": 3}, repeats=1)
    assert rotated([], 3) == []


def test_real_clock_measures_something():
    stats = time_interleaved({"sleep": lambda: time.sleep(0.002), "none": lambda: None}, repeats=3, warmup=1)
    assert stats["sleep"]["min_s"] >= 0.0015 and stats["none"]["median_s"] < stats["sleep"]["median_s"]


# -- memory probe: workloads run in the probe's fresh process (importable from this module) --------


def allocate(mib: int):
    """Workload: a callable that writes ``mib`` MiB (torch.ones touches every page)."""

    def run() -> None:
        torch.ones(mib * 2**20 // 4).sum()

    return run


def sleep(seconds: float):
    return lambda: time.sleep(seconds)


WORKLOAD = f"{__name__}:allocate"


def test_probe_sees_a_64_mib_allocation_and_not_a_1_mib_one():
    big = peak_memory(WORKLOAD, {"mib": 64}, threads=1)
    small = peak_memory(WORKLOAD, {"mib": 1}, threads=1)
    assert big["ok"] and small["ok"], (big, small)
    assert big["peak_bytes"] >= 64 * 2**20
    assert small["peak_bytes"] < 16 * 2**20
    assert big["time_s"] > 0


def test_probe_over_its_cap_reports_not_ok():
    result = peak_memory(WORKLOAD, {"mib": 512}, threads=1, cap_bytes=32 * 2**20)
    assert result["ok"] is False and result["error"]
    assert peak_memory(WORKLOAD, {"mib": 8}, threads=1, cap_bytes=256 * 2**20)["ok"]


def test_probe_timeout_and_bad_workloads():
    result = peak_memory(f"{__name__}:sleep", {"seconds": 30}, threads=1, timeout=3)
    assert result == {"ok": False, "error": "timed out after 3 s"}
    missing = peak_memory("qattn.no_such_module:f")
    assert missing["ok"] is False and "No module named" in missing["error"]
    with pytest.raises(ValueError, match="module:function"):
        peak_memory("no_colon")
    with pytest.raises(ValueError, match="cap_bytes"):
        peak_memory(WORKLOAD, {"mib": 1}, cap_bytes=0)
