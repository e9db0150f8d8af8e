"""Adapters to the peer libraries, each returning a zero-argument callable for the same inputs.

A peer that is not installed raises :class:`PeerMissing` and its row is reported as skipped.
Install them with ``pip install "posenc[bench]"``, transformers with ``"posenc[hf]"`` and, on a GPU,
``"posenc[bench-gpu]"``.
"""

from __future__ import annotations

import importlib

import torch


class PeerMissing(RuntimeError):
    """The peer library is not installed."""


#: top-level package -> how to install it
_INSTALL = {
    "rotary_embedding_torch": 'pip install "posenc[bench]"',
    "x_transformers": 'pip install "posenc[bench]"',
    "positional_encodings": 'pip install "posenc[bench]"',
    "transformers": 'pip install "posenc[hf]"',
    "flash_attn": 'pip install "posenc[bench-gpu]" (CUDA builds of torch)',
    "liger_kernel": 'pip install "posenc[bench-gpu]" (CUDA builds of torch)',
    "tinycudann": "tiny-cuda-nn's PyTorch bindings, built from its repository for a CUDA device",
}


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        how = _INSTALL.get(module.split(".")[0], "install it")
        raise PeerMissing(f"{module} is not installed ({how})") from err


# --- RoPE -----------------------------------------------------------------------------------------
def rope_rotary_embedding_torch(q: torch.Tensor, k: torch.Tensor):
    """rotary-embedding-torch, adjacent pairs (its default)."""
    ret = require("rotary_embedding_torch")
    rot = ret.RotaryEmbedding(dim=q.shape[-1]).to(q.device)
    return lambda: (rot.rotate_queries_or_keys(q), rot.rotate_queries_or_keys(k))


def rope_x_transformers(q: torch.Tensor, k: torch.Tensor):
    """x-transformers: frequencies computed once, ``apply_rotary_pos_emb`` per call (adjacent pairs)."""
    xt = require("x_transformers.x_transformers")
    rot = xt.RotaryEmbedding(q.shape[-1]).to(q.device)
    freqs, _ = rot.forward_from_seq_len(q.shape[-2])
    return lambda: (xt.apply_rotary_pos_emb(q, freqs), xt.apply_rotary_pos_emb(k, freqs))


def rope_rotate_half(q: torch.Tensor, k: torch.Tensor):
    """A plain-PyTorch transcription of Hugging Face Llama's ``rotate_half`` RoPE (split halves)."""
    d = q.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=q.device).float() / d))
    freqs = torch.outer(torch.arange(q.shape[-2], device=q.device).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)

    def rotate_half(x):
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    return lambda: (q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin)


def _half_angles(q: torch.Tensor) -> torch.Tensor:
    """float32 angles ``(n, d/2)`` as the GPU peers form them (float32 products)."""
    d = q.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=q.device).float() / d))
    return torch.outer(torch.arange(q.shape[-2], device=q.device).float(), inv_freq)


def rope_flash_attn(q: torch.Tensor, k: torch.Tensor):
    """flash-attn's Triton ``apply_rotary_emb`` (split halves), cos/sin in the input dtype as its own
    ``RotaryEmbedding`` caches them; it takes ``(b, n, h, d)``, so q and k are viewed transposed."""
    rotary = require("flash_attn.layers.rotary")
    freqs = _half_angles(q)
    cos, sin = freqs.cos().to(q.dtype), freqs.sin().to(q.dtype)

    def call():
        # (b, h, n, d) -> (b, n, h, d) views and back
        rq = rotary.apply_rotary_emb(q.transpose(1, 2), cos, sin, interleaved=False)
        rk = rotary.apply_rotary_emb(k.transpose(1, 2), cos, sin, interleaved=False)
        return rq.transpose(1, 2), rk.transpose(1, 2)

    return call


def rope_liger(q: torch.Tensor, k: torch.Tensor):
    """Liger's Triton RoPE kernel (split halves, q and k in one call), Hugging Face's cos/sin layout."""
    liger = require("liger_kernel.transformers.rope")
    freqs = _half_angles(q)
    emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(0)  # (1, n, d)
    cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
    return lambda: liger.liger_rotary_pos_emb(q, k, cos, sin)


