"""Every attention computation of posenc: one dispatcher (:func:`attend`), the eager float32
reference, SDPA, FlexAttention, the blocked CPU kernel, masks and the key/value cache.

Encodings describe their terms (:class:`ScoreMod`, :class:`BlockTerm`, a materialised bias, a value
term); they never run attention themselves.
"""

from posenc.attention.blocked import attention_with_bias, blocked_attention
from posenc.attention.cache import KVCache
from posenc.attention.dispatch import BACKENDS, attend, check_backend, choose_backend
from posenc.attention.eager import eager_attention
from posenc.attention.flex import flex_attention
from posenc.attention.masks import MaskSpec, attention_mask
from posenc.attention.sdpa import sdpa_attention
from posenc.core.terms import BlockTerm, ScoreMod

__all__ = [
    "BACKENDS",
    "BlockTerm",
    "KVCache",
    "MaskSpec",
    "ScoreMod",
    "attend",
    "attention_mask",
    "attention_with_bias",
    "blocked_attention",
    "check_backend",
    "choose_backend",
    "eager_attention",
    "flex_attention",
    "sdpa_attention",
]
