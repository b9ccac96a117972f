"""``orpheus-trio system [URL]``: print a service's ``GET /v1/system`` (engine, voices, load, limits)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from .interrupt import run_interruptibly
from .options import (
    EXIT_CODES,
    EXIT_OK,
    ConnectionSettings,
    connection_settings,
    given_api_key,
    http_url,
    positive_float,
    report_failure,
)
from .session import EmbeddedServerUnavailable, open_session

__all__ = ["run"]


class SystemQueryFailed(RuntimeError):
    """The service answered, but not with a 200 and a JSON object."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def run(args: argparse.Namespace) -> int:
    timeout_s: float = args.timeout_s
    args.timeout_s = None  # the request timeout below, not a synthesis deadline
    if args.url:
        args.urls = [args.url]
    try:
        settings = connection_settings(args)
        info = run_interruptibly(_query, settings, timeout_s)
    except (
        httpx.HTTPError,
        SystemQueryFailed,
        EmbeddedServerUnavailable,
        ValueError,
    ) as error:
        return report_failure("system", error, api_key=given_api_key(args))
    print(json.dumps(info, indent=2, sort_keys=True))
    return EXIT_OK


async def _query(settings: ConnectionSettings, timeout_s: float) -> dict[str, Any]:
    async with open_session(settings) as session:
        url = session.base_urls[0] + "/v1/system"
        headers = (
            {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        )
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.get(url, headers=headers)
    if response.status_code != 200:
        raise SystemQueryFailed(
            f"GET {url}: {response.status_code} {response.text[:300].strip()}",
            response.status_code,
        )
    try:
        info = response.json()
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise SystemQueryFailed(
            f"GET {url}: expected a JSON object, got {response.text[:100]!r}"
        )
    return info
