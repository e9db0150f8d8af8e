"""The atlas's figure conventions: readable PNGs at twice the displayed size, colours that never repeat.

Every figure is ``WIDTH_IN`` inches wide, rendered at ``DPI`` = 144 and shown at half its pixel
size, so one typographic point is one CSS pixel on the page: the smallest font (``RC``, 11 pt) is
11 px at the displayed size, the figure is 648 px wide, and a high-density screen gets its two
device pixels per CSS pixel. :meth:`Pictures.save` records the displayed size and the smallest font
of each figure, which the page writes into the ``<img>`` and the browser test checks.
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import torch

from posenc.core.files import atomic_write_bytes as write_atomic

DPI = 144
#: Device pixels per displayed (CSS) pixel.
SCALE = 2
WIDTH_IN = 9.0
MIN_FONT_PT = 11.0
#: matplotlib settings of every atlas figure (applied by :func:`style`).
RC = {
    "font.size": 12, "axes.titlesize": 12, "axes.labelsize": 12, "xtick.labelsize": 11, "ytick.labelsize": 11,
    "legend.fontsize": 11, "figure.titlesize": 12, "axes.spines.top": False, "axes.spines.right": False,
}
#: Distinct colours, in order of use (tab10, then the lighter and darker tab20 partners).
_BASE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf", "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
         "#dbdb8d", "#9edae5"]


def palette(n: int) -> list[str]:
    """``n`` distinct colours: the fixed list first, then evenly spaced hues (no colour repeats)."""
    if n <= len(_BASE):
        return _BASE[:n]
    extra = n - len(_BASE)
    hues = [colorsys.hsv_to_rgb((i + 0.5) / extra, 0.85, 0.55 + 0.35 * (i % 2)) for i in range(extra)]
    return _BASE + ["#{:02x}{:02x}{:02x}".format(*tuple(round(255 * c) for c in rgb)) for rgb in hues]


def style():
    """A context manager applying :data:`RC` (every figure of the atlas is drawn inside it)."""
    import matplotlib

    return matplotlib.rc_context(RC)


class Pictures:
    """Saves matplotlib figures as PNGs in the output folder (Agg canvas, atomic writes)."""

    def __init__(self, out: Path, dpi: int = DPI) -> None:
        self.out, self.dpi = Path(out), dpi

    def figure(self, panels: int = 1, *, height: float = 3.4, columns: int = 2):
        """A figure ``WIDTH_IN`` wide with ``panels`` axes, at most ``columns`` per row."""
        from matplotlib.figure import Figure

        cols = max(1, min(panels, columns))
        rows = -(-panels // cols)
        with style():
            fig = Figure(figsize=(WIDTH_IN, height * rows), layout="constrained")
            axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
        for ax in axes[panels:]:
            ax.set_visible(False)
        return fig, axes[:panels]

    def save(self, fig, name: str, caption: str) -> dict:
        from matplotlib.text import Text

        buf = io.BytesIO()
        with style():  # tick labels are made while drawing
            # light compression: a fifth larger files, a quarter less time
            fig.savefig(buf, format="png", dpi=self.dpi, pil_kwargs={"compress_level": 1})
        write_atomic(self.out / name, buf.getvalue())
        width, height = (round(v * self.dpi / SCALE) for v in fig.get_size_inches())
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        # points -> displayed pixels: pt / 72 inches, at dpi / SCALE displayed pixels per inch
        font = min(sizes, default=MIN_FONT_PT) * self.dpi / 72 / SCALE
        return {"file": name, "caption": caption, "width": width, "height": height, "min_font_px": round(font, 2)}


def heatmap(ax, matrix: torch.Tensor, title: str, xlabel: str, ylabel: str, cmap: str = "RdBu_r",
            symmetric: bool = True) -> None:
    """An image of ``matrix`` with a colour bar; ``symmetric``: limits at +-max|x| (else min..max)."""
    data = matrix.detach().double().cpu().numpy()
    if symmetric:
        lim = float(abs(data).max()) or 1.0
        vmin, vmax = -lim, lim
    else:
        vmin, vmax = float(data.min()), float(data.max())
        if vmax <= vmin:
            vmin, vmax = vmin - 1.0, vmax + 1.0
    from matplotlib.ticker import MaxNLocator

    with style():
        im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.figure.colorbar(im, ax=ax, shrink=0.85)


def lines(ax, xs, curves: list[tuple[str | None, list[float]]], *, xlabel: str, ylabel: str, title: str = "") -> None:
    """Line plots with one distinct colour each and a legend when labelled."""
    with style():
        for (label, ys), colour in zip(curves, palette(len(curves))):
            ax.plot(xs, ys, lw=1.6, color=colour, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        if any(label for label, _ in curves):
            ax.legend(ncols=1 + len(curves) // 9)
