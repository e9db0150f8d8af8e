"""The atlas's entries: the picture, property table and comparison data of one registered encoding.

A sequence encoding (one the reference Transformer accepts) is measured in that model and drawn by
its hooks: ``input`` -> its table and similarity matrix, ``rotary``/``bias`` -> score vs offset, a
patch grid -> the centre patch's similarity or score as an image. Every other encoding is built
from its example in :mod:`posenc.testing.examples` (the one the test suites use) and drawn by what
its inputs are (:func:`posenc.analysis.measure.probe`): a sweep of coordinates or steps -> each
input's encoding and their similarity; a feature map -> the position signal for a zero input; a
map made from a batch size or latent -> its channels. What does not apply is stated with its reason;
unexpected failures are kept in the entry's ``errors`` (reported by the CLI, never on the page).
"""

from __future__ import annotations

import torch

from posenc.analysis import measure
from posenc.analysis.coordinate import coordinate_pictures
from posenc.analysis.figures import Pictures, heatmap, lines
from posenc.analysis.similarity import score_matrix, similarity_matrix
from posenc.coordinate.base import Encoding as CoordinateEncoding
from posenc.core.base import PositionEncoding
from posenc.core.files import atomic_write_bytes as write_atomic
from posenc.core.registry import EncodingInfo
from posenc.models.interfaces import prefix_tokens

__all__ = ["Pictures", "analyse_entry", "heatmap", "safe_name", "write_atomic"]

#: Families whose encodings are tried in the reference sequence Transformer first.
SEQUENCE_HOOK_FAMILIES = ("none", "input", "rotary", "bias", "relative", "complex", "context")
#: Side of the similarity matrices embedded in the page for the interactive comparison.
EMBED_SIDE = 32
HOOK_WORDS = {"input": "added to the tokens", "rotary": "rotates queries and keys", "bias": "bias on the logits",
              "value": "term on the values"}


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _embed_matrix(matrix: torch.Tensor) -> list[list[float]]:
    """A square matrix scaled to max |x| = 1 and subsampled to at most EMBED_SIDE rows, 3 decimals."""
    m = matrix.detach().double().cpu()
    step = max(1, -(-m.shape[0] // EMBED_SIDE))
    m = m[::step, ::step]
    m = m / m.abs().max().clamp_min(1e-12)
    return [[round(v, 3) for v in row] for row in m.tolist()]


def _na(entry: dict, key: str, label: str, reason: str) -> None:
    entry["properties"].append(measure.prop(key, label, None, None, "n/a", reason))


# -- sequence encodings ------------------------------------------------------------------------------

def _sequence_entry(info: EncodingInfo, entry: dict, pics: Pictures, ref: measure.Reference, extrapolate: bool) -> bool:
    """Measure a sequence encoding in the reference Transformer; False when it is not one."""
    try:
        example = measure.example_spec(info.name).kwargs
    except measure.NotApplicable:
        example = None
    encoder = measure.build_sequence_model(info.cls, ref, causal=False, example=example)
    model = encoder or measure.build_sequence_model(info.cls, ref, causal=True, example=example)
    if model is None:
        return False
    enc = model.position
    hooks = set(enc.hooks)
    stem = safe_name(info.name)
    rows, data = entry["properties"], entry["data"]
    entry["enters"] = ", ".join(HOOK_WORDS.get(h, h) for h in sorted(hooks)) or "nothing (no position)"
    entry["kind"] = "none" if not hooks else "n/a"
    entry["parameters"] = measure.parameter_count(enc)
    if encoder is not None:
        rows.append(measure.equivariance_row(encoder, info.family, ref))
    else:
        _na(entry, "equivariance", "permutation deviation of the reference encoder",
            "causal only: a causal mask alone already breaks the symmetry")
    grid = measure._grid(enc)
    length = measure.sequence_length(enc, ref.table_len)
    table = measure.input_table(enc, length) if "input" in hooks else None
    learned = any(p.requires_grad for p in enc.parameters())
    init = " (at random initialisation: training shapes this table)" if learned else ""
    if table is not None:
        fig, (a, b) = pics.figure(2, height=3.6)
        heatmap(a, table.T, "encoding PE(p)", "position p", "feature")
        cos = similarity_matrix(table, normalize=True)
        heatmap(b, cos, "cosine similarity", "position j", "position i")
        entry["pictures"].append(pics.save(fig, f"{stem}-table.png",
                                           "the encoding's table and the cosine similarity of its rows" + init))
        data["similarity"] = {"matrix": _embed_matrix(cos), "what": "cosine similarity of PE(i) and PE(j)"}
        entry["kind"] = "absolute"
        if grid is None:
            _spectrum_picture(table, entry, pics, stem)
        if grid is None:
            try:
                row, fit = measure.addition_row(enc, table, ref)
                rows.append(row)
                data["addition_fit"] = fit
            except Exception as err:  # noqa: BLE001
                entry["errors"].append(f"addition theorem: {type(err).__name__}: {err}")
    elif "input" in hooks:
        _content_pictures(enc, entry, pics, stem, length)
        _na(entry, "addition", "addition theorem: residual of PE(p+1) = M PE(p)",
            "from zero embeddings the input hook returns no position signal: it transforms its input "
            "(a convolution over the tokens, or a product with them)")
    if {"rotary", "bias"} & hooks:
        try:
            offsets, curves = measure.bias_curves(enc, length)
            data["score_vs_offset"] = {"offsets": offsets, "per_head": curves}
            fig, (ax,) = pics.figure(1, height=3.4)
            shown = curves[:12]
            lines(ax, offsets, [(f"head {h}" if len(shown) > 1 else None, c) for h, c in enumerate(shown)],
                  xlabel="offset j - i (key - query)", ylabel="score" if "rotary" in hooks else "bias (logits)",
                  title="position score vs offset" + (" (q = k = 1)" if "rotary" in hooks else ""))
            heads = f", {len(shown)} of {len(curves)} heads" if len(curves) > 12 else ""
            entry["pictures"].append(pics.save(fig, f"{stem}-offset.png", "attention score due to position vs offset" + heads))
            if "similarity" not in data:
                data["similarity"] = {"matrix": _embed_matrix(score_matrix(enc, length).mean(0)),
                                      "what": "position score of query i and key j (mean over heads)"}
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"score vs offset: {type(err).__name__}: {err}")
    if grid is not None:
        try:
            _grid_picture(enc, grid, entry, pics, stem)
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"2-D picture: {type(err).__name__}: {err}")
    if {"rotary", "bias", "value"} & hooks:
        try:
            rows.append(measure.relative_row(enc, ref))
            entry["kind"] = rows[-1]["verdict"]
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"shift invariance: {type(err).__name__}: {err}")
    else:
        _na(entry, "relative", "shift invariance of the position terms",
            "no term on the attention logits or values: " + ("the position enters through the tokens" if hooks
                                                              else "it gives no position at all"))
    if not entry["pictures"] and encoder is not None:
        _equivariance_picture(encoder, entry, pics, ref, stem)
    if extrapolate:
        try:
            row, curve = measure.extrapolation_row(info.cls, ref, example)
            rows.append(row)
            if curve is not None:
                data["extrapolation"] = curve
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"extrapolation: {type(err).__name__}: {err}")
    return True


