"""Embeddings of the step of an iterative network: diffusion timesteps, noise levels, flow indices."""

from posenc.step.flow_index import FlowIndexEmbedding, flow_indices
from posenc.step.nanoflow import NanoFlow
from posenc.step.noise_level import NoiseLevelEmbedding, noise_level_embedding
from posenc.step.timestep import TimestepEmbedding, timestep_embedding, timestep_frequencies

__all__ = [
    "FlowIndexEmbedding",
    "NanoFlow",
    "NoiseLevelEmbedding",
    "TimestepEmbedding",
    "flow_indices",
    "noise_level_embedding",
    "timestep_embedding",
    "timestep_frequencies",
]
