"""The one place that chooses how attention runs.

``attention=`` on :class:`posenc.models.Transformer`, :class:`~posenc.models.attention.Attention` and
the ViT takes one of :data:`BACKENDS`:

``"eager"``   the float32 reference (:func:`~posenc.attention.eager.eager_attention`), every logit formed.
``"sdpa"``    ``scaled_dot_product_attention`` with the encoding's bias materialised.
``"flex"``    FlexAttention with the encoding's ``score_mod`` (its ``score_bias`` read through one
              when it has none) and the mask as a block mask; forward only on CPU.
``"blocked"`` the blocked kernel (:mod:`posenc.attention.blocked`) with per-block bias and value terms.
``"auto"``    flex on CUDA; on CPU, for inference (gradients off) of a query block of at least
              :data:`FLEX_CPU_MIN_ROWS` rows whose score_mod compiles on CPU (ALiBi, T5, KERPLE,
              Shaw's key term alone, with implicit positions and a causal, windowed or full mask), compiled flex;
              otherwise on CPU the blocked kernel when the encoding has score or value terms (training,
              decoding one row at a time, short prompts: it holds no ``(n, m)`` table, except CoPE's, and the
              ViT's 2-D biases, which are materialised), else SDPA.
              Inside ``torch.func`` transforms (``grad``, ``vmap``, ``jvp``, ...) and forward-mode AD,
              the eager reference, which is the backend every transform runs through.
              Measured in docs/performance.md.

Two rules hold for every backend: dropout during training runs on the eager reference (the fused
kernels here take no dropout) unless the backend is SDPA and the encoding has no value term; an
encoding with a value term (Shaw et al.'s ``a^V``) cannot enter FlexAttention or SDPA: ``"auto"``
runs it on the blocked kernel, and asking for ``"flex"`` or ``"sdpa"`` explicitly raises
``ValueError`` (the value term needs ``"eager"``, ``"blocked"`` or ``"auto"``).
"""

from __future__ import annotations

import warnings

import torch

from posenc.attention.blocked import blocked_attention
from posenc.attention.eager import eager_attention
from posenc.attention.flex import compiles, flex_attention, flex_available
from posenc.attention.inputs import check_mask, check_qkv
from posenc.attention.masks import MaskSpec
from posenc.attention.sdpa import sdpa_attention
from posenc.core.base import PositionEncoding
from posenc.core.positions import Positions
from posenc.core.precision import arithmetic_dtype
from posenc.core.terms import bias_from_score_mod
from posenc.core.transforms import under_transform
from posenc.core.validation import check_choice, check_float, check_tensor

BACKENDS = ("auto", "eager", "sdpa", "flex", "blocked")
#: Backends that cannot take a value term, and the kernel each runs.
VALUE_UNSUPPORTED = {"flex": "FlexAttention", "sdpa": "scaled_dot_product_attention"}
#: CPU inference runs compiled flex from this many query rows (a prompt): measured faster than the
#: blocked kernel at 1,024 and 4,096 rows for ALiBi, T5, KERPLE and Shaw's key term, slower for one-row
#: decoding steps (docs/performance.md); shorter blocks keep the blocked kernel, which needs no compile.
FLEX_CPU_MIN_ROWS = 1024


def check_backend(attention: str, *, name: str = "attention") -> str:
    """``attention`` if it names a backend, else ``ValueError`` naming the argument ``name`` and
    listing the backends."""
    return check_choice(name, attention, BACKENDS)


