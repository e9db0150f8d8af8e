"""Argument types of the command line: integers checked by argparse, which names the option."""

from __future__ import annotations

import argparse


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--seed``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"takes a non-negative integer, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (``--rounds``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a positive integer, got {value}")
    return value
