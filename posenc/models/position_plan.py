"""A per-layer position plan for the reference Transformer: which layers use the rotary encoding,
which are NoPE (optionally with Llama 4's attention temperature), and how many heads are rotated.

Layer patterns of released models: Llama 4 and SmolLM3 leave every 4th layer without RoPE
(``PositionPlan(no_rope_every=4)``, layers 3, 7, 11, ...); Llama 4 tunes the attention temperature in
those layers (``attn_temperature_tuning=AttentionTemperature(floor_scale=8192, attn_scale=0.1)``).
A transformers config's ``no_rope_layers`` flags convert with
:func:`posenc.rotary.hybrid.nope_layers_from_flags`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from posenc.core.base import PositionEncoding
from posenc.core.validation import check_int
from posenc.rotary.hybrid import AttentionTemperature, NoRope, RotaryOnHeads, every_kth_layer


@dataclass(frozen=True)
class PositionPlan:
    """Per-layer use of a rotary encoding.

    no_rope_layers: indices of the layers without RoPE (NoPE layers).
    no_rope_every: also leave every k-th layer without RoPE (layers k-1, 2k-1, ...).
    attn_temperature_tuning: Llama 4's query temperature in the NoPE layers (None: none).
    rope_heads: rotate only the first ``rope_heads`` heads in the RoPE layers (None: all); a
        rotary encoding built by name is then built for that many heads.

    A per-layer encoding (one instance per block, such as ``rope_learned``) still has an instance
    at a NoPE layer, unused and frozen (``requires_grad=False``), so checkpoints keep one layout.
    """

    no_rope_layers: Sequence[int] = ()
    no_rope_every: int | None = None
    attn_temperature_tuning: AttentionTemperature | None = None
    rope_heads: int | None = None

    def __post_init__(self) -> None:
        if self.rope_heads is not None:
            check_int("rope_heads", self.rope_heads, minimum=1)

    def nope_layers(self, depth: int) -> frozenset[int]:
        """The NoPE layers of a ``depth``-layer model."""
        layers = set()
        if isinstance(self.no_rope_layers, (str, bytes)) or not isinstance(self.no_rope_layers, Iterable):
            raise TypeError(
                "`no_rope_layers` must be a sequence of layer indices, "
                f"got {type(self.no_rope_layers).__name__} {self.no_rope_layers!r}"
            )
        for i, layer in enumerate(self.no_rope_layers):
            layers.add(check_int(f"no_rope_layers[{i}]", layer, minimum=0, maximum=depth - 1))
        if self.no_rope_every is not None:
            layers.update(every_kth_layer(depth, check_int("no_rope_every", self.no_rope_every, minimum=1)))
        return frozenset(layers)

    def build(self, encodings: Sequence[PositionEncoding], *, depth: int, heads: int) -> list[PositionEncoding]:
        """The encoding of each of ``depth`` layers, given the model's encodings (one shared, or one per layer)."""
        first = encodings[0]
        if first.hooks != frozenset({"rotary"}):
            raise ValueError(
                f"`position_plan` needs a rotary encoding (hooks {{'rotary'}}), got {type(first).__name__} "
                f"with hooks {sorted(first.hooks)}"
            )
        if self.attn_temperature_tuning is not None and not isinstance(self.attn_temperature_tuning, AttentionTemperature):
            raise TypeError(
                "`attn_temperature_tuning` must be an AttentionTemperature or None, "
                f"got {type(self.attn_temperature_tuning).__name__}"
            )
        if self.rope_heads is not None:
            check_int("rope_heads", self.rope_heads, minimum=1, maximum=heads)
        nope = NoRope(self.attn_temperature_tuning)
        nope_layers = self.nope_layers(depth)
        plan: list[PositionEncoding] = []
        for layer in range(depth):
            enc = encodings[layer] if len(encodings) > 1 else first
            if layer in nope_layers:
                if len(encodings) > 1:
                    # a per-layer encoding a NoPE layer never calls: frozen, so that no optimizer or DDP
                    # waits for its gradient
                    enc.requires_grad_(False)
                plan.append(nope)
            elif self.rope_heads is not None and self.rope_heads < heads:
                plan.append(RotaryOnHeads(enc, self.rope_heads))
            else:
                plan.append(enc)
        return plan
