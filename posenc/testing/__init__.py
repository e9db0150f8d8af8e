"""Test support: a tiny valid example of every registered encoding (``posenc.testing.examples``)."""

from posenc.testing.examples import SPECS, Arg, Example, MissingExample, Spec, build, example, spec

__all__ = ["SPECS", "Arg", "Example", "MissingExample", "Spec", "build", "example", "spec"]
