"""``stateful-route``: run the control plane, or steer a running one through its admin API.

serve and demo start processes (local.py); the other commands call the admin API
(operator.py) and print what it answered as sentences (render.py), or its JSON with --json.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from controlplane.cli import local, operator
from controlplane.errors import StatefulRouteError

DESCRIPTION = """\
Run the stateful-route control plane (serve), a whole local stack (demo), or steer a running
control plane through its admin API. Every command that calls the API prints sentences, or the
API's JSON with --json; an error is one line on stderr and exit status 1."""


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        result: int = args.run(args)
        sys.stdout.flush()
        return result
    except StatefulRouteError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `stateful-route users 3 | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def parser() -> argparse.ArgumentParser:
    """The whole command line (also what a completion generator would read)."""
    top = argparse.ArgumentParser(
        prog="stateful-route",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    local.add_commands(commands)
    operator.add_commands(commands)
    return top


def package_version() -> str:
    try:
        return version("stateful-route")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"
