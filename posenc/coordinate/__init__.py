"""Encodings of continuous coordinates for coordinate MLPs: NeRF's octave bands, Fourier features."""
