"""The atlas's coordinate-family figures: a slice picture for every coordinate encoding, the hash
grid's collision rates per level."""

from __future__ import annotations

import math

import pytest
import torch

import posenc
from posenc.analysis import measure
from posenc.analysis.coordinate import SIDE, coordinate_pictures, slice_response
from posenc.analysis.entries import Pictures, analyse_entry
from posenc.analysis.measure import Reference

COORDINATE = [info for info in posenc.available() if info.family == "coordinate"]


def test_the_family_is_the_issue_s_list():
    names = {info.name for info in COORDINATE}
    assert {"hash_grid", "spherical_harmonics", "integrated_pe", "triplane", "kplanes", "nerf"} <= names


@pytest.mark.parametrize("info", COORDINATE, ids=[info.name for info in COORDINATE])
def test_every_coordinate_encoding_gets_a_slice_picture(info, tmp_path):
    module = measure.build_example(info.name, info.cls)
    entry = {"pictures": [], "data": {}}
    coordinate_pictures(info.name, module, measure.example_spec(info.name).inputs(), entry, Pictures(tmp_path, dpi=30),
                        info.name)
    files = [p["file"] for p in entry["pictures"]]
    assert files[0] == f"{info.name}-slice.png" and (tmp_path / files[0]).stat().st_size > 100
    assert ("hash_grid-collisions.png" in files) == (info.name == "hash_grid")


def test_slice_is_the_sphere_for_spherical_harmonics():
    from posenc.coordinate import SphericalHarmonics

    out, where, _, _ = slice_response(SphericalHarmonics(degree=2), ())
    assert out.shape == (SIDE, SIDE, 4) and "sphere" in where
    # channel 2 is c z: +c at the north pole (first row), -c at the south pole (last row)
    c = math.sqrt(3 / (4 * math.pi))
    torch.testing.assert_close(out[0, :, 2], torch.full((SIDE,), c))
    torch.testing.assert_close(out[-1, :, 2], torch.full((SIDE,), -c))


def test_hash_grid_entry_has_collision_rates(tmp_path):
    info = next(i for i in COORDINATE if i.name == "hash_grid")
    entry = analyse_entry(info, Pictures(tmp_path, dpi=30), Reference(), extrapolate=False)
    assert not entry["errors"]
    files = [p["file"] for p in entry["pictures"]]
    assert "hash_grid-slice.png" in files and "hash_grid-collisions.png" in files
    rates = entry["data"]["collision_rates"]["its example"]
    assert rates[0] == 0.0 and all(0 < r <= 1 for r in rates[1:])  # level 0 dense, the others hashed
