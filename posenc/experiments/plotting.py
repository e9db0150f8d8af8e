"""Plots of experiment results (matplotlib, Agg backend), written atomically as PNG.

Each experiment may draw its own figure (``Experiment.plot(result, figure, images)``); the default
draws the training curves on the left and the experiment's headline numbers on the right.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from posenc.core.extras import require
from posenc.experiments.harness import Experiment, atomic_write_bytes


def bar_panel(ax, values: dict[str, float | None], *, title: str, ylabel: str = "", reference: float | None = None) -> None:
    """A bar per entry (None bars are left empty and labelled n/a), with an optional reference line."""
    names = list(values)
    heights = [0.0 if values[k] is None else float(values[k]) for k in names]
    bars = ax.bar(range(len(names)), heights, color="tab:blue")
    for bar, k in zip(bars, names):
        label = "n/a" if values[k] is None else f"{values[k]:.3g}"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel)


def curves_panel(
    ax, curves: dict[str, list[float]], *, title: str = "training loss", log: bool = True, every: int = 1
) -> None:
    """The training curves against the step; ``every``: the steps between two logged values
    (``Context.train``'s ``log_every``)."""
    from posenc.analysis.figures import palette  # one colour per curve, never repeated

    for (key, values), colour in zip(curves.items(), palette(len(curves))):
        if values:
            ax.plot([i * every for i in range(len(values))], values, label=key, linewidth=1, color=colour)
    if log and any(v and min(v) > 0 for v in curves.values()):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=9)
    if 0 < len(curves) <= 14:
        ax.legend(fontsize=6)


def _default_plot(result: dict[str, Any], fig, images) -> None:
    ax1, ax2 = fig.subplots(1, 2)
    curves_panel(ax1, result.get("curves", {}))
    headline = result["metrics"].get("headline", {})
    bar_panel(ax2, headline, title=result["metrics"].get("headline_name", "result"))


def save_plot(experiment: Experiment, result: dict[str, Any], path: Path, *, images: Any = None) -> None:
    """Draw ``result`` and write it to ``path`` (PNG) atomically; needs matplotlib."""
    matplotlib = require("matplotlib", extra="plot", feature="drawing an experiment's plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4.2))
    try:
        (experiment.plot or _default_plot)(result, fig, images)
        fig.suptitle(f"{experiment.name}: {experiment.claim}", fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
