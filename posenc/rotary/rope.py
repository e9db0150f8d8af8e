"""Rotary position embedding, RoPE (Su et al. 2021, arXiv:2104.09864).

Each pair of query/key features is rotated by the angle ``p * base^(-2i/d)``, so the logit between
positions i and j depends on ``i - j`` only. Two pair layouts exist: adjacent features
``(x0, x1), (x2, x3), ...`` (``interleaved=True``, the paper and GPT-J/Mesh-TF) and split halves
``(x_i, x_{i + d/2})`` (``interleaved=False``, GPT-NeoX / Llama's ``rotate_half``). A fraction of
the head may be rotated (GPT-NeoX's ``rotary_pct``), the rest passes through.

Precision: angles in float64, cos/sin held in float32, the rotation itself in float32, the result
cast back to the input dtype. Verified against a float64 transcription of the rotation-matrix form
(equation 34 of the paper) in tests/rotary/test_rope.py.
"""

from __future__ import annotations

import dataclasses

import torch

from posenc.core.base import DerivedTablesMixin, PositionEncoding
from posenc.core.frequencies import MAX_POSITION, check_max_position, cos_sin
from posenc.core.positions import Positions, positions_or_randomized, resolve_positions, table_window
from posenc.core.registry import register
from posenc.core.tables import building_tables
from posenc.core.validation import (
    check_bool,
    check_even,
    check_float,
    check_float_dtype,
    check_float_tensor,
    check_int,
    check_precise_float_tensor,
    check_same_device,
    check_table_fits,
)
from posenc.rotary.angle_cache import INDEX_DTYPES, rope_cos_sin
from posenc.rotary.fused import rotate_qk, rotate_tensors
from posenc.rotary.p_rope import keep_highest_frequencies
from posenc.rotary.qkv import rotate_qkv
from posenc.rotary.rotation import work_dtype
from posenc.rotary.scaling import DynamicUpdate, RopeScaling, ScalingKind, length_of


