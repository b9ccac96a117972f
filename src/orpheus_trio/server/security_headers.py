"""The security headers every answer carries (docs/server.md, "Security headers").

Nothing this server sends is meant to run in, or be framed by, someone else's
page: every answer forbids framing and MIME sniffing, leaks no referrer, and
carries a Content-Security-Policy that allows nothing (``default-src 'none'``).
The playground page widens it to its own inline script and style by their
hashes (:mod:`.playground`), and to ``fetch`` and media from this origin.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CSP", "SECURITY_HEADERS", "page_csp", "with_security_headers"]

#: No scripts, styles, frames, forms or base URL: an API answer renders as nothing.
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


def page_csp(*, script_hashes: list[str], style_hashes: list[str]) -> str:
    """The policy of a page whose only script and style are the inline ones hashed here
    (``sha256-...`` sources); it may call this origin's API and play what it fetched."""
    scripts = " ".join(f"'{digest}'" for digest in script_hashes) or "'none'"
    styles = " ".join(f"'{digest}'" for digest in style_hashes) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; "
        "connect-src 'self'; media-src 'self' blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` plus every security header it does not set itself (a page sets its CSP)."""
    names = {name.lower() for name, _ in headers}
    if b"content-security-policy" not in names:
        headers.append((b"content-security-policy", DEFAULT_CSP.encode()))
    headers.extend(header for header in SECURITY_HEADERS if header[0] not in names)
    return headers
