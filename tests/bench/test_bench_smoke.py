"""The benchmark suite still runs and reports what `docs/benchmarks.md` needs.

Structure only: benchmarks report timings, they never assert them.
"""

from __future__ import annotations

from pathlib import Path

from bench import builder, report
from bench.results import Run, load, save


def test_builder_benchmark_reports_targets_tables_and_comparable_metrics(tmp_path: Path) -> None:
    result = builder.run(sizes=[200, 400])

    assert result.status == "ok"
    assert [t.met is not None for t in result.targets] == [True, True, True]
    assert "status-side memory" in result.targets[2].goal
    main_table = result.tables[0]
    assert [row[0] for row in main_table.rows] == ["200", "400"]
    assert all(len(row) == len(main_table.columns) for row in main_table.rows)
    assert {"events_per_s@200", "growth@400", "peak_bytes@400"} <= set(result.metrics)
    assert result.data["runs"]["400"]["events"] == 400
    memory = result.data["runs"]["400"]["memory"]
    assert memory["events"] == 400 and memory["status_bytes"] > 0
    assert set(memory["stages"]) == {"builder", "in flight", "final"}
    assert "status_memory_ratio@400" in result.metrics
    memory_table = result.tables[2]
    assert all(len(row) == len(memory_table.columns) for row in memory_table.rows)

    path = tmp_path / "abc.json"
    save(
        Run(meta={"commit": "abc", "date": "now", "command": "test"}, results={"builder": result}),
        path,
    )
    again = load(path)
    assert again.results["builder"].metrics == result.metrics

    doc = report.document(again)
    assert "## StatusBuilder throughput" in doc
    assert "| 400 |" in doc
    lines = list(report.compare(again, again))
    assert any(line.startswith("builder.events_per_s@200") and "same" in line for line in lines)
