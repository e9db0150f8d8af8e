"""``posenc bench`` cases for multimodal RoPE: cos/sin from ``(3, b, n)`` ids and the rotation of
queries and keys, posenc against transformers' Qwen2-VL (chunked) and Qwen3-VL (interleaved) rotary
embeddings with their ``apply_rotary_pos_emb``."""

from __future__ import annotations

import torch

from posenc.bench.cases import Case
from posenc.bench.peers import PeerMissing, require
from posenc.rotary.mrope import mrope_cos_sin
from posenc.rotary.mrope_positions import mrope_position_ids
from posenc.rotary.rope import apply_rotary

#: layout -> (transformers module, its rotary class, its text config class, Qwen's sections for 128-wide heads)
_HF = {
    "chunked": ("qwen2_vl", "Qwen2VLRotaryEmbedding", "Qwen2VLTextConfig", (16, 24, 24)),
    "interleaved": ("qwen3_vl", "Qwen3VLTextRotaryEmbedding", "Qwen3VLTextConfig", (24, 20, 20)),
}


def _hf_mrope(layout: str, q: torch.Tensor, k: torch.Tensor, ids: torch.Tensor, sections, base: float):
    module, rotary_name, config_name, _ = _HF[layout]
    modeling = require(f"transformers.models.{module}.modeling_{module}")
    configuration = require(f"transformers.models.{module}.configuration_{module}")
    d, heads = q.shape[-1], q.shape[1]
    rope = {"rope_type": "default", "rope_theta": base, "mrope_section": list(sections)}
    try:
        config = getattr(configuration, config_name)(
            hidden_size=d * heads, num_attention_heads=heads, head_dim=d, rope_parameters=rope
        )
        rotary = getattr(modeling, rotary_name)(config).to(q.device)
    except (AttributeError, TypeError) as err:  # an older transformers without rope_parameters
        raise PeerMissing(f"transformers' {rotary_name} takes another configuration here: {err}") from err

    def call():
        cos, sin = rotary(q, ids)
        return modeling.apply_rotary_pos_emb(q, k, cos, sin)

    return call


def mrope_case(b: int, h: int, n: int, d: int, layout: str, dtype: torch.dtype, device) -> Case:
    f = d // 2
    sections = _HF[layout][3] if d == 128 else (f - 2 * (3 * f // 8), 3 * f // 8, 3 * f // 8)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, h, n, d, generator=g).to(device, dtype)
    k = torch.randn(b, h, n, d, generator=g).to(device, dtype)
    # a text prompt, an image of n/2 merged tokens, then text: the ids a vision-language model sees
    side = max(1, int((n // 2) ** 0.5))
    spans = [("text", (n - side * side) // 2), ("image", (1, 2 * side, 2 * side))]
    spans.append(("text", n - spans[0][1] - side * side))
    ids = mrope_position_ids(spans, spatial_merge_size=2, device=device).unsqueeze(1).expand(3, b, n).contiguous()
    base = 1000000.0

    def ours():
        def call():
            cos, sin = mrope_cos_sin(ids, rotary_dim=d, mrope_section=sections, layout=layout, base=base)
            # (b, n, d/2) -> (b, 1, n, d/2): shared by the heads, computed once for q and k
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        return call

    name = f"mrope {layout} b{b} h{h} n{n} d{d} {str(dtype).removeprefix('torch.')}"
    peer = f"transformers {_HF[layout][0]}"
    return Case(
        name,
        "posenc apply_mrope",
        {"posenc apply_mrope": ours, peer: lambda: _hf_mrope(layout, q, k, ids, sections, base)},
        agree_with={peer: "posenc apply_mrope"},
        # transformers forms angles in float32: at ids ~n that alone moves outputs by ~1e-4 n / 2048
        atol=2e-3 if dtype == torch.float32 else 3e-2,
    )