@torch.no_grad()
def _spectrum_picture(table: torch.Tensor, entry: dict, pics: Pictures, stem: str) -> None:
    """Each feature's frequency content along the positions: |FFT| over p, features sorted by their peak."""
    centred = table.double() - table.double().mean(dim=0)
    spectrum = torch.fft.rfft(centred, dim=0).abs().T  # (d, n // 2 + 1)
    order = spectrum.argmax(dim=1).argsort(stable=True)
    n = table.shape[0]
    fig, (ax,) = pics.figure(1, height=3.2)
    heatmap(ax, spectrum[order] / spectrum.max().clamp_min(1e-12), f"|FFT over {n} positions| per feature",
            f"frequency (cycles per {n} positions)", "feature (sorted by peak)", cmap="viridis", symmetric=False)
    entry["pictures"].append(pics.save(fig, f"{stem}-spectrum.png", "frequency spectrum of each feature along the "
                                       "positions: one sharp line per feature for sinusoids, flat noise for a random table"))


@torch.no_grad()
def _content_pictures(enc, entry: dict, pics: Pictures, stem: str, n: int) -> None:
    """An input hook that transforms its content: when one token's content reaches the others (a
    convolution), that reach; else (a product with the content) the output for all-ones embeddings."""
    grid = measure._grid(enc)
    prefix = prefix_tokens(enc)
    centre = n // 2 if grid is None else prefix + (grid[0] // 2) * grid[1] + grid[1] // 2
    response = measure.content_response(enc, n, "impulse", centre=centre)
    if response is None:
        return
    norms = response.norm(dim=-1)
    others = torch.cat([norms[:centre], norms[centre + 1:]])
    if others.max() > 1e-6 * norms.max().clamp_min(1e-12):
        entry["kind"] = "relative (from the content)"
        fig, (a, b) = pics.figure(2, height=3.4)
        heatmap(a, response.T, f"response to one token at {centre}", "position p", "feature")
        scaled = norms / norms.max().clamp_min(1e-12)
        if grid is not None and prefix + grid[0] * grid[1] == n:
            heatmap(b, scaled[prefix:].reshape(grid), "reach of one token on the grid", "patch column", "patch row",
                    cmap="viridis", symmetric=False)
        else:
            lines(b, [p - centre for p in range(n)], [(None, scaled.tolist())],
                  xlabel="offset from the token", ylabel="|response| / max", title="reach of one token")
        entry["pictures"].append(pics.save(fig, f"{stem}-impulse.png", "how the content of one token reaches the "
                                           "others (output minus the output for zero embeddings): position comes "
                                           "from the neighbourhood and the borders, not from a table"))
        return
    ones = measure.content_response(enc, n, "ones")
    if ones is None:
        return
    entry["kind"] = "absolute (multiplies the content)"
    cos = similarity_matrix(ones, normalize=True)
    fig, (a, b) = pics.figure(2, height=3.6)
    heatmap(a, ones.T, "output for all-ones embeddings", "position p", "feature")
    heatmap(b, cos, "cosine similarity", "position j", "position i")
    entry["pictures"].append(pics.save(fig, f"{stem}-content.png", "the encoding applied to all-ones embeddings "
                                       "(zero embeddings carry no position: it multiplies the content)"))
    entry["data"]["similarity"] = {"matrix": _embed_matrix(cos), "what": "cosine similarity, all-ones content"}


