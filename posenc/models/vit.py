"""The reference Vision Transformer: patch embedding, optional class token, the pre-norm blocks of
:mod:`posenc.models.transformer`, and a ``position=`` argument taking any vision encoding.

Encodings built by name receive the model's sizes through their constructor: ``dim``, ``heads``,
``head_dim`` (as the sequence Transformer gives them) plus ``grid``, the ``(h, w)`` patch grid, and
``num_prefix_tokens``, the number of tokens before the patches (1 with the class token). Token
positions handed to the hooks are flat token indices: the class token is 0, patch ``(r, c)`` is
``num_prefix_tokens + r * w + c`` (see :mod:`posenc.vision.grid`). An ``"input"`` encoding with an
``after_block`` attribute (CPVT's PEG) is applied after that block instead of before the first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from posenc.core.base import PositionEncoding, derived_table_names
from posenc.core.positions import Positions
from posenc.core.validation import (
    check_bool,
    check_choice,
    check_dtype_matches,
    check_fits,
    check_float,
    check_float_tensor,
    check_on_device,
    check_positive_int,
)
from posenc.models.interfaces import GridBound, HeadCount, HeadWidth, ModelWidth, PrefixTokens, ViTPlaced
from posenc.models.position import build_layer_encodings, encoding_for_layer
from posenc.models.transformer import Block
from posenc.vision.grid import check_grid


class ViT(nn.Module):
    """A small Vision Transformer classifier: images ``(b, c, H, W)`` -> logits ``(b, num_classes)``.

    Args:
        image_size: ``H`` or ``(H, W)``; each divisible by ``patch_size``.
        patch_size: side of the square patches.
        num_classes: output classes.
        in_channels: image channels.
        dim, depth, heads, mlp_ratio, dropout: Transformer sizes (``dim`` divisible by ``heads``).
        position: a vision registry name (``"vit_learned"``, ``"sincos_2d"``, ``"rel_bias_2d"``,
            ``"rope_2d"``, ``"rope_mixed"``, ``"peg"``, ``"none"``) or a :class:`PositionEncoding`.
        class_token: prepend a learned class token (else no prefix token).
        pool: ``"cls"`` (the class token's output) or ``"mean"`` (mean of the patch tokens).
        attention: the attention backend (see :mod:`posenc.attention.dispatch`).
        **position_kwargs: passed to the encoding's constructor when ``position`` is a name.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int,
        num_classes: int,
        *,
        in_channels: int = 3,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        position: str | PositionEncoding = "vit_learned",
        class_token: bool = True,
        pool: str = "cls",
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention: str = "auto",
        **position_kwargs: Any,
    ) -> None:
        super().__init__()
        size = check_grid("image_size", image_size)
        self.patch_size = check_positive_int("patch_size", patch_size)
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"`image_size` {size} must be divisible by `patch_size`={patch_size}")
        self.image_size, self.grid = size, (size[0] // patch_size, size[1] // patch_size)
        check_positive_int("num_classes", num_classes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        check_positive_int("dim", dim)
        self.depth = check_positive_int("depth", depth)
        check_positive_int("heads", heads)
        if dim % heads:
            raise ValueError(f"`dim` must be divisible by `heads`, got dim={dim}, heads={heads}")
        check_float("dropout", dropout, minimum=0.0, maximum=1.0)
        if int(dim * check_float("mlp_ratio", mlp_ratio, positive=True)) < 1:
            raise ValueError(f"`mlp_ratio` must give the MLP at least one unit, got dim * mlp_ratio = {dim * mlp_ratio}")
        self.pool = check_choice("pool", pool, ("cls", "mean"))
        if pool == "cls" and not class_token:
            raise ValueError("`pool`='cls' needs `class_token`=True")
        self.dim, self.heads = dim, heads
        self.num_prefix_tokens = int(check_bool("class_token", class_token))
        # one image's token sequence (and a learned table of the grid) must fit: refused by the model's
        # own argument, not by the name the position encoding gives its grid
        tokens = self.grid[0] * self.grid[1] + self.num_prefix_tokens
        check_fits("image_size", size, (tokens, dim), torch.get_default_dtype(), None)
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        encodings = self._build_position(position, position_kwargs)
        self.position = encodings[0]
        self.layer_positions = nn.ModuleList(encodings[1:])
        if self.position.concat_dim:
            raise ValueError("the ViT adds its position encoding; build it with combine='add'")
        self.blocks = nn.ModuleList(
            Block(dim, heads, causal=False, mlp_ratio=mlp_ratio, dropout=dropout, attention=attention)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        # each rank rebuilds these itself: DistributedDataParallel leaves them alone
        self._ddp_params_and_buffers_to_ignore = derived_table_names(self)

    def reset_parameters(self) -> None:
        """The class token's initial zeros (the layers reset themselves; see :mod:`posenc.core.meta`)."""
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)

    def _build_position(self, position: str | PositionEncoding, kwargs: dict[str, Any]) -> list[PositionEncoding]:
        model_args = {
            "dim": self.dim,
            "heads": self.heads,
            "head_dim": self.dim // self.heads,
            "grid": self.grid,
            "num_prefix_tokens": self.num_prefix_tokens,
        }
        encodings = build_layer_encodings(position, kwargs, model_args=model_args, depth=self.depth, model="ViT")
        if isinstance(encodings[0], GridBound) and encodings[0].grid not in (None, self.grid):
            raise ValueError(f"`position` was built for grid {encodings[0].grid} but the model's patch grid is {self.grid}")
        self._check_sizes(encodings[0], model_args)
        return encodings

    @staticmethod
    def _check_sizes(encoding: PositionEncoding, model_args: dict[str, Any]) -> None:
        """An encoding given as a module must have been built with the sizes the model would give it
        (the ones it takes from a model, ``model_arguments``): a bias of other heads, or a table without
        the class token's row, fails inside attention or, on the blocked kernel, reads other heads. One
        head's terms are shared by every head."""
        declared = {
            "dim": encoding.dim if isinstance(encoding, ModelWidth) else None,
            "heads": encoding.heads if isinstance(encoding, HeadCount) else None,
            "head_dim": encoding.head_dim if isinstance(encoding, HeadWidth) else None,
            "num_prefix_tokens": encoding.num_prefix_tokens if isinstance(encoding, PrefixTokens) else None,
        }
        if declared["heads"] == 1:
            declared["heads"] = None  # one head's terms, shared by every head
        for name, value in declared.items():
            if name in encoding.model_arguments and value is not None and value != model_args[name]:
                raise ValueError(f"`position` was built for {name}={value} but the model's {name} is {model_args[name]}")

    def position_for_layer(self, layer: int) -> PositionEncoding:
        return encoding_for_layer(self.position, self.layer_positions, layer)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """images ``(b, c, H, W)`` -> tokens ``(b, prefix + h*w, dim)`` (no position yet)."""
        check_float_tensor("images", images, ndim=4)
        if images.shape[1] != self.in_channels or tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f"`images` must have shape (b, {self.in_channels}, {self.image_size[0]}, {self.image_size[1]}), "
                f"got {tuple(images.shape)}"
            )
        if not torch.compiler.is_compiling():
            check_on_device("images", images, self.patch_embed.weight.device, owner="the model")
        check_dtype_matches("images", images, self.patch_embed, owner="the model")
        # (b, dim, h, w) -> (b, h*w, dim): raster order
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """images ``(b, c, H, W)`` -> normalised tokens ``(b, prefix + h*w, dim)``."""
        x = self.tokens(images)
        positions = Positions(x.shape[1])
        use_input = "input" in self.position.hooks
        after = self.position.after_block if use_input and isinstance(self.position, ViTPlaced) else None
        if use_input and after is None:
            x = self.position.encode_input(x, positions=positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, position=self.position_for_layer(layer), q_positions=positions, k_positions=positions, layer=layer)
            # an encoding placed past the last block is applied after the last one
            if after is not None and layer == min(after, self.depth - 1):
                x = self.position.encode_input(x, positions=positions)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images ``(b, c, H, W)`` -> logits ``(b, num_classes)``."""
        x = self.forward_features(images)
        pooled = x[:, 0] if self.pool == "cls" else x[:, self.num_prefix_tokens :].mean(dim=1)
        return self.head(pooled)
