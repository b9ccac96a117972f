"""``orpheus-trio serve``: run the reference server until SIGINT/SIGTERM.

The first signal drains (new requests get 503 ``draining``, in-flight streams
get ``--drain-grace-s`` to finish); a second signal stops at once.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import trio

from .._util.groups import single_exception
from ..server.app import OrpheusApp, create_app
from ..server.config import ServerConfig
from ..server.engine import Engine
from ..server.engines.orpheus import add_arguments as add_orpheus_arguments
from ..server.engines.orpheus import add_catalog_arguments
from ..server.engines.orpheus_remote import add_arguments as add_orpheus_remote_arguments
from ..server.voice_upload import add_arguments as add_voice_library_arguments
from ..server.voice_upload import attach_voice_library
from ..server.http.run import serve_app

__all__ = [
    "ENGINES",
    "add_server_arguments",
    "config_from_args",
    "register",
    "run",
    "run_server_command",
    "serve_until_signalled",
]


def _espeak(args: argparse.Namespace) -> Engine:
    from ..server.engines.espeak import EspeakEngine
    from ..server.engines.orpheus import alias_overrides
    from ..voices import FAMILIES

    # --voices picks espeak's voices; else --model-family's (its languages); else all.
    if args.voices is not None:
        voices: list[str] | None = [v.strip() for v in args.voices.split(",") if v.strip()]
    elif args.model_family:
        voices = [v.name for v in FAMILIES[args.model_family].voices]
    else:
        voices = None
    return EspeakEngine(voices or None, aliases=alias_overrides(args))


def _orpheus_remote(args: argparse.Namespace) -> Engine:
    from ..server.engines.orpheus_remote import from_args

    return attach_voice_library(from_args(args), args)


def _synthetic(args: argparse.Namespace) -> Engine:
    from ..server.engines.orpheus import catalog_from_args
    from ..server.engines.synthetic import SyntheticEngine

    return SyntheticEngine(voice_catalog=catalog_from_args(args, checkpoint=None))


def _orpheus(args: argparse.Namespace) -> Engine:
    from ..server.engines.orpheus import from_args

    return attach_voice_library(from_args(args), args)


#: Engine name -> factory (given the parsed arguments); imported lazily so an
#: engine's heavy deps load only when chosen.
ENGINES: dict[str, Callable[[argparse.Namespace], Engine]] = {
    "espeak": _espeak,
    "orpheus": _orpheus,
    "orpheus-remote": _orpheus_remote,
    "synthetic": _synthetic,
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the reference v1 server",
        description="Serve the v1 streaming contract (POST /v1/tts/stream, GET /v1/system, "
        "GET /metrics). SIGINT/SIGTERM drains gracefully; a second signal stops at once.",
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--engine", choices=sorted(ENGINES), default="espeak",
        help="what speaks (default: espeak; orpheus: your checkpoint here, --model and --snac; "
        "orpheus-remote: an inference engine, --llm-url and --snac; synthetic: test audio)",
    )  # fmt: skip
    add_orpheus_arguments(parser)
    add_orpheus_remote_arguments(parser)
    add_catalog_arguments(parser)
    add_voice_library_arguments(parser)
    parser.set_defaults(run=run)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Address, keys, limits and log level: the flags ``serve`` and ``gateway`` share."""
    defaults = ServerConfig()
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="0 picks a free port"
    )
    parser.add_argument(
        "--api-key", action="append", default=[], dest="api_keys", metavar="KEY",
        help="accepted API key (repeatable); none = no auth",
    )  # fmt: skip
    parser.add_argument(
        "--protect-service-endpoints", action="store_true",
        help="require a key for /v1/system and /metrics too",
    )  # fmt: skip
    parser.add_argument(
        "--no-playground", action="store_false", dest="playground",
        help="do not serve the browser playground at GET /",
    )  # fmt: skip
    limits = [
        ("--max-concurrency", int, "N", "requests synthesized at once"),
        ("--max-queue", int, "N", "requests waiting for a slot; past this, 429"),
        ("--default-timeout-s", float, "S", "deadline of a request without timeout_s"),
        ("--max-timeout-s", float, "S", "cap on a request's timeout_s"),
        ("--max-text-chars", int, "N", "longer text is 413 text_too_long"),
        ("--max-body-bytes", int, "N", "larger bodies are 413 body_too_large"),
        ("--read-timeout-s", float, "S", "time to receive headers, then the body"),
        ("--write-stall-timeout-s", float, "S", "a write stuck this long: close"),
        ("--max-connections", int, "N", "open at once; more wait to be accepted"),
        ("--max-connections-per-client", int, "N", "open from one address (0: no cap)"),
        ("--max-head-waits-per-client", int, "N",
         "from one address still sending their first head (0: no cap)"),
        ("--busy-read-timeout-s", float, "S",
         "the head timeout while 3/4 of --max-connections are open"),
        ("--drain-grace-s", float, "S", "time in-flight streams get on shutdown"),
    ]
    for flag, kind, metavar, meaning in limits:
        default = getattr(defaults, flag.removeprefix("--").replace("-", "_"))
        parser.add_argument(
            flag, type=kind, default=default, metavar=metavar,
            help=f"{meaning} (default {default:g})",
        )  # fmt: skip
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"]
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` of :func:`add_server_arguments`' flags (ValueError if bad)."""
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_keys),
        protect_service_endpoints=args.protect_service_endpoints,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        default_timeout_s=args.default_timeout_s,
        max_timeout_s=args.max_timeout_s,
        max_text_chars=args.max_text_chars,
        max_body_bytes=args.max_body_bytes,
        read_timeout_s=args.read_timeout_s,
        write_stall_timeout_s=args.write_stall_timeout_s,
        max_connections=args.max_connections,
        max_connections_per_client=args.max_connections_per_client,
        max_head_waits_per_client=args.max_head_waits_per_client,
        busy_read_timeout_s=args.busy_read_timeout_s,
        drain_grace_s=args.drain_grace_s,
        playground=args.playground,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"orpheus-trio serve: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    try:
        engine = ENGINES[args.engine](args)
    except (ValueError, OSError) as error:
        print(f"orpheus-trio serve: {error}", file=sys.stderr)
        return 2
    app = create_app(engine, config)
    main = functools.partial(serve_until_signalled, app, f"{engine.name} engine")
    return run_server_command("serve", main, engine.aclose, address=f"{config.host}:{config.port}")


def run_server_command(
    command: str,
    main: Callable[[], Awaitable[None]],
    aclose: Callable[[], Awaitable[None]],
    *,
    address: str | None = None,
) -> int:
    """``trio.run(main)``, then ``aclose`` whatever happened; an address that
    cannot be served (the port in use, not on this machine) is one line naming
    ``address`` (host:port), and exit 1."""
    try:
        with single_exception():
            trio.run(main)
    except OSError as error:
        where = f"cannot listen on {address}: " if address else ""
        reason = error.strerror or str(error) if address else str(error)
        print(f"orpheus-trio {command}: error: {where}{reason}", file=sys.stderr)
        return 1
    finally:
        trio.run(aclose)
    return 0


async def serve_until_signalled(app: OrpheusApp, what: str) -> None:
    """Serve ``app`` (announcing ``what`` and the URL) until signalled, draining on the first."""
    config = app.config
    drain = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def serve_then_stop(
                task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                await serve_app(app, config, drain=drain, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: stop listening for signals too

            base_url = await nursery.start(serve_then_stop)
            print(f"orpheus-trio: {what} on {base_url}", file=sys.stderr)
            async for signum in signals:
                if drain.is_set():
                    print("orpheus-trio: stopping now", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                    return
                print(
                    f"orpheus-trio: {signal.Signals(signum).name}: draining "
                    f"(up to {config.drain_grace_s:g} s; signal again to stop now)",
                    file=sys.stderr,
                )
                drain.set()
