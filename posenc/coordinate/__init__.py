"""Encodings of continuous coordinates for coordinate MLPs: NeRF's octave bands, Fourier features,
hash grids, spherical harmonics, integrated and factorised encodings."""

from posenc.coordinate.base import Encoding
from posenc.coordinate.fourier_features import (
    FourierFeatures,
    basic_matrix,
    fourier_features,
    gaussian_matrix,
    positional_matrix,
)
from posenc.coordinate.hash_grid import HashGrid, hash_grid_encoding
from posenc.coordinate.integrated_pe import IntegratedPE, integrated_positional_encoding
from posenc.coordinate.kplanes import KPlanes, Triplane, kplanes_features
from posenc.coordinate.mlp import CoordinateMLP
from posenc.coordinate.nerf import NeRFEncoding, nerf_encoding, nerf_frequencies
from posenc.coordinate.spherical_harmonics import SphericalHarmonics, spherical_harmonics

__all__ = [
    "CoordinateMLP",
    "Encoding",
    "FourierFeatures",
    "HashGrid",
    "IntegratedPE",
    "KPlanes",
    "NeRFEncoding",
    "SphericalHarmonics",
    "Triplane",
    "basic_matrix",
    "fourier_features",
    "gaussian_matrix",
    "hash_grid_encoding",
    "integrated_positional_encoding",
    "kplanes_features",
    "nerf_encoding",
    "nerf_frequencies",
    "positional_matrix",
    "spherical_harmonics",
]
