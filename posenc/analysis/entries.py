"""The atlas's entries: the picture and property table of one registered encoding.

A sequence encoding (one that the reference Transformer accepts) is measured in that model and drawn
by its hooks: ``input`` -> its table and similarity matrix, ``rotary``/``bias`` -> score vs offset,
a patch grid -> the centre patch's similarity or score as an image, otherwise the outputs of a
sequence and of its reverse. Anything else gets the generic probe of
:func:`posenc.analysis.measure.generic_output`. Failures are recorded in the entry, never raised.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from posenc.analysis import measure
from posenc.analysis.similarity import score_matrix, similarity_matrix
from posenc.core.files import atomic_write_bytes as write_atomic
from posenc.core.registry import EncodingInfo

#: Families whose encodings are tried in the reference sequence Transformer first.
SEQUENCE_HOOK_FAMILIES = ("none", "input", "rotary", "bias", "relative", "complex", "context")


class Pictures:
    """Saves matplotlib figures as PNGs in the output folder (Agg canvas, atomic writes)."""

    def __init__(self, out: Path, dpi: int) -> None:
        self.out, self.dpi = out, dpi

    def figure(self, panels: int = 1, *, height: float = 2.8):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.6 * panels, height), layout="constrained")
        axes = fig.subplots(1, panels, squeeze=False)[0]
        return fig, list(axes)

    def save(self, fig, name: str, caption: str) -> dict:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        write_atomic(self.out / name, buf.getvalue())
        return {"file": name, "caption": caption}


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def heatmap(ax, matrix: torch.Tensor, title: str, xlabel: str, ylabel: str, cmap: str = "RdBu_r") -> None:
    data = matrix.detach().double().cpu().numpy()
    lim = float(abs(data).max()) or 1.0
    im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)


# -- one entry ---------------------------------------------------------------------------------------

def _sequence_entry(info: EncodingInfo, entry: dict, pics: Pictures, ref: measure.Reference, extrapolate: bool) -> bool:
    """Measure a sequence encoding in the reference Transformer; False when it is not one."""
    encoder = measure.build_sequence_model(info.cls, ref, causal=False)
    model = encoder or measure.build_sequence_model(info.cls, ref, causal=True)
    if model is None:
        return False
    enc = model.position
    hooks = set(enc.hooks)
    stem = safe_name(info.name)
    rows = entry["properties"]
    data = entry["data"]
    if encoder is not None:
        rows.append(measure.equivariance_row(encoder, info.family, ref))
    else:
        rows.append(measure.prop("equivariance", "permutation deviation of the reference encoder", None, None,
                                 "n/a", "causal only: a causal mask alone already breaks the symmetry"))
    table = measure.input_table(enc, ref.table_len) if "input" in hooks else None
    if table is not None:
        fig, (a, b) = pics.figure(2)
        heatmap(a, table.T, "encoding PE(p)", "position p", "feature")
        heatmap(b, similarity_matrix(table), "similarity PE(i).PE(j)", "j", "i")
        entry["pictures"].append(pics.save(fig, f"{stem}-table.png", "the encoding's table and its similarity matrix"))
        try:
            row, fit = measure.addition_row(enc, table, ref)
            rows.append(row)
            data["addition_fit"] = fit
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"addition theorem: {err}")
    grid = measure._grid(enc)
    if {"rotary", "bias"} & hooks:
        try:
            # encodings tied to a patch grid accept exactly its tokens
            length = ref.table_len if grid is None else int(getattr(enc, "num_prefix_tokens", 0) or 0) + grid[0] * grid[1]
            offsets, curves = measure.bias_curves(enc, length)
            data["score_vs_offset"] = {"offsets": offsets, "per_head": curves}
            fig, (ax,) = pics.figure(1, height=2.6)
            for h, curve in enumerate(curves[:8]):
                ax.plot(offsets, curve, lw=1, label=f"head {h}" if len(curves) > 1 else None)
            ax.set_xlabel("offset j - i (key - query)", fontsize=8)
            ax.set_ylabel("score" if "rotary" in hooks else "bias (logits)", fontsize=8)
            ax.set_title("position score vs offset" + (" (q = k = 1)" if "rotary" in hooks else ""), fontsize=9)
            if 1 < len(curves) <= 8:
                ax.legend(fontsize=6)
            entry["pictures"].append(pics.save(fig, f"{stem}-offset.png", "attention score due to position vs offset"))
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"score vs offset: {err}")
    if grid is not None:
        try:
            _grid_picture(enc, grid, entry, pics, stem)
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"2-D picture: {err}")
    if {"rotary", "bias", "value"} & hooks:
        try:
            rows.append(measure.relative_row(enc, ref))
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"shift invariance: {err}")
    if not entry["pictures"] and encoder is not None:
        _equivariance_picture(encoder, entry, pics, ref, stem)
    if extrapolate:
        try:
            rows.append(measure.extrapolation_row(info.cls, ref))
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"extrapolation: {err}")
    return True


@torch.no_grad()
def _grid_picture(enc, grid: tuple[int, int], entry: dict, pics: Pictures, stem: str) -> None:
    """The centre patch's similarity (input hook) or score (rotary/bias hooks) to every patch, as an image."""
    gh, gw = grid
    prefix = int(getattr(enc, "num_prefix_tokens", 0) or 0)
    n = prefix + gh * gw
    centre = prefix + (gh // 2) * gw + gw // 2
    panels = []
    table = measure.input_table(enc, n) if "input" in enc.hooks else None
    if table is not None:
        sim = similarity_matrix(table, normalize=True)[centre, prefix:]
        panels.append((sim, "cosine similarity of PE to the centre patch's"))
    if {"rotary", "bias"} & set(enc.hooks):
        scores = score_matrix(enc, n).mean(0)[centre, prefix:]
        panels.append((scores, "position score of the centre query"))
    if not panels:
        return
    fig, axes = pics.figure(len(panels), height=2.8)
    for ax, (values, title) in zip(axes, panels):
        heatmap(ax, values.reshape(gh, gw), title, "patch column", "patch row", cmap="viridis")
    entry["pictures"].append(pics.save(fig, f"{stem}-grid.png", f"on the {gh}x{gw} patch grid, from its centre patch"))


@torch.no_grad()
def _equivariance_picture(model, entry: dict, pics: Pictures, ref: measure.Reference, stem: str) -> None:
    tokens = torch.randint(0, ref.vocab, (1, ref.n), generator=torch.Generator().manual_seed(ref.seed))
    perm = torch.arange(ref.n).flip(0)
    out = model.forward_features(tokens)[0]
    back = model.forward_features(tokens[:, perm])[0][perm.argsort()]
    fig, (a, b) = pics.figure(2)
    heatmap(a, out.T, "f(x)", "token", "feature")
    heatmap(b, back.T, "reverse, f, reverse back", "token", "feature")
    entry["pictures"].append(pics.save(fig, f"{stem}-equivariance.png",
                                       "outputs for a sequence and for its reverse (re-ordered): equal when equivariant"))


def _generic_entry(info: EncodingInfo, entry: dict, pics: Pictures) -> None:
    try:
        module = measure.build_generic(info)
        label, x, out = measure.generic_output(module, info.family)
    except Exception as err:  # noqa: BLE001 - reported in the entry
        entry["no_picture"] = f"{type(err).__name__}: {err}"[:300]
        return
    stem = safe_name(info.name)
    entry["data"]["probe_input"] = label
    entry["data"]["output_shape"] = list(out.shape)
    if out.ndim == 4:
        maps = out[0, -min(4, out.shape[1]) :]
        fig, axes = pics.figure(len(maps), height=2.6)
        for c, (ax, m) in enumerate(zip(axes, maps)):
            heatmap(ax, m, f"channel {out.shape[1] - len(maps) + c}", "x", "y", cmap="viridis")
        caption = f"last channels of the output for {label}"
    else:
        table = out.reshape(-1, out.shape[-1])[:128]
        fig, (a, b) = pics.figure(2)
        heatmap(a, table.T, "output per input row", "input row", "feature")
        heatmap(b, similarity_matrix(table), "similarity of rows", "j", "i")
        caption = f"output and its similarity matrix for {label}"
    entry["pictures"].append(pics.save(fig, f"{stem}-generic.png", caption))
    try:
        entry["properties"].extend(measure.generic_rows(module, x, out))
    except Exception as err:  # noqa: BLE001
        entry["errors"].append(str(err))


def analyse_entry(info: EncodingInfo, pics: Pictures, ref: measure.Reference, *, extrapolate: bool = True) -> dict:
    """The atlas entry of one registry entry: pictures, property rows, extra data, errors."""
    entry = {
        "name": info.name, "family": info.family, "paper": info.paper, "summary": info.summary,
        "pictures": [], "properties": [], "data": {}, "errors": [],
    }
    handled = False
    try:
        is_sequence = info.family in SEQUENCE_HOOK_FAMILIES or bool(getattr(info.cls, "hooks", None))
        handled = is_sequence and _sequence_entry(info, entry, pics, ref, extrapolate)
        entry["data"]["reference_transformer"] = bool(handled)
    except Exception as err:  # noqa: BLE001 - one broken encoding must not stop the atlas
        entry["errors"].append(f"the 1-D reference Transformer cannot use it: {type(err).__name__}: {err}"[:300])
    if not entry["pictures"]:
        try:
            _generic_entry(info, entry, pics)
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"{type(err).__name__}: {err}"[:300])
    if not entry["pictures"] and "no_picture" not in entry:
        entry["no_picture"] = "nothing the atlas knows how to draw"
    return entry
