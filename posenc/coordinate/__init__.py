"""Encodings of continuous coordinates for coordinate MLPs: NeRF's octave bands, Fourier features."""

from posenc.coordinate.base import Encoding
from posenc.coordinate.fourier_features import (
    FourierFeatures,
    basic_matrix,
    fourier_features,
    gaussian_matrix,
    positional_matrix,
)
from posenc.coordinate.mlp import CoordinateMLP
from posenc.coordinate.nerf import NeRFEncoding, nerf_encoding, nerf_frequencies

__all__ = [
    "CoordinateMLP",
    "Encoding",
    "FourierFeatures",
    "NeRFEncoding",
    "basic_matrix",
    "fourier_features",
    "gaussian_matrix",
    "nerf_encoding",
    "nerf_frequencies",
    "positional_matrix",
]
