"""Bridges between posenc's encodings and other libraries' models (each needs its library installed)."""
