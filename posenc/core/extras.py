"""Optional dependencies: one clear line naming the extra to install when a feature needs one.

The core package needs only torch, numpy and einops. Plots need matplotlib (``posenc[plot]``),
progress bars tqdm (``posenc[cli]``), the photographs of two experiments scikit-image
(``posenc[experiments]``). A feature that lacks its extra raises :class:`MissingExtra`; the
command line prints its message alone and exits with status 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` command."""


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` saying which extra provides it.

    ``feature`` names what needs it, e.g. ``"posenc atlas"`` or ``"the fourier_image experiment"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingExtra(
            f"{feature} needs {top}, which is not installed: pip install \"posenc[{extra}]\""
        ) from None


def has(module: str) -> bool:
    """Whether ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
