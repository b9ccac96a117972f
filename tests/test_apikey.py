"""The one key redactor, :class:`~orpheus_trio.apikey.Secret`: every form of the key
a server, a proxy or a log line may echo is blanked out, and nothing else is."""

from __future__ import annotations

import base64

import pytest

from orpheus_trio.apikey import MIN_PIECE_CHARS, REDACTED, Secret

KEY = "sk-live-0123456789abcdef-SECRET"


def b64(text: str, *, urlsafe: bool = False, padded: bool = True) -> str:
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(text.encode())
    return (encoded if padded else encoded.rstrip(b"=")).decode()


#: A key whose base64 has both '+' and '/' (standard) or '-' and '_' (URL-safe) in it.
SYMBOL_KEY = "k>>>?~~~?>>>?~~~?zz"

ECHOED = {
    "the key": KEY,
    "upper case": KEY.upper(),
    "swapped case": KEY.swapcase(),
    "a prefix of 8": KEY[:8],
    "a prefix of 12": KEY[:12],
    "a piece from the middle": KEY[9:17],
    "a suffix of 8": KEY[-8:],
    "hex": KEY.encode().hex(),
    "HEX": KEY.encode().hex().upper(),
    "a piece of its hex": KEY.encode().hex()[6:14],
    "base64": b64(KEY),
    "base64 without padding": b64(KEY, padded=False),
    "url-safe base64": b64(KEY, urlsafe=True, padded=False),
    "base64 of a prefix": b64(KEY[:14]),
}


@pytest.mark.parametrize("form", ECHOED)
def test_every_echoed_form_of_the_key_is_blanked_out(form: str) -> None:
    secret = Secret(KEY)
    text = f"you sent [{ECHOED[form]}] here"
    redacted = secret.redact(text)
    assert redacted.startswith("you sent [") and redacted.endswith("] here")
    assert REDACTED in redacted
    inner = redacted[len("you sent [") : -len("] here")]
    # What is left of the form beside the placeholder holds no 8 characters of it.
    for leftover in inner.split(REDACTED):
        assert len(leftover) < MIN_PIECE_CHARS, (form, redacted)


@pytest.mark.parametrize("wrapper", ["Bearer ", "user:", "x", "xy"])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_the_key_inside_a_longer_base64_text_is_blanked_out(wrapper: str, urlsafe: bool) -> None:
    encoded = b64(f"{wrapper}{KEY}", urlsafe=urlsafe)
    redacted = Secret(KEY).redact(f"[{encoded}]")
    before, placeholder, after = redacted[1:-1].partition(REDACTED)
    assert placeholder
    # Left: the wrapper's own quads and the one it shares with the key's first bytes;
    # right: at most the quad the key's last bytes share with the padding.
    assert encoded.startswith(before) and len(before) <= -(-len(wrapper) // 3) * 4
    assert encoded.endswith(after) and len(after) <= 4


@pytest.mark.parametrize("urlsafe", [False, True])
def test_both_base64_alphabets_of_a_key_with_symbol_bytes(urlsafe: bool) -> None:
    encoded = b64(SYMBOL_KEY, urlsafe=urlsafe)
    assert any(c in encoded for c in ("-_" if urlsafe else "+/"))
    assert Secret(SYMBOL_KEY).redact(f"x {encoded} y") == f"x {REDACTED} y"


def test_the_whole_key_and_its_neighbours_become_one_placeholder() -> None:
    secret = Secret(KEY)
    assert secret.redact(f"a {KEY} b") == f"a {REDACTED} b"
    assert secret.redact(f"Authorization: Bearer {KEY}") == f"Authorization: Bearer {REDACTED}"
    assert secret.redact(f"{KEY}{KEY}") == REDACTED  # touching runs merge
    assert secret.redact(f"{KEY} and {KEY}") == f"{REDACTED} and {REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "the upstream refused the request: upstream_error",
        KEY[:7],  # 7 characters: too common to stand for the key
        f"{KEY[:7]} {KEY[8:15]}",  # two 7-character pieces apart
        "sk-live-",  # a common prefix shape, but only 8 chars of it if it is the key's
        b64(KEY)[:7],
        KEY.encode().hex()[:7],
        KEY[::-1],  # reversed is no form a server echoes
        "",
        "plain words, numbers 0123 4567, and punctuation!",
    ],
)
def test_text_without_a_form_of_the_key_is_unchanged(text: str) -> None:
    if text == "sk-live-":
        # 8 characters of the key are a form of it; a different key leaves them.
        assert Secret(KEY).redact(text) == REDACTED
        assert Secret("other-key-ABCDEFGHIJ").redact(text) == text
        return
    assert Secret(KEY).redact(text) == text


def test_a_key_shorter_than_a_piece_is_blanked_whole_and_only_whole() -> None:
    secret = Secret("abc123")
    assert secret.redact("key ABC123 here") == f"key {REDACTED} here"
    assert secret.redact("abc12 and bc123") == "abc12 and bc123"


def test_placeholder_and_repr() -> None:
    secret = Secret(KEY, placeholder="<upstream key>")
    assert secret.redact(f"got {KEY}") == "got <upstream key>"
    assert KEY not in repr(secret) and repr(secret) == "<hidden>"
    assert secret.value == KEY


def test_redaction_is_linear_enough_for_a_large_error_body() -> None:
    # A 64 KiB error body full of the key and near-misses is redacted (the client
    # redacts the whole body it read), and every copy of the key goes.
    body = (f"{KEY} {KEY[:7]} " * 2000)[: 64 * 1024]
    redacted = Secret(KEY).redact(body)
    assert KEY not in redacted and KEY[:8] not in redacted
    assert redacted.count(REDACTED) == body.count(KEY) + (body.count(KEY[:8]) - body.count(KEY))
