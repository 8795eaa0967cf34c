"""The benchmark report generator turns a results JSON into docs/benchmarks.md (no timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# The report draws its plots with matplotlib, which only the `bench` extra installs.
pytest.importorskip("matplotlib", reason="matplotlib is missing: pip install -e '.[bench]'")

from bench._common import Figure, Scenario
from bench.report import write_report


def results_document() -> dict[str, object]:
    scenario = Scenario("data_path", "Data path", "python -m bench.data_path", params={"pods": 4})
    scenario.figures = [
        Figure(
            "throughput, 10,000 bound users", 9000.0, "req/s", "plain Envoy", 10000.0, target=9000
        ),
        Figure("latency p99", 4.0, "ms", "plain Envoy", 2.0, higher_is_better=False, note="wrk"),
    ]
    scenario.series = {"rps_sticky_10000": [9000.0], "rps_baseline_10000": [10000.0]}
    convergence = Scenario("xds_convergence", "Convergence", "python -m bench.xds_convergence")
    convergence.series = {"ads": [3.0, 4.0, 5.0], "baseline_rest_poll_1s": [500.0, 900.0]}
    return {
        "mode": "quick",
        "command": "python -m bench --quick",
        "seconds": 1.0,
        "machine": {
            "date": "2025-01-01 00:00 UTC",
            "commit": "abc1234",
            "python": "3.11",
            "cpus": 2,
            "cpu_model": "test CPU",
            "kernel": "6.1",
        },
        "scenarios": {
            "data_path": scenario.to_json(),
            "xds_convergence": convergence.to_json(),
            "failover": {"error": "TimeoutError: no pod"},
        },
    }


def test_report_renders_every_figure_with_its_baseline_ratio_and_target(tmp_path: Path) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(results_document()))

    written = write_report(results, tmp_path / "docs", plots=False)

    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert written == [tmp_path / "docs" / "benchmarks.md"]
    assert (
        "| throughput, 10,000 bound users | 9,000 req/s | plain Envoy: 10,000 req/s | 0.90x |"
        in page
    )
    assert "| latency p99 | 4 ms | plain Envoy: 2 ms | 0.50x |" in page  # lower is better
    assert "≥ 9,000 req/s: **met**" in page
    assert "`python -m bench --quick`" in page
    assert "Failed in this run: `TimeoutError: no pod`" in page
    assert "- latency p99: wrk" in page


def test_report_draws_the_plots_it_has_data_for(tmp_path: Path) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(results_document()))

    written = write_report(results, tmp_path / "docs")

    names = sorted(p.name for p in written)
    assert names == [
        "bench-convergence.png",
        "bench-data-path.png",
        "bench-ratios.png",
        "benchmarks.md",
    ]
    for path in written:
        assert path.stat().st_size > 0
    assert (
        "![bench-ratios](img/bench-ratios.png)" in (tmp_path / "docs" / "benchmarks.md").read_text()
    )