def choose_backend(
    backend: str, q: torch.Tensor, position: PositionEncoding, dropout: float, *, cpu_flex: bool = False,
    tensors: tuple[torch.Tensor, ...] = (),
) -> str:
    """The backend that runs: ``backend`` itself, or what ``"auto"`` and the two rules above give.

    ``cpu_flex``: the call may run compiled flex on CPU (:func:`attend` works it out from
    :func:`cpu_flex_candidate` and the encoding's score_mod); ``tensors``: the call's q, k and v
    (``"auto"`` runs the eager reference when any is inside a ``torch.func`` transform or carries a
    forward-mode tangent)."""
    has_value = "value" in position.hooks
    has_terms = has_value or "bias" in position.hooks
    if has_value and backend in VALUE_UNSUPPORTED:
        raise ValueError(
            f"attention={backend!r} cannot run the value term of the encoding {type(position).__name__} "
            f"(it adds to attention's output a sum over the weights, which {VALUE_UNSUPPORTED[backend]} "
            f"has no place for); use attention='blocked', 'eager' or 'auto'"
        )
    if backend == "auto":
        cuda = q.device.type == "cuda" and flex_available()
        if under_transform(tensors):
            # torch.func transforms and forward-mode AD: the fused kernels define a backward only
            # (SDPA's CPU kernel, the blocked kernel) or read memory (flex); the reference takes them all
            backend = "eager"
        elif dropout == 0 and (cuda or (q.device.type == "cpu" and cpu_flex and not has_value)):
            backend = "flex"
        elif q.device.type == "cpu" and has_terms and dropout == 0:
            backend = "blocked"
        else:
            backend = "sdpa"
    if dropout > 0 and not (backend == "sdpa" and not has_value):
        return "eager"
    if has_value and backend in VALUE_UNSUPPORTED:  # only where auto chose it
        return "blocked"
    return backend


#: Why compiled flex failed on CPU in this process (then ``"auto"`` keeps the blocked kernel), or None.
cpu_flex_failure: str | None = None


