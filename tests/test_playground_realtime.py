"""The playground's "type as you speak" mode in headless Chromium: typed text in, speech out.

The page opens the realtime WebSocket under its strict Content-Security-Policy,
streams the text as it is typed and plays the audio; the first sentence must be
heard while the second is still being typed.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _support_gateway import start_worker
from _support_tools import require_program

from orpheus_trio.server.engines.synthetic import SyntheticEngine

playwright_sync = pytest.importorskip("playwright.sync_api")

FIRST = "The first sentence is heard. "
SECOND = "While this one is typed."
KEY = "sk-playground-live-0123456789"


def drive(url: str, browser_path: str) -> dict[str, Any]:
    with playwright_sync.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=browser_path,
            headless=True,
            args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
        )
        try:
            page = browser.new_page()
            refused: list[str] = []
            page.on(
                "console",
                lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.goto(url, wait_until="load")
            page.fill("#apikey", KEY)
            page.check("#live")
            page.wait_for_function("() => window.playground.state === 'listening'", timeout=10_000)
            page.type("#text", FIRST + "While", delay=10)
            # Audio of the first sentence arrives before the rest is typed.
            page.wait_for_function("() => window.playground.bytes > 0", timeout=10_000)
            heard_early = page.evaluate("() => window.playground.bytes")
            page.type("#text", SECOND.removeprefix("While"), delay=10)
            page.click("#speak")  # the text is finished
            page.wait_for_function(
                "() => ['done', 'failed'].includes(window.playground.state)", timeout=20_000
            )
            result: dict[str, Any] = page.evaluate("() => ({...window.playground})")
            result["heard_early"] = heard_early
            result["refused"] = list(refused)
            return result
        finally:
            browser.close()


async def test_type_as_you_speak_plays_each_sentence_as_it_is_finished(
    nursery: trio.Nursery,
) -> None:
    browser = require_program(
        ["chromium", "chromium-browser"], "run scripts/install-chromium.sh (Debian's chromium)"
    )
    worker = await start_worker(nursery, SyntheticEngine(), api_keys=(KEY,))
    state = await trio.to_thread.run_sync(drive, worker.base_url + "/", str(browser))
    assert state["error"] is None and state["state"] == "done"
    assert state["refused"] == []  # the socket is allowed by the page's policy
    assert state["heard_early"] > 0
    # Every sample the server counted in its ``done`` reached WebAudio.
    assert state["samples"] > 0
    assert state["decodedSeconds"] == pytest.approx(state["samples"] / 24_000, abs=1e-6)
    assert state["bytes"] == 2 * state["samples"]
