"""The atlas's RoPE-variant figures: for each scaling and variant, the wavelength of every rotated
pair before and after, and the position score against the offset.

One figure per variant, two panels: (left) the wavelength ``2π / θ_i`` of pair ``i`` on a log scale,
the original RoPE beside the variant, with the trained length ``L0`` and the extended length drawn
across; (right) the content-free score of all-ones queries and keys (RoFormer's analysis), a query
at the last position against keys at every earlier one, divided by the head width, so plain RoPE
starts at 1 and an attention factor ``a`` starts at ``a²``. Every curve comes from the encodings'
own code (``inverse_frequencies``, the cos/sin tables and xPos's scales), not from a re-derivation of
the scalings.
"""

from __future__ import annotations

import math

import torch

from posenc.analysis.figures import Pictures, palette, style
from posenc.core.positions import Positions
from posenc.rotary.rope import RotaryPositionEncoding
from posenc.rotary.xpos import XPos, xpos_scale, xpos_zeta
from posenc.vision.rope_mixed import apply_rope_mixed, rope_mixed_init

#: head width, base, trained length and extension factor of every figure
HEAD_DIM, BASE, L0, FACTOR = 64, 10000.0, 512, 4


def offset_scores(encoding: RotaryPositionEncoding, n: int) -> tuple[list[int], list[float]]:
    """Offsets ``0 .. n - 1`` (query minus key) and the all-ones score divided by the head width:
    the query at position ``n - 1``, the keys at ``n - 1 - offset``.

    From the encoding's own cos/sin table for ``n`` positions (and xPos's scales): two all-ones
    features rotated by angles a and b (each pair scaled by c) meet with ``2 c² cos(a - b)``
    = ``2 (cos a cos b + sin a sin b)`` per pair, the unrotated features with 1 each.
    """
    with torch.no_grad():
        cos, sin = (t[0].double() for t in encoding.cos_sin(Positions(n)))  # (n, rot/2)
        if isinstance(encoding, XPos):
            pos = torch.arange(n)
            cos_q = cos[-1] * xpos_scale(pos[-1:], encoding.rot_dim, encoding.scale_base, key=False, dtype=torch.float64)
            sin_q = sin[-1] * xpos_scale(pos[-1:], encoding.rot_dim, encoding.scale_base, key=False, dtype=torch.float64)
            scale_k = xpos_scale(pos, encoding.rot_dim, encoding.scale_base, key=True, dtype=torch.float64)
            cos, sin = cos * scale_k, sin * scale_k
        else:
            cos_q, sin_q = cos[-1], sin[-1]
        scores = 2 * (cos @ cos_q.reshape(-1) + sin @ sin_q.reshape(-1)) + (encoding.head_dim - encoding.rot_dim)
    # latest key first: offset 0 .. n - 1
    return list(range(n)), (scores.flip(0) / encoding.head_dim).tolist()


def wavelengths(encoding: RotaryPositionEncoding, seq_len: int | None = None) -> list[float]:
    """``2π / θ_i`` of every rotated pair (``nan`` for pairs p-RoPE leaves unrotated)."""
    inv = encoding.inverse_frequencies(seq_len)
    return torch.where(inv > 0, 2 * math.pi / inv, torch.full_like(inv, math.nan)).tolist()


def _rope(**kw) -> RotaryPositionEncoding:
    return RotaryPositionEncoding(HEAD_DIM, base=BASE, cache_len=8, **kw)


def _scaled(kind: str, **kw) -> RotaryPositionEncoding:
    needs_l0 = kind not in ("linear", "ntk")
    return _rope(scaling=kind, factor=FACTOR, **({"original_max_len": L0} if needs_l0 else {}), **kw)


def _longrope_lists() -> tuple[list[float], list[float]]:
    """Smooth illustrative factor lists (Phi-3's are searched per model): short ~1, long rising to 2·factor."""
    f = HEAD_DIM // 2
    return [1.0 + 0.1 * i / (f - 1) for i in range(f)], [(2.0 * FACTOR) ** (i / (f - 1)) for i in range(f)]


