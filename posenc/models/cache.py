"""The key/value cache lives in :mod:`posenc.attention.cache`; re-exported here."""

from posenc.attention.cache import KVCache

__all__ = ["KVCache"]