def cpu_flex_candidate(backend: str, q: torch.Tensor, position: PositionEncoding, dropout: float) -> bool:
    """Whether ``"auto"`` considers compiled flex for this CPU call: inference (gradients off) of at
    least :data:`FLEX_CPU_MIN_ROWS` query rows with score terms and no value term, no dropout, and no
    earlier failure to compile it in this process (:data:`cpu_flex_failure`)."""
    hooks = position.hooks
    return (
        backend == "auto"
        and cpu_flex_failure is None
        and q.device.type == "cpu"
        and dropout == 0
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()  # inductor's CPU flex fails inside a model's compile
        and q.shape[-2] >= FLEX_CPU_MIN_ROWS
        and "bias" in hooks
        and "value" not in hooks
        and flex_available()
    )


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    position: PositionEncoding,
    q_positions: Positions,
    k_positions: Positions,
    mask: MaskSpec | None = None,
    backend: str = "auto",
    dropout: float = 0.0,
) -> torch.Tensor:
    """Attention of q ``(b, h, n, d)`` over k, v ``(b, h, m, d)`` (already rotated) with the score and
    value terms of ``position`` -> ``(b, h, n, dv)``. The queries are the last n of the m keys.

    A query row that sees no key (``mask.key_mask`` or its documents hide every key it could see: a
    left-padded query under a causal mask) has no attention to give, and its output depends on the
    backend: the mean of all m values on eager and SDPA, the mean of the values its row block reads on
    the blocked kernel (the same when one block holds every row), zeros on flex. It is finite
    everywhere and sends no gradient to q, k or the encoding's terms; leave such rows out of a loss
    (or ``v`` gets the gradient of whichever mean the backend took)."""
    check_qkv(q, k, v)
    check_backend(backend, name="backend")
    if not isinstance(position, PositionEncoding):
        raise TypeError(f"`position` must be a posenc PositionEncoding, got {type(position).__name__}")
    check_mask(mask, q, k)
    check_float("dropout", dropout, minimum=0.0, maximum=1.0)
    for name, positions, t in (("q_positions", q_positions, q), ("k_positions", k_positions, k)):
        if not isinstance(positions, Positions):
            raise TypeError(f"`{name}` must be a posenc Positions, got {type(positions).__name__}")
        if positions.n != t.shape[-2]:
            raise ValueError(f"`{name}` must count the {t.shape[-2]} rows of `{name[0]}`, got n={positions.n}")
        explicit = positions.explicit
        if explicit is not None:
            # the backends read explicit positions in different ways: one that does not fit failed deep
            # inside some of them and was read past its length or broadcast by others
            check_tensor(f"{name}.explicit", explicit)
            if explicit.ndim != 2 or (explicit.shape[0] != 1 and explicit.shape[0] != t.shape[0]) or explicit.shape[1] != positions.n:
                raise ValueError(
                    f"`{name}.explicit` must have shape (1, {positions.n}) or ({t.shape[0]}, {positions.n}) (batch 1 or "
                    f"that of `{name[0]}`, n positions), got {tuple(explicit.shape)}"
                )
            if explicit.device != t.device:
                raise ValueError(f"`{name}.explicit` is on {explicit.device} but `{name[0]}` is on {t.device}")
    mask = mask or MaskSpec()
    pos = {"q_positions": q_positions, "k_positions": k_positions}
    mod, cpu_flex = None, False
    if cpu_flex_candidate(backend, q, position, dropout):
        mod = position.score_mod(q, k, **pos)
        cpu_flex = mod is not None and compiles(q, mod, None, mask)
    backend = choose_backend(backend, q, position, dropout, cpu_flex=cpu_flex, tensors=(q, k, v))
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        # an empty sequence (or nothing to attend to): zeros, still connected to q, k, v
        return q.new_zeros(*q.shape[:-1], v.shape[-1]) + 0 * (q.sum() + k.sum() + v.sum())
    hooks = position.hooks
    if backend == "eager" or backend == "sdpa":
        bias = position.score_bias(q, k, **pos) if "bias" in hooks else None
        if backend == "sdpa":
            return sdpa_attention(q, k, v, bias=bias, mask=mask, dropout=dropout)
        value = (lambda w: position.value_term(w, **pos)) if "value" in hooks else None
        return eager_attention(q, k, v, bias=bias, mask=mask, value=value, dropout=dropout)
    if backend == "flex" and cpu_flex and not torch.compiler.is_compiling():
        # chosen by "auto": a compiler that fails here (no C++ toolchain, an inductor error) costs the
        # user a warning and the blocked kernel, not the call
        try:
            return flex_attention(q, k, v, score_mod=mod, mask=mask)
        except Exception as err:  # noqa: BLE001 - any failure of the compiler stack
            global cpu_flex_failure
            cpu_flex_failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            warnings.warn(
                f"compiled FlexAttention failed on CPU ({cpu_flex_failure}); attention='auto' uses the "
                "blocked kernel from now on in this process",
                RuntimeWarning,
                stacklevel=2,
            )
            backend = "blocked"
    if backend == "flex":
        mod = mod if cpu_flex else position.score_mod(q, k, **pos) if "bias" in hooks else None
        bias = position.score_bias(q, k, **pos) if "bias" in hooks and mod is None else None
        return flex_attention(q, k, v, score_mod=mod, bias=bias, mask=mask)
    # the blocked kernel
    bias, bias_term, value_term = None, None, None
    if "bias" in hooks:
        bias_term = position.block_bias(q, k, **pos)
        if bias_term is None:
            mod = position.score_mod(q, k, **pos)
            if mod is not None:
                bias_term = bias_from_score_mod(mod, *q.shape[:2], dtype=arithmetic_dtype(q.dtype))
            else:
                bias = position.score_bias(q, k, **pos)
    if "value" in hooks:
        value_term = position.block_value(**pos)
    need_weights = "value" in hooks and value_term is None
    out, weights = blocked_attention(
        q, k, v, bias, bias_term=bias_term, value_term=value_term, mask=mask, need_weights=need_weights
    )
    if need_weights:
        extra = position.value_term(weights, **pos)
        out = out if extra is None else out + extra.to(out.dtype)
    return out
