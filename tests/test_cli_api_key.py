"""A service that wants an API key: the CLI says how to pass one (--api-key, ORPHEUS_KEY), or
that the one given was refused, once, instead of only relaying the 401. (For speak the
client's own 401 message already says it; the CLI adds nothing then.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from _support_cli import clean_env, orpheus_trio
from _support_server import StartServer

NEEDS_KEY = "the service needs an API key: pass --api-key KEY or set ORPHEUS_KEY"
REFUSED = "the service refused the API key given (--api-key or ORPHEUS_KEY)"

#: (flags, environment, the hint expected)
CASES = [
    ([], {}, NEEDS_KEY),
    (["--api-key", "wrong"], {}, REFUSED),
    ([], {"ORPHEUS_KEY": "wrong"}, REFUSED),
]


def command(name: str, url: str, tmp_path: Path) -> list[str | Path]:
    if name == "speak":
        return ["speak", "Hi.", "-o", tmp_path / "hi.wav", "--url", url]
    if name == "batch":
        items = tmp_path / "items.txt"
        items.write_text("One.\nTwo.\nThree.\n")
        return ["batch", items, "-d", tmp_path / "out", "--url", url, "--no-progress"]
    return ["system", url]


@pytest.mark.parametrize("name", ["speak", "batch", "system"])
@pytest.mark.parametrize(("flags", "env", "hint"), CASES)
async def test_a_401_says_how_to_pass_a_key(
    start_server: StartServer,
    tmp_path: Path,
    name: str,
    flags: list[str],
    env: dict[str, str],
    hint: str,
) -> None:
    server = await start_server(api_keys=("right",), protect_service_endpoints=True)
    done = await orpheus_trio(*command(name, server.base_url, tmp_path), *flags, env=clean_env(**env))
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "401" in err and "Traceback" not in err
    assert "--api-key" in err and "ORPHEUS_KEY" in err, err
    if name == "speak":  # the client's message says it already: not said twice
        assert err.count("--api-key") == 1, err
    else:  # once, also for a batch of three failed items
        assert err.count(hint) == 1, err


@pytest.mark.parametrize("name", ["speak", "batch", "system"])
async def test_the_right_key_works(start_server: StartServer, tmp_path: Path, name: str) -> None:
    server = await start_server(api_keys=("right",), protect_service_endpoints=True)
    done = await orpheus_trio(*command(name, server.base_url, tmp_path), "--api-key", "right")
    assert done.returncode == 0, done.stderr.decode()