def variants() -> list[dict]:
    """Every variant drawn: its name, text, and the curves of its two panels.

    Each curve is ``(label, encoding, length)``: the wavelengths at ``length`` (the length the
    scaling sees) and the score over ``length`` positions.
    """
    n = FACTOR * L0
    plain = ("RoPE (unscaled)", _rope(), n)
    short, long = _longrope_lists()
    longrope = _scaled("longrope", short_factor=short, long_factor=long)
    return [
        {"name": "linear", "title": "linear (position interpolation, Chen et al. 2023)",
         "text": f"every frequency divided by the factor {FACTOR}: all wavelengths grow {FACTOR}x",
         "curves": [plain, (f"linear, factor {FACTOR}", _scaled("linear"), n)]},
        {"name": "ntk", "title": "ntk (NTK-aware base scaling)",
         "text": "the base raised to base·factor^(d/(d-2)): the fastest pair is kept, the slowest stretched ~factor times",
         "curves": [plain, (f"ntk, factor {FACTOR}", _scaled("ntk"), n)]},
        {"name": "dynamic_ntk", "title": "dynamic_ntk (the NTK base recomputed from the length)",
         "text": "unscaled up to L0, then the base grows with the length the model sees (grow_only keeps the "
                 "longest length since a reset: the same curves)",
         "curves": [plain, *[(f"dynamic, length {m}·L0", _scaled("dynamic_ntk"), m * L0) for m in (1, 2, 4)]]},
        {"name": "yarn", "title": "yarn (Peng et al. 2023) and its options",
         "text": "fast pairs kept, slow pairs interpolated, a ramp between beta_fast and beta_slow rotations over L0; "
                 "the attention factor ln(s)/10 + 1 lifts the score (DeepSeek-V3's mscale_all_dim divides it out, "
                 "gpt-oss's truncate=False smooths the ramp's ends)",
         "curves": [plain, (f"yarn, factor {FACTOR}", _scaled("yarn"), n),
                    ("yarn, truncate=False (gpt-oss)", _scaled("yarn", truncate=False), n),
                    ("yarn, mscale = mscale_all_dim = 1 (DeepSeek-V3)", _scaled("yarn", mscale_all_dim=1.0), n)]},
        {"name": "llama3", "title": "llama3 (Llama 3's banded wavelength scaling)",
         "text": "wavelengths below L0/high_freq_factor kept, above L0/low_freq_factor divided by the factor, "
                 "blended between",
         "curves": [plain, (f"llama3, factor {FACTOR}, low 1, high 4", _scaled("llama3"), n)]},
        {"name": "longrope", "title": "longrope (Ding et al. 2024, as in Phi-3)",
         "text": "per-pair factors: short ones within L0, long ones beyond; attention factor sqrt(1 + ln s / ln L0) "
                 "(illustrative factor lists)",
         "curves": [plain, ("longrope, short factors (length <= L0)", longrope, L0),
                    ("longrope, long factors (length > L0)", longrope, n)]},
        {"name": "xpos", "title": "xpos (Sun et al. 2022)",
         "text": "RoPE's rotation plus a per-pair decay zeta_i^(offset / scale_base): the dashed lines are the "
                 "offsets over which each pair's factor falls by e (scale_base 512)",
         "curves": [plain, ("xPos, scale_base 512", XPos(HEAD_DIM, base=BASE, scale_base=512.0, cache_len=8), n)]},
        {"name": "p_rope", "title": "p-RoPE (Barbero et al. 2024)",
         "text": "the slowest 1 - p of the pairs are not rotated (crosses at the top, one row per p); they carry "
                 "content only",
         "curves": [plain, ("p-RoPE, p = 3/4", _rope(p=0.75), n), ("p-RoPE, p = 1/2", _rope(p=0.5), n)]},
    ]


