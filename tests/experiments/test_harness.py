"""The harness: listing, atomic results, no silent overwrite, determinism, and resume after SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posenc.cli import main
from posenc.experiments import NAMES, ResultExists, experiments, get_experiment, run_experiment

# a run of the order experiment small enough for a unit test (about a second)
TINY = {"encodings": ["none", "conv_context"], "steps": 30, "dim": 16, "batch": 16, "eval_batch": 64}


def test_every_experiment_is_listed_with_claim_and_paper(capsys):
    assert [e.name for e in experiments()] == list(NAMES)
    assert main(["experiments"]) == 0
    out = capsys.readouterr().out
    for e in experiments():
        assert e.name in out and e.paper in out
        assert e.reference, f"{e.name} has no reference numbers"


def test_unknown_experiment_names_the_argument():
    with pytest.raises(ValueError, match="name"):
        get_experiment("nope")
    with pytest.raises(ValueError, match="overrides"):
        run_experiment(get_experiment("order"), quick=True, out=None, overrides={"nope": 1}, progress=False)


def test_result_files_versions_and_no_overwrite(tmp_path):
    exp = get_experiment("order")
    result = run_experiment(exp, quick=True, out=tmp_path, overrides=TINY, progress=False, device="cpu")
    folder = tmp_path / "order"
    saved = json.loads((folder / "result.json").read_text())
    assert saved["metrics"]["accuracy"] == result["metrics"]["accuracy"]
    assert {"config", "metrics", "curves", "wall_time_s", "versions", "reference"} <= set(saved)
    assert {"posenc", "torch"} <= set(saved["versions"])
    assert len(saved["curves"]["none"]) == TINY["steps"]
    assert (folder / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert not (folder / "checkpoint.pt").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    before = (folder / "result.json").read_bytes()
    with pytest.raises(ResultExists, match="force"):
        run_experiment(exp, quick=True, out=tmp_path, overrides=TINY, progress=False)
    assert (folder / "result.json").read_bytes() == before
    # the CLI refuses too, and `--force` overwrites
    args = ["run", "order", "--quick", "--out", str(tmp_path), "--no-progress"]
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v!r}")]
    assert main(args + sets) == 1
    assert main(args + sets + ["--force"]) == 0


def test_same_seed_same_metrics_other_seed_differs():
    exp = get_experiment("order")
    a = run_experiment(exp, quick=True, out=None, overrides=TINY, progress=False, seed=3)
    b = run_experiment(exp, quick=True, out=None, overrides=TINY, progress=False, seed=3)
    c = run_experiment(exp, quick=True, out=None, overrides=TINY, progress=False, seed=4)
    assert a["metrics"] == b["metrics"] and a["curves"] == b["curves"]
    assert a["curves"] != c["curves"]


SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from posenc.cli import main
sys.exit(main(sys.argv[1:]))
"""


#: the resumed runs: long enough that a signal sent at the first checkpoint lands mid-run
RESUMABLE = dict(TINY, steps=60, encodings=["none", "conv_context"], checkpoint_every=5)


