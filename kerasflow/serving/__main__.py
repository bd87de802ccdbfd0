"""`python -m kerasflow.serving serve|predict`: the serving commands without the main CLI."""

from __future__ import annotations

import argparse
import sys

from kerasflow.runtime.errors import UserError
from kerasflow.serving.commands import register


def main(argv: list[str] | None = None) -> int:
    """Parses `argv`, runs the chosen command and returns its exit code (2 for user errors)."""
    parser = argparse.ArgumentParser(prog="python -m kerasflow.serving")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
