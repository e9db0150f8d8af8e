"""length_generalization under torchrun: the ranks split the units (no DDP) and rank 0 merges them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from posenc.experiments import get_experiment, run_experiment
from posenc.experiments.harness import Context

SMALL = {
    "tasks": ["parity_check"], "encodings": ["rope"], "randomized": True, "train_max": 3, "test_max": 5,
    "random_range": 0, "dim": 16, "depth": 1, "heads": 2, "batch": 4, "steps": 3, "lr": 1e-3, "warmup": 1,
    "eval_batch": 4, "seeds": 2,
}  # fmt: skip
KEYS = {f"parity_check:{row}:seed{s}" for row in ("rope", "rope+rand") for s in (0, 1)}


def run_small(out: Path | None, **overrides) -> dict:
    exp = get_experiment("length_generalization")
    return run_experiment(exp, quick=True, out=out, overrides=SMALL | overrides, progress=False, device="cpu")


class Gathered(Exception):
    pass


def test_a_rank_trains_its_share_without_ddp(tmp_path, monkeypatch):
    """Rank 1 of 2 trains units 1 and 3 of the plan, alone, then hands them to the gather."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = {}

    def gather(self, results):
        seen.update(results)
        raise Gathered

    monkeypatch.setattr(Context, "gather", gather)
    with pytest.raises(Gathered):
        run_small(tmp_path, units=str(tmp_path / "units"))
    assert set(seen) == {"parity_check:rope:seed1", "parity_check:rope+rand:seed1"}
    assert len(list((tmp_path / "units").glob("*.json"))) == 2
    import torch.distributed as dist

    assert not dist.is_initialized()  # no process group: no DDP
    assert (tmp_path / "length_generalization" / "checkpoint.rank1.pt").exists()  # each rank its own


def test_torchrun_sweep_equals_one_process(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    single = run_small(tmp_path / "single")
    units = tmp_path / "units"
    units.mkdir()
    # a unit already on disk (an interrupted sweep) is read back, not trained again
    kept = next((tmp_path / "single" / "length_generalization" / "units").glob("parity_check__rope__seed0.json"))
    shutil.copy(kept, units / kept.name)
    before = (units / kept.name).stat()
    sets = [x for k, v in SMALL.items() for x in ("--set", f"{k}={','.join(v) if isinstance(v, list) else v}")]
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "posenc.cli", "run", "length_generalization"]
    cmd += ["--quick", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "sweep"), "--set", f"units={units}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd + sets, env=env, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads((tmp_path / "sweep" / "length_generalization" / "result.json").read_text())
    assert result["world_size"] == 2 and result["parallel"] == "units"
    merged, alone = result["metrics"], json.loads(json.dumps(single["metrics"]))
    assert merged == alone
    assert set(result["curves"]) == KEYS - {"parity_check:rope:seed0"}  # the kept unit was not trained
    assert result["curves"] == {k: v for k, v in single["curves"].items() if k in result["curves"]}
    after = (units / kept.name).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(list(units.glob("*.json"))) == 4
    assert not list((tmp_path / "sweep" / "length_generalization").glob("checkpoint*"))
    assert done.stdout.decode().count("length_generalization:") == 1  # only rank 0 reports


def test_ranks_take_the_local_gpu_and_share_them_past_the_count(monkeypatch):
    import torch

    from posenc.experiments.harness import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for local, index in ((0, 0), (1, 1), (2, 0), (3, 1)):
        monkeypatch.setenv("LOCAL_RANK", str(local))
        assert pick_device("auto") == torch.device("cuda", index)
