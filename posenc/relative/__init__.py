"""Encodings with relative-position terms that depend on content: Shaw et al.'s key/value tables and Transformer-XL's attention (the "bias" and "value" hooks)."""
