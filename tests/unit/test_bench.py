"""`riskmon bench`'s core figure, taken in a process of its own."""
from __future__ import annotations

from riskmon.models.codec import dumps
from riskmon.models.simulate import simulate
from riskmon.streams.tools.bench import bench_core, bench_core_apart


def test_the_core_measured_apart_judges_the_same_log_as_in_process() -> None:
    events, _ = simulate(30, 20, seed=4)
    lines = [dumps(e) for e in events]
    apart, here = bench_core_apart(lines, 2), bench_core(lines, 1)
    assert apart["events"] == here["events"] == len(lines) and len(apart["runs"]) == 2
    assert apart["accounts"] == here["accounts"] == 30
    assert apart["state_bytes_mean"] == here["state_bytes_mean"] and apart["state_bytes_max"] == here["state_bytes_max"]
    assert all(rate > 0 for rate in apart["runs"])