def _measured(variant: dict) -> list[dict]:
    """Each curve's wavelengths and scores (computed once for the figure and the table)."""
    out = []
    for label, enc, length in variant["curves"]:
        offsets, scores = offset_scores(enc, length)
        out.append({"label": label, "encoding": enc, "waves": wavelengths(enc, length),
                    "offsets": offsets, "scores": scores})
    return out


def _draw(pics: Pictures, variant: dict, curves: list[dict]) -> dict:
    fig, (left, right) = pics.figure(2, height=3.4)
    fig.set_figheight(3.4 + 0.3 * len(curves))
    colours = palette(len(curves))
    top = max(w for c in curves for w in c["waves"] if not math.isnan(w))
    with style():
        for k, (c, colour) in enumerate(zip(curves, colours)):
            left.plot(range(len(c["waves"])), c["waves"], lw=1.6, color=colour, label=c["label"], marker=".", ms=4)
            unrotated = [i for i, w in enumerate(c["waves"]) if math.isnan(w)]
            if unrotated:
                left.scatter(unrotated, [top * 2.0 * 1.8**k] * len(unrotated), marker="x", color=colour, s=24)
            if isinstance(c["encoding"], XPos):
                zeta = xpos_zeta(c["encoding"].rot_dim)
                left.plot(range(len(zeta)), (c["encoding"].scale_base / -zeta.log()).tolist(), lw=1.4, ls="--",
                          color=colour, label="xPos: offset over which the pair decays by e")
            right.plot(c["offsets"], c["scores"], lw=1.0, color=colour, alpha=0.85)
        left.set_yscale("log")
        for level, name, ls in ((L0, "L0", ":"), (FACTOR * L0, f"{FACTOR}·L0", "-.")):
            left.axhline(level, color="#7f7f7f", lw=1.0, ls=ls)
            left.annotate(name, (0, level), xytext=(2, 2), textcoords="offset points", color="#555555")
        left.set_xlabel("pair index i (fastest first)")
        left.set_ylabel("wavelength 2π/θ_i (positions)")
        left.set_title(f"{variant['name']}: wavelength per pair")
        right.axhline(0.0, color="#bbbbbb", lw=0.8)
        right.set_xscale("symlog", linthresh=8.0)
        end = max(c["offsets"][-1] for c in curves)
        right.set_xlim(0, end)
        right.set_xticks([t for t in (0, 8, 64, 512) if t < end] + [end], minor=False)
        right.set_xticklabels([str(t) for t in (0, 8, 64, 512) if t < end] + [str(end)])
        right.set_xlabel("offset (query - key), log scale past 8")
        right.set_ylabel("score / d (q = k = 1)")
        right.set_title("score vs offset")
        fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    caption = f"{variant['title']}: {variant['text']}. d = {HEAD_DIM}, base {BASE:g}, L0 = {L0}."
    return pics.save(fig, f"s3-rope-variant-{variant['name']}.png", caption)


def _summary_rows(variant: dict, curves: list[dict]) -> list[list]:
    rows = []
    for c in curves[1:]:
        waves = [w for w in c["waves"] if not math.isnan(w)]
        a = c["encoding"].scaling.attention_factor
        rows.append([variant["name"], c["label"], a, min(waves), max(waves), c["scores"][0], c["scores"][-1]])
    return rows


def mixed_scores(freqs: torch.Tensor, direction: tuple[float, float], n: int) -> list[float]:
    """RoPE-Mixed's all-ones score / d, mean over heads, between the patch at (0, 0) and the patches
    at ``t * direction`` (row, column) for ``t = 0 .. n - 1``, from ``apply_rope_mixed`` itself.

    freqs: ``(2, heads, d/2)``."""
    heads, d = freqs.shape[1], 2 * freqs.shape[2]
    t = torch.arange(n, dtype=torch.float64)
    coords = torch.stack([t * direction[0], t * direction[1]], dim=-1)  # (n, 2) rows, columns
    with torch.no_grad():
        rotated = apply_rope_mixed(torch.ones(1, heads, n, d, dtype=torch.float64), coords, freqs.double())
        # (heads, n): the patch at the origin against each patch on the line
        scores = (rotated[0] @ rotated[0, :, 0].unsqueeze(-1)).squeeze(-1) / d
    return scores.mean(0).tolist()


