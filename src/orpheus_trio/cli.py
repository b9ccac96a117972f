"""The ``orpheus-trio`` command: one sub-command per module, each registering itself.

Exit codes: 0 success, 1 the work failed (a request, a batch item), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .commands.batch import register as register_batch
from .commands.options import EXIT_CODES
from .commands.speak import register as register_speak
from .commands.system import register as register_system
from .server.command import register as register_serve
from .server.gateway_command import register as register_gateway

#: Each registers one sub-command and sets ``run`` (args -> exit code) as its default.
Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
#: In ``--help`` order.
REGISTRARS: list[Registrar] = [
    register_speak,
    register_batch,
    register_system,
    register_serve,
    register_gateway,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orpheus-trio",
        description="Stream Orpheus text-to-speech: speak, batch, system, serve, gateway. "
        "Run 'orpheus-trio COMMAND --help' for a command's options.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        print("orpheus-trio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
