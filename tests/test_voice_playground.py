"""The playground adds a cloned voice from a file and speaks with it (headless Chromium)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import trio
from _support_gateway import start_worker
from _support_llm import scripted_model_dir, snac_dir
from _support_tools import require_program
from _support_voices import reference_wav

from orpheus_trio.local.synthesizer import LocalSynthesizer
from orpheus_trio.server.engines.orpheus import OrpheusEngine
from orpheus_trio.server.voice_upload import attach_voice_library

playwright_sync = pytest.importorskip("playwright.sync_api")

ADMIN = "voices-admin-key-0123456789"


def drive(url: str, browser_path: str, clip: Path) -> dict[str, Any]:
    with playwright_sync.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=browser_path, headless=True,
            args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(url, wait_until="load")
            page.wait_for_function("() => document.querySelector('#voice').options.length > 1")
            page.click("#clone summary")
            page.fill("#clone-name", "grandpa")
            page.set_input_files("#clone-file", str(clip))
            page.fill("#clone-text", "hello world")
            page.fill("#clone-key", ADMIN)
            page.click("#clone-add")
            page.wait_for_function(
                "() => ['added', 'failed'].some((s) => window.playground.clone.state.startsWith(s))", timeout=60_000
            )
            added: dict[str, Any] = page.evaluate("() => ({...window.playground.clone})")
            selected = page.eval_on_selector("#voice", "select => select.value")
            page.fill("#text", "quick brown fox")
            page.select_option("#format", "pcm")
            page.click("#speak")
            page.wait_for_function("() => ['done', 'failed'].includes(window.playground.state)", timeout=60_000)
            spoken: dict[str, Any] = page.evaluate("() => ({...window.playground})")
            return {"added": added, "selected": selected, "spoken": spoken}
        finally:
            browser.close()


async def test_the_playground_adds_a_voice_from_a_file_and_speaks_it(nursery: trio.Nursery, tmp_path: Path) -> None:
    browser = require_program(["chromium", "chromium-browser"], "run scripts/install-chromium.sh (Debian's chromium)")
    base = LocalSynthesizer.load(scripted_model_dir(6), snac_dir(), device="cpu")
    engine = OrpheusEngine(LocalSynthesizer(base.lm, base.snac))
    args = argparse.Namespace(voices_dir=str(tmp_path / "voices"), can_clone=True, voices_admin_key=[ADMIN], snac=str(snac_dir()), device="cpu")
    attach_voice_library(engine, args)
    worker = await start_worker(nursery, engine)  # type: ignore[arg-type]
    clip = tmp_path / "memo.wav"
    clip.write_bytes(reference_wav(3.5, 44_100, channels=2))
    state = await trio.to_thread.run_sync(drive, worker.base_url + "/", str(browser), clip)
    assert state["added"] == {"state": "added grandpa (3.5 s)", "error": None}
    assert state["selected"] == "grandpa"
    assert state["spoken"]["error"] is None and state["spoken"]["state"] == "done"
    assert state["spoken"]["decodedSeconds"] == pytest.approx(6 * 2048 / 24000, abs=1e-6)
    assert (tmp_path / "voices" / "grandpa.voice.json").is_file()
