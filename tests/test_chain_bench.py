"""The gas bench rewrites only its own section of docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from scripts.bench.gas import write_section


def test_write_section_replaces_only_the_gas_section(tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\n## Learning\n\nkeep me\n\n## Gas\n\nold table\n\n## Proofs\n\nkeep me too\n")
    write_section(doc, "## Gas", "## Gas\n\nnew table\n")
    assert doc.read_text() == (
        "# Benchmarks\n\n## Learning\n\nkeep me\n\n## Gas\n\nnew table\n\n## Proofs\n\nkeep me too\n"
    )


def test_write_section_appends_when_absent_and_creates_the_file(tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    write_section(doc, "## Gas", "## Gas\n\nt1\n")
    assert doc.read_text() == "# Benchmarks\n\n## Gas\n\nt1\n"
    doc.write_text("# Benchmarks\n\n## Proofs\n\np\n")
    write_section(doc, "## Gas", "## Gas\n\nt2\n")
    assert doc.read_text() == "# Benchmarks\n\n## Proofs\n\np\n\n## Gas\n\nt2\n"


def test_terminal_table_and_markdown_show_the_same_rows() -> None:
    """Both renderings come from gas_rows: every call, every size, a target where one applies."""
    from rich.console import Console

    from scripts.bench.gas import SIZES, RoundGas, gas_rows, markdown, table

    rounds = {
        n: RoundGas(n, [70_000 + n], [50_000], [80_000], [15_000 * n], [61_000], [80_000], [54_000, 49_000])
        for n in SIZES
    }
    summary = {
        "register": 130_000,
        "create_task": 318_000,
        "withdraw": 49_000,
        "submit": 70_256,
        "commit": 50_000,
        "reveal": 80_000,
        "finalize_per_submission": 15_000,
        "max_tx_gas_256": 3_840_000,
    }
    rows = gas_rows(summary, rounds)
    md = markdown(summary, rounds, 1.0)
    console = Console(width=200, record=True)
    console.print(table(summary, rounds))
    text = console.export_text()
    for name, values, _ in rows:
        assert len(values) == len(SIZES)
        assert f"| {name} | " + " | ".join(values) in md and name in text
    assert "| submit (max) | 70,001 | 70,016 | 70,256 | <= 86,000 |" in md
