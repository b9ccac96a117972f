"""Custom voices over HTTP: ``POST /v1/voices``, ``DELETE /v1/voices/NAME``, and the list.

A server started with ``--voices-dir DIR`` (engines ``orpheus`` and
``orpheus-remote``) serves the voice library in ``DIR``: any custom voice in
it can be named in ``/v1/tts/stream`` and ``/v1/audio/speech`` (``voice``),
when the checkpoint clones (``--can-clone``: the pretrained checkpoint; else
such a request is a 400 that says why).

Adding and removing voices writes to the server's disk and costs an encode,
so it needs its own key: ``--voices-admin-key KEY`` (repeatable), sent as
``Authorization: Bearer KEY``. Without one, ``POST`` and ``DELETE`` answer 403;
the synthesis API keys never add voices. ``GET /v1/voices`` follows the
service endpoints' rule (public unless ``--protect-service-endpoints``).

``POST /v1/voices`` takes ``multipart/form-data`` (``curl -F``, a browser's
``FormData``): a ``name`` field and one or more ``audio`` files, each followed
by its ``text`` (what the clip says), paired in order. The body may be at most
:data:`MAX_UPLOAD_BYTES`; a larger ``Content-Length`` is refused (413) before
any of it is read. Each clip is checked (3 to 30 s, not silent, not clipped,
decodable) and the voice encoded on a worker thread, one upload at a time.
Answers: 201 with the voice, 400 naming the bad clip or field, 409 for a name
taken, 413, 403/401.
"""

from __future__ import annotations

import hmac
import json
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

import trio

from .exchange import Exchange, HTTPError, Receive, send_bytes
from ..voices.library import (
    InvalidVoiceName,
    VoiceExists,
    VoiceLibrary,
    VoiceNotFound,
    check_voice_name,
)

if TYPE_CHECKING:
    import argparse

    from ..local.cloning import VoiceCloner
    from .engine import Engine
    from .routes import Routes

__all__ = [
    "MAX_UPLOAD_BYTES",
    "VOICES_PATH",
    "add_arguments",
    "attach_voice_library",
    "mount",
]

VOICES_PATH = "/v1/voices"
#: ``DELETE /v1/voices/NAME``: the route table's one-segment wildcard.
VOICE_PATH = "/v1/voices/*"
#: 8 references of 30 s of 48 kHz stereo 16-bit WAV are about 46 MB; one is 5.8 MB.
MAX_UPLOAD_BYTES = 48 * 1024 * 1024
_READ_TIMEOUT_S = 60.0


def voice_cloner(engine: Engine) -> VoiceCloner | None:
    cloner: VoiceCloner | None = getattr(engine, "voice_cloner", None)
    return cloner


def mount(routes: Routes, engine: Engine) -> None:
    """Add ``POST /v1/voices`` and ``DELETE /v1/voices/NAME`` to the app's table
    (``GET /v1/voices`` is :mod:`.service_endpoints`', which lists custom voices
    through the engine's catalog)."""
    route = _VoicesRoute(engine)
    routes.mount(VOICES_PATH, "POST", route)
    routes.mount(VOICE_PATH, "DELETE", route)


class _VoicesRoute:
    #: The app leaves auth to this route: adding voices needs an admin key, not an API key.
    authorizes_itself = True

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._one_at_a_time = trio.Lock()

    async def __call__(self, headers: dict[str, str], receive: Receive, ex: Exchange) -> None:
        cloner = voice_cloner(self._engine)
        if cloner is None:
            raise HTTPError(
                404, "not_found", "this server has no voice library (serve --voices-dir DIR)", close=True
            )
        _check_admin(cloner, headers)
        if ex.method == "DELETE":
            name = _name_from_path(ex.path)
            try:
                cloner.library.remove(name)
            except VoiceNotFound as error:
                raise HTTPError(404, "not_found", str(error)) from None
            await send_bytes(ex, 200, json.dumps({"name": name, "deleted": True}).encode(), b"application/json")
            return
        name, pairs = _parse_upload(headers, await _read_upload(headers, receive))
        reserved = _reserved_names(self._engine)
        async with self._one_at_a_time:
            try:
                voice = await trio.to_thread.run_sync(lambda: cloner.add(name, pairs, reserved=reserved))
            except VoiceExists as error:
                raise HTTPError(409, "invalid_param", str(error), param="name") from None
            except ValueError as error:  # the clip's or the name's problem, said plainly
                raise HTTPError(400, "invalid_param", str(error), param="audio") from None
        answer = {
            "name": voice.name,
            "kind": "custom",
            "language": None,
            "references": len(voice.references),
            "seconds": round(voice.duration_s, 2),
        }
        await send_bytes(ex, 201, json.dumps(answer, ensure_ascii=False).encode(), b"application/json")


def _reserved_names(engine: Engine) -> set[str]:
    """Names a new voice may not take: the engine's voices and its catalog's aliases."""
    names = set(engine.voices())
    catalog = getattr(engine, "catalog", None)
    if catalog is not None:
        names.update(catalog().aliases)
    return names


