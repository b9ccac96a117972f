"""Which voices a worker, gateway or on-box synthesizer offers, in which language, with which tags.

A *family* is what one checkpoint (or engine) can speak: Canopy Labs' English
fine-tune, the English pretrained model (no stock voices: it clones, see issue
32), and the multilingual research release's checkpoints (French, German,
Korean, Hindi, Mandarin, Spanish+Italian), each with its stock voices, their
language and the emotion tags its card lists. The espeak engine's family
speaks every stock voice's language with espeak-ng voices of the same names.

A :class:`VoiceCatalog` is the set of voices one server offers (a family's,
plus custom ones later) and its aliases (OpenAI's names: :mod:`.aliases`).
It resolves a requested name to a :class:`Voice` or raises
:class:`UnknownVoice`, whose message lists the voices and the aliases. The
first voice is the default. Sans-IO: reading a checkpoint's files is the
caller's job; :func:`family_from_checkpoint` judges what was read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .aliases import default_aliases
from .names import check_voice_name

__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "FAMILY_MARKER_FILE",
    "LANGUAGE_NAMES",
    "LANGUAGE_TAGS",
    "Family",
    "Gender",
    "UnknownVoice",
    "Voice",
    "VoiceCatalog",
    "VoiceKind",
    "catalog_for",
    "espeak_family",
    "family_from_checkpoint",
]

VoiceKind = Literal["stock", "custom", "espeak"]
Gender = Literal["female", "male"]
#: A file beside a checkpoint's config.json naming its family (one word, e.g. ``fr``).
FAMILY_MARKER_FILE = "orpheus-family.txt"


@dataclass(frozen=True, slots=True)
class Voice:
    """One voice: its name (see :mod:`.names`), ISO 639-1 language, kind and family."""

    name: str
    language: str
    kind: VoiceKind
    family: str
    #: Where known (the voice's name and published samples); picks OpenAI aliases.
    gender: Gender | None = None

    def __post_init__(self) -> None:
        check_voice_name(self.name)


@dataclass(frozen=True, slots=True)
class Family:
    """What one checkpoint speaks: its voices (the first is the default) and tags per language."""

    name: str
    title: str
    #: The checkpoint's hub id (``None``: not a checkpoint, e.g. espeak).
    hub_id: str | None
    voices: tuple[Voice, ...]
    #: language -> the inline tags (``<laugh>``) the model performs in it.
    tags: Mapping[str, tuple[str, ...]]
    languages: tuple[str, ...]
    #: Clones a voice from reference audio (the pretrained checkpoint).
    can_clone: bool = False


def _stock(family: str, language: str, *voices: tuple[str, Gender | None]) -> tuple[Voice, ...]:
    return tuple(Voice(name, language, "stock", family, gender) for name, gender in voices)


def _tags(*words: str) -> tuple[str, ...]:
    return tuple(f"<{word}>" for word in words)


F: Gender = "female"
M: Gender = "male"
_ENGLISH_TAGS = _tags("laugh", "chuckle", "sigh", "cough", "sniffle", "groan", "yawn", "gasp")
#: Tags per language, from the multilingual release's announcement and cards (docs/voices.md).
LANGUAGE_TAGS: dict[str, tuple[str, ...]] = {
    "en": _ENGLISH_TAGS,
    "fr": _tags(
        "chuckle", "cough", "gasp", "groan", "laugh", "sigh", "sniffle", "whimper", "yawn"
    ),
    "de": _tags("chuckle", "cough", "gasp", "groan", "laugh", "sigh", "sniffle", "yawn"),
    "ko": _tags(
        "한숨", "헐", "헛기침", "훌쩍", "하품", "낄낄", "신음", "작은 웃음", "기침", "으르렁"
    ),
    "hi": (),  # "coming soon" in the release: none published
    "zh": _tags("嬉笑", "轻笑", "呻吟", "大笑", "咳嗽", "抽鼻子", "咳"),
    "es": _tags("groan", "chuckle", "gasp", "resoplido", "laugh", "yawn", "cough"),
    "it": _tags("sigh", "laugh", "cough", "sniffle", "groan", "yawn", "gemito", "gasp"),
}
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "fr": "French", "de": "German", "ko": "Korean", "hi": "Hindi",
    "zh": "Mandarin", "es": "Spanish", "it": "Italian",
}  # fmt: skip


def _family(
    name: str, title: str, hub_id: str | None, voices: tuple[Voice, ...], *languages: str,
    can_clone: bool = False,
) -> Family:  # fmt: skip
    tags = {lang: LANGUAGE_TAGS[lang] for lang in languages}
    return Family(name, title, hub_id, voices, tags, languages, can_clone)


_RELEASE = "canopylabs/3b-{}-ft-research_release"
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        _family(
            "en-ft", "English (fine-tuned)", "canopylabs/orpheus-3b-0.1-ft",
            _stock("en-ft", "en", ("tara", F), ("leah", F), ("jess", F), ("leo", M),
                   ("dan", M), ("mia", F), ("zac", M), ("zoe", F)),
            "en",
        ),
        _family(
            "en-pretrained", "English (pretrained; clones)",
            "canopylabs/orpheus-3b-0.1-pretrained", (), "en", can_clone=True,
        ),
        _family(
            "fr", "French", _RELEASE.format("fr"),
            _stock("fr", "fr", ("pierre", M), ("amelie", F), ("marie", F)), "fr",
        ),
        _family(
            "de", "German", _RELEASE.format("de"),
            _stock("de", "de", ("jana", F), ("thomas", M), ("max", M)), "de",
        ),
        _family("ko", "Korean", _RELEASE.format("ko"),
                _stock("ko", "ko", ("유나", F), ("준서", M)), "ko"),
        _family("hi", "Hindi", _RELEASE.format("hi"), _stock("hi", "hi", ("ऋतिका", F)), "hi"),
        _family("zh", "Mandarin", _RELEASE.format("zh"),
                _stock("zh", "zh", ("长乐", None), ("白芷", None)), "zh"),
        _family(
            "es-it", "Spanish and Italian", _RELEASE.format("es_it"),
            _stock("es-it", "es", ("javi", M), ("sergio", M), ("maria", F))
            + _stock("es-it", "it", ("pietro", M), ("giulia", F), ("carlo", M)),
            "es", "it",
        ),
    )
}  # fmt: skip
DEFAULT_FAMILY = "en-ft"


def espeak_family() -> Family:
    """espeak-ng speaks every stock voice's language: the same names, kind ``espeak``."""
    voices = tuple(
        Voice(v.name, v.language, "espeak", "espeak", v.gender)
        for family in FAMILIES.values()
        for v in family.voices
    )
    languages = tuple(dict.fromkeys(v.language for v in voices))
    # espeak reads a tag aloud rather than performing it: it claims none.
    return Family("espeak", "espeak-ng", None, voices, {}, languages)


