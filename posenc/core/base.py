"""The protocol through which a sequence position encoding enters attention.

Shape vocabulary used across posenc: ``b`` batch, ``h`` heads, ``n`` query length, ``m`` key length,
``d`` width (model width for inputs, head width for queries and keys).

An encoding is an ``nn.Module`` subclassing :class:`PositionEncoding`. It declares in ``hooks`` which
of four entry points it uses, and :class:`posenc.models.Transformer` calls exactly those:

``"input"``   ``encode_input(x, *, positions) -> x'``
    (a) added to, or concatenated with, the token embeddings (or any order-aware layer that
    transforms them, such as a convolution). ``x``: ``(b, n, d - concat_dim)``, result ``(b, n, d)``.
    An encoding that carries state from one call to the next (a causal convolution's last inputs)
    exposes it through ``input_state()`` / ``load_input_state(state)``; the model keeps it in the
    key/value cache, so that each cache continues its own sequence.
``"rotary"``  ``rotate(q, k, *, q_positions, k_positions) -> (q', k')``
    (b) a transform of queries ``(b, h, n, d)`` and keys ``(b, h, m, d)``. Keys are rotated once,
    before they enter the key/value cache. The model calls it through
    ``rotate_qkv(qkv, *, q_positions, k_positions) -> (q', k', v)``, on the ``(3, b, h, n, d)`` stack of
    one projection (default: unbind, then ``rotate``); an encoding overrides it where the stack can be
    rotated faster as one tensor (RoPE: see :mod:`posenc.rotary.qkv`).
``"bias"``    ``score_bias(q, k, *, q_positions, k_positions) -> (b | 1, h | 1, n, m)``
    (c) an additive term on the attention logits, in logit units (after the ``1/sqrt(d)`` scaling
    of the content term); it may depend on the queries and keys.
``"value"``   ``value_term(weights, *, q_positions, k_positions) -> (b, h, n, d)``
    (d) a term added to the attention output, computed from the attention weights
    ``(b, h, n, m)``. Using it disables the fused ``scaled_dot_product_attention`` path.

Positions reach the hooks as :class:`posenc.core.positions.Positions` (implicit ``offset + arange(n)``
or an explicit ``(b | 1, n)`` tensor, integer or float32/64, never half precision); with a key/value
cache the key positions cover the cached tokens too.

Besides the materialised ``score_bias``, a ``"bias"`` encoding may declare its score terms in the
forms the attention kernels of :mod:`posenc.attention` run without an ``(n, m)`` table:

``score_mod(q, k, *, q_positions, k_positions) -> ScoreMod | None``
    FlexAttention's ``(score, b, h, q_idx, kv_idx) -> score`` with the small tables it reads (any
    content-dependent part precomputed, e.g. Shaw's ``q . a^K`` over the ``2k + 1`` offsets).
``block_bias(q, k, *, q_positions, k_positions) -> BlockTerm | None``
    the bias of one block of rows and keys, for the blocked CPU kernel (default: from ``score_mod``).
``block_value(*, q_positions, k_positions) -> BlockTerm | None``
    the ``"value"`` term of one block from its weights (default None: the kernel hands the full
    weights to ``value_term``).

Encodings never run attention themselves; :func:`posenc.attention.attend` is the one place that
chooses how.

Encodings whose state differs per layer set ``per_layer = True``; the model then builds one
instance per block (with the same arguments) instead of sharing one.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from posenc.core.positions import Positions
from posenc.core.tables import building_tables
from posenc.core.terms import BlockTerm, ScoreMod
from posenc.core.validation import check_dtype, check_on_device

HOOKS = ("input", "rotary", "bias", "value")


class EncodingModule(nn.Module):
    """Base class of every registered encoding: the checks its public boundary shares, and its declarations.

    Two checks hold for every encoding, whatever its family:

    * the constructor's ``dtype=`` keyword must be None or a floating-point ``torch.dtype``
      (:func:`~posenc.core.validation.check_dtype`, run by ``__new__`` before the subclass's
      ``__init__`` builds any tensor);
    * every tensor handed to ``forward`` must be on the module's device
      (:func:`check_forward_devices`, a forward pre-hook installed by ``__init__``; eager mode only,
      skipped while ``torch.compile`` traces).

    Both raise ``ValueError``/``TypeError`` naming the argument. The registry adds no behaviour:
    it only records metadata (:mod:`posenc.core.registry`).
    """

    #: The constructor arguments a reference model fills in from its own shape when it builds the
    #: encoding by name (a subset of :data:`posenc.core.registry.MODEL_ARGUMENTS`); a test keeps it
    #: equal to the constructor's signature.
    model_arguments: ClassVar[tuple[str, ...]] = ()
    #: The name the encoding is registered under ("" for an unregistered subclass).
    registry_name: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any):
        if "dtype" in kwargs:
            check_dtype("dtype", kwargs["dtype"])
        return super().__new__(cls)

    def __init__(self) -> None:
        super().__init__()
        self.register_forward_pre_hook(check_forward_devices, with_kwargs=True)


def check_forward_devices(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Every tensor argument of ``module.forward`` must be on the module's device (eager mode only).

    The device is that of the module's first parameter (or buffer); a module holding no tensors
    accepts any device. The argument's name comes from ``forward``'s signature.
    """
    if torch.compiler.is_compiling():
        return
    device = next((t.device for t in module.parameters()), None)
    if device is None:
        device = next((t.device for t in module.buffers()), None)
    if device is None:
        return
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if all(t.device == device for t in tensors):
        return
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
    for name, value in bound.items():
        if isinstance(value, torch.Tensor):
            check_on_device(name, value, device)


