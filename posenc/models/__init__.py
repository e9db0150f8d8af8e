"""Reference models that take any registered encoding through ``position=``."""

from posenc.models.attention import Attention
from posenc.models.cache import KVCache
from posenc.models.position_plan import PositionPlan
from posenc.models.transformer import Block, Transformer
from posenc.models.cnn import CNN
from posenc.models.vit import ViT

__all__ = ["CNN", "Attention", "Block", "KVCache", "PositionPlan", "Transformer", "ViT"]
