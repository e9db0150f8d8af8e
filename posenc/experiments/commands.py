"""The ``posenc run`` and ``posenc experiments`` subcommands (added to the parser in posenc/cli.py).

    posenc experiments                          the experiments, the claim each tests, the paper it echoes
    posenc run NAME [--quick] [--seed N] [--out DIR] [--resume] [--force] [--set KEY=VALUE ...]
    posenc run all --quick                      every experiment; earlier results are kept unless --force
    posenc replot NAME [--out DIR]              draw NAME's plot.png again from its result.json (or all)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from posenc.cli_args import non_negative_int

log = logging.getLogger("posenc")


def _parse_override(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a pair of strings; the value is read as the configuration's type when applied."""
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise argparse.ArgumentTypeError(f"expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value


def _cmd_experiments(args: argparse.Namespace) -> int:
    from posenc.experiments import experiments

    for e in experiments():
        print(f"{e.name:<14} [survey {e.section}] {e.claim}")
        print(f"{'':<14} echoes {e.paper}")
    return 0


def _overrides(pairs: list[tuple[str, object]] | None) -> dict[str, object]:
    """The ``--set KEY=VALUE`` pairs as a dict; a key given twice is refused (the last would silently win)."""
    overrides: dict[str, object] = {}
    for key, value in pairs or []:
        if key in overrides:
            raise ValueError(f"--set gives {key!r} twice ({overrides[key]!r} and {value!r}); give it once")
        overrides[key] = value
    return overrides


def _cmd_run(args: argparse.Namespace) -> int:
    from posenc.core.extras import require
    from posenc.experiments import NAMES, Interrupted, ResultExists, get_experiment, run_experiment
    from posenc.experiments.harness import apply_overrides, pick_device, world

    names = list(NAMES) if args.name == "all" else [args.name]
    try:
        overrides = _overrides(args.set)
        chosen = [get_experiment(n) for n in names]
        pick_device(args.device)
        if args.name != "all":  # check --set before any training starts
            experiment = chosen[0]
            apply_overrides(experiment, dict(experiment.quick if args.quick else experiment.full), overrides)
    except ValueError as error:
        print(f"posenc run: {error}", file=sys.stderr)
        return 2
    if args.out is not None:  # the plot is drawn after training: fail now, not after it
        require("matplotlib", extra="plot", feature="posenc run (its plot.png)")
    failures = 0
    for experiment in chosen:
        try:
            result = run_experiment(
                experiment,
                quick=args.quick,
                seed=args.seed,
                out=args.out,
                resume=args.resume,
                force=args.force,
                overrides=overrides,
                device=args.device,
                progress=not args.no_progress and sys.stderr.isatty(),
            )
        except ResultExists as error:
            if args.name == "all":
                print(f"{experiment.name}: kept the earlier result ({error})")
                continue
            print(error, file=sys.stderr)
            return 1
        except Interrupted as error:
            print(f"{experiment.name}: {error}; continue with --resume", file=sys.stderr)
            return 130
        except ValueError as error:
            print(f"{experiment.name}: {error}", file=sys.stderr)
            failures += 1
            continue
        if world()[0] != 0:
            continue
        summary = result["metrics"].get("headline", {})
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, (int, float)) else f"{k} n/a" for k, v in summary.items())
        print(f"{experiment.name}: {result['wall_time_s']:.1f} s -> {Path(args.out) / experiment.name}  [{shown}]")
    return 1 if failures else 0


def _cmd_replot(args: argparse.Namespace) -> int:
    from posenc.core.extras import require
    from posenc.experiments import NAMES, get_experiment
    from posenc.experiments.harness import RESULT_FILE, replot

    try:
        names = list(NAMES) if args.name == "all" else [get_experiment(args.name).name]
    except ValueError as error:
        print(f"posenc replot: {error}", file=sys.stderr)
        return 2
    require("matplotlib", extra="plot", feature="posenc replot")
    drawn = 0
    for name in names:
        folder = Path(args.out) / name
        if not (folder / RESULT_FILE).exists():
            if args.name != "all":
                print(f"posenc replot: {folder / RESULT_FILE} does not exist; run `posenc run {name}` first", file=sys.stderr)
                return 1
            continue
        replot(get_experiment(name), folder)
        print(folder / "plot.png")
        drawn += 1
    if not drawn:
        print(f"posenc replot: no result.json under {args.out}", file=sys.stderr)
        return 1
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``experiments`` to the ``posenc`` parser's subcommands."""
    from posenc.experiments.harness import DEFAULT_OUT

    p = sub.add_parser("experiments", help="list the experiments with the claim each tests and the paper it echoes")
    p.set_defaults(func=_cmd_experiments)
    p = sub.add_parser("run", help="run an experiment (or all) and write its result.json and plot.png")
    p.add_argument("name", help="an experiment name from `posenc experiments`, or all")
    p.add_argument("--quick", action="store_true", help="the small configuration (about a minute on 2 CPU cores)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of every random draw, a non-negative integer (default 0)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an earlier result or checkpoint")
    p.add_argument(
        "--set",
        action="append",
        type=_parse_override,
        metavar="KEY=VALUE",
        help="override a configuration value (checked against its type and range; lists as a,b,c or [a, b])",
    )
    p.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("replot", help="draw an experiment's plot.png again from its result.json, without training")
    p.add_argument("name", help="an experiment name from `posenc experiments`, or all")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    p.set_defaults(func=_cmd_replot)
