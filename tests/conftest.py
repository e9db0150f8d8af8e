"""Test-wide settings: fixed seeds, bounded threads, a hypothesis profile sized for 2 CPU cores."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py

torch.set_num_threads(int(os.environ.get("POSENC_TEST_THREADS", "2")))

settings.register_profile(
    "posenc", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "posenc"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
