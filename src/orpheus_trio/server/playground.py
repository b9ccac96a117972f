"""``GET /``: the one-file browser playground (no build step, nothing from a CDN).

The page keeps its script and style inline, in one file, and its
Content-Security-Policy allows exactly those by their SHA-256 hashes, taken
from the file when the server starts: no other script or style can run on
the page, and an edit to the page can never leave its policy behind.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from .exchange import Exchange, Receive
from .security_headers import page_csp

__all__ = ["PLAYGROUND_PATH", "Playground", "inline_hashes"]

PLAYGROUND_PATH = "/"
_INLINE = {
    tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL) for tag in ("script", "style")
}


def inline_hashes(page: str, tag: str) -> list[str]:
    """CSP hash sources (``sha256-...``) of every inline ``<tag>`` element of ``page``."""
    return [
        "sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        for body in _INLINE[tag].findall(page)
    ]


class Playground:
    """The page and its policy, read once."""

    def __init__(self) -> None:
        page = resources.files("orpheus_trio.server").joinpath("static/playground.html")
        self._page = page.read_bytes()
        text = self._page.decode()
        self.csp = page_csp(
            script_hashes=inline_hashes(text, "script"),
            style_hashes=inline_hashes(text, "style"),
        )

    async def __call__(self, headers: dict[str, str], receive: Receive, ex: Exchange) -> None:
        await ex.start(
            200,
            [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(self._page)).encode()),
                (b"cache-control", b"no-cache"),
                (b"content-security-policy", self.csp.encode()),
            ],
        )
        await ex.write(self._page, more=False)
