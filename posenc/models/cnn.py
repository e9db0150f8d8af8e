"""The reference CNN: a small fully convolutional network for dense prediction with a ``position=``
argument taking the spatial encodings that act on feature maps.

Each such encoding declares how it enters the network in its ``cnn_role``:

``"stem"``       it *is* the first convolution (``coordconv``: coordinates appended to the image);
``"features"``   it is added to (or concatenated with) the stem's feature map (``sincos_2d``);
``"attention"``  it reweights the last feature map from the stem's (``hanet``).

Layout: stem 3x3 conv -> [encoding] -> ``depth`` x (3x3 conv, ReLU) -> [attention] -> 1x1 head,
``(b, in_channels, h, w)`` -> ``(b, out_channels, h, w)`` for any ``h, w``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from posenc.core.base import derived_table_names
from posenc.core.registry import available, create_for_model, get
from posenc.core.validation import (
    check_dtype_matches,
    check_float_tensor,
    check_int,
    check_on_device,
    check_positive_int,
)
from posenc.models.interfaces import CNNFeatures, ModelWidth, cnn_role

ROLES = ("stem", "features", "attention")


def cnn_encodings() -> list[str]:
    """Registry names usable as ``CNN(position=...)``, ``"none"`` first."""
    return ["none"] + [i.name for i in available("spatial") if cnn_role(i.cls) in ROLES]


class CNN(nn.Module):
    """A small dense-prediction CNN.

    Args:
        in_channels, out_channels: of the input image and the output map.
        width: channels of every hidden layer.
        depth: 3x3 conv + ReLU layers after the stem.
        position: ``"none"``, a name from :func:`cnn_encodings` (``"coordconv"``, ``"sincos_2d"``,
            ``"hanet"``), or a module with a ``cnn_role`` attribute.
        **position_kwargs: passed to the encoding's constructor when ``position`` is a name; the model
            fills in ``in_channels``/``out_channels`` (stem, attention) or ``dim`` (features).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int = 16,
        depth: int = 2,
        position: str | nn.Module = "none",
        **position_kwargs: Any,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        self.width = check_positive_int("width", width)
        check_int("depth", depth, minimum=0)
        encoding, self.role = self._build_position(position, position_kwargs)
        # registered in the order they are built (the encoding, then the stem): posenc.core.meta.initialize
        # replays the draws in registration order
        self.features = encoding if self.role == "features" else None
        self.attention = encoding if self.role == "attention" else None
        if self.role == "stem":
            self.stem = encoding
            if encoding.out_channels != width:
                raise ValueError(f"the stem encoding must output width={width} channels, got {encoding.out_channels}")
            if encoding.in_channels != in_channels:
                raise ValueError(
                    f"the stem encoding must take the images' in_channels={in_channels} channels, got {encoding.in_channels}"
                )
        else:
            self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        if self.role == "attention" and (encoding.in_channels, encoding.out_channels) != (width, width):
            raise ValueError(
                f"the attention encoding must map width={width} channels to width={width}, got in_channels="
                f"{encoding.in_channels} and out_channels={encoding.out_channels}"
            )
        extra = encoding.concat_channels if self.features is not None and isinstance(encoding, CNNFeatures) else 0
        if self.features is not None and not extra and isinstance(encoding, ModelWidth) and encoding.dim != width:
            raise ValueError(f"the features encoding adds dim={encoding.dim} channels to a map of width={width}")
        body_in = width + extra
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(body_in if i == 0 else width, width, 3, padding=1), nn.ReLU()]
        if depth == 0 and body_in != width:
            layers.append(nn.Conv2d(body_in, width, 1))
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, out_channels, 1)
        # each rank rebuilds these itself: DistributedDataParallel leaves them alone
        self._ddp_params_and_buffers_to_ignore = derived_table_names(self)

    def _build_position(self, position: str | nn.Module, kwargs: dict[str, Any]) -> tuple[nn.Module | None, str | None]:
        if isinstance(position, nn.Module):
            if kwargs:
                raise ValueError(f"position keyword arguments {sorted(kwargs)} need `position` to be a registry name")
            role = cnn_role(position)
            if role not in ROLES:
                raise TypeError(f"`position` module must have a `cnn_role` in {ROLES}, got {type(position).__name__}")
            return position, role
        if not isinstance(position, str):
            raise TypeError(f"`position` must be a registry name or a module, got {type(position).__name__}")
        if position == "none":
            if kwargs:
                raise ValueError(f"position keyword arguments {sorted(kwargs)} given with position='none'")
            return None, None
        allowed = cnn_encodings()
        if position not in allowed:
            get(position)  # unknown names raise listing every encoding
            raise ValueError(f"`position`={position!r} does not act on feature maps; the CNN takes {', '.join(allowed)}")
        role = get(position).cls.cnn_role
        model_args: dict[str, Any] = {
            "stem": {"in_channels": self.in_channels, "out_channels": self.width, "kernel_size": 3},
            "features": {"dim": self.width},
            "attention": {"in_channels": self.width, "out_channels": self.width},
        }[role]
        if role == "stem":
            kwargs = {"padding": 1, **kwargs}  # keep the map's size
        return create_for_model(position, model_args=model_args, **kwargs), role

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(b, in_channels, h, w)`` -> ``(b, out_channels, h, w)``."""
        check_float_tensor("x", x, ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"`x` must have in_channels={self.in_channels} channels, got shape {tuple(x.shape)}")
        if not torch.compiler.is_compiling():
            check_on_device("x", x, self.head.weight.device, owner="the model")
        check_dtype_matches("x", x, self.head, owner="the model")
        if not x.shape[-2] or not x.shape[-1]:  # an empty map: its padded 3x3 convolutions cannot run
            return x.new_zeros(x.shape[0], self.head.out_channels, *x.shape[-2:])
        low = torch.relu(self.stem(x))
        h = self.features(low) if self.features is not None else low
        h = self.body(h)
        if self.attention is not None:
            h = self.attention(low, h)
        return self.head(h)
