"""The survey's analyses as measurements, usable on any model or encoding, and the atlas built on them.

- :mod:`~posenc.analysis.equivariance`: permutation equivariance of any module (survey 1.1).
- :mod:`~posenc.analysis.addition`: the addition-theorem map ``PE(p + k) = M_k PE(p)`` (survey 1.3).
- :mod:`~posenc.analysis.similarity`: similarity / score as a function of the offset (survey 1.3, 3).
- :mod:`~posenc.analysis.probe`: position information in CNN features (Islam et al., survey 2.5).
- :mod:`~posenc.analysis.atlas`: the HTML report behind ``posenc atlas``, built from
  :mod:`~posenc.analysis.entries` (one entry per encoding, measured by :mod:`~posenc.analysis.measure`),
  drawn by the conventions of :mod:`~posenc.analysis.figures`, rendered by :mod:`~posenc.analysis.report`
  (with the page's script in :mod:`~posenc.analysis.page_script`) and checked in a browser by
  :mod:`~posenc.analysis.browser`.
"""

from posenc.analysis.atlas import build_atlas
from posenc.analysis.addition import ShiftMapFit, fit_linear_map, fit_shift_map, fit_shift_map_at, shift_map_residuals
from posenc.analysis.equivariance import patch_permutation_deviation, permutation_deviation
from posenc.analysis.probe import PADDINGS, PATTERNS, ProbeResult, position_patterns, position_probe, probe_cnn, spearman
from posenc.analysis.similarity import (
    SimilarityStructure,
    absolute_table,
    offset_profile,
    roformer_decay_bound,
    score_matrix,
    score_vs_offset,
    shift_invariance_error,
    similarity_matrix,
    similarity_structure,
)

__all__ = [
    "PADDINGS",
    "PATTERNS",
    "ProbeResult",
    "ShiftMapFit",
    "SimilarityStructure",
    "absolute_table",
    "build_atlas",
    "fit_linear_map",
    "fit_shift_map",
    "fit_shift_map_at",
    "offset_profile",
    "patch_permutation_deviation",
    "permutation_deviation",
    "position_patterns",
    "position_probe",
    "probe_cnn",
    "roformer_decay_bound",
    "score_matrix",
    "score_vs_offset",
    "shift_invariance_error",
    "shift_map_residuals",
    "similarity_matrix",
    "similarity_structure",
    "spearman",
]
