"""posenc: position encodings for PyTorch, with the analyses that show what each one does.

The package layout is the taxonomy: each family folder holds the encodings that enter a model the
same way (``input``: added to or concatenated with embeddings; ``rotary``: rotate queries and keys;
``bias``: added to attention logits; ...). ``posenc.functional`` holds the pure functions,
``posenc.models`` the reference models that take ``position=``.
"""

# importing a family package registers its encodings, in this order
from posenc import none, input, rotary, bias  # noqa: F401
from posenc import relative, complex, context  # noqa: F401
from posenc import spatial, vision  # noqa: F401
from posenc import coordinate, step, hyper  # noqa: F401
from posenc.core.base import PositionEncoding
from posenc.core.positions import positions_from_documents, randomized_positions
from posenc.core.registry import EncodingInfo, available, create, get, register

__version__ = "0.1.0"

__all__ = [
    "EncodingInfo",
    "PositionEncoding",
    "__version__",
    "available",
    "create",
    "get",
    "positions_from_documents",
    "randomized_positions",
    "register",
]
