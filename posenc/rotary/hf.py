"""Hugging Face transformers' RoPE configuration to and from posenc's :class:`RotaryPositionEncoding`.

``from_hf_config(config)`` reads a transformers config (object or dict; of a composite model such
as a vision-language one, its text model's config, ``get_text_config()`` or ``text_config``):
``rope_parameters`` (or the
older ``rope_scaling``) with its ``rope_type``, ``rope_theta``, ``partial_rotary_factor`` (GPT-NeoX's
``rotary_emb_base`` and ``rotary_pct`` in an older config.json),
``head_dim`` (else ``hidden_size // num_attention_heads``) and ``max_position_embeddings`` (under
the names a config object maps them to, its ``attribute_map``: Zamba2's ``attention_head_dim``), and
returns the equivalent encoding, or a ``{layer_type: encoding | None}`` dict when the parameters are
given per layer type (Gemma 3's sliding/full attention, also from an older config.json's
``rope_local_base_freq`` or ModernBERT's ``local_rope_theta`` / ``global_rope_theta``; each type's
head width after its layers' ``per_layer_config`` overrides, as Gemma 4's 512-wide full-attention heads). Each rope type maps to a posenc scaling:

==============  ===========================================================================
transformers    posenc
==============  ===========================================================================
default         ``scaling="none"``
linear          ``scaling="linear"``
dynamic         ``scaling="dynamic_ntk"``, ``original_max_len=max_position_embeddings``,
                ``dynamic_update="grow_only"``; with an ``alpha`` (HunYuan's checkpoints, whose models
                read it as a fixed NTK base ``base * alpha ** (d / (d - 2))``): ``scaling="ntk"``,
                ``factor=alpha``
yarn            ``scaling="yarn"`` (``factor`` absent: ``max_position_embeddings / original``)
longrope        ``scaling="longrope"`` (Phi-3's top-level ``original_max_position_embeddings`` wins;
                ``factor`` absent: ``max_position_embeddings / original``, taken as 1 below 1;
                Phi-3.5-MoE's ``short_mscale`` / ``long_mscale``, which must be equal, as ``attention_factor``);
                also Phi-3's older names ``su``, and ``yarn`` in a ``phi3`` / ``phi4_multimodal`` config
llama3          ``scaling="llama3"``
proportional    p-RoPE: ``p=partial_rotary_factor`` over the whole head, ``scaling="linear"``
==============  ===========================================================================

The pair layout is not in a config but in the model's code: the encoding returned pairs split halves
``(x_i, x_{i + rot/2})`` (Llama's ``rotate_half``). Cohere, Cohere 2, GLM, GLM-4, ERNIE 4.5, Llama 4,
DeepSeek-V2 and DeepSeek-V3 (``rope_interleave``) rotate adjacent pairs ``(x_{2i}, x_{2i+1})`` with the
same angles: with their weights, build the encoding with ``interleaved=True``.
:func:`posenc.integrations.transformers.use_posenc_rotary` reads the layout from the model itself.

A multimodal-RoPE config (``mrope_section``: Qwen2-VL and its successors; rope type ``mrope`` in
Qwen2-VL's and Qwen2.5-VL's config.json, read as ``default``; HunYuan-VL's ``xdrope``, read as ``dynamic``)
gives the 1-D RoPE that M-RoPE is at text positions (three equal ids); ``mrope_section`` is not read, so image and video tokens need
:func:`posenc.rotary.apply_mrope`.

A config with GPT-J's ``rotary_dim`` and no ``rope_parameters`` (interleaved pairs) raises, naming the
encoding to build instead. A config whose rotated width ``int(head_dim * partial_rotary_factor)`` is
odd raises: transformers then rotates ``2 * ceil(w / 2)`` features at frequencies ``base ** (-2i / w)``, which is not RoPE over
feature pairs.

``to_hf_rope_parameters(encoding)`` goes back to a ``rope_parameters`` dict (for ``dynamic`` the
model's ``max_position_embeddings`` must equal ``original_max_len``, which transformers reads there,
and transformers' length rule is ``dynamic_update="grow_only"``: an encoding with the default
``"recompute"`` exports to the same dict but differs from the model once a sequence past
``original_max_len`` follows a longer one).
Verified against transformers' ``ROPE_INIT_FUNCTIONS`` in tests/rotary/test_hf.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from posenc.core.validation import check_float, check_positive_int
from posenc.rotary.rope import RotaryPositionEncoding
from posenc.rotary.xpos import XPos

HF_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3", "proportional")
_REQUIRED = {
    "linear": ("factor",),
    "dynamic": ("factor",),
    "longrope": ("short_factor", "long_factor"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
}


_WIDTH_KEYS = ("head_dim", "hidden_size", "rope_parameters", "rope_scaling")
#: model types whose configs name their LongRoPE 'yarn' (transformers' Phi3Config and Phi4MultimodalConfig read it as longrope)
_LONGROPE_NAMED_YARN = ("phi3", "phi4_multimodal")


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        text = config.get("text_config")
        # a composite model's config.json (vision-language models): the RoPE is its text model's
        if isinstance(text, Mapping) and not any(key in config for key in _WIDTH_KEYS):
            return dict(text)
        return dict(config)
    to_dict = getattr(type(config), "to_dict", None)  # transformers' PretrainedConfig interface
    if to_dict is None:
        raise TypeError(f"`config` must be a transformers config or a dict, got {type(config).__name__}")
    if callable(getattr(type(config), "get_text_config", None)):  # the same interface: itself unless composite
        config = config.get_text_config()
    cfg = config.to_dict()
    # the names a config class reads from its own fields, as transformers' models read them (`config.head_dim`
    # is Zamba2's attention_head_dim and JetMoe's kv_channels, `config.hidden_size` GPT-J's n_embd)
    for alias, field in getattr(type(config), "attribute_map", {}).items():
        if field in cfg:
            cfg[alias] = cfg[field]
    return cfg


def _is_nested(rope: Mapping[str, Any]) -> bool:
    return bool(rope) and all(isinstance(v, Mapping) or v is None for v in rope.values())


def from_hf_config(config: Any) -> RotaryPositionEncoding | dict[str, RotaryPositionEncoding | None]:
    """The posenc encoding of a transformers config's RoPE (see the module docstring)."""
    cfg = _as_dict(config)
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rope, Mapping):
        raise TypeError(f"`config.rope_parameters` must be a dict, got {type(rope).__name__}")
    if not rope and "rotary_dim" in cfg:
        raise ValueError(
            f"the config gives `rotary_dim`={cfg['rotary_dim']!r} and no `rope_parameters` (GPT-J / CodeGen: adjacent "
            f"pairs over the first rotary_dim features of each head, base 10000), which from_hf_config does not read; "
            f"build RotaryPositionEncoding(head_dim, rotary_fraction=rotary_dim / head_dim, interleaved=True)"
        )
    if not _is_nested(rope) and ("rope_local_base_freq" in cfg or "local_rope_theta" in cfg):
        rope = _local_and_global(cfg, rope)
    if _is_nested(rope):
        return {
            name: None if params is None else _encoding(_layer_type_config(cfg, name), params)
            for name, params in rope.items()
        }
    return _encoding(cfg, rope)


