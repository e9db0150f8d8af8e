"""Order-aware context layers used instead of an explicit encoding (convolutions before attention)."""
