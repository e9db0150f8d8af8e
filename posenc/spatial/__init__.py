"""Position for convolutional networks on (b, c, *spatial) feature maps: coordinate channels, broadcast decoders, learned constant inputs, explicit generator encodings, N-D sinusoids, height-driven attention."""

from posenc.spatial.constant_input import AdaIN, ConstantInput, StyleGenerator, adain
from posenc.spatial.coordconv import AddCoords, CoordConv, CoordConvTranspose, add_coords, coordinate_channels
from posenc.spatial.gan_encodings import (
    CartesianGridInput,
    MultiScalePositionalInput,
    SinusoidalGridInput,
    cartesian_grid,
    sinusoidal_grid,
)
from posenc.spatial.hanet import HANet, height_encoding, row_pool
from posenc.spatial.sinusoidal_nd import SinCos2d, sinusoidal_coords, sinusoidal_nd
from posenc.spatial.spatial_broadcast import BroadcastVAE, SpatialBroadcastDecoder, VAELoss, spatial_broadcast, vae_loss

__all__ = [
    "AdaIN",
    "AddCoords",
    "BroadcastVAE",
    "CartesianGridInput",
    "ConstantInput",
    "CoordConv",
    "CoordConvTranspose",
    "HANet",
    "MultiScalePositionalInput",
    "SinCos2d",
    "SinusoidalGridInput",
    "SpatialBroadcastDecoder",
    "StyleGenerator",
    "VAELoss",
    "adain",
    "add_coords",
    "cartesian_grid",
    "coordinate_channels",
    "height_encoding",
    "row_pool",
    "sinusoidal_coords",
    "sinusoidal_grid",
    "sinusoidal_nd",
    "spatial_broadcast",
    "vae_loss",
]
