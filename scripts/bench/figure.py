"""The benches' curves: one figure per plot, drawn by the caller, labelled and saved one way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def round_figure(path: Path, title: str) -> Iterator[Any]:
    """Yield the axes of a 7x4 figure (x: the round); on leaving, title, grid and legend it and save
    it to ``path`` (a PNG; folders made). The figure is closed on every way out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        yield ax
        ax.set_xlabel("round")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
