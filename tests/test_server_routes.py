"""The route table: one place, path -> method -> handler; 404 and 405 from it."""

from __future__ import annotations

import pytest

from orpheus_trio.server import ServerConfig, create_app
from orpheus_trio.server.engines.synthetic import SyntheticEngine
from orpheus_trio.server.exchange import Exchange, HTTPError, Receive
from orpheus_trio.server.routes import Routes


async def handler(headers: dict[str, str], receive: Receive, ex: Exchange) -> None:
    return None


def test_the_app_mounts_every_route_in_its_table() -> None:
    app = create_app(SyntheticEngine(), ServerConfig())
    mounted = {
        path: (sorted(route.methods), route.synthesis)
        for path in ("/v1/tts/stream", "/v1/audio/speech", "/v1/system", "/metrics", "/")
        if (route := app.routes.get(path)) is not None
    }
    assert mounted == {
        "/v1/tts/stream": (["POST"], True),
        "/v1/audio/speech": (["POST"], True),
        "/v1/system": (["GET"], False),
        "/metrics": (["GET"], False),
        "/": (["GET"], False),
    }
    no_playground = create_app(SyntheticEngine(), ServerConfig(playground=False))
    assert no_playground.routes.get("/") is None


def test_unknown_paths_are_404_without_the_path_and_other_methods_405() -> None:
    routes = Routes()
    routes.mount("/x", "POST", handler)
    assert Routes.handler(routes.get("/x"), "/x", "POST") is handler
    with pytest.raises(HTTPError) as missing:
        Routes.handler(routes.get("/<script>"), "/<script>", "GET")
    assert (missing.value.status, missing.value.message) == (404, "no such endpoint")
    with pytest.raises(HTTPError) as wrong:
        Routes.handler(routes.get("/x"), "/x", "GET")
    assert (wrong.value.status, wrong.value.message) == (405, "/x accepts POST only")


def test_a_route_is_mounted_once() -> None:
    routes = Routes()
    routes.mount("/x", "POST", handler)
    with pytest.raises(ValueError, match="POST /x is mounted twice"):
        routes.mount("/x", "POST", handler)