def _local_and_global(cfg: dict[str, Any], rope: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-layer-type parameters of a config.json from before transformers nested them, as it nests
    them on loading: Gemma 3's ``rope_local_base_freq`` is the sliding layers' base (``rope_theta`` and
    ``rope_scaling`` the full-attention layers'); ModernBERT's ``local_rope_theta`` and
    ``global_rope_theta`` (``rope_scaling`` on both)."""
    scaling = {"rope_type": "default", **rope}
    if "rope_local_base_freq" in cfg:
        full = {**scaling, "rope_theta": rope.get("rope_theta", cfg.get("rope_theta", 10000.0))}
        return {"full_attention": full, "sliding_attention": {"rope_type": "default", "rope_theta": cfg["rope_local_base_freq"]}}
    return {
        "full_attention": {**scaling, "rope_theta": cfg.get("global_rope_theta", 10000.0)},
        "sliding_attention": {**scaling, "rope_theta": cfg["local_rope_theta"]},
    }


def _layer_type_config(cfg: dict[str, Any], layer_type: str) -> dict[str, Any]:
    """``cfg`` with the ``per_layer_config`` overrides of the layers of ``layer_type`` (Gemma 4's
    ``head_dim`` of its full-attention layers), as transformers resolves a layer type's config."""
    per_layer = cfg.get("per_layer_config") or {}
    layer_types = cfg.get("layer_types") or []
    if not isinstance(per_layer, Mapping) or layer_type not in layer_types:
        return cfg
    # keys are layer indices, as ints or (through JSON) zero-padded strings such as "05"
    if not all(isinstance(k, int) or (isinstance(k, str) and k.isdigit()) for k in per_layer):
        raise ValueError(f"`per_layer_config` must be keyed by layer indices, got keys {sorted(map(str, per_layer))}")
    by_index = {int(k): v for k, v in per_layer.items()}
    overrides = [by_index.get(i) or {} for i, t in enumerate(layer_types) if t == layer_type]
    if any(o != overrides[0] for o in overrides):
        raise ValueError(
            f"`per_layer_config` gives the {layer_type!r} layers different overrides; one RoPE per layer type "
            f"cannot follow them"
        )
    return {**cfg, **overrides[0]}


def _head_dim_from_width(cfg: dict[str, Any]) -> int:
    """``hidden_size // num_attention_heads`` of a config that gives no ``head_dim``."""
    missing = [key for key in ("hidden_size", "num_attention_heads") if not cfg.get(key)]
    if missing:
        raise ValueError(
            f"the config must give `head_dim`, or `hidden_size` and `num_attention_heads` to derive it; "
            f"it lacks {missing}"
        )
    return check_positive_int("hidden_size", cfg["hidden_size"]) // check_positive_int(
        "num_attention_heads", cfg["num_attention_heads"]
    )


def _encoding(cfg: dict[str, Any], rope: Mapping[str, Any]) -> RotaryPositionEncoding:
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "su" or (rope_type == "yarn" and cfg.get("model_type") in _LONGROPE_NAMED_YARN):
        # Phi-3's config.json of the first releases: its LongRoPE named 'su' (or 'yarn'), which transformers reads as longrope
        rope_type = "longrope"
    if rope_type == "mrope":
        # Qwen2-VL's and Qwen2.5-VL's config.json: M-RoPE over default frequencies, which transformers reads as 'default'
        rope_type = "default"
    if rope_type == "xdrope":
        # HunYuan-VL's config.json: its multimodal RoPE, which transformers reads as 'dynamic' (with alpha: static NTK)
        rope_type = "dynamic"
    if rope_type not in HF_ROPE_TYPES:
        raise ValueError(f"`rope_type` must be one of {HF_ROPE_TYPES}, got {rope_type!r}")
    missing = [key for key in _REQUIRED.get(rope_type, ()) if rope.get(key) is None]
    if missing:
        raise ValueError(f"`rope_parameters` of rope_type {rope_type!r} lacks {missing}")
    head_dim = check_positive_int("head_dim", cfg["head_dim"]) if cfg.get("head_dim") else _head_dim_from_width(cfg)
    # GPT-NeoX's config.json (Pythia) names the fraction rotary_pct and the base rotary_emb_base
    partial = rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", cfg.get("rotary_pct")))
    # a fraction of the head (proportional: of its frequencies), checked before int(head_dim * partial)
    partial = 1.0 if partial is None else check_float("partial_rotary_factor", partial, minimum=0.0, maximum=1.0)
    if rope_type != "proportional" and int(head_dim * partial) % 2:
        # transformers would rotate 2 * ceil(w / 2) features at frequencies base ** (-2i / w): no RoPE posenc builds
        raise ValueError(
            f"`head_dim` * `partial_rotary_factor` = {head_dim} * {partial} gives an odd rotary width "
            f"{int(head_dim * partial)}; RoPE rotates feature pairs"
        )
    max_pos = cfg.get("max_position_embeddings")
    if rope_type in ("dynamic", "yarn", "longrope") and max_pos is not None:
        check_positive_int("max_position_embeddings", max_pos)
    # Phi-3 keeps the trained length beside rope_parameters; transformers gives it priority
    original = next(
        (v for v in (cfg.get("original_max_position_embeddings"), rope.get("original_max_position_embeddings"))
         if v is not None), max_pos)
    if rope_type in ("yarn", "longrope", "llama3") and (
        isinstance(original, bool) or not isinstance(original, int) or original < 1
    ):
        raise ValueError(f"`original_max_position_embeddings` must be a positive int, got {original!r}")
    kw: dict[str, Any] = {"head_dim": head_dim, "base": _base(cfg, rope), "rotary_fraction": partial}
    factor = rope.get("factor")
    if rope_type in ("yarn", "longrope") and factor is None:
        factor = _derived_factor(rope_type, max_pos, original)
    if rope_type == "linear":
        kw.update(scaling="linear", factor=factor)
    elif rope_type == "dynamic" and rope.get("alpha"):
        # HunYuan's checkpoints: 'dynamic' with a fixed alpha is a static NTK base, base * alpha ** (d / (d - 2))
        kw.update(scaling="ntk", factor=check_float("alpha", rope["alpha"], minimum=1.0))
    elif rope_type == "dynamic":
        if max_pos is None:
            raise ValueError("`max_position_embeddings` (dynamic NTK's trained length) is required for rope_type 'dynamic'")
        kw.update(scaling="dynamic_ntk", factor=factor, original_max_len=max_pos, dynamic_update="grow_only")
    elif rope_type == "yarn":
        # transformers reads mscale/mscale_all_dim only when both are set
        both = bool(rope.get("mscale")) and bool(rope.get("mscale_all_dim"))
        kw.update(
            scaling="yarn", factor=factor, original_max_len=original, max_len=max_pos,
            beta_fast=rope.get("beta_fast") or 32.0, beta_slow=rope.get("beta_slow") or 1.0,
            attention_factor=rope.get("attention_factor"), truncate=rope.get("truncate", True),
            mscale=rope["mscale"] if both else 1.0, mscale_all_dim=rope["mscale_all_dim"] if both else 0.0,
        )
    elif rope_type == "longrope":
        kw.update(
            scaling="longrope", factor=factor, original_max_len=original, max_len=max_pos,
            short_factor=rope.get("short_factor"), long_factor=rope.get("long_factor"),
            attention_factor=_longrope_mscale(rope),
        )
    elif rope_type == "llama3":
        kw.update(
            scaling="llama3", factor=factor, original_max_len=original,
            low_freq_factor=rope.get("low_freq_factor"), high_freq_factor=rope.get("high_freq_factor"),
        )
    elif rope_type == "proportional":
        kw.update(rotary_fraction=1.0, p=partial, scaling="linear", factor=factor or 1.0)
    return RotaryPositionEncoding(**kw)


def _longrope_mscale(rope: Mapping[str, Any]) -> float | None:
    """LongRoPE's cos/sin factor: ``attention_factor``, or Phi-3.5-MoE's ``short_mscale`` / ``long_mscale``
    (its models multiply cos and sin by the one of the current length's factor set, in place of the
    derived factor); one encoding holds one factor, so the two must be equal."""
    short, long = rope.get("short_mscale"), rope.get("long_mscale")
    if short is None and long is None:
        return rope.get("attention_factor")
    short = check_float("short_mscale", short, positive=True)
    long = check_float("long_mscale", long, positive=True)
    if short != long:
        raise ValueError(
            f"`short_mscale`={short} and `long_mscale`={long} differ: the model multiplies cos and sin by one "
            f"up to original_max_position_embeddings and by the other past it, and a RotaryPositionEncoding "
            f"holds one attention factor for both"
        )
    return short


def _base(cfg: dict[str, Any], rope: Mapping[str, Any]) -> float:
    """The RoPE base, checked under the key it is read from (GPT-NeoX's config.json: ``rotary_emb_base``)."""
    for source, key in ((rope, "rope_theta"), (cfg, "rope_theta"), (cfg, "rotary_emb_base")):
        if key in source:
            return check_float(key, source[key], positive=True)
    return 10000.0


def _derived_factor(rope_type: str, max_pos: int | None, original: int) -> float:
    """YaRN's and LongRoPE's factor when ``rope_parameters`` gives none: ``max_position_embeddings /
    original_max_position_embeddings``, as transformers derives it (DeepSeek-V3, Phi-3). LongRoPE reads it
    only for its attention factor, which transformers sets to 1 for a factor at or below 1: such a factor
    is taken as 1."""
    if max_pos is None:
        raise ValueError(
            f"`rope_parameters` of rope_type {rope_type!r} gives no `factor`, and the config no "
            f"`max_position_embeddings` to derive it from (max_position_embeddings / original_max_position_embeddings)"
        )
    factor = max_pos / original
    if rope_type == "longrope":
        return max(factor, 1.0)
    if factor < 1.0:
        raise ValueError(
            f"`max_position_embeddings`={max_pos} is below `original_max_position_embeddings`={original}, which gives "
            f"a factor below 1; give `rope_parameters['factor']` (>= 1)"
        )
    return factor


def _fraction(rot_dim: int, head_dim: int) -> float:
    """The partial_rotary_factor f with ``int(head_dim * f) == rot_dim`` (rounding nudged upward)."""
    f = rot_dim / head_dim
    while int(head_dim * f) < rot_dim:
        f = math.nextafter(f, 2.0)
    return f


def to_hf_rope_parameters(
    encoding: RotaryPositionEncoding | Mapping[str, RotaryPositionEncoding | None],
) -> dict[str, Any]:
    """The transformers ``rope_parameters`` dict equivalent to ``encoding`` (nested per layer type
    for a dict of encodings, as :func:`from_hf_config` returns them; xPos, which has none, is refused). Dynamic NTK exports without its
    ``dynamic_update``: transformers always grows only (see the module docstring)."""
    if isinstance(encoding, Mapping):
        return {name: None if enc is None else to_hf_rope_parameters(enc) for name, enc in encoding.items()}
    if not isinstance(encoding, RotaryPositionEncoding):
        raise TypeError(f"`encoding` must be a RotaryPositionEncoding, got {type(encoding).__name__}")
    if isinstance(encoding, XPos):
        raise TypeError("`encoding` is xPos, whose decay transformers has no rope_type for (its RoPE alone would export)")
    if encoding.interleaved:
        raise ValueError("`encoding` uses interleaved pairs; transformers' RoPE rotates split halves")
    s = encoding.scaling
    out: dict[str, Any] = {"rope_theta": encoding.base}
    if encoding.p != 1.0:
        if encoding.rot_dim != encoding.head_dim or s.kind not in ("none", "linear"):
            raise ValueError("`encoding` with p < 1 maps to transformers' 'proportional' only with the whole head "
                             "rotated and scaling 'none' or 'linear'")
        return {**out, "rope_type": "proportional", "partial_rotary_factor": encoding.p, "factor": s.factor}
    if encoding.rot_dim != encoding.head_dim:
        out["partial_rotary_factor"] = _fraction(encoding.rot_dim, encoding.head_dim)
    if s.kind == "none":
        return {**out, "rope_type": "default"}
    if s.kind == "ntk":
        raise ValueError("`encoding` uses static NTK scaling, which transformers has no rope_type for")
    if s.kind == "linear":
        return {**out, "rope_type": "linear", "factor": s.factor}
    if s.kind == "dynamic_ntk":
        return {**out, "rope_type": "dynamic", "factor": s.factor}
    out.update(factor=s.factor, original_max_position_embeddings=s.original_max_len)
    if s.kind == "llama3":
        return {**out, "rope_type": "llama3", "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor}
    if s.kind == "longrope":
        return {**out, "rope_type": "longrope", "short_factor": list(s.short_factor),
                "long_factor": list(s.long_factor), "attention_factor": s.attention_factor}
    out.update(rope_type="yarn", beta_fast=s.beta_fast, beta_slow=s.beta_slow, attention_factor=s.attention_factor,
               truncate=s.truncate)
    if s.mscale != 1.0 or s.mscale_all_dim != 0.0:
        # DeepSeek-V2/V3's attention (and its kin's) multiplies its softmax scale by m(factor, mscale_all_dim) ** 2
        out.update(mscale=s.mscale, mscale_all_dim=s.mscale_all_dim)
    return out
