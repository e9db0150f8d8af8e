"""The ``posenc`` command line: a thin layer over the library.

    posenc list            the registered encodings, their family and paper
    posenc check           a one-line sanity check of every sequence encoding in the reference model
    posenc bench           posenc against the peer libraries, as ratios (--quick, --json FILE)
    posenc atlas           the HTML atlas of every registered encoding (prints the path of its index.html)
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("posenc")


def _cmd_list(args: argparse.Namespace) -> int:
    from posenc.core.registry import available

    rows = [info.as_row() for info in available(args.family)]
    if not rows:
        print(f"no encodings in family {args.family!r}")
        return 1
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
    from pathlib import Path

    from posenc.analysis.atlas import build_atlas

    existing = Path(args.out) / "index.html"
    if existing.exists() and not args.force:
        print(f"{existing} exists; pass --force to overwrite it or choose another --out", file=sys.stderr)
        return 1
    import json

    from posenc.analysis.atlas import collect_errors, default_results_dir

    results = args.results
    if results == "":
        results = default_results_dir()
    if results is not None and not Path(results).is_dir():
        print(f"--results: no folder {results} (it holds <name>/result.json of full runs, as docs/results does)",
              file=sys.stderr)
        return 2
    index = build_atlas(args.out, quick=args.quick, experiments=args.experiments, progress=True, bench=args.bench,
                        results=results)
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

    try:
        from tqdm import tqdm

        progress = lambda cases: tqdm(cases, desc="bench", unit="case", leave=False)  # noqa: E731
    except ImportError:
        progress = None
    result = run_suite(quick=args.quick, device=args.device, rounds=args.rounds, progress=progress)
    print(format_table(result))
    if args.json:
        from pathlib import Path

        from posenc.core.files import atomic_write_bytes

        atomic_write_bytes(Path(args.json), json.dumps(result, indent=2).encode())
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posenc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("atlas", help="write the HTML atlas of every registered encoding; prints its index.html")
    p.add_argument("--out", default="posenc-out/atlas", help="output folder (default: posenc-out/atlas)")
    p.add_argument("--experiments", default=None, help="folder of <name>/result.json (default: posenc-out/experiments)")
    p.add_argument("--quick", action="store_true", help="smaller sizes and shorter trainings")
    p.add_argument("--force", action="store_true", help="overwrite an existing atlas in --out")
    p.add_argument("--bench", default=None, help="a `posenc bench --json` file to show (default: posenc-out/bench.json)")
    p.add_argument("--results", nargs="?", const="", default=None, metavar="DIR",
                   help="also show the full runs shipped in docs/results (or those in DIR); "
                   "a full run wins over a quick one")
    p.add_argument("--open", action="store_true", help="open the atlas in the default web browser")
    p.set_defaults(func=_cmd_atlas)
    from posenc.experiments.commands import add_subcommands  # `posenc run`, `posenc experiments`

    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
