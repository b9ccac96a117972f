"""Voices on the server: ``GET /v1/voices``, ``/v1/system``'s voice fields, and each request's voice.

An engine that has a :class:`~orpheus_trio.voices.VoiceCatalog` says so with an
optional ``catalog()`` method (engines without one keep their own checks).
With it the server resolves every request's ``voice`` before the engine sees
it: an OpenAI alias (``alloy``) becomes the voice it stands for, no voice
becomes the default voice's name, and an unknown name is a 400 listing the
voices and aliases. The voice that speaks is then told to the caller: the
``X-Voice`` header (UTF-8, percent-encoded: ``유나`` is ``%EC%9C%A0%EB%82%98``)
and a ``voice`` field in the opening ``metrics`` frame.

A gateway's catalog is its workers' (see ``gateway.service``): it resolves
aliases and names the workers know, and passes other names (and no voice) on
to the workers, which answer for themselves.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..voices import UnknownVoice, VoiceCatalog
from .engine import Engine, InvalidParam

__all__ = [
    "engine_catalog",
    "request_voice",
    "system_fields",
    "voice_header",
    "voices_document",
]


def engine_catalog(engine: Engine) -> VoiceCatalog | None:
    """The engine's catalog, if it has one."""
    method = getattr(engine, "catalog", None)
    if method is None:
        return None
    catalog = method()
    if catalog is not None and not isinstance(catalog, VoiceCatalog):
        raise TypeError(f"{type(engine).__name__}.catalog() must return a VoiceCatalog or None")
    return catalog


def request_voice(engine: Engine, voice: str | None) -> str | None:
    """The voice name ``engine`` is asked for: an alias resolved, no voice named as the default.

    :class:`InvalidParam` (a 400) for a name the catalog does not hold.
    """
    catalog = engine_catalog(engine)
    passes_on = bool(getattr(engine, "passes_unknown_voices", False))
    if catalog is None or (voice is None and passes_on):
        return voice
    try:
        resolved = catalog.resolve(voice)
    except UnknownVoice as error:
        if passes_on:
            return voice
        raise InvalidParam("voice", str(error)) from None
    return None if resolved is None else resolved.name


def voice_header(voice: str) -> tuple[bytes, bytes]:
    """The ``X-Voice`` header for ``voice`` (percent-encoded UTF-8: headers are ASCII)."""
    return b"x-voice", quote(voice, safe="").encode("ascii")


def voices_document(engine: Engine) -> dict[str, Any]:
    """The body of ``GET /v1/voices``: each voice (name, kind, language, engine), the aliases."""
    catalog = engine_catalog(engine)
    if catalog is not None and getattr(engine, "passes_unknown_voices", False):
        # A gateway: each voice's engine is the worker's (its catalog's family field).
        described = catalog.describe(engine.name)
        for entry in described:
            entry["engine"] = entry.pop("family")
        return {"voices": described, "aliases": dict(catalog.aliases),
                "languages": catalog.languages()}  # fmt: skip
    if catalog is None:  # an engine with names only: language and kind unknown
        voices = [
            {"name": name, "kind": "stock", "language": None, "engine": engine.name,
             "default": i == 0}
            for i, name in enumerate(engine.voices())
        ]  # fmt: skip
        return {"voices": voices, "aliases": {}, "languages": []}
    return {
        "voices": catalog.describe(engine.name),
        "aliases": dict(catalog.aliases),
        "languages": catalog.languages(),
    }


def system_fields(engine: Engine) -> dict[str, Any]:
    """What ``/v1/system`` adds about voices: languages, each voice's language, the aliases."""
    catalog = engine_catalog(engine)
    if catalog is None:
        return {}
    return {
        "languages": catalog.languages(),
        "voice_languages": catalog.languages_by_voice(),
        "voice_kinds": {voice.name: voice.kind for voice in catalog.voices},
        "voice_aliases": dict(catalog.aliases),
    }
