"""Which keys each query may see: causal order, a sliding window, padding and packed documents.

The n queries are the last n of the m keys (a key/value cache holds the others): query i sits at
key index ``i + m - n``. :class:`MaskSpec` describes the mask once; each backend reads it in its own
form (a dense boolean for eager/SDPA, a row block for the blocked kernel, a ``mask_mod`` for
FlexAttention), so no backend needs an ``(n, m)`` mask unless it needs the dense one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posenc.core.validation import check_bool, check_int, check_tensor

#: A window at least this wide sees every key of any sequence; wider ones are stored as this, so that
#: ``i - window`` and ``i + window`` stay within int64 (a wider one would wrap around or overflow).
WINDOW_LIMIT = 1 << 62


@dataclass(frozen=True)
class MaskSpec:
    """causal: key ``j <= i + m - n``; window: also ``j > i + m - n - window`` (causal: the query's
    last ``window`` keys, itself included) and, without ``causal``, ``j < i + m - n + window``: the
    symmetric band ``|i + m - n - j| < window``, ``2 window - 1`` keys wide; key_mask ``(b, m)``:
    True for keys that may be seen; q_docs ``(b, n)``/k_docs ``(b, m)``: query and key documents
    (attention stays inside a document)."""

    causal: bool = False
    window: int | None = None
    key_mask: torch.Tensor | None = None
    q_docs: torch.Tensor | None = None
    k_docs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_bool("causal", self.causal)
        if self.window is not None:
            object.__setattr__(self, "window", min(check_int("window", self.window, minimum=1), WINDOW_LIMIT))
        if (self.q_docs is None) != (self.k_docs is None):
            raise ValueError("`q_docs` and `k_docs` go together: give both (query and key documents) or neither")

    @property
    def is_empty(self) -> bool:
        return not self.causal and self.window is None and self.key_mask is None and self.q_docs is None

    @property
    def only_causal(self) -> bool:
        return self.causal and self.window is None and self.key_mask is None and self.q_docs is None

    def key_range(self, s: int, e: int, n: int, m: int) -> tuple[int, int]:
        """Keys ``k0:k1`` that rows ``s:e`` can possibly see."""
        if self.causal:
            k1 = min(m, e + m - n)
        elif self.window is not None:
            k1 = min(m, e + m - n + self.window - 1)
        else:
            k1 = m
        k0 = max(0, s + m - n - self.window + 1) if self.window is not None else 0
        return k0, max(k0, k1)

    def block(self, s: int, e: int, k0: int, k1: int, n: int, m: int, device) -> torch.Tensor | None:
        """Boolean ``(b | 1, 1, e - s, k1 - k0)``, True where visible, or None when all are."""
        mask = None
        if self.causal or self.window is not None:
            i = torch.arange(s, e, device=device).unsqueeze(1) + (m - n)
            j = torch.arange(k0, k1, device=device).unsqueeze(0)
            if self.causal:
                mask = j <= i
            if self.window is not None:
                inside = j > i - self.window
                if not self.causal:
                    inside = inside & (j < i + self.window)
                mask = inside if mask is None else mask & inside
            mask = mask.view(1, 1, e - s, k1 - k0)
        if self.key_mask is not None:
            keys = self.key_mask[:, k0:k1].view(-1, 1, 1, k1 - k0)
            mask = keys if mask is None else mask & keys
        if self.q_docs is not None:
            same = self.q_docs[:, s:e].unsqueeze(-1) == self.k_docs[:, k0:k1].unsqueeze(-2)
            same = same.unsqueeze(1)
            mask = same if mask is None else mask & same
        return mask

    def dense(self, n: int, m: int, device) -> torch.Tensor | None:
        """Boolean ``(b | 1, 1, n, m)``, True where visible, or None when every key is."""
        return self.block(0, n, 0, m, n, m, device)

    def mask_mod(self, n: int, m: int, device=None):
        """FlexAttention's ``mask_mod(b, h, q_idx, kv_idx) -> bool``, or None when all keys are seen.

        The query's key index ``q_idx + m - n`` reads ``m - n`` from a 0-d tensor, so that a compiled
        kernel does not specialise on it (cached decoding moves it at every step)."""
        if self.is_empty:
            return None
        causal, window = self.causal, self.window
        gap = torch.tensor(m - n, dtype=torch.int64, device=device)
        key_mask, q_docs, k_docs = self.key_mask, self.q_docs, self.k_docs

        def mask_mod(b, h, q_idx, kv_idx):
            i = q_idx + gap
            ok = kv_idx >= 0
            if causal:
                ok = ok & (kv_idx <= i)
            if window is not None:
                ok = ok & (kv_idx > i - window)
                if not causal:
                    ok = ok & (kv_idx < i + window)
            if key_mask is not None:
                ok = ok & key_mask[b, kv_idx]
            if q_docs is not None:
                ok = ok & (q_docs[b, q_idx] == k_docs[b, kv_idx])
            return ok

        return mask_mod


def attention_mask(
    n: int, m: int, *, causal: bool, key_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean ``(b | 1, 1, n, m)`` mask, True where query i may attend to key j, or None for all.
    key_mask: bool ``(b, m)``; a causal mask needs ``n <= m`` (the queries are the last n of the m keys)."""
    n, m = check_int("n", n, minimum=0), check_int("m", m, minimum=0)
    if causal is True and n > m:
        raise ValueError(f"a causal mask places the n queries at the last n of the m keys: n ({n}) must be at most m ({m})")
    if key_mask is not None:
        check_tensor("key_mask", key_mask)
        if key_mask.dtype != torch.bool or key_mask.ndim != 2 or key_mask.shape[-1] != m:
            raise ValueError(f"`key_mask` must be a bool tensor of shape (b, {m}), got {key_mask.dtype} {tuple(key_mask.shape)}")
    return MaskSpec(causal=causal, key_mask=key_mask).dense(n, m, device)
