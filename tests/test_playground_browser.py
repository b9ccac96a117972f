"""The playground page in a real headless Chromium (Debian's), driven by playwright.

The page must stream speech from ``/v1/audio/speech``, start playing before
the stream ends (the engine runs at real time), and report, from the page
itself, the decoded duration, the time to first audio and playback.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _support_gateway import start_gateway, start_worker
from _support_tools import require_program

from orpheus_trio.server.engines.synthetic import SyntheticEngine, expected_stream

playwright_sync = pytest.importorskip("playwright.sync_api")

TEXT = "The playground speaks while it streams."


def drive(url: str, browser_path: str, format: str) -> dict[str, Any]:
    """Open the page, speak ``TEXT`` in ``format``, return ``window.playground`` and the shown TTFA."""
    with playwright_sync.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=browser_path,
            headless=True,
            args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
        )
        try:
            page = browser.new_page()
            refused: list[str] = []  # what the page's Content-Security-Policy blocked
            page.on(
                "console",
                lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.goto(url, wait_until="load")
            page.wait_for_function("() => document.querySelector('#voice').options.length > 1")
            page.fill("#text", TEXT)
            page.select_option("#voice", "leah")
            page.select_option("#format", format)
            page.click("#speak")
            # The engine runs at real time, so this holds only if it plays while streaming.
            page.wait_for_function(
                "() => window.playground.state === 'streaming' && window.playground.playedSeconds > 0",
                timeout=10_000,
            )
            page.wait_for_function(
                "() => ['done', 'failed'].includes(window.playground.state)", timeout=20_000
            )
            # Playback follows the audio context's (or the <audio> element's) clock.
            page.wait_for_function("() => window.playground.playedSeconds > 0.2", timeout=10_000)
            result: dict[str, Any] = page.evaluate("() => ({...window.playground})")
            page.wait_for_timeout(150)  # the facts list refreshes every 100 ms
            result["shown_ttfa"] = page.inner_text("#ttfa")
            result["refused"] = list(refused)
            # A script the page did not ship is refused (the policy is enforced, not just sent).
            try:
                page.add_script_tag(content="window.injected = true")
            except playwright_sync.Error:
                pass
            result["injected_ran"] = page.evaluate("() => window.injected === true")
            return result
        finally:
            browser.close()


@pytest.mark.parametrize(("kind", "format"), [("worker", "pcm"), ("worker", "mp3"), ("gateway", "pcm")])
async def test_playground_plays_streamed_speech(
    kind: str, format: str, nursery: trio.Nursery
) -> None:
    browser = require_program(
        ["chromium", "chromium-browser"], "run scripts/install-chromium.sh (Debian's chromium)"
    )
    worker = await start_worker(nursery, SyntheticEngine(defaults={"rtf": 1.0}))
    base_url = worker.base_url
    if kind == "gateway":
        base_url = (await start_gateway(nursery, [worker.base_url])).base_url
    state = await trio.to_thread.run_sync(drive, base_url + "/", str(browser), format)
    assert state["error"] is None and state["state"] == "done"
    assert state["refused"] == [] and state["injected_ran"] is False
    seconds = sum(len(c) for c in expected_stream(TEXT, "leah", {})) / 2 / 24000
    assert state["playedSeconds"] > 0.2
    if format == "pcm":  # every sample reached WebAudio
        assert state["playback"] == "webaudio"
        assert state["decodedSeconds"] == pytest.approx(seconds, abs=1e-6)
    else:  # MediaSource buffered the whole MP3 and played it as it came
        assert state["playback"] == "mediasource"
        assert seconds - 0.05 <= state["decodedSeconds"] <= seconds + 0.15
    assert state["ttfaMs"] is not None and 0 < state["ttfaMs"] < 10_000
    assert state["shown_ttfa"].endswith(" ms")
