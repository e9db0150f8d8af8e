"""The benchmark cases behind ``posenc bench``.

Each case builds the inputs once, checks that every implementation's output agrees with posenc's
(a peer that disagrees is reported, not timed as if equal), then times all of them interleaved.
Memory-bound cases also time ``x.clone()`` of the same tensors: the floor every ratio refers to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from posenc.bench import peers
from posenc.bench.timing import interleaved_times, peak_memory_bytes
from posenc.core.positions import Positions


@dataclass
class Row:
    case: str
    impl: str
    median_ms: float | None = None
    ratio: float | None = None  #: time / reference time of the case (clone, posenc or no encoding)
    reference: str = ""
    agrees: bool | None = None
    note: str = ""
    peak_mb: float | None = None  #: peak memory allocated by one call, when the case measures it
    first_call_s: float | None = None  #: the first (untimed) call, which includes any kernel compilation
    cpu_ms: float | None = None  #: median process CPU time of a call (see :func:`~posenc.bench.timing.interleaved_times`)
    cpu_ratio: float | None = None  #: CPU time / the reference's CPU time

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Case:
    name: str
    reference: str  #: the implementation every ratio divides by
    impls: dict[str, Callable[[], Callable[[], object]]]  #: name -> factory of the timed callable
    agree_with: dict[str, str] = field(default_factory=dict)  #: impl -> impl whose output it must match
    atol: float = 1e-5
    memory: bool = False  #: also measure each implementation's peak memory (one extra call)
    skip: dict[str, str] = field(default_factory=dict)  #: impl -> why it is not run at this size
    max_rounds: int | None = None  #: fewer rounds for cases whose slow peer takes seconds a call
    warmup: int = 2  #: untimed calls of each implementation before the rounds (after its first call)

    def run(self, *, rounds: int, device: torch.device | str = "cpu") -> list[Row]:
        """``device``: the one the inputs live on, synchronised around each timed call (CUDA runs asynchronously)."""
        device = torch.device(device)
        fns, rows, outputs = {}, {}, {}
        for impl, factory in self.impls.items():
            if impl in self.skip:
                rows[impl] = Row(self.name, impl, reference=self.reference, note=f"not run: {self.skip[impl]}")
                continue
            try:
                fn = factory()
            except peers.PeerMissing as err:
                rows[impl] = Row(self.name, impl, reference=self.reference, note=f"skipped: {err}")
                continue
            start = time.perf_counter()
            outputs[impl] = fn()
            first_call_s = time.perf_counter() - start
            agrees = None
            if impl in self.agree_with and self.agree_with[impl] in outputs:
                agrees = _close(outputs[impl], outputs[self.agree_with[impl]], self.atol)
            rows[impl] = Row(self.name, impl, reference=self.reference, agrees=agrees, first_call_s=first_call_s)
            if agrees is False:
                rows[impl].note = f"output differs from {self.agree_with[impl]}: not timed"
                continue
            fns[impl] = fn
            if self.memory:
                rows[impl].peak_mb = peak_memory_bytes(fn, device) / 2**20
        times = interleaved_times(fns, rounds=min(rounds, self.max_rounds or rounds), warmup=self.warmup, device=device)
        ref, ref_cpu = times.get(self.reference, (None, None))
        for impl, (t, cpu) in times.items():
            rows[impl].median_ms, rows[impl].cpu_ms = t * 1e3, cpu * 1e3
            rows[impl].ratio = t / ref if ref else None
            rows[impl].cpu_ratio = cpu / ref_cpu if ref_cpu else None
        return list(rows.values())


def _close(a, b, atol: float) -> bool:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return all(x.shape == y.shape and torch.allclose(x.float(), y.float(), atol=atol, rtol=atol) for x, y in zip(a, b))


def sinusoidal_case(shape: tuple[int, ...], channels: int, device) -> Case:
    from posenc.functional import sinusoidal

    per_axis = channels // len(shape) // 2 * 2  # positional-encodings' per-axis width for these sizes

    def ours():
        # positional-encodings' layout: per axis adjacent sin/cos pairs, axes concatenated; each
        # axis's 1-D table is computed once and broadcast over the grid
        def build():
            tables = []
            for axis, size in enumerate(shape):
                view = [1] * len(shape) + [per_axis]
                view[axis] = size
                table = sinusoidal(torch.arange(size, device=device), per_axis, interleaved=True)
                tables.append(table.view(view).expand(*shape, per_axis))
            return torch.cat(tables, dim=-1)

        return build

    name = f"sinusoidal {len(shape)}-D table {'x'.join(map(str, shape))} c{channels}"
    return Case(
        name,
        "posenc",
        {"posenc": ours, "positional-encodings": lambda: peers.sinusoidal_positional_encodings(shape, channels, device)},
        agree_with={"positional-encodings": "posenc"},
        atol=2e-3,  # positional-encodings forms angles in float32
    )


def bias_cases(heads: int, n: int, device) -> list[Case]:
    """ALiBi built from scratch (both caches cleared every call) and from the cache (both libraries
    keep one); T5 (neither caches the learned bias itself)."""
    from posenc.bias import ALiBi, T5RelativeBias

    alibi = ALiBi(heads, causal=False, device=device)
    t5 = T5RelativeBias(heads, causal=True, device=device)
    pos = Positions(n)

    def alibi_ours(rebuild: bool):
        def call():
            if rebuild:
                alibi._cache_len = 0
            return alibi.score_bias(None, None, q_positions=pos, k_positions=pos)[0]

        return lambda: call

    def alibi_peer(rebuild: bool):
        def factory():
            build = peers.alibi_x_transformers(heads, n, device, rebuild=rebuild)
            return build

        return factory

    return [
        Case(
            f"alibi bias build h{heads} n{n}",
            "posenc",
            {"posenc": alibi_ours(True), "x-transformers": alibi_peer(True)},
            agree_with={"x-transformers": "posenc"},
        ),
        Case(
            f"alibi bias cached h{heads} n{n}",
            "posenc",
            {"posenc": alibi_ours(False), "x-transformers": alibi_peer(False)},
            agree_with={"x-transformers": "posenc"},
        ),
        Case(
            f"t5 bias h{heads} n{n}",
            "posenc",
            {
                "posenc": lambda: _no_grad(lambda: t5.score_bias(None, None, q_positions=pos, k_positions=pos)[0]),
                "x-transformers": lambda: _no_grad(peers.t5_x_transformers(heads, n, True, t5.bias.weight.detach())),
            },
            agree_with={"x-transformers": "posenc"},
        ),
    ]


def _no_grad(fn):
    def wrapped():
        with torch.no_grad():
            return fn()

    return wrapped


def training_step_case(
    position: str, *, batch: int, n: int, dim: int, depth: int, heads: int, device, dtype: torch.dtype = torch.float32
) -> Case:
    """Tokens per second of one training step, relative to the same model with no encoding."""
    from posenc.models import Transformer

    def factory(name: str):
        def build():
            torch.manual_seed(0)
            model = Transformer(256, dim, depth, heads, position=name, causal=True).to(device=device, dtype=dtype)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            tokens = torch.randint(0, 256, (batch, n + 1), device=device)

            def step():
                logits = model(tokens[:, :-1])
                loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            return step

        return build

    suffix = "" if dtype == torch.float32 else f" {str(dtype).removeprefix('torch.')}"
    return Case(
        f"train step {position} b{batch} n{n} d{dim} L{depth}{suffix}",
        "no encoding",
        {"no encoding": factory("none"), f"posenc {position}": factory(position)},
    )


def shaw_case(n: int, *, heads: int = 4, d: int = 64, max_distance: int = 16, naive_limit: int = 2048, device="cpu") -> Case:
    """Shaw et al.'s attention (keys and values) against attention with no encoding and the naive
    ``(n, m, d)`` form; time and peak memory, no gradient."""
    from posenc.relative.shaw import clipped_offsets, shaw_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, d, generator=gen).to(device) for _ in range(3))
    rel_k, rel_v = (torch.randn(2 * max_distance + 1, d, generator=gen).to(device) for _ in range(2))

    def naive():
        # the textbook form: a^K_ij and a^V_ij materialised for every pair
        index = clipped_offsets(torch.arange(n).unsqueeze(0) - torch.arange(n).unsqueeze(1), max_distance).to(device)
        a_k, a_v = rel_k[index], rel_v[index]  # (n, m, d)
        logits = (q @ k.transpose(-1, -2) + torch.einsum("bhnd,nmd->bhnm", q, a_k)) / d**0.5
        w = logits.softmax(-1)
        return w @ v + torch.einsum("bhnm,nmd->bhnd", w, a_v)

    naive_bytes = 2 * n * n * d * 4
    return Case(
        f"shaw attention n{n} h{heads} d{d}",
        "attention, no encoding",
        {
            "attention, no encoding": lambda: _no_grad(lambda: F.scaled_dot_product_attention(q, k, v)),
            "posenc shaw_attention": lambda: _no_grad(lambda: shaw_attention(q, k, v, rel_k, rel_v, max_distance=max_distance)),
            "naive (n, m, d) tables": lambda: _no_grad(naive),
        },
        agree_with={"naive (n, m, d) tables": "posenc shaw_attention"},
        atol=1e-4,
        memory=True,
        skip={} if n <= naive_limit else {"naive (n, m, d) tables": f"its two tables alone take {naive_bytes / 2**30:.1f} GiB"},
    )


def transformer_xl_case(n: int, *, heads: int = 4, d: int = 64, naive_limit: int = 512, device="cpu") -> Case:
    """Transformer-XL's relative attention (terms (a)-(d)) against attention with no encoding and the
    naive form with ``W_R R_{i-j}`` materialised for every pair, ``(n, m, h, d)``; time and peak
    memory, no gradient."""
    from posenc.relative.transformer_xl import TransformerXLRelative

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, d, generator=gen).to(device) for _ in range(3))
    torch.manual_seed(0)
    xl = TransformerXLRelative(heads * d, heads, d, device=device)
    pos = Positions(n)

    def ours():
        bias = xl.score_bias(q, k, q_positions=pos, k_positions=pos)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    def naive():
        # every pair's projected relative embedding, (n, m, h, d)
        distances = torch.arange(n, device=device).unsqueeze(1) - torch.arange(n, device=device)
        table = xl.projected(distances)
        qv = q + xl.v[:, None]
        scores = torch.einsum("bhnd,nmhd->bhnm", qv, table) + torch.einsum("hd,bhmd->bhm", xl.u, k).unsqueeze(-2)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=scores / d**0.5)

    naive_bytes = n * n * heads * d * 4
    return Case(
        f"transformer_xl attention n{n} h{heads} d{d}",
        "attention, no encoding",
        {
            "attention, no encoding": lambda: _no_grad(lambda: F.scaled_dot_product_attention(q, k, v)),
            "posenc transformer_xl": lambda: _no_grad(ours),
            "naive (n, m, h, d) table": lambda: _no_grad(naive),
        },
        agree_with={"naive (n, m, h, d) table": "posenc transformer_xl"},
        atol=1e-4,
        memory=True,
        skip={} if n <= naive_limit else {"naive (n, m, h, d) table": f"its table alone takes {naive_bytes / 2**30:.1f} GiB"},
    )


def rope_cos_sin_case(kind: str, b: int, n: int, d: int, device, dtype: torch.dtype = torch.float32) -> Case:
    """cos/sin construction of a scaled RoPE (``llama3``, ``longrope``, ``yarn``) from ``(b, n)``
    position ids, as a transformers model asks its rotary module each forward: posenc's module behind
    ``use_posenc_rotary`` against transformers' own; plus posenc's cached table for implicit positions.
    The ids are a materialised ``(b, n)`` tensor (not a stride-0 expansion of one row), the
    activations ``x`` (whose dtype the cos/sin take) in ``dtype``."""
    from posenc.integrations.transformers import PosencRotaryEmbedding
    from posenc.rotary import from_hf_config

    half = d // 2
    rope = {
        "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": max(n // 4, 1), "rope_theta": 500000.0},
        # past the trained length: the long factors
        "longrope": {"rope_type": "longrope", "original_max_position_embeddings": max(n // 2, 1), "rope_theta": 10000.0,
                     "factor": n / max(n // 2, 1),
                     "short_factor": [1.0 + i / half for i in range(half)],
                     "long_factor": [1.0 + 8 * i / half for i in range(half)]},
        "yarn": {"rope_type": "yarn", "factor": n / max(n // 4, 1), "original_max_position_embeddings": max(n // 4, 1),
                 "rope_theta": 10000.0},
    }[kind]
    config = {"hidden_size": 4 * d, "num_attention_heads": 4, "head_dim": d, "max_position_embeddings": n,
              "rope_parameters": rope}
    x = torch.zeros(b, n, 4 * d, device=device, dtype=dtype)
    position_ids = torch.arange(n, device=device).expand(b, n).contiguous()
    encoding = from_hf_config(config).to(device)
    module = PosencRotaryEmbedding(encoding)

    def cached():
        # the model's own path: implicit positions slice the float32 table built once
        cos, sin = encoding.cos_sin(Positions(n))
        cos, sin = torch.cat((cos, cos), -1).to(dtype), torch.cat((sin, sin), -1).to(dtype)
        return cos.expand(b, n, d), sin.expand(b, n, d)

    return Case(
        f"rope cos/sin {kind} b{b} n{n} d{d} {str(dtype).removeprefix('torch.')}",
        "posenc (position_ids)",
        {
            "posenc (position_ids)": lambda: _no_grad(lambda: module(x, position_ids)),
            "transformers (position_ids)": lambda: _no_grad(peers.rope_cos_sin_transformers(config, x, position_ids)),
            "posenc (implicit, cached table)": lambda: _no_grad(cached),
        },
        agree_with={
            "transformers (position_ids)": "posenc (position_ids)",
            "posenc (implicit, cached table)": "posenc (position_ids)",
        },
        atol=2e-3 if dtype == torch.float32 else 1e-2,  # transformers forms angles in float32
    )


def _causal_layer(name: str, n: int, rows: int, heads: int, d: int, device, **encoding_kwargs):
    """One causal attention layer, b1: q ``(1, h, rows, d)`` as the last ``rows`` of ``n`` keys, k and v
    ``(1, h, n, d)``. Returns encoding ``name`` built for that model, no encoding, and
    ``run(position, backend)``: a factory of the timed :func:`posenc.attention.attend` call (no gradients)."""
    from posenc.attention import MaskSpec, attend
    from posenc.core.registry import create, create_for_model

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, rows, d, generator=gen).to(device)
    k, v = (torch.randn(1, heads, n, d, generator=gen).to(device) for _ in range(2))
    torch.manual_seed(0)
    model_args = {"dim": heads * d, "heads": heads, "head_dim": d, "causal": True}
    encoding = create_for_model(name, model_args=model_args, **encoding_kwargs).to(device).requires_grad_(False)
    q_pos, k_pos, mask = Positions(rows, offset=n - rows), Positions(n), MaskSpec(causal=True)

    def run(position, backend):
        return lambda: _no_grad(
            lambda: attend(q, k, v, position=position, q_positions=q_pos, k_positions=k_pos, mask=mask, backend=backend)
        )

    return encoding, create("none"), run


def long_context_case(name: str, n: int, *, heads: int = 8, d: int = 64, backend: str = "blocked", device="cpu") -> Case:
    """Causal inference of one attention layer, b1, with encoding ``name`` against no encoding on the
    same backend (:func:`posenc.attention.attend`); time and peak memory. With implicit positions
    neither side holds an ``(n, m)`` table on the blocked or flex backends."""
    encoding, none, run = _causal_layer(name, n, n, heads, d, device)
    reference = f"no encoding ({backend})"
    return Case(
        f"long context {name} {backend} n{n} h{heads} d{d}",
        reference,
        {reference: run(none, backend), f"posenc {name} ({backend})": run(encoding, backend)},
        memory=True,
        # a call takes seconds on CPU at n = 16,384; the first call and the memory probe warm it up
        max_rounds=3 if n > 4096 else None,
        warmup=0 if n > 4096 else 2,
    )


def flex_cpu_case(name: str, n: int, *, decode: bool = False, heads: int = 8, d: int = 64, device="cpu") -> Case:
    """CPU inference of one causal attention layer, b1, with encoding ``name``: the blocked kernel
    against compiled FlexAttention (``first_call_s`` of the flex row includes its compile, unless an
    earlier case of the same kind compiled it) and no encoding on each. ``decode``: one query row over
    ``n`` keys (a step of cached decoding). Shaw runs its key term alone (FlexAttention takes no value
    term)."""
    extra = {"values": False} if name == "shaw" else {}
    encoding, none, run = _causal_layer(name, n, 1 if decode else n, heads, d, device, **extra)
    reference = f"posenc {name} (blocked)"
    return Case(
        f"cpu inference {name} {'decode 1 row over' if decode else 'causal'} n{n} h{heads} d{d}",
        reference,
        {
            reference: run(encoding, "blocked"),
            f"posenc {name} (flex, compiled)": run(encoding, "flex"),
            "no encoding (blocked)": run(none, "blocked"),
            "no encoding (flex, compiled)": run(none, "flex"),
        },
        agree_with={f"posenc {name} (flex, compiled)": reference, "no encoding (flex, compiled)": "no encoding (blocked)"},
        max_rounds=5 if n > 2048 and not decode else None,
    )


def flex_training_case(
    name: str,
    n: int,
    *,
    heads: int = 8,
    d: int = 64,
    dtype: torch.dtype = torch.bfloat16,
    device="cuda",
    backends: tuple[str, str] = ("sdpa", "flex"),
) -> Case:
    """Forward + backward of one causal attention layer, b1, q, k, v ``(1, h, n, d)`` in ``dtype``: encoding
    ``name`` on the first backend (SDPA with the encoding's ``(1, h, n, n)`` bias tensor) against the
    second (FlexAttention with its ``score_mod``), and no encoding on each; time and peak memory. Each
    call returns the output and the gradients of q, k, v and of the encoding's parameters (T5's and
    Shaw's learned tables), so the agreement check also shows that those tables receive the same
    gradients through FlexAttention. A GPU case: FlexAttention has no backward on CPU (torch 2.13).
    Shaw runs its key term alone (FlexAttention takes no value term)."""
    from posenc.attention import MaskSpec, attend
    from posenc.core.registry import create, create_for_model

    gen = torch.Generator().manual_seed(0)
    q, k, v, grad = (torch.randn(1, heads, n, d, generator=gen).to(device=device, dtype=dtype) for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    torch.manual_seed(0)
    extra = {"values": False} if name == "shaw" else {}
    model_args = {"dim": heads * d, "heads": heads, "head_dim": d, "causal": True}
    encoding = create_for_model(name, model_args=model_args, **extra).to(device)
    pos, mask = Positions(n), MaskSpec(causal=True)

    def run(position, backend):
        params = [p for p in position.parameters() if p.requires_grad]

        def step():
            for t in (q, k, v, *params):
                t.grad = None
            out = attend(q, k, v, position=position, q_positions=pos, k_positions=pos, mask=mask, backend=backend)
            out.backward(grad)
            return (out.detach(), q.grad, k.grad, v.grad, *(p.grad for p in params))

        return lambda: step

    first, second = backends
    ours = {b: f"posenc {name} ({b}{', bias tensor' if b == 'sdpa' else ''})" for b in backends}
    nones = {b: f"no encoding ({b})" for b in backends}
    none = create("none")
    return Case(
        f"train attention {name} n{n} h{heads} d{d} {str(dtype).removeprefix('torch.')}",
        ours[first],
        {ours[first]: run(encoding, first), ours[second]: run(encoding, second),
         nones[first]: run(none, first), nones[second]: run(none, second)},
        agree_with={ours[second]: ours[first], nones[second]: nones[first]},
        atol=3e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-4,
        memory=True,
        max_rounds=5 if n > 4096 else None,
    )


def hash_grid_cases(points: int, *, levels: int = 16, features: int = 2, log2_table: int = 19, device="cpu") -> list[Case]:
    """Instant-NGP's hash encoding of 3-D points: posenc's batched levels against the per-level,
    per-corner transcription (and tiny-cuda-nn on CUDA), forward alone and forward + backward."""
    from posenc.coordinate import HashGrid

    torch.manual_seed(0)
    grid = HashGrid(3, levels, features, log2_table, 16, 512, device=device)
    x = torch.rand(points, 3, device=device)
    grad = torch.randn(points, grid.out_dim, device=device)

    def forward(run):
        return _no_grad(run)

    def forward_backward(run):
        def step():
            grid.table.grad = None
            run().backward(grad)
            return grid.table.grad

        return step

    size = f"{points} pts L{levels} F{features} T2^{log2_table}"
    cases = []
    for label, wrap in (("forward", forward), ("forward+backward", forward_backward)):
        impls = {
            "posenc": lambda wrap=wrap: wrap(lambda: grid(x)),
            "per-level loop": lambda wrap=wrap: wrap(peers.hash_grid_per_level(x, grid)),
        }
        if label == "forward":
            impls["tiny-cuda-nn"] = lambda: _no_grad(peers.hash_grid_tcnn(x, grid))
        cases.append(
            Case(
                f"hash grid 3-D {label} {size}", "posenc", impls, agree_with={"per-level loop": "posenc"}, atol=1e-5,
                max_rounds=3,
            )
        )
    return cases


def hash_grid_memory_cases(sizes: list[tuple[int, int]], *, log2_table: int = 14, device="cpu") -> list[Case]:
    """Peak memory of posenc's hash encoding, forward + backward, at several ``(points, levels)``: linear
    in points x levels (the small ``2^log2_table`` table keeps the table gradient's fixed share small)."""
    from posenc.coordinate import HashGrid

    cases = []
    for points, levels in sizes:
        torch.manual_seed(0)
        grid = HashGrid(3, levels, 2, log2_table, 16, 512, device=device)
        x = torch.rand(points, 3, device=device)
        grad = torch.randn(points, grid.out_dim, device=device)

        def step(grid=grid, x=x, grad=grad):
            grid.table.grad = None
            grid(x).backward(grad)
            return grid.table.grad

        cases.append(Case(f"hash grid 3-D memory {points} pts L{levels} T2^{log2_table}", "posenc",
                          {"posenc": lambda step=step: step}, memory=True, max_rounds=1))
    return cases
