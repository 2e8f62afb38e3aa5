"""loadtest/bench_fleet.py: the simulated-time fleet run produces per-slice figures from the real stages."""

from __future__ import annotations

from loadtest.bench_fleet import burst, partition_of, simulate


def test_a_short_run_reports_every_slice_with_work_and_state_writes() -> None:
    run = simulate(models=2, duration_s=80, slice_s=40, label_delay_s=30, window_jitter=None)
    assert [s["end_s"] for s in run.slices] == [40, 80]
    assert all(s["cpu_percent"] > 0 and s["state_writes"] > 0 for s in run.slices)
    assert sum(s["window_closes"] for s in run.slices) == 0  # first windows need 5,000 events per model
    assert burst(run.slices)["closes"] == 0


def test_a_model_keeps_one_partition() -> None:
    assert partition_of("m1") == partition_of("m1")
    assert {partition_of(f"m{k}") for k in range(50)} == {0, 1, 2, 3}


def test_burst_compares_the_busiest_slice_with_the_median_one() -> None:
    slices = [{"cpu_percent": 2.0, "window_closes": 0}, {"cpu_percent": 8.0, "window_closes": 30},
              {"cpu_percent": 3.0, "window_closes": 2}]
    assert burst(slices) == {"max_closes_per_slice": 30, "closes": 32, "peak_cpu_over_median": 2.67}
