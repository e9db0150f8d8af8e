"""Whether tensors are inside a ``torch.func`` transform or carry forward-mode tangents.

Custom kernels (the C++ RoPE function, the blocked attention kernel) read tensors' memory or define
only a backward; under ``vmap``, ``grad``, ``jacrev``, ``jvp`` or ``torch.autograd.forward_ad`` the
tensors they are given are wrappers or duals, so those calls take plain torch operations instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.autograd.forward_ad as fwAD


def under_transform(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether any tensor is wrapped by a torch.func transform (vmap, grad, jacrev, ...) or carries a
    forward-mode tangent. False while ``torch.compile`` traces (dynamo cannot trace the check; traced
    code runs plain operations anyway)."""
    if torch.compiler.is_compiling():
        return False
    if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
        return True
    return fwAD._current_level >= 0 and any(fwAD.unpack_dual(t).tangent is not None for t in tensors)
