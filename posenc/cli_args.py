"""Argument types of the command line: integers checked by argparse, which names the option."""

from __future__ import annotations

import argparse


def _int_at_least(text: str, minimum: int, kind: str) -> int:
    """``text`` as an integer >= ``minimum``; ``kind`` names what is taken in the message."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a {kind} integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"takes a {kind} integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--seed``)."""
    return _int_at_least(text, 0, "non-negative")


def positive_int(text: str) -> int:
    """An integer >= 1 (``--rounds``)."""
    return _int_at_least(text, 1, "positive")
