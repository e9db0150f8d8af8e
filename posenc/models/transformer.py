"""The reference Transformer: token embedding, pre-norm blocks, output head, and a ``position=``
argument that takes any registered sequence encoding (by name or as a module)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from posenc.attention.dispatch import check_backend
from posenc.core.base import PositionEncoding, derived_table_names
from posenc.core.positions import (
    POSITION_FREE,
    Positions,
    document_ids_from_cu_seqlens,
    document_runs,
    drawn_from,
    positions_from_documents,
    randomized_positions,
    resolve_positions,
)
from posenc.core.validation import (
    can_read_values,
    check_bool,
    check_float,
    check_on_device,
    check_positive_int,
    check_tensor,
)
from posenc.models.attention import Attention
from posenc.models.cache import KVCache
from posenc.models.interfaces import PositionTable
from posenc.models.position import build_layer_encodings, encoding_for_layer
from posenc.models.position_plan import PositionPlan


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        causal: bool,
        mlp_ratio: float,
        dropout: float,
        attention: str = "auto",
        window: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        if int(dim * check_float("mlp_ratio", mlp_ratio, positive=True)) < 1:
            raise ValueError(f"`mlp_ratio` must give the MLP at least one unit, got dim * mlp_ratio = {dim * mlp_ratio}")
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal=causal, dropout=dropout, attention=attention, window=window)
        self.mlp_norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, **attn_kwargs: Any) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), **attn_kwargs)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """A small GPT/BERT-style Transformer over token ids.

    Args:
        vocab_size: number of token ids.
        dim: model width; divisible by ``heads``.
        depth: number of blocks.
        heads: attention heads.
        position: a registry name (see ``posenc.available()``) or a :class:`PositionEncoding`.
        causal: causal language model (True) or bidirectional encoder (False).
        mlp_ratio, dropout: block hyper-parameters.
        position_plan: a :class:`PositionPlan` for a rotary ``position``: NoPE layers (Llama 4,
            SmolLM3), their attention temperature, RoPE on a subset of the heads.
        attention: the attention backend, ``"auto"``, ``"eager"``, ``"sdpa"``, ``"flex"`` or
            ``"blocked"`` (see :mod:`posenc.attention.dispatch`).
        window: sliding-window attention, None for full attention. With ``causal=True`` each query
            sees only its last ``window`` keys, itself included (key j from query i when
            ``0 <= i - j < window``, Mistral-style); with ``causal=False`` a band on both sides, the
            keys less than ``window`` away (``|i - j| < window``: ``2 * window - 1`` keys). Positions
            count keys, so with a key/value cache query i sits at key ``i + m - n``.
        randomize_positions: ``L`` trains with randomized positions (Ruoss et al. 2023): in training
            mode, when no ``positions`` are passed, each sequence gets ``n`` sorted distinct positions
            drawn from ``[0, L)`` (see :func:`posenc.core.positions.randomized_positions`); with a
            ``key_padding_mask``, a row's ``k`` real tokens get ``k`` such positions (the padding 0); in
            eval mode the plain positions ``0 .. n - 1``. None (default) disables it.
        **position_kwargs: passed to the encoding's constructor when ``position`` is a name; the
            model fills in ``dim``, ``heads``, ``head_dim`` and ``causal`` when the encoding takes them.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        depth: int,
        heads: int,
        *,
        position: str | PositionEncoding = "none",
        causal: bool = False,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        position_plan: PositionPlan | None = None,
        attention: str = "auto",
        window: int | None = None,
        randomize_positions: int | None = None,
        **position_kwargs: Any,
    ) -> None:
        super().__init__()
        check_positive_int("vocab_size", vocab_size)
        check_backend(attention)
        self.window = None if window is None else check_positive_int("window", window)
        check_positive_int("dim", dim)
        self.depth = check_positive_int("depth", depth)
        check_positive_int("heads", heads)
        if dim % heads:
            raise ValueError(f"`dim` must be divisible by `heads`, got dim={dim}, heads={heads}")
        check_float("dropout", dropout, minimum=0.0, maximum=1.0)
        if int(dim * check_float("mlp_ratio", mlp_ratio, positive=True)) < 1:
            raise ValueError(f"`mlp_ratio` must give the MLP at least one unit, got dim * mlp_ratio = {dim * mlp_ratio}")
        self.dim, self.heads, self.causal = dim, heads, check_bool("causal", causal)
        if position_plan is not None and not isinstance(position_plan, PositionPlan):
            raise TypeError(f"`position_plan` must be a PositionPlan or None, got {type(position_plan).__name__}")
        # a rotary encoding on a subset of the heads is built for the heads it rotates
        self._rotated_heads = (position_plan.rope_heads if position_plan is not None else None) or heads
        encodings = self._build_position(position, position_kwargs)
        self.position = encodings[0]
        # per-layer encodings live in their own list; shared ones are the same module everywhere
        self.layer_positions = nn.ModuleList(encodings[1:])
        # each block's planned encoding; not submodules: they are the modules above or stateless wrappers
        self._layer_plan = position_plan.build(encodings, depth=depth, heads=heads) if position_plan else None
        if self.causal and not self.position.supports_causal:
            raise ValueError(f"position encoding {type(self.position).__name__} cannot be used with causal=True")
        self.randomize_positions = self._check_randomize(randomize_positions)
        embed_dim = dim - self.position.concat_dim
        if embed_dim < 1:
            raise ValueError(f"the encoding's concatenated width {self.position.concat_dim} leaves no room in dim={dim}")
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.blocks = nn.ModuleList(
            Block(dim, heads, causal=self.causal, mlp_ratio=mlp_ratio, dropout=dropout, attention=attention, window=window)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        # each rank rebuilds these for its own lengths: DistributedDataParallel leaves them alone
        self._ddp_params_and_buffers_to_ignore = derived_table_names(self)

    def _build_position(self, position: str | PositionEncoding, kwargs: dict[str, Any]) -> list[PositionEncoding]:
        model_args = {"dim": self.dim, "heads": self._rotated_heads, "head_dim": self.dim // self.heads, "causal": self.causal}
        return build_layer_encodings(
            position, kwargs, model_args=model_args, depth=self.depth, model="Transformer", fits=lambda info: info.fits_transformer
        )

    def _check_randomize(self, length: int | None) -> int | None:
        if length is None:
            return None
        check_positive_int("randomize_positions", length)
        for encoding in [self.position, *self.layer_positions]:
            reason = POSITION_FREE.get(type(encoding).registry_name)
            if reason is not None:
                raise ValueError(
                    f"`randomize_positions` needs an encoding that takes positions, but "
                    f"{type(encoding).registry_name!r} does not: {reason}"
                )
        self._check_tables_hold(length)
        return length

    def _check_tables_hold(self, length: int) -> None:
        """Refuse randomized positions from ``[0, length)`` that a table of positions cannot hold: a
        draw past it would fail only in the training steps whose draw happened to reach it."""
        for encoding in [self.position, *self.layer_positions]:
            if isinstance(encoding, PositionTable) and encoding.max_len < length:
                raise ValueError(
                    f"`randomize_positions` ({length}) draws positions up to {length - 1}, past the table of "
                    f"{type(encoding).registry_name!r} (max_len={encoding.max_len}: positions 0..{encoding.max_len - 1}); "
                    f"give it max_len >= {length} or lower randomize_positions"
                )

    def position_for_layer(self, layer: int) -> PositionEncoding:
        if self._layer_plan is not None:
            return self._layer_plan[layer]
        return encoding_for_layer(self.position, self.layer_positions, layer)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for incremental decoding (``causal=True`` models)."""
        return KVCache(self.depth)

    def forward_features(
        self,
        tokens: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        document_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """tokens ``(b, n)`` -> final normalised hidden states ``(b, n, dim)``.

        positions: ``(n,)`` or ``(b, n)`` explicit positions; by default ``cache.length + arange(n)``.
        key_padding_mask: ``(b, n)`` bool, True for real tokens. Without explicit ``positions``, each
            row's real tokens take positions ``0, 1, ...`` in order (a left-padded prompt starts at 0)
            and a cache continues every row from its own length (ragged decoding).
        cache: a :class:`KVCache` from :meth:`new_cache`; it is extended with this call's tokens.
        document_ids: ``(b, n)`` integer ids of a packed batch (each document a contiguous run):
            positions restart at every document (:func:`posenc.positions_from_documents`, unless
            ``positions`` are given) and attention never crosses documents.
        cu_seqlens: the same for one packed row (``b = 1``) as cumulative lengths ``(docs + 1,)``.
        generator: draws the randomized positions (``randomize_positions``, training mode only).
        """
        check_tensor("tokens", tokens, ndim=2)
        if not torch.compiler.is_compiling():
            check_on_device("tokens", tokens, self.embed.weight.device, owner="the model")
        self._check_token_ids(tokens)
        b, n = tokens.shape
        if cache is not None and not self.causal:
            raise ValueError("`cache` (incremental decoding) needs a causal model (causal=True)")
        if cache is not None:
            self._check_cache(cache, b, tokens.device)
        documents = self._documents(document_ids, cu_seqlens, b, n, cache, tokens.device)
        offset = cache.length if cache is not None else 0
        if positions is None and self.randomize_positions is not None and self.training and cache is None:
            if documents is not None:
                raise ValueError(
                    "`randomize_positions` draws one ordered subset per row and cannot restart it at every document "
                    "of a packed batch (`document_ids`/`cu_seqlens`); pass per-document `positions` instead"
                )
            self._check_tables_hold(self.randomize_positions)  # a table resized since the model was built
            if n > self.randomize_positions:
                raise ValueError(
                    f"`randomize_positions` ({self.randomize_positions}) must be at least the training sequence "
                    f"length, got a sequence of {n} tokens"
                )
            if key_padding_mask is not None:
                self._check_padding(key_padding_mask, b, n)
                positions = self._randomized_ragged_positions(key_padding_mask, self.randomize_positions, generator)
            else:
                positions = randomized_positions(n, self.randomize_positions, batch=b, generator=generator)
            positions = positions.to(tokens.device)
        explicit, lengths = None, None
        if positions is None and documents is not None:
            explicit = positions_from_documents(documents)
        ragged = cache is not None and cache.lengths is not None
        mixing = self._neighbour_mixing_encodings() if key_padding_mask is not None or ragged else []
        if mixing:
            raise ValueError(
                f"{type(mixing[0]).__name__} cannot run on padded rows (`key_padding_mask`, or a cache of "
                "left-padded prompts): its convolution reads neighbouring tokens, padding included; run "
                "each sequence unpadded"
            )
        if positions is None and documents is None and (key_padding_mask is not None or ragged):
            explicit, lengths = self._ragged_positions(key_padding_mask, cache, b, n, tokens.device)
        if positions is not None:
            explicit = resolve_positions(positions, n=n, batch=b, device=tokens.device)
        q_positions = Positions(n, offset, explicit)
        k_positions = cache.positions.cat(q_positions) if cache is not None else q_positions
        key_mask = self._key_mask(key_padding_mask, b, n, cache, tokens.device)
        saved = cache.snapshot() if cache is not None else None
        try:
            x = self.embed(tokens)
            if "input" in self.position.hooks:
                if cache is not None:  # the state of this cache's sequence, whatever ran in between
                    self.position.load_input_state(cache.input_state)
                x = self.position.encode_input(x, positions=q_positions)
                if cache is not None:
                    cache.input_state = self.position.input_state()
            for layer, block in enumerate(self.blocks):
                x = block(
                    x,
                    position=self.position_for_layer(layer),
                    q_positions=q_positions,
                    k_positions=k_positions,
                    key_mask=key_mask,
                    documents=None if documents is None else (documents, documents),
                    cache=cache,
                    layer=layer,
                )
            if cache is not None:
                cache.positions, cache.key_mask = k_positions, key_mask
                if lengths is not None:
                    cache.lengths = lengths
        except BaseException:
            if saved is not None:  # a call that fails leaves the cache as it was, ready for a retry
                cache.restore(saved)
            raise
        return self.norm(x)

    def forward(self, tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """tokens ``(b, n)`` -> logits ``(b, n, vocab_size)``; keywords as :meth:`forward_features`."""
        return self.head(self.forward_features(tokens, **kwargs))

    def _check_cache(self, cache: KVCache, b: int, device: torch.device) -> None:
        if not isinstance(cache, KVCache):
            raise TypeError(f"`cache` must be a KVCache from new_cache(), got {type(cache).__name__}")
        if cache.depth != len(self.blocks):
            raise ValueError(f"`cache` holds {cache.depth} layers but this model has {len(self.blocks)}; use new_cache()")
        cached = cache.keys[0]
        if cached is not None and cached.shape[0] != b:
            raise ValueError(f"`cache` holds a batch of {cached.shape[0]} rows but `tokens` has {b}")
        if cached is not None and cached.device != device:
            raise ValueError(f"`cache` is on {cached.device} but `tokens` is on {device}")

    def _check_token_ids(self, tokens: torch.Tensor) -> None:
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"`tokens` must be integer token ids, int64 or int32 (what nn.Embedding takes), got {tokens.dtype}")
        # the range is read back only where that is free: on the CPU, outside a compiled graph or a
        # torch.func transform (a CUDA embedding asserts on the device by itself)
        if tokens.device.type == "cpu" and tokens.numel() and can_read_values(tokens):
            vocab = self.embed.num_embeddings
            low, high = (int(t) for t in torch.aminmax(tokens))
            if low < 0 or high >= vocab:
                raise ValueError(f"`tokens` must be ids in [0, {vocab}) (vocab_size), got values in [{low}, {high}]")

    @staticmethod
    def _ragged_positions(key_padding_mask, cache, b: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, n)`` positions counting each row's real tokens, continuing from the cache's lengths,
        and the new lengths ``(b,)``."""
        if key_padding_mask is not None:
            Transformer._check_padding(key_padding_mask, b, n)
            real = key_padding_mask.long()
        else:
            real = torch.ones(b, n, dtype=torch.long, device=device)
        start = torch.zeros(b, dtype=torch.long, device=device)
        if cache is not None:
            if cache.lengths is not None:
                start = cache.lengths
            elif cache.length:
                start = start + cache.length
        positions = (start.unsqueeze(1) + real.cumsum(1) - 1).clamp(min=0)
        return positions, start + real.sum(1)

    @staticmethod
    def _randomized_ragged_positions(
        key_padding_mask: torch.Tensor, length: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``(b, n)`` randomized positions for padded rows: the ``k`` real tokens of a row get ``k`` sorted
        distinct positions drawn uniformly from ``[0, length)``, as an unpadded sequence of ``k`` tokens
        would (``k`` of ``n`` drawn ones, chosen uniformly: a uniform ``k``-subset); the padding gets 0."""
        b, n = key_padding_mask.shape
        drawn = randomized_positions(n, length, batch=b, generator=generator)  # (b, n) ascending
        real = key_padding_mask.to(drawn.device)
        # the k drawn positions with the smallest random keys, moved (in ascending order) to the front
        keys = torch.rand(b, n, device=drawn.device, **drawn_from(generator))
        chosen = keys.argsort(-1).argsort(-1) < real.sum(-1, keepdim=True)
        front = drawn.gather(-1, torch.argsort(~chosen, dim=-1, stable=True))
        # the i-th real token of a row takes the i-th of them
        ranks = (real.long().cumsum(-1) - 1).clamp(min=0)
        return torch.where(real, front.gather(-1, ranks), torch.zeros_like(drawn))

    @staticmethod
    def _check_padding(key_padding_mask, b: int, n: int) -> None:
        check_tensor("key_padding_mask", key_padding_mask, ndim=2)
        if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (b, n):
            raise ValueError(
                f"`key_padding_mask` must be a bool tensor of shape ({b}, {n}) (True = real token), "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )

    def _neighbour_mixing_encodings(self) -> list[PositionEncoding]:
        """The model's encodings that mix neighbouring tokens outside attention (a convolution), so
        neither packed documents nor padding may sit beside a sequence's tokens."""
        return [e for e in (self.position, *self.layer_positions) if e.packing_unsupported]

    def _documents(self, document_ids, cu_seqlens, b: int, n: int, cache, device) -> torch.Tensor | None:
        if document_ids is None and cu_seqlens is None:
            return None
        if document_ids is not None and cu_seqlens is not None:
            raise ValueError("give `document_ids` or `cu_seqlens`, not both")
        if cache is not None:
            raise ValueError("packed sequences (`document_ids`/`cu_seqlens`) cannot be combined with `cache`")
        mixing = self._neighbour_mixing_encodings()
        if mixing:
            raise ValueError(f"{type(mixing[0]).__name__} cannot run on packed sequences: {mixing[0].packing_unsupported}")
        if cu_seqlens is not None:
            if b != 1:
                raise ValueError(f"`cu_seqlens` describes one packed row: `tokens` must have batch 1, got {b}")
            check_tensor("cu_seqlens", cu_seqlens)  # before it is moved; its rank and values: below
            if cu_seqlens.device.type == "meta" and device.type != "meta":
                raise ValueError(f"`cu_seqlens` is on meta but `tokens` is on {device}")
            return document_ids_from_cu_seqlens(cu_seqlens.to(device), n)
        check_tensor("document_ids", document_ids, ndim=2)
        if document_ids.is_floating_point() or document_ids.dtype == torch.bool or tuple(document_ids.shape) != (b, n):
            raise ValueError(
                f"`document_ids` must be an integer tensor of shape ({b}, {n}), got {document_ids.dtype} "
                f"{tuple(document_ids.shape)}"
            )
        if document_ids.device != device:
            raise ValueError(f"`document_ids` is on {document_ids.device} but `tokens` is on {device}")
        # attention compares run numbers, not the ids: an id that comes back after another one is a
        # new document, as it is for the positions (which restart wherever the id changes)
        return document_runs(document_ids)

    @staticmethod
    def _key_mask(key_padding_mask, b: int, n: int, cache: KVCache | None, device) -> torch.Tensor | None:
        if key_padding_mask is not None:
            check_tensor("key_padding_mask", key_padding_mask, ndim=2)
            if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (b, n):
                raise ValueError(
                    f"`key_padding_mask` must be a bool tensor of shape ({b}, {n}) (True = real token), "
                    f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
                )
        if cache is None or (cache.key_mask is None and key_padding_mask is None):
            return key_padding_mask
        old = cache.key_mask if cache.key_mask is not None else torch.ones(b, cache.length, dtype=torch.bool, device=device)
        new = key_padding_mask if key_padding_mask is not None else torch.ones(b, n, dtype=torch.bool, device=device)
        return torch.cat([old, new], dim=1)
