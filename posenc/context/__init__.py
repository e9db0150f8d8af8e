"""Order-aware context layers used instead of an explicit encoding (convolutions before attention)."""

from posenc.context.conv_context import ConvContext, context_conv1d
from posenc.context.wav2vec2_conv import Wav2Vec2ConvPositionEmbedding, wav2vec2_conv_embedding

__all__ = ["ConvContext", "Wav2Vec2ConvPositionEmbedding", "context_conv1d", "wav2vec2_conv_embedding"]
