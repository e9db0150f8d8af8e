"""``posenc check`` builds each encoding from its example in ``posenc.testing.examples``."""

from __future__ import annotations

import dataclasses

from posenc.checks import check_one, example_arguments
from posenc.testing import examples


def test_example_arguments_leave_the_model_sizes_to_the_model():
    assert examples.SPECS["t5"].kwargs["heads"] == 2
    assert example_arguments("t5") == {"num_buckets": 8, "max_distance": 16}
    assert example_arguments("transformer_xl") == {}


def test_check_builds_the_encoding_from_its_example(monkeypatch):
    spec = examples.SPECS["t5"]
    monkeypatch.setitem(examples.SPECS, "t5", dataclasses.replace(spec, kwargs={**spec.kwargs, "num_buckets": 0}))
    result = check_one("t5")
    assert "`num_buckets`" in result.detail
    monkeypatch.setitem(examples.SPECS, "t5", spec)
    assert check_one("t5").detail.startswith("finite=True")
