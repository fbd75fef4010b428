"""The memory benchmark runs end to end in quick mode, in-process (figures are reported, not asserted)."""

from pathlib import Path

from bench import memory


def test_quick_memory_bench_reports_bytes_per_held_like(tmp_path: Path) -> None:
    results = memory.run(quick=True, out=tmp_path)
    inner = results["in_process"]
    assert inner["held"] == inner["likes"] == 20_000
    assert inner["bytes_per_like"] > 0 and "crdt" in inner["by_allocation_site"]
    assert (tmp_path / "memory.json").exists()
    assert "| measure |" in memory.render(results)
