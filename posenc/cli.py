"""The ``posenc`` command line: a thin layer over the library.

    posenc list            the registered encodings, their family and paper
    posenc check           a one-line sanity check of every sequence encoding in the reference model
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posenc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the registered encodings")
    p.add_argument("--family", default=None, help="only this family")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("check", help="sanity-check every sequence encoding in the reference Transformer")
    p.set_defaults(func=_cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