# --- sinusoidal tables ----------------------------------------------------------------------------
def sinusoidal_positional_encodings(shape: tuple[int, ...], channels: int, device):
    """positional-encodings' PositionalEncoding{1,2,3}D, its cache cleared so each call builds the table."""
    pe = require("positional_encodings.torch_encodings")
    cls = {1: pe.PositionalEncoding1D, 2: pe.PositionalEncoding2D, 3: pe.PositionalEncoding3D}[len(shape)]
    module = cls(channels).to(device)
    x = torch.zeros(1, *shape, channels, device=device)

    def build():
        module.cached_penc = None
        return module(x)[0]

    return build


# --- attention biases -----------------------------------------------------------------------------
def alibi_x_transformers(heads: int, n: int, device, *, rebuild: bool = True):
    """x-transformers' symmetric ALiBi (-slope * |i - j|); with ``rebuild`` its cache is cleared so
    each call builds the bias, otherwise its own cache serves every call after the first."""
    xt = require("x_transformers.x_transformers")
    alibi = xt.AlibiPositionalBias(heads=heads).to(device)

    def build():
        if rebuild:
            alibi.bias = None
        return alibi(n, n)

    return build


def t5_x_transformers(heads: int, n: int, causal: bool, weight: torch.Tensor):
    """x-transformers' T5 bias with the same bucket weights."""
    xt = require("x_transformers.x_transformers")
    t5 = xt.RelativePositionBias(scale=1.0, causal=causal, heads=heads).to(weight.device)
    with torch.no_grad():
        t5.relative_attention_bias.weight.copy_(weight)
    return lambda: t5(n, n)


# --- scaled RoPE cos/sin (transformers) ------------------------------------------------------------
def rope_cos_sin_transformers(config: dict, x: torch.Tensor, position_ids: torch.Tensor):
    """transformers' ``LlamaRotaryEmbedding`` (its ROPE_INIT_FUNCTIONS scaling) building cos/sin
    from ``position_ids`` each call, as the model does."""
    transformers = require("transformers")
    require("transformers.models.llama.modeling_llama")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rotary = LlamaRotaryEmbedding(transformers.LlamaConfig(**config)).to(x.device)
    return lambda: rotary(x, position_ids)


# --- hash grid ------------------------------------------------------------------------------------
def hash_grid_per_level(x: torch.Tensor, module):
    """A straightforward transcription of Müller et al.'s encoding: a Python loop over levels and
    over the ``2^d`` cell corners, each corner indexed and weighted on its own (how most PyTorch
    ports are written). Reads the tables of a posenc ``HashGrid`` so both compute the same thing."""
    d = x.shape[-1]
    primes = (1, 2654435761, 805459861)
    corners = [[(c >> i) & 1 for i in range(d)] for c in range(2**d)]
    tables = module.table.split(module.level_sizes)

    def encode():
        out = []
        for table, n, size, hashed in zip(tables, module.resolutions, module.level_sizes, module.level_hashed):
            pos = x * n
            low = pos.floor().clamp(max=n - 1)
            frac = pos - low
            low = low.long()
            acc = 0
            for corner in corners:
                c = low + torch.tensor(corner, device=x.device)
                weight = torch.ones_like(frac[..., 0])
                for i in range(d):
                    weight = weight * (frac[..., i] if corner[i] else 1 - frac[..., i])
                if hashed:
                    idx = c[..., 0] * primes[0]
                    for i in range(1, d):
                        idx = idx ^ (c[..., i] * primes[i])
                    idx = idx % size
                else:
                    idx = sum(c[..., i] * (n + 1) ** i for i in range(d))
                acc = acc + weight[..., None] * table[idx]
            out.append(acc)
        return torch.cat(out, dim=-1)

    return encode


def hash_grid_tcnn(x: torch.Tensor, module):
    """tiny-cuda-nn's fused hash encoding at the same configuration (CUDA only; its own tables,
    initialisation and half-cell offset, so it is timed beside posenc, not compared with it: the
    equal module is ``HashGrid(convention="tcnn")``, whose ``backend="tcnn"`` is tested against it)."""
    tcnn = require("tinycudann")
    if x.device.type != "cuda":
        raise PeerMissing("tiny-cuda-nn runs on CUDA devices only")
    enc = tcnn.Encoding(x.shape[-1], module.tcnn_config(), dtype=torch.float32).to(x.device)
    return lambda: enc(x)