def _check_admin(cloner: VoiceCloner, headers: dict[str, str]) -> None:
    if not cloner.admin_keys:
        raise HTTPError(
            403, "unauthorized", "adding and removing voices is off: start the server with --voices-admin-key",
            close=True,
        )  # fmt: skip
    scheme, _, token = headers.get("authorization", "").partition(" ")
    given = token.strip().encode()
    matched = False
    for key in cloner.admin_keys:  # every key compared: no timing hint of which matched
        matched |= hmac.compare_digest(given, key.encode())
    if scheme.lower() != "bearer" or not matched:
        raise HTTPError(401, "unauthorized", "adding or removing voices needs a voices admin key", close=True)


def _name_from_path(path: str) -> str:
    from urllib.parse import unquote

    raw = path[len(VOICES_PATH) + 1 :]
    try:
        return check_voice_name(unquote(raw, errors="strict"))
    except (InvalidVoiceName, UnicodeDecodeError) as error:
        raise HTTPError(400, "invalid_param", f"bad voice name in the path: {error}", param="name") from None


async def _read_upload(headers: dict[str, str], receive: Receive) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPError(
            413, "body_too_large",
            f"an upload of {declared} bytes exceeds the limit of {MAX_UPLOAD_BYTES}", close=True,
        )  # fmt: skip
    parts: list[bytes] = []
    size = 0
    with trio.move_on_after(_READ_TIMEOUT_S):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(499, "cancelled", "client went away", close=True)
            piece = message.get("body", b"")
            size += len(piece)
            if size > MAX_UPLOAD_BYTES:
                raise HTTPError(
                    413, "body_too_large", f"an upload exceeds the limit of {MAX_UPLOAD_BYTES} bytes", close=True
                )
            parts.append(piece)
            if not message.get("more_body", False):
                return b"".join(parts)
    raise HTTPError(408, "request_timeout", f"upload not received within {_READ_TIMEOUT_S:g} s", close=True)


def _parse_upload(headers: dict[str, str], body: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """``name`` and the (text, audio) pairs of a multipart/form-data upload."""
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise HTTPError(
            415, "invalid_request",
            "POST /v1/voices takes multipart/form-data: name, then audio and text per reference "
            "(curl -F name=me -F audio=@ref.wav -F 'text=what it says')",
        )  # fmt: skip
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", errors="replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise HTTPError(400, "invalid_request", "the multipart body could not be parsed")
    name: str | None = None
    audio: list[bytes] = []
    texts: list[str] = []
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if field == "name":
            name = _text(data, "name")
        elif field == "audio":
            audio.append(data)
        elif field == "text":
            texts.append(_text(data, "text"))
        else:
            raise HTTPError(400, "invalid_param", f"unknown field {str(field)[:40]!r} (name, audio, text)", param=str(field)[:40])
    if name is None:
        raise HTTPError(400, "invalid_param", "the voice needs a name", param="name")
    try:
        check_voice_name(name)
    except InvalidVoiceName as error:
        raise HTTPError(400, "invalid_param", str(error), param="name") from None
    if not audio or len(audio) != len(texts):
        raise HTTPError(
            400, "invalid_param",
            f"give each audio file its text (what it says): {len(audio)} audio, {len(texts)} text",
            param="text",
        )  # fmt: skip
    return name, list(zip(texts, audio, strict=True))


def _text(data: bytes, field: str) -> str:
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise HTTPError(400, "invalid_param", f"{field} is not UTF-8 text", param=field) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``serve`` options for custom voices (engines orpheus and orpheus-remote)."""
    group = parser.add_argument_group("custom (cloned) voices (--engine orpheus, orpheus-remote)")
    group.add_argument("--voices-dir", metavar="DIR", help="serve the voice library in DIR (orpheus-trio voices add)")
    group.add_argument(
        "--can-clone", action="store_true",
        help="the model clones from reference audio (the pretrained checkpoint, "
        "canopylabs/orpheus-3b-0.1-pretrained); without it a custom voice is a 400",
    )  # fmt: skip
    group.add_argument(
        "--voices-admin-key", action="append", default=[], metavar="KEY",
        help="a key that may add and remove voices (POST/DELETE /v1/voices); repeatable; "
        "without one, voices are added with 'orpheus-trio voices add' only",
    )  # fmt: skip


def attach_voice_library(engine: Engine, args: argparse.Namespace) -> Engine:
    """Give an Orpheus engine the library of ``--voices-dir`` (a no-op without it)."""
    if getattr(args, "voices_dir", None) is None:
        if getattr(args, "can_clone", False) or getattr(args, "voices_admin_key", None):
            raise ValueError("--can-clone and --voices-admin-key need --voices-dir")
        return engine
    synthesizer = getattr(engine, "synthesizer", None)
    if synthesizer is None:
        raise ValueError(f"--voices-dir needs --engine orpheus or orpheus-remote, not {engine.name}")
    from ..apikey import check_api_key
    from ..local.cloning import VoiceCloner
    from ..local.snac_encoder import snac_fingerprint_of

    for index, key in enumerate(args.voices_admin_key):
        check_api_key(key, f"voices admin key {index + 1}")
    library = VoiceLibrary(args.voices_dir, snac=snac_fingerprint_of(args.snac))
    synthesizer.voice_library = library
    synthesizer.can_clone = bool(args.can_clone)
    setattr(engine, "voice_cloner", VoiceCloner(
        library, args.snac, device=args.device, admin_keys=args.voices_admin_key
    ))  # fmt: skip
    return engine
