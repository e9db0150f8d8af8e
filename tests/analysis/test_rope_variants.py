"""The atlas's RoPE-variant figures: one per variant, curves from the encodings' own code."""

from __future__ import annotations

import math

import torch

from posenc.analysis.figures import Pictures
from posenc.analysis.rope_variants import (
    FACTOR,
    HEAD_DIM,
    L0,
    mixed_scores,
    offset_scores,
    rope_variants_analysis,
    wavelengths,
)
from posenc.rotary import RotaryPositionEncoding, XPos
from posenc.vision.rope_mixed import rope_mixed_init

VARIANTS = ("linear", "ntk", "dynamic_ntk", "yarn", "llama3", "longrope", "xpos", "p_rope", "rope_mixed")


def test_offset_scores_equal_rotated_all_ones_vectors():
    # the table-based score against rotating all-ones queries and keys with the module itself
    for enc in (RotaryPositionEncoding(8, scaling="yarn", factor=4.0, original_max_len=8, rotary_fraction=0.5),
                XPos(8, scale_base=16.0)):
        n = 24
        ones = torch.ones(1, 1, n, 8)
        q = enc.scale_and_rotate(ones, _pos(n), key=False) if isinstance(enc, XPos) else enc(ones)
        k = enc.scale_and_rotate(ones, _pos(n), key=True) if isinstance(enc, XPos) else enc(ones)
        expected = (k[0, 0].double() @ q[0, 0, -1].double()).flip(0) / 8
        offsets, scores = offset_scores(enc, n)
        assert offsets == list(range(n))
        torch.testing.assert_close(torch.tensor(scores, dtype=torch.float64), expected, atol=1e-5, rtol=0)


def _pos(n):
    from posenc.core.positions import Positions

    return Positions(n)


def test_wavelengths_before_and_after_scaling():
    plain = RotaryPositionEncoding(HEAD_DIM)
    linear = RotaryPositionEncoding(HEAD_DIM, scaling="linear", factor=4.0)
    for a, b in zip(wavelengths(plain), wavelengths(linear)):
        assert math.isclose(b, 4 * a, rel_tol=1e-12)
    assert math.isclose(wavelengths(plain)[0], 2 * math.pi, rel_tol=1e-12)
    p_rope = wavelengths(RotaryPositionEncoding(HEAD_DIM, p=0.5))
    assert sum(math.isnan(w) for w in p_rope) == HEAD_DIM // 4  # the slowest half unrotated


def test_one_figure_per_variant_and_their_numbers(tmp_path):
    analysis = rope_variants_analysis(Pictures(tmp_path, dpi=30))
    files = [p["file"] for p in analysis["pictures"]]
    assert files == [f"s3-rope-variant-{name}.png" for name in VARIANTS]
    for name in files:
        assert (tmp_path / name).stat().st_size > 1000
    rows = {(r[0], r[1]): r for r in analysis["tables"][0]["rows"]}
    yarn = rows[("yarn", f"yarn, factor {FACTOR}")]
    a = 0.1 * math.log(FACTOR) + 1
    assert math.isclose(yarn[2], a) and math.isclose(yarn[5], a * a, rel_tol=1e-6)  # a² at offset 0
    assert math.isclose(rows[("linear", f"linear, factor {FACTOR}")][3], FACTOR * 2 * math.pi, rel_tol=1e-9)
    # llama3 keeps the fastest pair, divides the slowest by the factor
    llama3 = rows[("llama3", f"llama3, factor {FACTOR}, low 1, high 4")]
    slowest = wavelengths(RotaryPositionEncoding(HEAD_DIM))[-1]
    assert math.isclose(llama3[3], 2 * math.pi) and math.isclose(llama3[4], FACTOR * slowest, rel_tol=1e-9)
    # dynamic NTK is plain RoPE up to L0 and stretches beyond
    assert math.isclose(rows[("dynamic_ntk", "dynamic, length 1·L0")][4], slowest, rel_tol=1e-9)
    assert rows[("dynamic_ntk", "dynamic, length 4·L0")][4] > 2 * slowest
    # xPos decays: at 4 L0 its score is below a tenth of offset 0's
    xpos = rows[("xpos", "xPos, scale_base 512")]
    assert xpos[6] < 0.1 * xpos[5] and L0 == 512


def test_mixed_scores_along_a_row_of_the_axial_initialisation():
    # axial: the first d/4 pairs turn with the column, the rest with the row (0 along a row), so the
    # score / d is 1/2 + 1/2 mean_j cos(t * 10^(-4j/d))
    freqs = rope_mixed_init(16, 2, rotate=False)
    scores = mixed_scores(freqs, (0.0, 1.0), 9)
    mags = [10 ** (-4 * j / 16) for j in range(4)]
    for t in (0, 3, 8):
        want = 0.5 + 0.5 * sum(math.cos(t * m) for m in mags) / 4
        assert math.isclose(scores[t], want, rel_tol=1e-6, abs_tol=1e-6)
