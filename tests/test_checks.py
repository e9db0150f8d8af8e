"""``posenc check``: each encoding built from its example in ``posenc.testing.examples``, and the RoPE
variants beside the registry's entries."""

from __future__ import annotations

import dataclasses

from posenc.checks import ROPE_VARIANTS, check_one, check_rope_variants, example_arguments
from posenc.testing import examples


def test_example_arguments_leave_the_model_sizes_to_the_model():
    assert examples.SPECS["t5"].kwargs["heads"] == 2
    assert example_arguments("t5") == {"num_buckets": 8, "max_distance": 16}
    assert example_arguments("transformer_xl") == {}


def test_check_builds_the_encoding_from_its_example(monkeypatch):
    spec = examples.SPECS["t5"]
    monkeypatch.setitem(examples.SPECS, "t5", dataclasses.replace(spec, kwargs={**spec.kwargs, "num_buckets": 0}))
    result = check_one("t5")
    assert not result.ok and "cannot be built" in result.detail and "`num_buckets`" in result.detail
    monkeypatch.setitem(examples.SPECS, "t5", spec)
    assert check_one("t5").detail.startswith("finite=True")


def test_every_rope_variant_is_checked_and_passes():
    results = check_rope_variants()
    assert [r.name for r in results] == [label for label, *_ in ROPE_VARIANTS]
    kinds = {options.get("scaling", "none") for _, _, options, _ in ROPE_VARIANTS}
    assert kinds == {"none", "linear", "ntk", "dynamic_ntk", "yarn", "llama3", "longrope"}
    for r in results:
        assert r.ok, r.render()


def test_the_check_fails_where_decoding_differs():
    # dynamic NTK's base follows the length: compared as if static, its cached decoding differs
    strict = check_one("rope", scaling="dynamic_ntk", factor=2.0, original_max_len=4, cached=True)
    assert not strict.ok and "cached-decoding=" in strict.detail


def test_encoder_only_encodings_are_checked_without_a_cache():
    result = check_one("wav2vec2_conv")
    assert result.ok and "encoder only" in result.detail and result.detail.startswith("finite=True"), result.render()
