"""The command line: `posenc list` and `posenc check`."""

from __future__ import annotations

import pytest

import posenc
from posenc.cli import main


def test_list_prints_every_encoding(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for info in posenc.available():
        assert info.name in out and info.paper in out
    assert f"{len(posenc.available())} encodings" in out


def test_list_one_family(capsys):
    assert main(["list", "--family", "rotary"]) == 0
    out = capsys.readouterr().out
    assert "rope" in out and "alibi" not in out


def test_check_passes_for_every_sequence_encoding(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "all checks passed" in out
    for name in ("none", "sinusoidal", "learned", "rope", "alibi", "t5"):
        assert f"ok    {name}" in out


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["nonsense"])


# --- complete help, version, module entry, "did you mean", argument checks, missing extras -------------


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "check", "experiments", "run", "replot", "bench", "atlas"):
        assert f"posenc {command}" in out, command


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"posenc {posenc.__version__}"


def test_python_dash_m_posenc(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "posenc", "--version"], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"posenc {posenc.__version__}"


def test_importing_posenc_main_runs_nothing(capsys):
    # `import posenc.__main__` (pkgutil.walk_packages, a doctest or documentation run over the package)
    # ran the command line: it printed the usage and raised SystemExit(2)
    import importlib

    importlib.import_module("posenc.__main__")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_mistyped_names_get_a_suggestion(capsys):
    assert main(["list", "--family", "rotry"]) == 2
    assert "did you mean 'rotary'" in capsys.readouterr().err
    assert main(["run", "extrapolaton", "--quick"]) == 2
    assert "did you mean 'extrapolation'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="did you mean 'rope'"):
        posenc.create("ropee")
    assert main(["replot", "gan_positon"]) == 2
    assert "did you mean 'gan_position'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("steps=abc", "`steps` takes an integer, got 'abc'"),
        ("steps=0", "`steps` must be > 0"),
        ("steps=2.5", "`steps` takes an integer"),
        ("lr=nan", "`lr` must be finite"),
        ("lr=-1e-3", "`lr` must be > 0, got -0.001"),  # not ">= 0": 0 is refused too
        ("stepz=3", "did you mean 'steps'"),
        ("variants=[1, 2]", "`variants` takes a list of str"),
        ("ks=[1, -2]", "`ks[1]` must be >= 0"),
    ],
)
def test_set_is_checked_against_the_configuration(capsys, tmp_path, setting, message):
    name = "shaw_clip" if setting.startswith(("variants", "ks")) else "order"
    assert main(["run", name, "--quick", "--out", str(tmp_path), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / name).exists()  # refused before any training


@pytest.mark.parametrize("seed", ["-3", "x"])
def test_seed_must_be_a_non_negative_integer(capsys, seed):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "order", "--quick", "--seed", seed])
    assert exit_info.value.code == 2
    assert "--seed" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["run", "order", "--quick"], ["bench", "--quick"]])
@pytest.mark.parametrize("device", ["tpu", "cuda:7", "nonsense"])
def test_a_device_torch_cannot_use_is_named(capsys, command, device):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    assert main([*command, "--device", device]) == 2
    err = capsys.readouterr().err
    assert "--device" in err and repr(device) in err and "cpu" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "command",
    [["atlas", "--quick"], ["run", "order", "--quick"], ["replot", "order"]],
)
def test_missing_plot_extra_is_one_line_and_status_2(capsys, monkeypatch, tmp_path, command):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    (tmp_path / "order").mkdir()
    (tmp_path / "order" / "result.json").write_text("{}")
    assert main([*command, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "posenc[plot]"' in err
    assert err.count(f"posenc {command[0]}") == 1, err  # the command named once, not as a prefix and again


def test_results_without_the_source_tree_is_one_line_and_status_2(capsys, monkeypatch, tmp_path):
    # installed from a wheel and run outside a checkout: docs/results (the full runs) is not there
    from posenc.analysis import atlas

    monkeypatch.setattr(atlas, "default_results_dir", lambda: tmp_path / "docs" / "results")
    assert main(["atlas", "--quick", "--results", "--out", str(tmp_path / "atlas")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--results DIR" in err and "Traceback" not in err, err
    assert not (tmp_path / "atlas").exists()
    assert main(["atlas", "--quick", "--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "atlas")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nowhere") in err, err


@pytest.mark.parametrize("flag", ["--experiments", "--bench"])
def test_atlas_refuses_an_explicit_path_that_does_not_exist(capsys, tmp_path, flag):
    # a mistyped --experiments or --bench was ignored: the atlas was built (a minute at --quick) without
    # the runs or the benchmark asked for, and the command exited 0
    missing = tmp_path / "nowhere"
    assert main(["atlas", "--quick", flag, str(missing), "--out", str(tmp_path / "atlas")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"posenc atlas {flag}: no ") and str(missing) in err, err
    assert not (tmp_path / "atlas").exists()


def test_native_stderr_is_silenced_but_python_stderr_is_kept(tmp_path):
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from posenc.cli import _quiet_native_stderr\n"
        "with _quiet_native_stderr():\n"
        "    os.write(2, b'USDT: profiler_start\\n')\n"
        "    print('kept', file=sys.stderr)\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.split() == ["kept", "after"]


def test_bench_prints_no_profiler_chatter():
    import subprocess
    import sys

    script = (
        "from posenc.cli import _quiet_native_stderr\n"
        "from posenc.bench.timing import peak_memory_bytes\n"
        "import torch\n"
        "with _quiet_native_stderr():\n"
        "    peak_memory_bytes(lambda: torch.ones(1000))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "USDT" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "command",
    [["run", "order", "--quick"], ["atlas", "--quick"], ["run", "all", "--quick"]],
)
@pytest.mark.parametrize("out", ["/proc/posenc-no-such-dir", "/dev/null"])
def test_an_output_folder_that_cannot_be_written_is_one_line_and_status_1(capsys, command, out):
    assert main([*command, "--out", out]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"posenc {command[0]}: cannot write: ") and "/" in err, err


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    """``posenc experiments | head -1``: no 'cannot write: Broken pipe', status 141 as for SIGPIPE."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "posenc", "experiments"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait() == 141, stderr
    assert "Broken pipe" not in stderr and "Traceback" not in stderr


def test_a_set_key_given_twice_is_refused(capsys, tmp_path):
    assert main(["run", "order", "--quick", "--out", str(tmp_path), "--set", "steps=3", "--set", "steps=5"]) == 2
    err = capsys.readouterr().err
    assert "'steps' twice" in err and "Traceback" not in err
    assert not (tmp_path / "order").exists()
