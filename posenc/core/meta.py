"""Build on the meta device, then materialise with the values a normal build would have.

A model can be built on the meta device (shapes only, no memory, no initialisation), run on meta
tensors for shape inference, and then given real storage and values::

    with torch.device("meta"):
        model = Transformer(..., position="rope")
    materialize(model, device="cuda")          # to_empty(), then initialize()

(``Transformer(..., device="meta")`` would pass ``device`` to the encoding's constructor only: the
encoding on meta, the rest of the model on the default device.)

:func:`initialize` follows one convention, which every posenc module keeps: a module's
``reset_parameters()`` redraws what its constructor draws *after* its submodules are built. Calling
the submodules' ``reset_parameters()`` first (in registration order) and then the module's own
therefore replays the constructor's random draws in order, so under the same seed a materialised
module equals a normally built one. Derived tables (:class:`~posenc.core.base.DerivedTablesMixin`)
are rebuilt from the configuration.
"""

from __future__ import annotations

import torch
from torch import nn

from posenc.core.base import DerivedTablesMixin


def initialize(module: nn.Module) -> nn.Module:
    """Re-initialise every parameter and buffer of ``module`` in place, children first (see above)."""
    for child in module.children():
        initialize(child)
    reset = getattr(module, "reset_parameters", None)  # torch's own layers declare it by convention only
    if callable(reset):
        with torch.no_grad():
            reset()
    if isinstance(module, DerivedTablesMixin):
        module.rebuild_tables(module._table_device())
    return module


def materialize(module: nn.Module, device: torch.device | str) -> nn.Module:
    """``module.to_empty(device=device)`` followed by :func:`initialize`: real values on ``device``."""
    return initialize(module.to_empty(device=device))
