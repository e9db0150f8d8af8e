"""The `posenc` command line: a thin layer over the library.

    posenc list            the registered encodings, their family and paper (--family NAME)
    posenc check           a one-line sanity check of every sequence encoding in the reference model
    posenc experiments     the experiments, the claim each tests and the paper it echoes
    posenc run NAME        run an experiment (or all): result.json and plot.png (--quick, --seed, --set KEY=VALUE)
    posenc replot NAME     draw an experiment's plot again from its result.json, without training
    posenc bench           posenc against the peer libraries, as ratios (--quick, --json FILE, --only TEXT)
    posenc atlas           the HTML atlas of every registered encoding (prints the path of its index.html)

A feature whose optional dependency is missing says which extra to install and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from posenc.cli_args import positive_int
from posenc.core.extras import MissingExtra, require

log = logging.getLogger("posenc")


def _on_terminal() -> bool:
    """Progress bars only when stderr is a terminal (never frames in a redirected log)."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 while keeping Python's ``sys.stderr``.

    Python-level writes (progress bars, warnings) go to a duplicate of the original descriptor.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured by a test runner)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    python_stderr = sys.stderr
    try:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, fd)
        os.close(saved)


def _cmd_list(args: argparse.Namespace) -> int:
    from posenc.core.registry import available

    rows = [info.as_row() for info in available(args.family)]  # an unknown family raises, listing them
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("name", "family")}
    print(f"{'name':<{widths['name']}}  {'family':<{widths['family']}}  paper")
    for r in rows:
        print(f"{r['name']:<{widths['name']}}  {r['family']:<{widths['family']}}  {r['paper']}")
    print(f"{len(rows)} encodings")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from posenc.checks import check_sequence_encodings

    failures = 0
    for line in check_sequence_encodings():
        print(line.render())
        failures += not line.ok
    print(f"{failures} failed" if failures else "all checks passed")
    return 1 if failures else 0


def _cmd_atlas(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    require("matplotlib", extra="plot", feature="posenc atlas")
    from posenc.analysis.atlas import build_atlas, collect_errors, default_results_dir

    existing = Path(args.out) / "index.html"
    if existing.exists() and not args.force:
        print(f"{existing} exists; pass --force to overwrite it or choose another --out", file=sys.stderr)
        return 1
    results = args.results
    if results == "":
        results = default_results_dir()
        if not results.is_dir():  # an installed wheel: the full runs live in the source repository only
            print("posenc atlas --results: the full runs (docs/results of posenc's source repository) are not "
                  "installed with the package and there is no docs/results here; pass the folder: --results DIR",
                  file=sys.stderr)
            return 2
    if results is not None and not Path(results).is_dir():
        print(f"posenc atlas --results: no folder {results} (it holds <name>/result.json of full runs, "
              "as docs/results does)", file=sys.stderr)
        return 2
    # the defaults may be missing (the atlas then says how to add them); a path given explicitly must exist
    if args.experiments is not None and not Path(args.experiments).is_dir():
        print(f"posenc atlas --experiments: no folder {args.experiments} (it holds <name>/result.json of "
              "`posenc run`, as posenc-out/experiments does)", file=sys.stderr)
        return 2
    if args.bench is not None and not Path(args.bench).is_file():
        print(f"posenc atlas --bench: no file {args.bench} (it is written by `posenc bench --json FILE`)", file=sys.stderr)
        return 2
    index = build_atlas(
        args.out, quick=args.quick, experiments=args.experiments, progress=_on_terminal(), bench=args.bench, results=results
    )
    errors = collect_errors(json.loads((index.parent / "results.json").read_text()))
    for error in errors:
        log.error("atlas: %s", error)
    if args.open:
        import webbrowser

        webbrowser.open(index.resolve().as_uri())
    print(index.resolve())
    return 1 if errors else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from posenc.bench import format_table, run_suite
    from posenc.bench.suite import NoSuchCase
    from posenc.core.devices import resolve_device

    device = resolve_device(args.device, argument="--device")
    if args.json:  # a --json that cannot be written fails now, not after the whole run
        import errno
        import tempfile
        from pathlib import Path

        target = Path(args.json)
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=target.parent):
                pass
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(target)) from error
    progress = None
    if _on_terminal():
        try:
            from tqdm import tqdm

            progress = lambda cases: tqdm(cases, desc="bench", unit="case", leave=False)
        except ImportError:
            progress = None
    with _quiet_native_stderr():  # torch's profiler prints `USDT: profiler_start/stop` lines from C++
        try:
            result = run_suite(quick=args.quick, device=device, rounds=args.rounds, progress=progress, only=args.only)
        except NoSuchCase as error:  # the message lists the cases
            print(f"posenc bench: --only: {error}", file=sys.stderr)
            return 2
    print(format_table(result))
    if args.json:
        from pathlib import Path

        from posenc.core.files import atomic_write_bytes

        atomic_write_bytes(Path(args.json), json.dumps(result, indent=2).encode())
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from posenc import __version__

    parser = argparse.ArgumentParser(prog="posenc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"posenc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the registered encodings")
    p.add_argument("--family", default=None, help="only this family")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("check", help="sanity-check every sequence encoding in the reference Transformer")
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser("bench", help="time posenc against the peer libraries, interleaved, as ratios")
    p.add_argument("--quick", action="store_true", help="small sizes, few rounds (under 2 minutes)")
    p.add_argument("--json", default=None, help="also write the rows and the machine to this file")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (what this torch build can use)")
    p.add_argument("--rounds", type=positive_int, default=None, help="interleaved rounds per case")
    p.add_argument("--only", default=None, metavar="TEXT", help="only the cases whose name contains TEXT, e.g. 'rope fwd+bwd'")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("atlas", help="write the HTML atlas of every registered encoding; prints its index.html")
    p.add_argument("--out", default="posenc-out/atlas", help="output folder (default: posenc-out/atlas)")
    p.add_argument("--experiments", default=None, help="folder of <name>/result.json (default: posenc-out/experiments)")
    p.add_argument("--quick", action="store_true", help="smaller sizes and shorter trainings")
    p.add_argument("--force", action="store_true", help="overwrite an existing atlas in --out")
    p.add_argument("--bench", default=None, help="a `posenc bench --json` file to show (default: posenc-out/bench.json)")
    p.add_argument("--results", nargs="?", const="", default=None, metavar="DIR",
                   help="also show the full runs in docs/results of a source checkout (or those in DIR); "
                   "a full run wins over a quick one")
    p.add_argument("--open", action="store_true", help="open the atlas in the default web browser")
    p.set_defaults(func=_cmd_atlas)
    from posenc.experiments.commands import add_subcommands  # `posenc run`, `posenc experiments`

    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except MissingExtra as error:
        message = str(error)  # "posenc atlas needs matplotlib, ...": prefixed only where it names no command
        print(message if message.startswith(f"posenc {args.command}") else f"posenc {args.command}: {message}",
              file=sys.stderr)
        return 2
    except ValueError as error:  # bad arguments found past argparse (a device, a configuration value)
        if args.verbose:
            raise
        print(f"posenc {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (`posenc list | head -1`): nothing to report
        # stdout to /dev/null, so that flushing it at exit does not raise a second time
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a program ended by a closed pipe
    except OSError as error:  # an --out/--json path that cannot be created or written
        if args.verbose:
            raise
        where = f": {error.filename}" if error.filename is not None else ""
        print(f"posenc {args.command}: cannot write{where}: {error.strerror or error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