class UnknownVoice(ValueError):
    """A requested voice the catalog does not hold; the message lists voices and aliases."""

    def __init__(self, name: str, catalog: VoiceCatalog) -> None:
        self.name = name
        listed = ", ".join(catalog.names()) or "none (send no voice)"
        aliases = ", ".join(f"{a} ({v})" for a, v in catalog.aliases.items())
        shown = name if len(name) <= 80 else f"{name[:77]}..."
        message = f"unknown voice {shown!r}; valid: {listed}"
        super().__init__(f"{message}; aliases: {aliases}" if aliases else message)


@dataclass(frozen=True)
class VoiceCatalog:
    """The voices one server offers (the first is the default) and the aliases onto them.

    Iterating it (and ``in``) covers the voice names, not the aliases, so it can
    stand where a collection of names is expected.
    """

    voices: tuple[Voice, ...]
    aliases: Mapping[str, str]
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _by_name: Mapping[str, Voice] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Voice] = {}
        for voice in self.voices:
            if voice.name in by_name:
                raise ValueError(f"voice {voice.name!r} is listed twice")
            by_name[voice.name] = voice
        for alias, target in self.aliases.items():
            check_voice_name(alias)
            if alias in by_name:
                raise ValueError(f"alias {alias!r} is also a voice's name")
            if target not in by_name:
                raise ValueError(
                    f"alias {alias}={target}: no voice {target!r} "
                    f"(voices: {', '.join(by_name) or 'none'})"
                )
        object.__setattr__(self, "_by_name", by_name)

    @classmethod
    def build(
        cls,
        voices: Iterable[Voice],
        *,
        aliases: Mapping[str, str] | None = None,
        tags: Mapping[str, tuple[str, ...]] | None = None,
    ) -> VoiceCatalog:
        """A catalog of ``voices`` with the default alias table, ``aliases`` overriding it."""
        voices = tuple(voices)
        return cls(voices, {**default_aliases(voices), **(aliases or {})}, dict(tags or {}))

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self.voices)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return [voice.name for voice in self.voices]

    @property
    def default(self) -> Voice | None:
        """The voice a request without one gets (``None``: the text alone, no voice)."""
        return self.voices[0] if self.voices else None

    def languages(self) -> list[str]:
        return list(dict.fromkeys(voice.language for voice in self.voices))

    def emotion_tags(self) -> list[str]:
        """Every served language's tags, each once, in order."""
        return list(dict.fromkeys(tag for tags in self.tags.values() for tag in tags))

    def resolve(self, name: str | None) -> Voice | None:
        """The voice ``name`` (a voice's name or an alias) stands for; ``None``: the default."""
        if name is None:
            return self.default
        voice = self._by_name.get(name)
        if voice is None and name in self.aliases:
            voice = self._by_name[self.aliases[name]]
        if voice is None:
            raise UnknownVoice(name, self)
        return voice

    def with_voices(self, voices: Iterable[Voice]) -> VoiceCatalog:
        """This catalog and ``voices`` (custom ones, say), keeping its aliases and tags."""
        return VoiceCatalog(self.voices + tuple(voices), dict(self.aliases), dict(self.tags))

    def describe(self, engine: str) -> list[dict[str, Any]]:
        """The voices as ``GET /v1/voices`` lists them, default first."""
        return [
            {"name": v.name, "kind": v.kind, "language": v.language, "engine": engine,
             "family": v.family, "default": i == 0}
            for i, v in enumerate(self.voices)
        ]  # fmt: skip

    def languages_by_voice(self) -> dict[str, str]:
        return {voice.name: voice.language for voice in self.voices}


