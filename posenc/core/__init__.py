"""Shared machinery: the encoding protocol, the registry, positions, frequencies and checks."""
