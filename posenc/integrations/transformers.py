"""posenc's RoPE inside Hugging Face transformers models.

``use_posenc_rotary(model)`` replaces the rotary module of a Llama-family model (Llama, Mistral,
Qwen2, Qwen3, ...: a ``*RotaryEmbedding`` submodule called as ``rotary_emb(x, position_ids)`` that
returns ``(cos, sin)`` of shape ``(b, n, rot)``) by :class:`PosencRotaryEmbedding`, built with
:func:`posenc.rotary.from_hf_config` from the model's config, and returns the model. The logits are
unchanged (tests/integrations/test_transformers.py: every transformers rope type, atol 1e-5 in
float32); the cos/sin come from posenc's float64 angles, exact at long positions. Any other posenc
rotary variant can then be tried in the model by passing ``encoding=``, on the original model or on
one already swapped (its posenc rotary module is replaced in turn).

The cos/sin are returned in the layout the replaced module returns them, read from its output at
positions 0 and 1 (per layer type where it takes one): each angle at ``i`` and ``i + rot/2`` (Llama's ``cat((freqs, freqs))``), at ``2i``
and ``2i + 1`` (Cohere's ``repeat_interleave``), or once, ``(b, n, rot/2)`` (gpt-oss).

Refused with a ValueError: multimodal RoPE models (``rope_parameters['mrope_section']``, Qwen2-VL and
its successors; use :func:`posenc.rotary.apply_mrope`; a model that gives its rotary module ids per
axis without that key, NeoMME's ``(2, b, n)``, at its first forward), rotary modules that do not return
``(cos, sin)`` (DeepSeek-V2's complex ``freqs_cis``), encodings whose rotated width differs from
the width the model's rotary module serves, and models on the meta device (the layout is read from
values: swap once the model is materialised). xPos is refused with a TypeError: its decay scales
queries and keys apart, which the one ``(cos, sin)`` a rotary module returns cannot carry.

Needs transformers (``pip install posenc[hf]``); nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from posenc.core.positions import Positions
from posenc.core.validation import check_choice
from posenc.rotary.hf import from_hf_config
from posenc.rotary.rope import RotaryPositionEncoding
from posenc.rotary.xpos import XPos

#: How a rotary module lays out the ``rot/2`` angles of each position in its cos/sin: twice, at ``i``
#: and ``i + rot/2`` (``"halves"``, Llama); twice, at ``2i`` and ``2i + 1`` (``"interleaved"``, Cohere);
#: once (``"single"``, gpt-oss).
Layout = Literal["halves", "interleaved", "single"]
LAYOUTS = ("halves", "interleaved", "single")


class PosencRotaryEmbedding(nn.Module):
    """transformers' rotary-module interface over posenc encodings.

    ``forward(x, position_ids, layer_type=None)``: position_ids ``(b, n)`` -> ``(cos, sin)``, each
    ``(b, n, rot)`` in ``x.dtype`` (by default the angles repeated over both halves, transformers'
    layout; see ``layout``), scaled by the encoding's attention factor. ``encodings``: one encoding
    (used for every layer type), or one per layer type. ``layout``: ``"halves"`` (Llama),
    ``"interleaved"`` (Cohere: each angle at ``2i`` and ``2i + 1``) or ``"single"`` (gpt-oss: each
    angle once, ``(b, n, rot/2)``). ``config``: the transformers config of the module replaced, kept
    as ``self.config`` for model code that reads it (Granite SWA keys its rotary modules by
    ``config.rope_parameters["rope_theta"]``); ``layer_types`` lists the layer types served (LFM3's
    model iterates them).
    """

    def __init__(
        self,
        encodings: RotaryPositionEncoding | dict[str, RotaryPositionEncoding | None],
        *,
        layout: Layout = "halves",
        config: Any = None,
    ) -> None:
        super().__init__()
        self.layout = check_choice("layout", layout, LAYOUTS)
        self.config = config
        self.shared = isinstance(encodings, RotaryPositionEncoding)  # one encoding whatever the layer type
        if not self.shared and not isinstance(encodings, Mapping):
            raise TypeError(
                "`encodings` must be a RotaryPositionEncoding or a dict of them by layer type, "
                f"got {type(encodings).__name__}"
            )
        if self.shared:
            encodings = {"default": encodings}
        for name, encoding in encodings.items():
            if encoding is not None and (not isinstance(encoding, RotaryPositionEncoding) or encoding.interleaved):
                raise ValueError(
                    f"`encodings[{name!r}]` must be a split-halves RotaryPositionEncoding, got {encoding!r}"
                )
            if isinstance(encoding, XPos):
                # its cos/sin are RoPE's: the decay scales queries and keys apart, which one (cos, sin) cannot carry
                raise TypeError(
                    f"`encodings[{name!r}]` is xPos, whose queries and keys are scaled by different factors; "
                    f"transformers' rotary interface hands one (cos, sin) to both, which would drop the decay"
                )
        self.encodings = nn.ModuleDict({k: v for k, v in encodings.items() if v is not None})

    @property
    def layer_types(self) -> list[str]:
        """The layer types served, for model code that asks for each one's cos/sin (LFM3 iterates its
        rotary module's ``layer_types``): one per encoding, or with one shared encoding those the replaced
        module's config gives RoPE parameters for (``["default"]`` without such a config)."""
        if not self.shared:
            return list(self.encodings)
        config = self.config.get_text_config() if self.config is not None else None
        rope = config.rope_parameters if config is not None else None
        if isinstance(rope, dict) and rope and all(isinstance(v, dict) or v is None for v in rope.values()):
            return [name for name, params in rope.items() if params is not None]
        return ["default"]

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None):
        if layer_type is None or self.shared:
            if len(self.encodings) != 1:
                raise ValueError(f"`layer_type` must name one of {sorted(self.encodings)}")
            encoding = next(iter(self.encodings.values()))
        elif layer_type not in self.encodings:
            raise ValueError(f"`layer_type` must be one of {sorted(self.encodings)}, got {layer_type!r}")
        else:
            encoding = self.encodings[layer_type]
        if not isinstance(position_ids, torch.Tensor) or position_ids.ndim != 2:
            # a model passing ids per axis (NeoMME's (2, b, n) row/column ids) serves multimodal RoPE
            shape = tuple(position_ids.shape) if isinstance(position_ids, torch.Tensor) else type(position_ids).__name__
            raise ValueError(
                f"`position_ids` must have shape (b, n), one position per token, got {shape}; ids per axis "
                f"(multimodal RoPE) are not a 1-D RoPE's (rotate with posenc.rotary.apply_mrope)"
            )
        cos, sin = encoding.cos_sin(Positions(position_ids.shape[-1], explicit=position_ids))
        return _laid_out(cos, x.dtype, self.layout), _laid_out(sin, x.dtype, self.layout)

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}"