class PositionEncoding(EncodingModule):
    """Base class for encodings usable through ``Transformer(position=...)``."""

    #: Which of :data:`HOOKS` the model must call.
    hooks: ClassVar[frozenset[str]] = frozenset()
    #: One instance per transformer block instead of one shared by all blocks.
    per_layer: ClassVar[bool] = False
    #: Whether the encoding is meaningful in causal (decoder) attention.
    supports_causal: ClassVar[bool] = True

    #: Width appended by the input hook (0 when the encoding is added, not concatenated).
    concat_dim: int = 0

    #: Whether packed sequences (``document_ids``) work: positions restart per document and
    #: attention stays inside it. An encoding that mixes neighbouring tokens outside attention sets
    #: this to a sentence saying why it cannot (raised as the error).
    packing_unsupported: ClassVar[str | None] = None

    def encode_input(self, x: torch.Tensor, *, positions: Positions) -> torch.Tensor:
        return x

    def input_state(self) -> Any:
        """What the ``"input"`` hook carries from one call to the next in incremental decoding, or
        None for a stateless encoding; the model stores it in its key/value cache."""
        return None

    def load_input_state(self, state: Any) -> None:
        """Continue from ``state``, what :meth:`input_state` returned after the cache's last call
        (None: a cache that has not been used yet)."""

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, *, q_positions: Positions, k_positions: Positions
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def rotate_qkv(
        self, qkv: torch.Tensor, *, q_positions: Positions, k_positions: Positions
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qkv ``(3, b, h, n, d)``: queries, keys and values of one projection -> ``(q', k', v)``."""
        q, k, v = qkv.unbind(0)
        q, k = self.rotate(q, k, q_positions=q_positions, k_positions=k_positions)
        return q, k, v

    def score_bias(
        self, q: torch.Tensor, k: torch.Tensor, *, q_positions: Positions, k_positions: Positions
    ) -> torch.Tensor | None:
        return None

    def score_mod(
        self, q: torch.Tensor, k: torch.Tensor, *, q_positions: Positions, k_positions: Positions
    ) -> ScoreMod | None:
        return None

    def block_bias(
        self, q: torch.Tensor, k: torch.Tensor, *, q_positions: Positions, k_positions: Positions
    ) -> BlockTerm | None:
        return None

    def value_term(
        self, weights: torch.Tensor, *, q_positions: Positions, k_positions: Positions
    ) -> torch.Tensor | None:
        return None

    def block_value(self, *, q_positions: Positions, k_positions: Positions) -> BlockTerm | None:
        return None


class DerivedTablesMixin:
    """Float32 tables derived from a module's configuration, held as non-persistent buffers.

    Policy: derived tables are never saved in a ``state_dict``; they follow the module's device;
    they are *rebuilt* (not cast) whenever the module is moved or cast, so ``model.to(torch.bfloat16)``
    leaves them in float32 and ``to_empty()`` after building on the ``meta`` device fills them with
    real values. Subclasses implement :meth:`init_non_persistent_buffers`; code that rebuilds the
    tables calls :meth:`rebuild_tables`, which keeps them ordinary tensors under
    ``torch.inference_mode()`` too (:mod:`posenc.core.tables`).
    """

    def init_non_persistent_buffers(self, device: torch.device | None = None) -> None:
        raise NotImplementedError

    def rebuild_tables(self, device: torch.device | None = None, **kwargs: Any) -> None:
        """:meth:`init_non_persistent_buffers` with inference mode and gradients off."""
        with building_tables():
            self.init_non_persistent_buffers(device, **kwargs)

    def _table_device(self) -> torch.device | None:
        for _, buf in self.named_buffers(recurse=False):  # type: ignore[attr-defined]
            if buf is not None:
                return buf.device
        return None

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)  # type: ignore[misc]
        self.rebuild_tables(self._table_device())
        return module


def derived_table_names(module: nn.Module) -> list[str]:
    """Fully qualified names of the derived tables in ``module``: the non-persistent buffers of its
    :class:`DerivedTablesMixin` submodules (a saved buffer, such as a drawn random matrix, is state).

    Every process recomputes them from the configuration, and a cache grown for one process's longer
    sequence has another shape than the next process's, so DistributedDataParallel must not broadcast
    them from rank 0 (that overwrote the longer cache with the shorter one's values). The reference
    models list them in ``_ddp_params_and_buffers_to_ignore``, the attribute DDP reads for this.
    """
    names = []
    for prefix, sub in module.named_modules():
        if isinstance(sub, DerivedTablesMixin):
            saved = sub.state_dict(keep_vars=True)
            dot = f"{prefix}." if prefix else ""
            names += [f"{dot}{name}" for name, _ in sub.named_buffers(recurse=False) if name not in saved]
    return names
