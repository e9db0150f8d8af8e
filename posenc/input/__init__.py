"""Encodings that enter the model through its inputs: added to, or concatenated with, the token
embeddings (the ``"input"`` hook)."""

from posenc.input.learned import LearnedPositionEncoding, resize_table
from posenc.input.sinusoidal import SinusoidalPositionEncoding, sinusoidal

__all__ = ["LearnedPositionEncoding", "SinusoidalPositionEncoding", "resize_table", "sinusoidal"]