@torch.no_grad()
def _grid_picture(enc, grid: tuple[int, int], entry: dict, pics: Pictures, stem: str) -> None:
    """The centre patch's similarity (input hook) or score (rotary/bias hooks) to every patch, as an image."""
    gh, gw = grid
    prefix = prefix_tokens(enc)
    n = prefix + gh * gw
    centre = prefix + (gh // 2) * gw + gw // 2
    panels = []
    table = measure.input_table(enc, n) if "input" in enc.hooks else None
    if table is not None:
        sim = similarity_matrix(table, normalize=True)[centre, prefix:]
        panels.append((sim, "cosine similarity to the centre patch"))
    if {"rotary", "bias"} & set(enc.hooks):
        scores = score_matrix(enc, n).mean(0)[centre, prefix:]
        panels.append((scores, "position score of the centre query"))
    if not panels:
        return
    fig, axes = pics.figure(len(panels), height=3.8)
    for ax, (values, title) in zip(axes, panels):
        heatmap(ax, values.reshape(gh, gw), title, "patch column", "patch row", cmap="viridis", symmetric=False)
    entry["pictures"].append(pics.save(fig, f"{stem}-grid.png", f"on the {gh}x{gw} patch grid, from its centre patch"))


@torch.no_grad()
def _equivariance_picture(model, entry: dict, pics: Pictures, ref: measure.Reference, stem: str) -> None:
    n = measure.sequence_length(model.position, ref.n)
    tokens = torch.randint(0, ref.vocab, (1, n), generator=torch.Generator().manual_seed(ref.seed))
    perm = torch.arange(n).flip(0)
    out = model.forward_features(tokens)[0]
    back = model.forward_features(tokens[:, perm])[0][perm.argsort()]
    fig, (a, b) = pics.figure(2, height=3.4)
    heatmap(a, out.T, "f(x)", "token", "feature")
    heatmap(b, back.T, "reverse, f, reverse back", "token", "feature")
    entry["pictures"].append(pics.save(fig, f"{stem}-equivariance.png",
                                       "outputs for a sequence and for its reverse (re-ordered): equal when equivariant"))


# -- every other encoding: drawn from its example -----------------------------------------------------

def _maps_picture(out: torch.Tensor, entry: dict, pics: Pictures, stem: str, label: str) -> None:
    c, h, w = out.shape[1:]
    shown = min(4, c)
    fig, axes = pics.figure(shown, height=3.2)
    for k, ax in enumerate(axes):
        heatmap(ax, out[0, k], f"channel {k}", "x", "y", cmap="viridis", symmetric=False)
    entry["pictures"].append(pics.save(
        fig, f"{stem}-maps.png", f"channels {'0' if shown == 1 else f'0-{shown - 1}'} of {c} of the output "
        f"({h} x {w} pixels) for {label}"))


def _sweep_axis(p: measure.Probe) -> str:
    """The x label of a sweep: the input index, and the values it runs over (a noise level from 0 to 1
    is not readable off the index alone)."""
    if p.x is None or p.x.ndim != 1 or len(p.x) < 2:
        return "input index"
    return f"input index (inputs {p.x[0].item():.3g} to {p.x[-1].item():.3g}, evenly)"


def _example_entry(info: EncodingInfo, entry: dict, pics: Pictures) -> None:
    stem = safe_name(info.name)
    module = measure.build_example(info.name, info.cls)
    entry["parameters"] = measure.parameter_count(module)
    if isinstance(module, CoordinateEncoding):  # the family's interface: (*, in_dim) -> (*, out_dim)
        try:
            coordinate_pictures(info.name, module, measure.example_spec(info.name).inputs(), entry, pics, stem)
        except Exception as err:  # noqa: BLE001 - the generic pictures still follow
            entry["errors"].append(f"coordinate slice: {type(err).__name__}: {err}"[:300])
    p = measure.probe(info.name, module)
    entry["data"]["probe_input"] = p.label
    entry["data"]["output_shape"] = list(p.out.shape)
    rows = entry["properties"]
    if p.kind == "sweep":
        entry["enters"] = "encodes a coordinate or step"
        table = p.out
        cos = similarity_matrix(table, normalize=True)
        fig, (a, b) = pics.figure(2, height=3.6)
        heatmap(a, table.T, "encoding of each input", _sweep_axis(p), "feature")
        heatmap(b, cos, "cosine similarity", "input j", "input i")
        entry["pictures"].append(pics.save(fig, f"{stem}-sweep.png",
                                           f"the encoding of {p.label} and the cosine similarity of its rows"))
        entry["data"]["similarity"] = {"matrix": _embed_matrix(cos), "what": f"cosine similarity over {p.label}"}
        rows.append(measure.distinct_row(table))
        return
    if p.out.ndim == 4:
        entry["enters"] = "layer of a CNN" if p.kind == "image" else "makes a feature map"
        _maps_picture(p.out, entry, pics, stem, p.label)
        rows.append(measure.spread_row(p.out, p.label))
        if p.kind == "image":
            try:
                rows.append(measure.shift_row(p))
            except measure.NotApplicable as reason:
                _na(entry, "shift", "translation equivariance", str(reason))
        return
    entry["enters"] = "module output"
    table = p.out.reshape(-1, p.out.shape[-1])[:128]
    fig, (a, b) = pics.figure(2, height=3.6)
    heatmap(a, table.T, "output per input row", "input row", "feature")
    heatmap(b, similarity_matrix(table, normalize=True), "cosine similarity of rows", "row j", "row i")
    entry["pictures"].append(pics.save(fig, f"{stem}-output.png", f"output and its similarity matrix for {p.label}"))
    if table.shape[0] > 1:
        rows.append(measure.distinct_row(table))
    else:
        _na(entry, "distinct", "smallest distance between the encodings of two inputs", "a single output row")


def analyse_entry(info: EncodingInfo, pics: Pictures, ref: measure.Reference, *, extrapolate: bool = True) -> dict:
    """The atlas entry of one registry entry: pictures, property rows, comparison data, errors."""
    entry = {
        "name": info.name, "family": info.family, "paper": info.paper, "summary": info.summary,
        "pictures": [], "properties": [], "data": {}, "errors": [], "enters": "", "parameters": None,
        "kind": "n/a",
    }
    handled = False
    try:
        declares_hooks = issubclass(info.cls, PositionEncoding) and bool(info.cls.hooks)
        is_sequence = info.family in SEQUENCE_HOOK_FAMILIES or declares_hooks
        handled = is_sequence and _sequence_entry(info, entry, pics, ref, extrapolate)
    except Exception as err:  # noqa: BLE001 - one broken encoding must not stop the atlas
        entry["errors"].append(f"the reference Transformer: {type(err).__name__}: {err}"[:300])
    entry["data"]["reference_transformer"] = bool(handled)
    if not handled:
        try:
            _example_entry(info, entry, pics)
        except measure.NotApplicable as reason:
            entry["no_picture"] = str(reason)
        except Exception as err:  # noqa: BLE001
            entry["errors"].append(f"{type(err).__name__}: {err}"[:300])
            entry["no_picture"] = "building or running its example failed (see the atlas command's log)"
    if not entry["pictures"] and "no_picture" not in entry:
        entry["no_picture"] = "nothing the atlas knows how to draw for it"
    if not entry["properties"]:
        _na(entry, "none", "measured properties", entry.get("no_picture") or "no measurement applies to it")
    return entry