def catalog_for(
    family: str | Family,
    *,
    voices: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> VoiceCatalog:
    """The catalog of ``family`` (a name from :data:`FAMILIES`, ``espeak``, or a :class:`Family`).

    ``voices`` picks and orders the voices served (the first is the default); a
    name the family lacks (a fine-tune of one's own) is served as a stock voice
    of the family's first language. ``aliases`` override the default table.
    """
    if isinstance(family, str):
        if family == "espeak":
            family = espeak_family()
        elif family not in FAMILIES:
            raise ValueError(
                f"unknown model family {family!r}; known: {', '.join([*FAMILIES, 'espeak'])}"
            )
        else:
            family = FAMILIES[family]
    chosen = list(family.voices)
    if voices is not None:
        known = {v.name: v for v in family.voices}
        language = family.languages[0]
        kind: VoiceKind = "espeak" if family.name == "espeak" else "stock"
        chosen = [
            known.get(name) or Voice(check_voice_name(name), language, kind, family.name)
            for name in voices
        ]
    return VoiceCatalog.build(chosen, aliases=aliases, tags=family.tags)


def family_from_checkpoint(
    config: Mapping[str, Any] | None, marker: str | None = None
) -> str | None:
    """The family a checkpoint directory names, from what the caller read there.

    ``marker``: the text of :data:`FAMILY_MARKER_FILE` beside ``config.json``;
    else ``config["orpheus_family"]``; else a known hub id at the end of
    ``config["_name_or_path"]`` (what ``save_pretrained`` records). ``None``:
    the checkpoint does not say (the caller picks the default, or a flag).
    ``ValueError`` for a family that is named but unknown.
    """
    named = (marker or "").strip() or (config or {}).get("orpheus_family")
    if named:
        if named not in FAMILIES:
            raise ValueError(
                f"checkpoint names model family {named!r}; known: {', '.join(FAMILIES)}"
            )
        return str(named)
    source = str((config or {}).get("_name_or_path") or "").rstrip("/").lower()
    for family in FAMILIES.values():
        if family.hub_id and source.endswith(family.hub_id.lower()):
            return family.name
    return None
