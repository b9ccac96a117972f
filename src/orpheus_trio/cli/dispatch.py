"""The ``orpheus-trio`` command: one sub-command per module, each registering itself.

Exit codes: 0 success, 1 the work failed (a request, a batch item), 2 bad usage,
130 interrupted.

The sub-command modules are imported when the parser is built, each on its
own: a client-only install (no ``server`` extra) still runs ``speak``,
``batch`` and ``system``, and there ``serve`` and ``gateway`` say which extra
to install instead of failing with a traceback.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Sequence

from .interrupt import (
    INTERRUPTED_LINE,
    signals_deferred,
    signals_taken,
    stop_listening,
)
from .options import EXIT_CODES, EXIT_FAILED

#: Each registers one sub-command and sets ``run`` (args -> exit code) as its default.
Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

#: (name, module with its ``register``, one-line help, the extra it needs beyond the base
#: install), in ``--help`` order.
COMMANDS: list[tuple[str, str, str, str | None]] = [
    ("speak", "orpheus_trio.cli.speak", "say one text into a WAV file (or stdout)", None),
    ("batch", "orpheus_trio.cli.batch", "say many texts into one WAV each", None),
    ("system", "orpheus_trio.cli.system", "print a service's /v1/system", None),
    ("serve", "orpheus_trio.cli.serve", "run the reference v1 server", "server"),
    ("gateway", "orpheus_trio.cli.gateway", "serve v1 in front of several workers", "server"),
    ("voices", "orpheus_trio.cli.voices", "add, list, show and remove custom (cloned) voices", None),
]  # fmt: skip


def _load(module: str, extra: str | None) -> Registrar | ModuleNotFoundError:
    """The module's ``register``, or the missing third-party module that keeps it from loading."""
    try:
        registrar: Registrar = importlib.import_module(module).register
    except ModuleNotFoundError as error:
        if extra is None or (error.name or "orpheus_trio").startswith("orpheus_trio"):
            raise  # a base dependency or our own module: a broken install, not a missing extra
        return error
    return registrar


def _needs_extra(name: str, extra: str, missing: str | None, args: argparse.Namespace) -> int:
    # The package is installed from a checkout (it is not published), so name the checkout form.
    print(
        f"orpheus-trio {name}: needs the {extra} extra ({missing} is not installed); "
        f"install it from the checkout: pip install '.[{extra}]'",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _register_unavailable(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    extra: str,
    missing: str | None,
) -> None:
    """A stand-in that takes any arguments (even ``--help``) and says which extra to install."""
    parser = commands.add_parser(
        name, help=f"{summary} (needs the {extra} extra)", add_help=False, prefix_chars="\0"
    )
    parser.add_argument("ignored", nargs="*")
    parser.set_defaults(run=functools.partial(_needs_extra, name, extra, missing))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orpheus-trio",
        description="Stream Orpheus text-to-speech: speak, batch, system, serve, gateway. "
        "Run 'orpheus-trio COMMAND --help' for a command's options.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, summary, extra in COMMANDS:
        loaded = _load(module, extra)
        if isinstance(loaded, ModuleNotFoundError):
            assert extra is not None  # _load raises for commands of the base install
            _register_unavailable(commands, name, summary, extra, loaded.name)
        else:
            loaded(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with signals_taken():
        try:
            with signals_deferred():  # the sub-commands' modules are imported meanwhile
                parser = build_parser()
            args = parser.parse_args(argv)
            run: Callable[[argparse.Namespace], int] = args.run
            return run(args)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM; in a Trio run, raised once all is closed
            stop_listening()
            print(INTERRUPTED_LINE, file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
