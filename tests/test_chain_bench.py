"""The gas bench rewrites only its own section of docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

from client.bench_gas import write_section


def test_write_section_replaces_only_the_gas_section(tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\n## Learning\n\nkeep me\n\n## Gas\n\nold table\n\n## Proofs\n\nkeep me too\n")
    write_section(doc, "## Gas", "## Gas\n\nnew table\n")
    assert doc.read_text() == ("# Benchmarks\n\n## Learning\n\nkeep me\n\n## Gas\n\nnew table\n\n"
                               "## Proofs\n\nkeep me too\n")


def test_write_section_appends_when_absent_and_creates_the_file(tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    write_section(doc, "## Gas", "## Gas\n\nt1\n")
    assert doc.read_text() == "# Benchmarks\n\n## Gas\n\nt1\n"
    doc.write_text("# Benchmarks\n\n## Proofs\n\np\n")
    write_section(doc, "## Gas", "## Gas\n\nt2\n")
    assert doc.read_text() == "# Benchmarks\n\n## Proofs\n\np\n\n## Gas\n\nt2\n"
