"""Building cached tables so that they stay ordinary tensors.

Encodings grow their cached tables (cos/sin windows, bucket indices, bias squares) lazily, when a
call first needs a longer or moved range. If that call runs under ``torch.inference_mode()`` (an
evaluation pass), a table built there would be an inference tensor, and a later training step that
reads it would fail in autograd ("Inference tensors cannot be saved for backward"). Every lazy
build therefore runs inside :func:`building_tables`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def building_tables() -> Iterator[None]:
    """Inference mode and gradients off while a cached table is built: the table is an ordinary
    tensor whatever mode the caller is in (inference mode is left alone in traced code, which builds
    no caches)."""
    # is_compiling first: dynamo cannot trace is_inference_mode_enabled
    leave_inference = not torch.compiler.is_compiling() and torch.is_inference_mode_enabled()
    with torch.inference_mode(False) if leave_inference else contextlib.nullcontext(), torch.no_grad():
        yield
