"""Complex-valued word-order embeddings and the complex layers that consume them."""
