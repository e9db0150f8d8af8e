"""Embeddings of the step of an iterative network: diffusion timesteps, noise levels, flow indices."""
