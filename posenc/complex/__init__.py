"""Complex-valued word-order embeddings and the complex layers that consume them."""

from posenc.complex.complex_order import ComplexOrderEncoding
from posenc.complex.embedding import ComplexOrderEmbedding, complex_order
from posenc.complex.layers import (
    ComplexLinear,
    ComplexRMSNorm,
    ComplexSelfAttention,
    ComplexToReal,
    check_complex,
    complex_attention,
    crelu,
)
from posenc.complex.model import ComplexOrderTransformer

__all__ = [
    "ComplexLinear",
    "ComplexOrderEmbedding",
    "ComplexOrderEncoding",
    "ComplexOrderTransformer",
    "ComplexRMSNorm",
    "ComplexSelfAttention",
    "ComplexToReal",
    "check_complex",
    "complex_attention",
    "complex_order",
    "crelu",
]
