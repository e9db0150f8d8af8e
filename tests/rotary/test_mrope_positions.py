"""M-RoPE position ids of text/image/video spans: hand-worked values, transformers' get_rope_index, errors."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch

from posenc.rotary import mrope_position_ids


def test_hand_worked_sequence():
    # 2 text tokens, a 1 x 4 x 6 image merged 2 x 2 into 2 x 3 tokens, then 2 text tokens
    ids = mrope_position_ids([("text", 2), ("image", (1, 4, 6)), ("text", 2)], spatial_merge_size=2)
    expected = torch.tensor(
        [
            [0, 1, 2, 2, 2, 2, 2, 2, 5, 6],
            [0, 1, 2, 2, 2, 3, 3, 3, 5, 6],
            [0, 1, 2, 3, 4, 2, 3, 4, 5, 6],
        ]
    )
    assert torch.equal(ids, expected)


def test_video_absolute_time():
    ids = mrope_position_ids([("video", (3, 1, 1), 0.5), ("text", 1)], tokens_per_second=4)
    assert ids.tolist() == [[0, 2, 4, 5], [0, 0, 0, 5], [0, 0, 0, 5]]
    # without tokens_per_second: consecutive frame indices (Qwen2-VL)
    assert mrope_position_ids([("video", (3, 1, 1))]).tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]


def test_text_only_and_empty():
    assert torch.equal(mrope_position_ids([("text", 4)], start=3), torch.arange(3, 7).expand(3, -1))
    assert mrope_position_ids([]).shape == (3, 0)
    assert mrope_position_ids([("text", 0)]).shape == (3, 0)


@pytest.mark.parametrize(
    "spans, kwargs, name",
    [
        ([("audio", 3)], {}, r"spans\[0\]\[0\]"),
        ([("image", (1, 3, 4))], {"spatial_merge_size": 2}, r"spans\[0\]\[1\]"),
        ([("image", (1, 2))], {}, r"spans\[0\]\[1\]"),
        ([("image", (1, 2, 2), 1.0)], {}, r"spans\[0\]"),
        ([("text", -1)], {}, r"spans\[0\]\[1\]"),
        ([("video", (2, 2, 2), -1.0)], {"tokens_per_second": 2}, r"spans\[0\]\[2\]"),
        ([("video", (2, 2, 2), -1.0)], {}, r"spans\[0\]\[2\]"),
        ([("video", (2, 2, 2), "1s")], {}, r"spans\[0\]\[2\]"),
        ([("text", 2)], {"spatial_merge_size": 0}, "spatial_merge_size"),
        ("text", {}, "spans"),
    ],
)
def test_bad_input_names_the_argument(spans, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        mrope_position_ids(spans, **kwargs)


@pytest.mark.parametrize(("spans", "name"), [
    ([("text", 10**12)], r"`spans\[0\]\[1\]`=1000000000000 needs"),
    ([("text", 2), ("image", (1, 10**6, 10**6))], r"`spans\[1\]\[1\]`=\(1, 1000000, 1000000\) needs"),
])
def test_a_span_no_memory_holds_is_refused_by_name(spans, name):
    """A text span of 10**12 tokens or a 10**6 x 10**6 image once failed in the CPU allocator ('can't
    allocate memory: you tried to allocate 8000000000000 bytes')."""
    with pytest.raises(ValueError, match=name):
        mrope_position_ids(spans)


@pytest.mark.parametrize("version", ["qwen2_vl", "qwen2_5_vl"])
def test_matches_transformers_get_rope_index(version):
    """Spans where every vision block's largest id is its height or width (transformers since 5.0
    advances past a vision span by max(h, w) / merge, the original release by its largest id)."""
    modeling = pytest.importorskip(f"transformers.models.{version}.modeling_{version}")
    model_cls = modeling.Qwen2VLModel if version == "qwen2_vl" else modeling.Qwen2_5_VLModel
    if not hasattr(model_cls, "get_vision_position_ids"):
        pytest.skip("this transformers version computes the ids inline")
    merge, tps = 2, 2
    spans = [("text", 3), ("image", (1, 4, 6)), ("text", 2), ("video", (2, 6, 4), 0.5), ("text", 2)]
    kinds = {"text": 0, "image": 1, "video": 2}
    token_types = torch.cat(
        [torch.full((s[1] if s[0] == "text" else s[1][0] * s[1][1] * s[1][2] // merge**2,), kinds[s[0]]) for s in spans]
    ).unsqueeze(0)
    fake = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=merge, tokens_per_second=tps)))
    fake.get_vision_position_ids = functools.partial(model_cls.get_vision_position_ids, fake)
    extra = {"second_per_grid_ts": torch.tensor([0.5])} if version == "qwen2_5_vl" else {}
    hf, _ = model_cls.get_rope_index(
        fake,
        torch.zeros_like(token_types),
        token_types,
        image_grid_thw=torch.tensor([[1, 4, 6]]),
        video_grid_thw=torch.tensor([[2, 6, 4]]),
        **extra,
    )
    ours = mrope_position_ids(spans, spatial_merge_size=merge, tokens_per_second=tps if version == "qwen2_5_vl" else None)
    assert torch.equal(ours, hf[:, 0])


def test_absolute_time_ids_are_truncated_as_transformers_forms_them():
    """second_per_grid 1/3 (one frame per grid at 3 fps) with 25 tokens per second: frame 3 is at 1 s,
    id 25. Formed in float64, 3 * (25 / 3) is 24.999999999999996 and truncated to 24; transformers
    forms it from the processor's float32 second_per_grid_ts in float32 and gets 25."""
    ids = mrope_position_ids([("video", (4, 1, 1), 1 / 3)], tokens_per_second=25)
    assert ids[0].tolist() == [0, 8, 16, 25]
    modeling = pytest.importorskip("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl")
    cls = modeling.Qwen2_5_VLModel
    if not hasattr(cls, "get_vision_position_ids"):
        pytest.skip("this transformers version computes the ids inline")
    for tps, fps, patch, t in [(25, 3.0, 1, 13), (25, 12.0, 2, 10), (25, 24.0, 2, 24), (2, 29.97, 2, 40)]:
        fake = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(spatial_merge_size=1, tokens_per_second=tps)))
        fake.get_vision_position_ids = functools.partial(cls.get_vision_position_ids, fake)
        types = torch.full((1, t), 2)
        hf, _ = cls.get_rope_index(fake, torch.zeros_like(types), types, video_grid_thw=torch.tensor([[t, 1, 1]]),
                                   second_per_grid_ts=torch.tensor([patch / fps]))
        assert torch.equal(mrope_position_ids([("video", (t, 1, 1), patch / fps)], tokens_per_second=tps), hf[:, 0])
