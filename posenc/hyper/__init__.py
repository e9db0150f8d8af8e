"""Hypernetworks whose generated weights depend on where they are applied."""

from posenc.hyper.hyper_conv import (
    HyperConv2d,
    HyperKernel,
    conv2d_per_position,
    encode_coordinates,
    grid_coordinates,
    grid_encoding,
)

__all__ = [
    "HyperConv2d",
    "HyperKernel",
    "conv2d_per_position",
    "encode_coordinates",
    "grid_coordinates",
    "grid_encoding",
]
