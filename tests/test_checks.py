"""``posenc check``: the RoPE variants beside the registry's entries."""

from __future__ import annotations

from posenc.checks import ROPE_VARIANTS, check_one, check_rope_variants


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
