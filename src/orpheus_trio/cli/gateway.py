"""``orpheus-trio gateway``: one v1 endpoint in front of many workers, until SIGINT/SIGTERM.

Shares ``serve``'s flags (address, keys, limits) and its draining: the first
signal drains, a second stops at once.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

import trio

from ..options import Hedging
from ..server.config import ServerConfig
from .serve import (
    add_server_arguments,
    config_from_args,
    run_server_command,
    serve_until_signalled,
)
from ..server.gateway.service import Gateway

__all__ = ["UPSTREAM_KEY_ENV", "register", "run"]

#: Read when --upstream-api-key is not given (keeps the key out of the process list).
UPSTREAM_KEY_ENV = "ORPHEUS_UPSTREAM_API_KEY"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="serve v1 in front of several workers",
        description="Serve the v1 contract and forward each request to the workers "
        "(routing by latency and queue hints, hedging, breakers, failover before the "
        "first audio). SIGINT/SIGTERM drains gracefully; a second signal stops at once. "
        "At start it polls every worker once and prints what it sees; --max-concurrency "
        "defaults to the capacity the reachable workers report together (4 when none "
        "answers).",
    )
    parser.add_argument(
        "--upstream", action="append", required=True, dest="upstreams", metavar="URL",
        help="a worker's base URL, http(s)://host:port (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--upstream-api-key", metavar="KEY", default=None,
        help=f"the key sent to the workers (default: ${UPSTREAM_KEY_ENV}); "
        "separate from the callers' --api-key",
    )  # fmt: skip
    parser.add_argument(
        "--hedge-ttfb-ms", type=float, default=Hedging.ttfb_ms, metavar="MS",
        help="start a backup attempt when no audio came this long (0 = no hedging; "
        f"default {Hedging.ttfb_ms:g})",
    )  # fmt: skip
    parser.add_argument(
        "--max-attempts", type=int, default=3, metavar="N",
        help="attempts per request, hedges and failovers included (default 3)",
    )  # fmt: skip
    parser.add_argument(
        "--health-interval-s", type=float, default=2.0, metavar="S",
        help="how often each worker's /v1/system is polled (default 2)",
    )  # fmt: skip
    add_server_arguments(parser)
    parser.set_defaults(run=run, max_concurrency=_UntilPolled(ServerConfig.max_concurrency))


class _UntilPolled(int):
    """The default ``--max-concurrency``: kept only when no worker reports its
    capacity at start, else the workers' capacity (Gateway.watch_upstreams), so
    a fixed number does not cap the gateway below its workers. A given value
    parses to a plain ``int``; this one still works wherever an int does."""


def run(args: argparse.Namespace) -> int:
    api_key = args.upstream_api_key or os.environ.get(UPSTREAM_KEY_ENV) or None
    size_to_upstreams = isinstance(args.max_concurrency, _UntilPolled)
    try:
        gateway = Gateway(
            args.upstreams,
            config_from_args(args),
            upstream_api_key=api_key,
            hedge_ttfb_ms=args.hedge_ttfb_ms,
            health_interval_s=args.health_interval_s,
            hedging=Hedging(max_attempts=args.max_attempts),
            size_to_upstreams=size_to_upstreams,
        )
    except (ValueError, TypeError) as error:
        print(f"orpheus-trio gateway: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    main = functools.partial(_serve, gateway, sized=size_to_upstreams)
    return run_server_command("gateway", main, gateway.aclose)


async def _serve(gateway: Gateway, *, sized: bool) -> None:
    async with trio.open_nursery() as nursery:
        await gateway.watch_upstreams(nursery)
        for line in gateway.first_poll_report():
            print(f"orpheus-trio gateway: {line}", file=sys.stderr)
        limit = gateway.config.max_concurrency
        why = "the reachable upstreams' capacity" if sized else "--max-concurrency"
        if sized and not gateway.engine.reachable_capacity():
            why = "the default: no upstream reported its capacity"
        print(f"orpheus-trio gateway: max concurrency {limit} ({why})", file=sys.stderr)
        what = f"gateway to {len(gateway.engine.client.base_urls)} upstreams"
        await serve_until_signalled(gateway.app, what)
        nursery.cancel_scope.cancel()
