"""Reference models that take any registered encoding through ``position=``."""

from posenc.models.attention import Attention
from posenc.models.cache import KVCache
from posenc.models.transformer import Block, Transformer

__all__ = ["Attention", "Block", "KVCache", "Transformer"]