def _mixed_picture(pics: Pictures) -> tuple[dict, list[list]]:
    """RoPE-Mixed (Heo et al. 2024) at its initialisation: each head's 2-D frequency vectors, and the
    score along a patch row and along the diagonal, beside the axial initialisation."""
    heads, d, n = 4, 32, 24
    mixed = rope_mixed_init(d, heads, generator=torch.Generator().manual_seed(0))
    axial = rope_mixed_init(d, heads, rotate=False)
    fig, (left, right) = pics.figure(2, height=3.8)
    colours = palette(heads + 1)
    rows = []
    with style():
        left.scatter(axial[0, 0].tolist(), axial[1, 0].tolist(), color=colours[0], marker="s", s=22,
                     label="axial (rotate=False): on the x and y axes")
        for h in range(heads):
            left.scatter(mixed[0, h].tolist(), mixed[1, h].tolist(), color=colours[h + 1], s=18,
                         label=f"mixed, head {h}: a random direction")
        left.set_aspect("equal", adjustable="datalim")
        left.set_xlabel("frequency along x (rad / patch)")
        left.set_ylabel("frequency along y")
        left.set_title("rope_mixed: 2-D frequency per pair")
        for (name, freqs), ls in zip((("axial", axial), ("mixed", mixed)), ("-", "--")):
            for (label, direction), colour in zip((("along a row", (0.0, 1.0)),
                                                   ("along the diagonal", (2**-0.5, 2**-0.5))), ("#1f77b4", "#d62728")):
                scores = mixed_scores(freqs, direction, n)
                right.plot(range(n), scores, color=colour, ls=ls, lw=1.6, label=f"{name}, {label}")
                rows.append(["rope_mixed", f"{name} initialisation, {label}", 1.0, None, None, scores[0], scores[-1]])
        right.set_xlabel("distance (patches)")
        right.set_ylabel("score / d, mean of heads")
        right.set_title("score vs distance")
        right.legend(fontsize=11)
        fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
    caption = ("rope_mixed (Heo et al. 2024) at initialisation: every head's frequency vectors (magnitudes "
               "10^(-4i/d), d = 32), axial or turned by a random angle per head, and the score between two "
               "patches against their distance along a row and along the diagonal. Training moves the vectors; "
               "an axial one can only see rows and columns separately, mixed ones see diagonals too.")
    return pics.save(fig, "s3-rope-variant-rope_mixed.png", caption), rows


def rope_variants_analysis(pics: Pictures) -> dict:
    """The atlas analysis holding one figure per RoPE variant and a table of their numbers."""
    pictures, rows = [], []
    for variant in variants():
        curves = _measured(variant)
        pictures.append(_draw(pics, variant, curves))
        rows += _summary_rows(variant, curves)
    mixed_picture, mixed_rows = _mixed_picture(pics)
    pictures.append(mixed_picture)
    rows += mixed_rows
    return {
        "id": "rope-variants",
        "title": "RoPE variants: wavelengths before and after scaling, score vs offset",
        "text": "Each scaling and variant of rope (posenc.rotary.scaling), xpos and p-RoPE, next to unscaled RoPE: "
                "the wavelength of each rotated pair (log scale; dotted: the trained length L0, dash-dotted: the "
                f"extended length {FACTOR}·L0) and the score of all-ones queries and keys against their offset, "
                "divided by the head width; then rope_mixed's 2-D frequencies at initialisation. rope_learned "
                "starts from RoPE's frequencies (the unscaled curves); what it learns depends on the training "
                "run.",
        "pictures": pictures,
        "tables": [{"caption": "per variant: attention factor, shortest and longest wavelength, score / d at "
                               "offset 0 and at the longest offset",
                    "columns": ["variant", "curve", "attention factor", "min wavelength", "max wavelength",
                                "score/d at 0", "score/d at the end"],
                    "rows": rows}],
    }