def _check_rotation(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """x: float ``(..., n, r)`` with r even; cos, sin: float32/float64 of one shape broadcastable to ``(..., n, r/2)``
    with ``r/2`` entries along their last axis."""
    check_float_tensor("x", x)
    check_precise_float_tensor("cos", cos)
    check_precise_float_tensor("sin", sin)
    if x.ndim == 0 or x.shape[-1] % 2:
        raise ValueError(f"`x` must have an even number of features to rotate in pairs, got shape {tuple(x.shape)}")
    if cos.shape != sin.shape:
        raise ValueError(f"`cos` and `sin` must have one shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    half = (*x.shape[:-1], x.shape[-1] // 2)
    # the last axis is not broadcast: its length is the number of pairs rotated (see apply_rotary)
    if (
        cos.ndim == 0 or cos.shape[-1] != half[-1] or cos.ndim > x.ndim
        or any(c != 1 and c != h for c, h in zip(reversed(cos.shape), reversed(half)))
    ):
        raise ValueError(
            f"`cos` and `sin` must broadcast to {half} (half the rotated features of `x` {tuple(x.shape)}), "
            f"with all {half[-1]} entries along their last axis, got {tuple(cos.shape)}"
        )
    check_same_device(x=x, cos=cos, sin=sin)


def rotate_pairs(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool = False,
    inplace: bool = False,
    fused: bool | None = None,
) -> torch.Tensor:
    """Rotate the feature pairs of ``x`` by the angles whose cos/sin are given.

    x: ``(..., n, r)`` with ``r`` even; cos, sin: broadcastable to ``(..., n, r/2)`` with ``r/2`` entries
    along their last axis, float32 (float64 for float64 ``x``). Returns ``x``'s shape and dtype; the
    arithmetic runs in float32 or better.
    ``inplace`` writes the result into ``x``; ``fused`` forces the fused kernel on or off (None
    follows ``POSENC_FUSED``, see :mod:`posenc.rotary.fused`).
    """
    _check_rotation(x, cos, sin)
    return rotate_tensors((x,), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)[0]


def apply_rotary(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    interleaved: bool = False,
    inplace: bool = False,
    fused: bool | None = None,
) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` features of ``x``; the remaining ones pass through."""
    check_float_tensor("x", x)
    check_precise_float_tensor("cos", cos)
    rot = 2 * cos.shape[-1] if cos.ndim else 0
    if x.ndim == 0 or not 0 < rot <= x.shape[-1]:
        raise ValueError(
            f"`cos` must have between 1 and x.shape[-1] / 2 entries along its last axis (`x` has shape "
            f"{tuple(x.shape)}), got shape {tuple(cos.shape)}"
        )
    _check_rotation(x[..., :rot], cos, sin)
    return rotate_tensors((x,), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)[0]


def _plainly_valid(x, positions, randomize_positions, generator) -> bool:
    """The common call, which every check below accepts: a float ``(b, h, n, d)`` tensor with ``d``
    even, ``(n,)`` int64 positions on its device, nothing randomized. Read in a few attribute
    look-ups, since with cold caches (as after attention) the full checks cost about a tenth of
    rotating a 16 MiB tensor; anything else takes the full checks and their messages."""
    return (
        randomize_positions is None
        and generator is None
        and type(x) is torch.Tensor
        and type(positions) is torch.Tensor
        and x.layout == torch.strided
        and positions.layout == torch.strided
        and x.dim() == 4
        and positions.dim() == 1
        and positions.dtype == torch.int64
        and x.is_floating_point()
        and x.shape[-1] % 2 == 0
        and x.shape[-1] > 0
        and positions.shape[0] == x.shape[-2]
        and x.device == positions.device
    )


def rope_positions(
    x: torch.Tensor,
    positions: torch.Tensor | None,
    randomize_positions: int | None,
    generator: torch.Generator | None,
    *,
    name: str = "x",
) -> torch.Tensor:
    """The checked positions ``(n,)`` or ``(b, n)`` of the functional RoPE forms for ``x`` ``(b, h, n, d)``
    (called ``name`` in errors): ``positions`` as given, or ordered random ones from ``[0, randomize_positions)``."""
    if _plainly_valid(x, positions, randomize_positions, generator):
        return positions.unsqueeze(0)
    check_float_tensor(name, x, ndim=4)
    check_even(f"{name}.shape[-1]", x.shape[-1], why="RoPE rotates feature pairs")
    positions = positions_or_randomized(
        positions, randomize_positions, n=x.shape[-2], batch=x.shape[0], generator=generator, device=x.device
    )
    pos = resolve_positions(positions, n=x.shape[-2], batch=x.shape[0], name="positions")
    check_same_device(**{name: x, "positions": pos})
    return pos


def apply_rope(
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    base: float = 10000.0,
    interleaved: bool = False,
    inplace: bool = False,
    fused: bool | None = None,
    randomize_positions: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply RoPE to ``x`` of shape ``(b, h, n, d)`` at ``positions`` of shape ``(n,)`` or ``(b, n)``.

    Integer positions take their cos/sin from a cached table (:mod:`posenc.rotary.angle_cache`).
    ``positions=None, randomize_positions=L`` rotates each row at ``n`` ordered random positions from
    ``[0, L)`` (:func:`~posenc.core.positions.randomized_positions`, drawn from ``generator``); each call
    draws anew, so rotate queries and keys with :func:`apply_rope_qk` (one draw, one fused call) or pass
    both calls positions drawn once.
    """
    pos = rope_positions(x, positions, randomize_positions, generator)
    check_float("base", base, positive=True)
    cos, sin = rope_cos_sin(pos, x.shape[-1], base, dtype=work_dtype(x), per_head=True)
    # the angles are built here to fit x: no further checks are needed
    return rotate_tensors((x,), cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)[0]


def apply_rope_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    *,
    base: float = 10000.0,
    interleaved: bool = False,
    inplace: bool = False,
    fused: bool | None = None,
    randomize_positions: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apply_rope` of queries ``q`` ``(b, h, n, d)`` and keys ``k`` ``(b, h_kv, n, d)`` at the same
    ``positions`` ``(n,)`` or ``(b, n)``, in one fused call (one angle look-up, one kernel launch).

    ``h_kv`` may differ from ``h`` (grouped-query attention). With ``randomize_positions=L`` one set
    of random positions is drawn and used for both. Returns the rotated ``(q, k)``.
    """
    pos = rope_positions(q, positions, randomize_positions, generator, name="q")
    check_float_tensor("k", k, ndim=4)
    if k.shape[0] != q.shape[0] or k.shape[-2:] != q.shape[-2:]:
        raise ValueError(
            f"`k` must have the batch size, length and width of `q` {tuple(q.shape)} (heads may differ), "
            f"got shape {tuple(k.shape)}"
        )
    check_same_device(q=q, k=k)
    check_float("base", base, positive=True)
    # the wider arithmetic dtype where q and k differ (float64 angles for a float64 tensor)
    cos, sin = rope_cos_sin(
        pos, q.shape[-1], base, dtype=torch.promote_types(work_dtype(q), work_dtype(k)), per_head=True
    )
    return rotate_qk(q, k, cos, sin, interleaved=interleaved, inplace=inplace, fused=fused)


def check_head_width(head_dim: int, **tensors: torch.Tensor) -> None:
    """Raise unless each tensor's last axis is ``head_dim``: a narrower one cannot hold the rotated
    pairs, a wider one would pass its extra features through unrotated without a word."""
    for name, t in tensors.items():
        if t.shape[-1] != head_dim:
            raise ValueError(f"`{name}` must have last dimension head_dim={head_dim}, got shape {tuple(t.shape)}")


def check_token_count(**sides: tuple[torch.Tensor, Positions]) -> None:
    """Raise unless each tensor ``(..., n, d)`` has as many tokens as its positions: the angles of fewer
    positions (one) would broadcast over its tokens, rotating them all alike without a word."""
    for name, (t, positions) in sides.items():
        if t.shape[-2] != positions.n:
            raise ValueError(
                f"`{name}` has {t.shape[-2]} tokens (shape {tuple(t.shape)}) but `{name}_positions` holds "
                f"{positions.n}; give the positions of every token of `{name}`"
            )


def _same_positions(a: Positions, b: Positions) -> bool:
    if a is b:
        return True
    if a.is_implicit or b.is_implicit:
        return a.is_implicit and b.is_implicit and (a.n, a.offset) == (b.n, b.offset)
    return a.explicit is b.explicit


@register(
    "rope",
    paper="Su et al. 2021, arXiv:2104.09864 (scalings: arXiv:2306.15595, arXiv:2309.00071, arXiv:2402.13753; "
    "p-RoPE: arXiv:2410.06205)",
    summary="Rotates query/key feature pairs by position-proportional angles; logits depend on i - j only.",
)
class RotaryPositionEncoding(DerivedTablesMixin, PositionEncoding):
    """RoPE with optional context-extension scaling and a cos/sin cache for implicit positions.

    Args:
        head_dim: width of each head's queries and keys.
        base: frequency base (10000 in the paper; 500000 in Llama 3).
        rotary_fraction: fraction of ``head_dim`` rotated (rounded down to an even width >= 2).
        interleaved: adjacent pairs (True) or split halves (False).
        scaling: ``"none"``, ``"linear"``, ``"ntk"``, ``"dynamic_ntk"``, ``"yarn"``, ``"llama3"``,
            ``"longrope"`` (formulas in :mod:`posenc.rotary.scaling`), or a :class:`RopeScaling`.
        factor: the context-extension factor of the scaling (>= 1); by default
            ``max_len / original_max_len`` when both are given, else 1.
        original_max_len: the trained context length (needed by all but ``linear`` and ``ntk``).
        beta_fast, beta_slow, attention_factor, mscale, mscale_all_dim, truncate: YaRN's ramp bounds
            (rotations over ``original_max_len``), cos/sin factor override, DeepSeek-V3's temperature
            coefficients and gpt-oss's un-truncated ramp (``truncate=False``).
        low_freq_factor, high_freq_factor: Llama 3.1's wavelength band edges.
        short_factor, long_factor: LongRoPE's per-pair rescale factors (``rot_dim / 2`` each).
        max_len: the extended context length (derives ``factor`` when it is absent).
        dynamic_update: dynamic NTK's length: per call (``"recompute"``) or transformers'
            ``"grow_only"`` (the longest seen since a sequence shorter than ``original_max_len``).
            Under ``torch.compile``, explicit positions (a transformers model's ``position_ids``) read
            that longest length without advancing it: a graph cannot turn a tensor into the module's
            state, so there a sequence past ``original_max_len`` after a longer one gets its own
            length's base, unlike eager mode and transformers; implicit positions advance it as in eager.
        p: p-RoPE (Barbero et al. 2024): the fraction of the fastest frequencies that rotate; the
            pairs of the slowest ``1 - p`` pass through unrotated.
        cache_len: implicit positions cached up front.

    Cache policy: one float32 ``(cache_len, rot/2)`` cos/sin window starting at the first implicit
    position in use, keyed by its start and length, the scaling's effective base (dynamic NTK) and
    the device; moved (grown to a power of two when more tokens arrive at once) when positions fall
    outside it, so an offset of 10^7 costs what its tokens cost; rebuilt on ``.to()``. Explicit
    integer positions on the CPU (float32 tables) are gathered from the same window, moved to cover
    them unless they spread much wider than their count; other explicit positions, other devices
    (where reading their range would sync) and ``torch.compile`` compute inline. Implicit positions past
    :data:`posenc.core.frequencies.MAX_POSITION` raise.
    """

    model_arguments = ("head_dim",)
    hooks = frozenset({"rotary"})

    def __init__(
        self,
        head_dim: int,
        *,
        base: float = 10000.0,
        rotary_fraction: float = 1.0,
        interleaved: bool = False,
        scaling: ScalingKind | RopeScaling = "none",
        factor: float | None = None,
        original_max_len: int | None = None,
        beta_fast: float = 32.0,
        beta_slow: float = 1.0,
        low_freq_factor: float = 1.0,
        high_freq_factor: float = 4.0,
        short_factor: list[float] | None = None,
        long_factor: list[float] | None = None,
        attention_factor: float | None = None,
        mscale: float = 1.0,
        mscale_all_dim: float = 0.0,
        truncate: bool = True,
        max_len: int | None = None,
        dynamic_update: DynamicUpdate = "recompute",
        p: float = 1.0,
        cache_len: int = 256,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = check_int("head_dim", head_dim, minimum=2)
        self.base = check_float("base", base, positive=True)
        fraction = check_float("rotary_fraction", rotary_fraction, minimum=0.0, maximum=1.0)
        self.rot_dim = int(head_dim * fraction) // 2 * 2
        if self.rot_dim < 2:
            raise ValueError(
                f"`rotary_fraction` * `head_dim` must cover at least one feature pair, got {fraction} * {head_dim}"
            )
        self.interleaved = check_bool("interleaved", interleaved)
        # RopeScaling's fields, given here by the same names
        options = {
            "factor": factor, "original_max_len": original_max_len, "beta_fast": beta_fast, "beta_slow": beta_slow,
            "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor, "short_factor": short_factor,
            "long_factor": long_factor, "attention_factor": attention_factor, "mscale": mscale,
            "mscale_all_dim": mscale_all_dim, "truncate": truncate, "max_len": max_len, "dynamic_update": dynamic_update,
        }
        if isinstance(scaling, RopeScaling):
            # a scaling parameter given beside a RopeScaling would be ignored
            defaults = {f.name: f.default for f in dataclasses.fields(RopeScaling)}
            given = [
                name for name, value in options.items()
                if (value is not None if defaults[name] is None else bool(value != defaults[name]))
            ]
            if given:
                raise ValueError(
                    f"{', '.join(f'`{name}`' for name in given)} belong in the RopeScaling given as `scaling` "
                    f"(beside it they would be ignored); pass them to RopeScaling, or pass `scaling` as a kind"
                )
            self.scaling = scaling
        else:
            self.scaling = RopeScaling(scaling, **options)
        self.scaling.check_width(self.rot_dim)
        self.p = check_float("p", p, minimum=0.0, maximum=1.0)
        self._longest_len = self.scaling.original_max_len or 0  # grow-only dynamic NTK's state
        self._cache_len = check_int("cache_len", cache_len, minimum=1)
        check_table_fits({"cache_len": cache_len}, (2, cache_len, self.rot_dim // 2), torch.float32, device)
        self._cache_start = 0
        self._cache_key: tuple | None = None
        #: (the window's cos table, (first row, n), its rows as (1, n, rot/2) and (1, 1, n, rot/2) views)
        self._rows_memo: tuple | None = None
        self.register_buffer("cos_cached", torch.empty(0, self.rot_dim // 2, device=device), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0, self.rot_dim // 2, device=device), persistent=False)
        self.init_non_persistent_buffers(device)

    # -- tables ---------------------------------------------------------------------------------
    def _length_key(self, seq_len: int) -> float:
        return self.scaling.length_key(self.rot_dim, self.base, seq_len)

    def _grown(self, seq_len: int | torch.Tensor) -> int | torch.Tensor:
        """The length the scaling sees: ``seq_len``, or for grow-only dynamic NTK the longest since a reset.

        Explicit positions cost one host sync in eager mode (as in transformers); a compiled graph
        reads the state without advancing it."""
        if not self.scaling.grow_only:
            return seq_len
        if isinstance(seq_len, torch.Tensor):
            if torch.compiler.is_compiling():
                return self.scaling.grown_length(self._longest_len, seq_len)
            seq_len = int(seq_len)
        self._longest_len = self.scaling.grown_length(self._longest_len, seq_len)
        return self._longest_len

    def inverse_frequencies(self, seq_len: int | torch.Tensor | None = None, device=None) -> torch.Tensor:
        """``(rot_dim // 2,)`` scaled inverse frequencies (float64), p-RoPE's slowest bands zeroed."""
        inv_freq = self.scaling.inverse_frequencies(self.rot_dim, self.base, seq_len=seq_len, device=device)
        return keep_highest_frequencies(inv_freq, self.p)

    def init_non_persistent_buffers(self, device: torch.device | None = None, seq_len: int | None = None) -> None:
        """(Re)build the cos/sin window: positions ``start .. start + cache_len - 1``."""
        start = self._cache_start
        seq_len = seq_len if seq_len is not None else start + self._cache_len
        inv_freq = self.inverse_frequencies(seq_len, device)
        positions = torch.arange(start, start + self._cache_len, device=device)
        self.cos_cached, self.sin_cached = cos_sin(positions, inv_freq, scale=self.scaling.attention_factor)
        self._cache_key = (start, self._cache_len, self._length_key(seq_len), self.cos_cached.device)
        self._rows_memo = None

    def cos_sin(
        self, positions: Positions, *, seq_len: int | torch.Tensor | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of shape ``(b | 1, n, rot/2)`` for ``positions``, in ``dtype`` (a float dtype;
        float32, the cached window's, by default).

        ``seq_len`` (the length the dynamic NTK scaling is computed for) defaults to one past the last
        position.
        """
        if dtype != torch.float32:
            check_float_dtype("dtype", dtype)
        device = self.cos_cached.device
        if positions.is_implicit:
            check_max_position("offset", positions.end - 1)
            length = self._grown(positions.end if seq_len is None else seq_len)
            # the cached window is float32: other dtypes compute their angles from the positions
            if dtype == torch.float32 and not torch.compiler.is_compiling():
                return self._window_rows(self._window(positions, length), positions.n)[:2]
            seq_len = length
        pos = positions.tensor(device)
        looked_up = self._looked_up(pos, seq_len, dtype)
        if looked_up is not None:
            return looked_up
        if seq_len is None and self.scaling.depends_on_length and pos.numel():
            seq_len = self._grown(length_of(pos))  # a 0-d tensor: no host sync (but for grow-only)
        inv_freq = self.inverse_frequencies(seq_len, device)
        if pos.ndim == 2 and pos.shape[0] > 1 and pos.stride(0) == 0:
            # one row expanded over the batch (transformers' position_ids): computed once, expanded back
            cos, sin = cos_sin(pos[:1], inv_freq, scale=self.scaling.attention_factor, dtype=dtype)
            return cos.expand(pos.shape[0], -1, -1), sin.expand(pos.shape[0], -1, -1)
        return cos_sin(pos, inv_freq, scale=self.scaling.attention_factor, dtype=dtype)

    def _window(self, positions: Positions, length: int) -> int:
        """Make the cached window cover the implicit ``positions`` for the scaling's ``length`` (moved
        or rebuilt when needed); returns the row of the first position."""
        first, last = positions.offset - self._cache_start, positions.end - self._cache_start
        if first < 0 or last > self._cache_len:
            self._cache_start, self._cache_len = table_window(positions, self._cache_len)
            first = 0
        key = (self._cache_start, self._cache_len, self._length_key(length), self.cos_cached.device)
        if key != self._cache_key:
            self.rebuild_tables(self.cos_cached.device, seq_len=length)
        return first

    def _window_rows(self, first: int, n: int) -> tuple[torch.Tensor, ...]:
        """Rows ``first .. first + n - 1`` of the cached window as ``(1, n, rot/2)`` cos and sin, then as
        ``(1, 1, n, rot/2)``: views, remembered while the window stays (eager code only; making them
        costs more than the rotation of a short input)."""
        cos_table = self.cos_cached
        memo = self._rows_memo
        if memo is not None and memo[0] is cos_table and memo[1] == (first, n):
            return memo[2]
        with building_tables():  # views made under inference mode could not be saved for a later backward
            cos, sin = cos_table[first : first + n].unsqueeze(0), self.sin_cached[first : first + n].unsqueeze(0)
            rows = (cos, sin, cos.unsqueeze(1), sin.unsqueeze(1))
        self._rows_memo = (cos_table, (first, n), rows)
        return rows

    def _per_head(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b | 1, n, f)`` cos and sin as ``(b | 1, 1, n, f)``, to broadcast over heads."""
        memo = None if torch.compiler.is_compiling() else self._rows_memo
        if memo is not None and memo[2][0] is cos and memo[2][1] is sin:
            return memo[2][2], memo[2][3]
        return cos.unsqueeze(1), sin.unsqueeze(1)

    def _looked_up(
        self, pos: torch.Tensor, seq_len: int | torch.Tensor | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """cos/sin of explicit integer positions on the CPU gathered from the cached window (the
        implicit path's table, moved to cover them), or None where that does not apply: other devices
        (reading the range is a host sync there), float positions, float64, a compiled graph, a
        caller's own ``seq_len``, or positions spread much wider than their count (the window would
        be mostly unused)."""
        if (
            dtype != torch.float32 or pos.device.type != "cpu" or pos.is_floating_point() or pos.numel() == 0
            or seq_len is not None or torch.compiler.is_compiling()
        ):
            return None
        lo, hi = (int(v) for v in pos.aminmax())
        if lo < 0 or hi > MAX_POSITION or hi - lo >= max(self._cache_len, 2 * pos.shape[-1]):
            return None
        # the scaling's length is one past the last position, as for explicit positions computed directly
        self._window(Positions(hi - lo + 1, lo), self._grown(hi + 1))
        rows = pos[:1] if pos.ndim == 2 and pos.shape[0] > 1 and pos.stride(0) == 0 else pos  # one expanded row
        if rows.dtype not in INDEX_DTYPES:
            rows = rows.long()  # index_select takes no other index dtype (uint8, int8, int16)
        index = (rows - self._cache_start).reshape(-1)
        # (window, rot/2) rows at the (b | 1, n) positions -> (b | 1, n, rot/2)
        cos = self.cos_cached.index_select(0, index).view(*rows.shape, -1)
        sin = self.sin_cached.index_select(0, index).view(*rows.shape, -1)
        return cos.expand(*pos.shape, -1), sin.expand(*pos.shape, -1)

    # -- application ----------------------------------------------------------------------------
    def _cos_sin_for(self, t: torch.Tensor, positions: Positions, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        if t.dtype == torch.float64:
            # float64 angles straight from the positions: the cached window is float32
            if positions.is_implicit:
                positions = Positions(positions.n, positions.offset, positions.tensor(self.cos_cached.device))
            return self.cos_sin(positions, dtype=torch.float64, **kw)
        return self.cos_sin(positions, **kw)

    def rotate_queries_or_keys(self, t: torch.Tensor, positions: Positions, **kw) -> torch.Tensor:
        """t: ``(b, h, n, head_dim)`` rotated at ``positions``."""
        cos, sin = self._per_head(*self._cos_sin_for(t, positions, **kw))
        return apply_rotary(t, cos, sin, interleaved=self.interleaved)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
        """x: ``(b, h, n, head_dim)`` -> rotated, same shape and dtype."""
        check_float_tensor("x", x, ndim=4)
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"`x` must have last dimension head_dim={self.head_dim}, got {x.shape[-1]}")
        pos = resolve_positions(positions, n=x.shape[-2], offset=offset, batch=x.shape[0], device=x.device)
        return self.rotate_queries_or_keys(x, Positions(x.shape[-2], offset, None if positions is None else pos))

    def rotate(self, q, k, *, q_positions: Positions, k_positions: Positions):
        if q.shape[-1] != self.head_dim or k.shape[-1] != self.head_dim:  # two comparisons on the hot path
            check_head_width(self.head_dim, q=q, k=k)
        if q.shape[-2] != q_positions.n or k.shape[-2] != k_positions.n:
            check_token_count(q=(q, q_positions), k=(k, k_positions))
        # the same positions (self-attention without a cache): one table look-up, one fused call
        if _same_positions(q_positions, k_positions):
            # float64 angles where either is float64, as apply_rope_qk
            cos, sin = self._per_head(*self._cos_sin_for(k if k.dtype == torch.float64 else q, q_positions))
            return rotate_qk(q, k, cos, sin, interleaved=self.interleaved)
        q_positions, k_positions, kw = self._one_length(q_positions, k_positions)
        q = self.rotate_queries_or_keys(q, q_positions, **kw)
        k = self.rotate_queries_or_keys(k, k_positions, **kw)
        return q, k

    def _one_length(self, q_positions: Positions, k_positions: Positions) -> tuple[Positions, Positions, dict]:
        """Queries and keys at different positions, and the ``seq_len`` both are rotated for: a
        length-dependent scaling (dynamic NTK's base, LongRoPE's factor set) follows the furthest
        position of either side, as a full pass over them would, so the scores still depend on
        ``i - j`` only. Explicit on both sides when either is (the length is then a 0-d tensor)."""
        if not self.scaling.depends_on_length:
            return q_positions, k_positions, {}
        if q_positions.is_implicit and k_positions.is_implicit:
            return q_positions, k_positions, {"seq_len": self._grown(max(q_positions.end, k_positions.end))}
        device = (k_positions.explicit if q_positions.is_implicit else q_positions.explicit).device
        sides = [Positions(p.n, p.offset, p.tensor(device)) for p in (q_positions, k_positions)]
        ends = [length_of(p.explicit) for p in sides if p.n and p.explicit.numel()]
        if not ends:
            return sides[0], sides[1], {}
        return sides[0], sides[1], {"seq_len": self._grown(ends[0] if len(ends) == 1 else torch.maximum(*ends))}

    def rotate_qkv(self, qkv, *, q_positions: Positions, k_positions: Positions):
        if qkv.shape[-1] != self.head_dim:
            check_head_width(self.head_dim, qkv=qkv)
        if qkv.shape[-2] != q_positions.n or qkv.shape[-2] != k_positions.n:
            check_token_count(q=(qkv[0], q_positions), k=(qkv[1], k_positions))
        if not _same_positions(q_positions, k_positions):
            return super().rotate_qkv(qkv, q_positions=q_positions, k_positions=k_positions)
        cos, sin = self._per_head(*self._cos_sin_for(qkv, q_positions))
        return rotate_qkv(qkv, cos, sin, interleaved=self.interleaved)

    def extra_repr(self) -> str:
        s = f"head_dim={self.head_dim}, rot_dim={self.rot_dim}, base={self.base}, interleaved={self.interleaved}"
        if self.scaling.kind != "none":
            s += f", scaling={self.scaling}"
        if self.p != 1.0:
            s += f", p={self.p}"
        return s
