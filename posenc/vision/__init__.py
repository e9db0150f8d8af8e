"""Positions for vision Transformers over patch tokens: learned patch tables, 2-D relative bias, 2-D RoPE, conditional (convolutional) encodings."""
