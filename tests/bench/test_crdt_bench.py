"""The CRDT benchmark runs end to end in quick mode (speed is reported by bench/, never asserted)."""

from pathlib import Path

from bench import crdt


def test_quick_crdt_bench_reports_every_figure(tmp_path: Path) -> None:
    results = crdt.run(quick=True, out=tmp_path)
    for key in (
        "add_ops_per_s",
        "delta_batch_ratio",
        "mixed_batch_ratio",
        "full_state_ratio",
        "encoded_bytes_per_element",
        "memory_ratio",
    ):
        assert results[key] > 0, key
    assert (tmp_path / "crdt.json").exists()
    assert "| measure |" in crdt.render(results)
