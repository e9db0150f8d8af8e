"""Close-match suggestions for mistyped names ("did you mean ...?")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """``" (did you mean 'rope'?)"`` for the closest known names, or ``""`` when none is close."""
    if not isinstance(name, str):
        return ""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
