"""Experiments that re-derive the survey's claims, each with a number, a plot and the paper's figure.

``posenc experiments`` lists them; ``posenc run NAME [--quick]`` runs one (see
:mod:`posenc.experiments.harness`). Each module defines ``EXPERIMENT``, an
:class:`~posenc.experiments.harness.Experiment`; this registry imports them on first use.
"""

from __future__ import annotations

import importlib

from posenc.core.suggest import did_you_mean

from posenc.experiments.harness import (
    DEFAULT_OUT,
    Context,
    Experiment,
    Interrupted,
    ResultExists,
    run_experiment,
)

#: The experiments in the survey's order of claims; each name is also its module's name.
NAMES: tuple[str, ...] = (
    "order",
    "coordconv",
    "fourier_image",
    "field_fit",
    "padding_probe",
    "extrapolation",
    "length_generalization",
    "equivariance",
    "height_prior",
    "shaw_clip",
    "timestep",
    "gan_position",
)


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in NAMES:
        hint = did_you_mean(name, NAMES)
        raise ValueError(f"unknown experiment {name!r} for `name`{hint}; known: {', '.join(NAMES)}")
    return importlib.import_module(f"posenc.experiments.{name}").EXPERIMENT


def experiments() -> list[Experiment]:
    """All experiments, in :data:`NAMES` order."""
    return [get_experiment(name) for name in NAMES]


__all__ = [
    "DEFAULT_OUT",
    "NAMES",
    "Context",
    "Experiment",
    "Interrupted",
    "ResultExists",
    "experiments",
    "get_experiment",
    "run_experiment",
]