def _run_command() -> list[str]:
    sets = [x for k, v in RESUMABLE.items() for x in ("--set", f"{k}={v!r}")]
    return [sys.executable, "-c", SCRIPT, "run", "order", "--quick", "--no-progress", "--seed", "1"] + sets


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The result of the resumed runs' command, run once without interruption (shared by both signals)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(_run_command() + ["--out", str(out)], check=True, env=env, capture_output=True, timeout=300)
    return json.loads((out / "order" / "result.json").read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_resume_after_signal_matches_uninterrupted_run(tmp_path, sig, uninterrupted):
    base = _run_command()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = uninterrupted

    out = tmp_path / "run"
    proc = subprocess.Popen(base + ["--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / "order" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert ckpt.exists() and not (out / "order" / "result.json").exists()
    # without --resume the checkpoint is not thrown away
    refused = subprocess.run(base + ["--out", str(out)], check=False, env=env, capture_output=True, timeout=300)
    assert refused.returncode == 1 and b"--resume" in refused.stderr
    subprocess.run(base + ["--out", str(out), "--resume"], check=True, env=env, capture_output=True, timeout=300)
    resumed = json.loads((out / "order" / "result.json").read_text())
    assert resumed["resumed"] is True
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["curves"] == reference["curves"]
    assert not ckpt.exists()


def test_resume_with_other_seed_is_refused(tmp_path):
    exp = get_experiment("order")
    ctx_out = tmp_path / "order"
    ctx_out.mkdir()
    from posenc.experiments.harness import Context

    Context(name="order", config=dict(exp.quick, **TINY), seed=0, quick=True, out_dir=ctx_out).save_checkpoint()
    with pytest.raises(ValueError, match="seed"):
        run_experiment(exp, quick=True, out=tmp_path, overrides=TINY, seed=1, resume=True, progress=False)


@pytest.mark.parametrize("content", [b"garbage\n", b""])
def test_resume_from_a_damaged_checkpoint_names_the_file(tmp_path, content):
    # torch.load's own error came through ("invalid literal for int() with base 10: 'arbage\n'"), naming no file
    (tmp_path / "order").mkdir()
    (tmp_path / "order" / "checkpoint.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"^the checkpoint in .*checkpoint\.pt cannot be read \(.*`--force` to start over$"):
        run_experiment(get_experiment("order"), quick=True, out=tmp_path, overrides=TINY, resume=True, progress=False)


def test_torchrun_two_processes_data_parallel(tmp_path):
    """Under torchrun the same command trains with DistributedDataParallel (gloo on the CPU)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    sets = [x for k, v in dict(TINY, steps=10).items() for x in ("--set", f"{k}={v!r}")]
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "posenc.cli", "run", "order", "--quick", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd + ["--out", str(tmp_path)] + sets, check=False, env=env, capture_output=True, timeout=300)
    err = done.stderr.decode()
    assert done.returncode == 0, err[:3000] + "\n...\n" + err[-1500:]  # the ranks' own errors come first
    result = json.loads((tmp_path / "order" / "result.json").read_text())
    assert result["world_size"] == 2
    assert len(result["curves"]["none"]) == 10
    assert done.stdout.decode().count("order:") == 1  # only rank 0 reports


def test_missing_plot_is_drawn_from_the_result_instead_of_refused(tmp_path, capsys):
    exp = get_experiment("order")
    run_experiment(exp, quick=True, out=tmp_path, overrides=TINY, progress=False, device="cpu")
    folder = tmp_path / "order"
    stored = (folder / "result.json").read_bytes()
    (folder / "plot.png").unlink()
    # a rerun draws the plot from result.json and trains nothing (the stored result is returned unchanged)
    result = run_experiment(exp, quick=True, out=tmp_path, overrides=TINY, progress=False)
    assert (folder / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "result.json").read_bytes() == stored
    assert result == json.loads(stored)
    # `posenc replot` redraws it on demand
    (folder / "plot.png").unlink()
    assert main(["replot", "order", "--out", str(tmp_path)]) == 0
    assert (folder / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["replot", "timestep", "--out", str(tmp_path)]) == 1
    assert "posenc run timestep" in capsys.readouterr().err


@pytest.mark.parametrize("change", [{"seed": 1}, {"quick": False}, {"overrides": dict(TINY, steps=31)}])
def test_missing_plot_of_another_run_is_refused_not_drawn(tmp_path, change):
    # a rerun with another --seed, --quick or --set used to draw the plot of the stored result and return
    # that result as its own (the command line printed the earlier run's numbers as this run's)
    exp = get_experiment("order")
    run_experiment(exp, quick=True, out=tmp_path, overrides=TINY, progress=False, device="cpu")
    folder = tmp_path / "order"
    stored = (folder / "result.json").read_bytes()
    (folder / "plot.png").unlink()
    asked = {"quick": True, "overrides": TINY, "seed": 0} | change
    with pytest.raises(ResultExists, match="another configuration, seed or --quick.*--force"):
        run_experiment(exp, out=tmp_path, progress=False, **asked)
    assert not (folder / "plot.png").exists() and (folder / "result.json").read_bytes() == stored


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "no 'metrics' object"), ("{}", "no 'metrics' object"),
     ('{"name": "order", "metrics": {}}', "holds a result of 'order', not of 'timestep'")],
)
def test_replot_of_a_damaged_result_names_the_file(tmp_path, capsys, text, message):
    # a result.json that was not valid JSON was refused without naming the file, and one without metrics
    # (or not a dict) ended `posenc replot` with a KeyError or TypeError traceback from the plot
    folder = tmp_path / "timestep"
    folder.mkdir()
    (folder / "result.json").write_text(text)
    assert main(["replot", "timestep", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"posenc replot: {folder / 'result.json'} ") and message in err and err.count("\n") == 0, err
    assert "posenc run timestep --force" in err and not (folder / "plot.png").exists()


def test_plot_images_are_kept_for_replot(tmp_path):
    import torch

    from posenc.experiments import Experiment
    from posenc.experiments.harness import replot

    drawn = []

    def run(ctx):
        return {"headline": {"a": 1.0}, "_images": {"target": torch.full((2, 2, 3), 0.5)}}

    def plot(result, fig, images):
        drawn.append(images)
        fig.subplots(1, 1).imshow(images["target"].numpy())

    exp = Experiment(name="toy", claim="c", paper="p", section="0", quick={}, full={}, reference={"x": 1}, run=run, plot=plot)
    run_experiment(exp, quick=True, out=tmp_path, progress=False)
    replot(exp, tmp_path / "toy")
    assert len(drawn) == 2 and torch.equal(drawn[0]["target"], drawn[1]["target"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": "abc"}, "`steps` takes an integer"),
        ({"steps": "1e3"}, None),  # was refused as not an integer, though 1000.0 given from Python is taken
        ({"steps": "2.5"}, "`steps` takes an integer, got '2.5'"),
        ({"steps": "inf"}, "`steps` takes an integer, got 'inf'"),
        ({"steps": 0}, "`steps` must be > 0"),
        ({"steps": -2}, "`steps` must be > 0, got -2"),  # not ">= 0": 0 is refused too
        ({"steps": True}, "`steps` takes a number"),
        ({"warmup": 0}, None),
        ({"warmup": -1}, "`warmup` must be >= 0"),
        ({"lr": float("inf")}, "`lr` must be finite"),
        ({"encodings": "none,conv_context"}, None),
        # the --help's bracketed form with bare names used to give ['[none', 'conv_context]']
        ({"encodings": "[none, conv_context]"}, None),
        ({"encodings": "[none, 'conv_context']"}, None),
    ],
)
def test_overrides_are_checked_against_type_and_range(overrides, message):
    from posenc.experiments.harness import apply_overrides

    exp = get_experiment("order")
    if message is None:
        config = apply_overrides(exp, dict(exp.quick), overrides)
        assert config["encodings"] in (["none", "conv_context"], exp.quick["encodings"])
        assert config["steps"] == (1000 if overrides.get("steps") == "1e3" else exp.quick["steps"])
    else:
        with pytest.raises(ValueError, match=message):
            apply_overrides(exp, dict(exp.quick), overrides)


def test_negative_seed_is_refused():
    with pytest.raises(ValueError, match="`seed` must be a non-negative integer"):
        run_experiment(get_experiment("order"), quick=True, out=None, seed=-3, progress=False)


def test_a_process_group_started_by_a_run_is_destroyed_and_a_callers_is_kept(tmp_path):
    """A rank that exits with its gloo group alive can abort at interpreter shutdown."""
    import torch.distributed as dist

    from posenc.experiments.harness import _own_process_group

    def start(name):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / name}", rank=0, world_size=1)

    with _own_process_group():
        start("inside")
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="boom"), _own_process_group():
        start("failing")
        raise RuntimeError("boom")
    assert not dist.is_initialized()
    start("caller")
    try:
        with _own_process_group():
            pass
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_an_out_folder_that_cannot_be_made_is_refused_before_training(tmp_path, capsys):
    # a file in the way used to be found at the first checkpoint, after training had started
    blocker = tmp_path / "file"
    blocker.write_text("")
    trained = []
    exp = get_experiment("order")

    def run(ctx):
        trained.append(ctx.name)
        return {}

    from dataclasses import replace

    with pytest.raises(NotADirectoryError, match=str(blocker / "order")):
        run_experiment(replace(exp, run=run), quick=True, out=blocker, progress=False)
    assert not trained
    # the command line: one line naming the folder, status 1, before training
    assert main(["run", "order", "--quick", "--out", str(blocker)]) == 1
    assert capsys.readouterr().err.strip() == f"posenc run: cannot write: {blocker / 'order'}: Not a directory"


def test_a_name_instead_of_an_experiment_is_refused_by_name(tmp_path):
    # run_experiment("order") ended in AttributeError: 'str' object has no attribute 'quick'
    from posenc.experiments.harness import replot

    with pytest.raises(TypeError, match=r"`experiment` must be an Experiment .*get_experiment\(name\).*got str 'order'"):
        run_experiment("order", quick=True, out=None)
    with pytest.raises(TypeError, match="`experiment` must be an Experiment"):
        replot("order", tmp_path)
