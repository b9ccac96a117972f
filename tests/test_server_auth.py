"""API keys: Bearer or X-API-Key, compared in constant time; 401 with the JSON error."""

from __future__ import annotations

import hmac

import httpx
import pytest
from _support_server import StartServer

import orpheus_trio.server.auth as server_auth
from orpheus_trio.server.config import ServerConfig

KEYS = ("first-key", "second-key")
BODY = {"text": "auth", "chunks": 1}


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer first-key"},
        {"Authorization": "bearer second-key"},
        {"X-API-Key": "second-key"},
    ],
)
async def test_configured_keys_are_accepted_in_either_header(
    start_server: StartServer, headers: dict[str, str]
) -> None:
    server = await start_server(api_keys=KEYS)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/tts/stream", json=BODY, headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer wrong"}, "invalid API key"),
        ({"Authorization": "Basic Zmlyc3Qta2V5"}, "missing API key"),
        ({"X-API-Key": "first-key-but-longer"}, "invalid API key"),
        ({"X-API-Key": "FIRST-KEY"}, "invalid API key"),
    ],
)
async def test_missing_or_wrong_key_gets_401_json(
    start_server: StartServer, headers: dict[str, str], message: str
) -> None:
    server = await start_server(api_keys=KEYS)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post("/v1/tts/stream", json=BODY, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "unauthorized", "message": message}}
    assert response.headers["www-authenticate"] == "Bearer"


async def test_every_key_is_compared_with_compare_digest_without_early_exit(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def recording_compare(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(server_auth.hmac, "compare_digest", recording_compare)
    server = await start_server(api_keys=KEYS)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        ok = await client.post(
            "/v1/tts/stream", json=BODY, headers={"X-API-Key": "first-key"}
        )
    assert ok.status_code == 200
    # The first key matched, and the second was still compared.
    assert compared == [(b"first-key", b"first-key"), (b"first-key", b"second-key")]


async def test_service_endpoints_are_open_unless_protected(
    start_server: StartServer,
) -> None:
    open_server = await start_server(api_keys=KEYS)
    protected = await start_server(api_keys=KEYS, protect_service_endpoints=True)
    async with httpx.AsyncClient() as client:
        for path in ("/v1/system", "/metrics"):
            assert (await client.get(open_server.base_url + path)).status_code == 200
            assert (await client.get(protected.base_url + path)).status_code == 401
            with_key = await client.get(
                protected.base_url + path,
                headers={"Authorization": "Bearer second-key"},
            )
            assert with_key.status_code == 200


async def test_no_keys_configured_means_no_auth(start_server: StartServer) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        response = await client.post(
            "/v1/tts/stream", json=BODY, headers={"Authorization": "Bearer anything"}
        )
    assert response.status_code == 200


@pytest.mark.parametrize("key", ["", "k\u00e9y", " padded", "two words", "tab\t"])
def test_keys_no_client_could_present_are_refused_at_configuration(key: str) -> None:
    # Header bytes outside visible ASCII have no agreed encoding, and spaces at
    # the ends are trimmed: such a key would turn every request away with 401.
    with pytest.raises(ValueError, match="API key 2") as caught:
        ServerConfig(api_keys=("fine-key", key))
    assert not key.strip() or key not in str(caught.value)
