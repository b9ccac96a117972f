"""The ``orpheus-trio`` command: one sub-command per module, each registering itself.

Exit codes: 0 success, 1 the work failed (a request, a batch item), 2 bad usage,
130 interrupted.

Only the sub-command named on the command line is loaded, and only what it
needs: the client commands' parsers are light (:mod:`.parsers`), their work
(httpx, Trio, numpy) is imported once the arguments are parsed; the other
sub-commands appear in ``--help`` by name. The signals are taken first thing;
while the command's modules are imported a signal ends the process on the
spot (:func:`.interrupt.signals_end_at_once`), so a Ctrl-C at any moment ends
the same way: one line, exit 130. A client-only install (no ``server`` extra)
still runs ``speak``, ``batch`` and ``system``, and there ``serve`` and
``gateway`` say which extra to install instead of failing with a traceback.
"""

from __future__ import annotations

import importlib
import sys

from .interrupt import (
    INTERRUPTED_LINE,
    signals_end_at_once,
    signals_taken,
    stop_listening,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing before the signals are ours
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    #: Each registers one sub-command and sets either ``run`` (args -> exit code) or
    #: ``run_module`` (the module whose ``run`` that is) as its default.
    Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

__all__ = ["COMMANDS", "build_parser", "main"]

#: (name, "module:registrar", one-line help, the extra it needs beyond the base install),
#: in ``--help`` order.
COMMANDS: list[tuple[str, str, str, str | None]] = [
    ("speak", "orpheus_trio.cli.parsers:register_speak", "say one text into an audio file (or stdout)", None),
    ("batch", "orpheus_trio.cli.parsers:register_batch", "say many texts into one WAV each", None),
    ("system", "orpheus_trio.cli.parsers:register_system", "print a service's /v1/system", None),
    ("serve", "orpheus_trio.cli.serve:register", "run the reference v1 server", "server"),
    ("gateway", "orpheus_trio.cli.gateway:register", "serve v1 in front of several workers", "server"),
    ("voices", "orpheus_trio.cli.voices:register", "add, list, show and remove custom (cloned) voices", None),
]  # fmt: skip

EXIT_FAILED = 1

#: Top-level modules each extra brings: ``--help`` marks a command whose extra lacks one,
#: without importing the command (``find_spec`` only looks).
EXTRA_MODULES = {"server": ("httptools", "prometheus_client")}


def _missing_from(extra: str | None) -> str | None:
    """The first module of ``extra`` that is not installed, if any."""
    import importlib.util

    for module in EXTRA_MODULES.get(extra or "", ()):
        if importlib.util.find_spec(module) is None:
            return module
    return None


def _load(target: str, extra: str | None) -> Registrar | ModuleNotFoundError:
    """The registrar, or the missing third-party module that keeps it from loading."""
    module, _, name = target.partition(":")
    try:
        registrar: Registrar = getattr(importlib.import_module(module), name)
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
    import functools

    parser = commands.add_parser(
        name, help=f"{summary} (needs the {extra} extra)", add_help=False, prefix_chars="\0"
    )
    parser.add_argument("ignored", nargs="*")
    parser.set_defaults(run=functools.partial(_needs_extra, name, extra, missing))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full definition of the one sub-command ``argv`` names (all with ``None``)."""
    import argparse

    from .options import EXIT_CODES

    parser = argparse.ArgumentParser(
        prog="orpheus-trio",
        description="Stream Orpheus text-to-speech: speak, batch, system, serve, gateway. "
        "Run 'orpheus-trio COMMAND --help' for a command's options.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = argv[0] if argv else None
    for name, target, summary, extra in COMMANDS:
        if argv is not None and name != named:  # listed in --help, never parsed
            missing = _missing_from(extra)
            commands.add_parser(name, help=summary if missing is None else f"{summary} (needs the {extra} extra)")
            continue
        loaded = _load(target, extra)
        if isinstance(loaded, ModuleNotFoundError):
            assert extra is not None  # _load raises for commands of the base install
            _register_unavailable(commands, name, summary, extra, loaded.name)
        else:
            loaded(commands)
    return parser


def _skip_httpx_command_line() -> None:
    """httpx's ``__init__`` imports its own command-line tool (click, rich, pygments: about
    a third of a client command's start-up) whenever those are installed, and falls back
    to a stub when they are not. This process never runs that tool: take the fallback."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: "not importable"


def _runner(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    module: str | None = getattr(args, "run_module", None)
    run: Callable[[argparse.Namespace], int] = (
        args.run if module is None else importlib.import_module(module).run
    )
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """The process's entry point: it owns SIGINT and SIGTERM from here to the exit.

    Once the command is over they are ignored: a Ctrl-C while the interpreter
    shuts down would only print a traceback.
    """
    try:
        try:
            with signals_taken():
                with signals_end_at_once():  # the sub-command's modules are imported meanwhile
                    _skip_httpx_command_line()
                    given = list(sys.argv[1:] if argv is None else argv)
                    args = build_parser(given).parse_args(given)
                    run = _runner(args)
                return run(args)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM; in a Trio run, raised once all is closed
            stop_listening()
            print(INTERRUPTED_LINE, file=sys.stderr)
            return 130
    finally:
        stop_listening()


if __name__ == "__main__":
    sys.exit(main())
