"""``posenc bench``: posenc against the peer libraries, in one process, interleaved, as ratios."""

from posenc.bench.cases import Case, Row
from posenc.bench.suite import format_table, run_suite, suite

__all__ = ["Case", "Row", "format_table", "run_suite", "suite"]