def _laid_out(t: torch.Tensor, dtype: torch.dtype, layout: Layout) -> torch.Tensor:
    """``(b, n, rot/2)`` -> ``(b, n, rot)`` in ``dtype``, each angle at ``i`` and ``i + rot/2`` (rotate_half
    pairs feature i with i + rot/2) or at ``2i`` and ``2i + 1``; ``"single"``: only cast. Cast before
    the copy (a bf16 model copies half the bytes); a batch expanded from one row stays one row, expanded."""
    if layout == "single":
        return t.to(dtype)
    if t.ndim == 3 and t.shape[0] > 1 and t.stride(0) == 0:
        return _laid_out(t[:1], dtype, layout).expand(t.shape[0], -1, -1)
    half = t.to(dtype)
    if layout == "interleaved":
        return half.repeat_interleave(2, dim=-1)
    return torch.cat((half, half), dim=-1)


def _is_rotary_module(module: nn.Module) -> bool:
    """transformers' rotary module, or posenc's from an earlier swap (replaced again by the new encoding)."""
    return type(module).__name__.endswith("RotaryEmbedding")


def _module_config(module: nn.Module) -> Any:
    """The transformers config a rotary module was built from (its ``config``), or None."""
    config = getattr(module, "config", None)
    return config if callable(getattr(type(config), "to_dict", None)) else None  # PretrainedConfig interface


def _serves_text(module: nn.Module, config: Any, text_config: Any) -> bool:
    """Whether the rotary ``module`` rotates the text model's queries and keys: built from no config, or
    from one of the model's or its text config's class (Granite SWA's copies); a vision tower's
    (Pixtral's 2-D RoPE) is built from another class of config and stays."""
    own = _module_config(module)
    return own is None or text_config is None or type(own) in (type(text_config), type(config))


def _probe(module: nn.Module, layer_type: str | None = None):
    """``module``'s output for ``x`` and position ids 0 and 1 (and ``layer_type`` when given), or None
    where it takes another calling convention."""
    buffer = next(iter(module.buffers()), None)
    device = buffer.device if buffer is not None else torch.device("cpu")
    args = (torch.zeros(1, device=device), torch.arange(2, device=device).unsqueeze(0))
    try:
        with torch.no_grad():
            return module(*args) if layer_type is None else module(*args, layer_type)
    except Exception:  # noqa: BLE001 - another calling convention: not probed
        return None


def _output_layout(name: str, module: nn.Module, encodings: dict[str, RotaryPositionEncoding]) -> Layout:
    """The layout of the cos ``module`` returns for ``(x, position_ids)``, or per layer type for
    ``(x, position_ids, layer_type)`` (Gemma 3, DeepSeek-V4), read at positions 0 and 1; raise if it
    does not return transformers' ``(cos, sin)`` (DeepSeek-V2 returns one complex tensor) or serves
    another rotated width than the ``encodings``. Modules that take neither are not probed (``"halves"``)."""
    out = _probe(module)
    if out is not None:
        return _layout_of(name, module, out, {e.rot_dim for e in encodings.values()})
    layouts = {}
    for layer_type, encoding in encodings.items():
        out = _probe(module, layer_type)
        if out is not None:
            layouts[layer_type] = _layout_of(name, module, out, {encoding.rot_dim})
    if len(set(layouts.values())) > 1:
        raise ValueError(
            f"`model`'s rotary module {name!r} ({type(module).__name__}) lays out cos/sin differently per layer "
            f"type ({layouts}); use_posenc_rotary serves one layout per module"
        )
    return next(iter(layouts.values()), "halves")


def _layout_of(name: str, module: nn.Module, out, widths: set[int]) -> Layout:
    """The layout of ``module``'s output ``out`` at positions 0 and 1 for an encoding of a rotated width in ``widths``."""
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) and t.ndim for t in out)):
        raise ValueError(
            f"`model`'s rotary module {name!r} ({type(module).__name__}) does not return (cos, sin) for "
            f"(x, position_ids) (got {type(out).__name__}); use_posenc_rotary cannot replace it"
        )
    if out[0].device.type == "meta":
        raise ValueError(
            f"`model`'s rotary module {name!r} ({type(module).__name__}) is on the meta device, where the layout "
            f"of its cos/sin (read from its values) cannot be seen; call use_posenc_rotary on the model once it "
            f"is materialised"
        )
    width = out[0].shape[-1]
    cos = out[0].reshape(-1, width)[-1]  # position 1: the angles themselves
    halves, interleaved = torch.equal(cos[: width // 2], cos[width // 2 :]), torch.equal(cos[0::2], cos[1::2])
    if width in widths and halves:
        return "halves"
    if width in widths and interleaved:
        return "interleaved"
    if 2 * width in widths and not (halves or interleaved):
        return "single"
    raise ValueError(
        f"`encoding` rotates {' or '.join(map(str, sorted(widths)))} features, but `model`'s rotary module "
        f"{name!r} ({type(module).__name__}) returns cos/sin of width {width}, which fits none of the layouts "
        f"use_posenc_rotary serves for that width (each angle at i and i + rot/2, at 2i and 2i + 1, or once); "
        f"pass an encoding of the model's rotated width"
    )


def use_posenc_rotary(
    model: nn.Module, encoding: RotaryPositionEncoding | dict[str, RotaryPositionEncoding | None] | None = None
) -> nn.Module:
    """Swap every rotary module of the transformers ``model``'s text model for posenc's, in place (a
    vision tower's, built from its own config class, stays); returns ``model``.

    encoding: the posenc encoding(s) to use; by default ``from_hf_config`` of the config each rotary
    module was built from (``module.config``, else ``model.config``): the same RoPE the model was built with.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config  # PretrainedConfig
    rope = getattr(text_config, "rope_parameters", None) or getattr(text_config, "rope_scaling", None) or {}
    if isinstance(rope, dict) and "mrope_section" in rope:
        # M-RoPE's rotary module takes (3, b, n) ids and its attention splits cos/sin by section
        raise ValueError(
            f"`model` ({type(model).__name__}) uses multimodal RoPE (rope_parameters['mrope_section']), which "
            f"use_posenc_rotary does not replace; rotate with posenc.rotary.apply_mrope instead"
        )
    if encoding is not None and not isinstance(encoding, (RotaryPositionEncoding, Mapping)):
        raise TypeError(
            "`encoding` must be a RotaryPositionEncoding, a dict of them by layer type, or None, "
            f"got {type(encoding).__name__}"
        )
    # without a config (a module built by hand) only the rotary modules' own configs or `encoding` can say
    default = from_hf_config(text_config) if encoding is None and text_config is not None else encoding
    targets = [
        (name, module) for name, module in model.named_modules()
        if _is_rotary_module(module) and _serves_text(module, config, text_config)
    ]
    if not targets:
        raise ValueError(f"`model` ({type(model).__name__}) has no '*RotaryEmbedding' module to replace")
    plans = []
    for name, old in targets:
        # by default each module's RoPE is read from the config it was built from (Granite SWA builds one
        # per layer base from copies of the model's config)
        own = _module_config(old)
        chosen = from_hf_config(own.get_text_config()) if encoding is None and own is not None else default
        if chosen is None:
            raise ValueError(
                f"`model` ({type(model).__name__}) has no `config` to read the RoPE of its rotary module "
                f"'{name}' from; pass the posenc encoding to use as `encoding`"
            )
        encodings = dict(PosencRotaryEmbedding(chosen).encodings)  # checks `encoding` too
        plans.append((name, old, chosen, own, _output_layout(name, old, encodings)))
    for name, old, chosen, own, layout in plans:
        device = next(iter(old.buffers()), torch.empty(0)).device
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, PosencRotaryEmbedding(chosen, layout=layout, config=own).to(device))
    return model
