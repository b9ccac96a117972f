"""The voice catalog: the name grammar, each family's voices and tags, aliases, checkpoint families."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from orpheus_trio.voices import (
    ENGLISH_ALIASES,
    FAMILIES,
    OPENAI_VOICES,
    InvalidVoiceName,
    UnknownVoice,
    Voice,
    VoiceCatalog,
    catalog_for,
    check_voice_name,
    espeak_family,
    family_from_checkpoint,
    is_voice_name,
    parse_alias,
    parse_alias_file,
)


@pytest.mark.parametrize(
    "name", ["tara", "유나", "준서", "长乐", "白芷", "ऋतिका", "my-voice_2.v1", "x" * 64, "Amélie"]
)
def test_voice_names_of_every_script_pass_the_grammar(name: str) -> None:
    assert check_voice_name(name) == name and is_voice_name(name)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../x", "U\\+002F"),
        ("a/b", "U\\+002F"),
        ("a\\b", "U\\+005C"),
        ("a\x00b", "U\\+0000"),
        ("a\nb", "U\\+000A"),
        ("two words", "U\\+0020"),
        ("..", "starts with a letter or digit"),
        (".", "starts with a letter or digit"),
        (".hidden", "starts with a letter or digit"),
        ("-x", "starts with a letter or digit"),
        ("", "1 to 64 characters, got 0"),
        ("x" * 65, "1 to 64 characters, got 65"),
        ("\u0301a", "starts with a letter or digit"),
        (unicodedata.normalize("NFD", "Amélie"), "not in Unicode NFC form"),
        ("a\u200db", "U\\+200D"),  # ZERO WIDTH JOINER: invisible, so refused
    ],
)
def test_names_that_could_be_paths_controls_or_lookalikes_fail(name: str, rule: str) -> None:
    with pytest.raises(InvalidVoiceName, match=rule):
        check_voice_name(name)
    assert not is_voice_name(name)


def test_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidVoiceName, match="must be a string, got int"):
        check_voice_name(7)


@pytest.mark.parametrize(
    ("family", "voices", "languages"),
    [
        ("en-ft", ["tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe"], ["en"]),
        ("en-pretrained", [], []),
        ("fr", ["pierre", "amelie", "marie"], ["fr"]),
        ("de", ["jana", "thomas", "max"], ["de"]),
        ("ko", ["유나", "준서"], ["ko"]),
        ("hi", ["ऋतिका"], ["hi"]),
        ("zh", ["长乐", "白芷"], ["zh"]),
        ("es-it", ["javi", "sergio", "maria", "pietro", "giulia", "carlo"], ["es", "it"]),
    ],
)
def test_each_family_offers_its_checkpoints_voices_first_is_default(
    family: str, voices: list[str], languages: list[str]
) -> None:
    catalog = catalog_for(family)
    assert catalog.names() == voices
    assert catalog.languages() == languages
    assert catalog.resolve(None) == (catalog.voices[0] if voices else None)
    for voice in catalog.voices:
        assert voice.kind == "stock" and voice.family == family
    other = "tara" if family != "en-ft" else "pierre"
    with pytest.raises(UnknownVoice, match=f"unknown voice '{other}'; valid: "):
        catalog.resolve(other)


def test_spanish_and_italian_voices_carry_their_own_language() -> None:
    catalog = catalog_for("es-it")
    assert catalog.resolve("javi") == Voice("javi", "es", "stock", "es-it", "male")
    assert catalog.resolve("giulia") == Voice("giulia", "it", "stock", "es-it", "female")
    assert "<resoplido>" in catalog.emotion_tags() and "<gemito>" in catalog.emotion_tags()


def test_tags_per_language() -> None:
    assert catalog_for("en-ft").emotion_tags() == [
        "<laugh>", "<chuckle>", "<sigh>", "<cough>", "<sniffle>", "<groan>", "<yawn>", "<gasp>",
    ]  # fmt: skip
    assert "<한숨>" in catalog_for("ko").emotion_tags()
    assert "<작은 웃음>" in catalog_for("ko").emotion_tags()
    assert "<嬉笑>" in catalog_for("zh").emotion_tags()
    assert "<whimper>" in catalog_for("fr").emotion_tags()
    assert catalog_for("hi").emotion_tags() == []  # none published for Hindi


def test_espeak_family_speaks_every_stock_voice_in_its_language() -> None:
    family = espeak_family()
    stock = [v for f in FAMILIES.values() for v in f.voices]
    assert [(v.name, v.language) for v in family.voices] == [
        (v.name, v.language) for v in stock
    ]
    assert {v.kind for v in family.voices} == {"espeak"}
    assert family.languages == ("en", "fr", "de", "ko", "hi", "zh", "es", "it")


def test_english_aliases_follow_the_documented_table() -> None:
    catalog = catalog_for("en-ft")
    assert dict(catalog.aliases) == ENGLISH_ALIASES
    assert set(catalog.aliases) == set(OPENAI_VOICES)
    assert catalog.resolve("alloy") == catalog.resolve("tara")
    assert catalog.resolve("onyx").name == "leo"  # type: ignore[union-attr]


def test_other_families_alias_by_gender_in_the_default_language() -> None:
    french = catalog_for("fr")
    assert french.aliases["alloy"] == "pierre"  # the default voice
    assert french.aliases["nova"] in ("amelie", "marie")
    assert {french.aliases[a] for a in ("coral", "nova", "sage", "shimmer")} == {"amelie", "marie"}
    assert french.aliases["onyx"] == "pierre"
    # Spanish+Italian: the default voice's language (Spanish) only.
    spanish = catalog_for("es-it")
    assert {spanish.aliases[a] for a in OPENAI_VOICES} <= {"javi", "sergio", "maria"}
    # Unknown genders: every alias is the default voice.
    assert set(catalog_for("zh").aliases.values()) == {"长乐"}
    assert catalog_for("en-pretrained").aliases == {}


def test_unknown_voice_lists_voices_and_aliases() -> None:
    with pytest.raises(UnknownVoice) as error:
        catalog_for("de").resolve("bob")
    message = str(error.value)
    assert message.startswith("unknown voice 'bob'; valid: jana, thomas, max; aliases: alloy (jana),")
    assert "onyx (" in message


def test_aliases_are_overridden_and_checked() -> None:
    catalog = catalog_for("en-ft", aliases={"alloy": "leo", "narrator": "zoe"})
    assert catalog.resolve("alloy").name == "leo"  # type: ignore[union-attr]
    assert catalog.resolve("narrator").name == "zoe"  # type: ignore[union-attr]
    assert catalog.aliases["nova"] == "mia"  # the rest of the table stays
    with pytest.raises(ValueError, match="alias alloy=pierre: no voice 'pierre'"):
        catalog_for("en-ft", aliases={"alloy": "pierre"})
    with pytest.raises(ValueError, match="alias 'tara' is also a voice's name"):
        catalog_for("en-ft", aliases={"tara": "leo"})
    with pytest.raises(InvalidVoiceName):
        catalog_for("en-ft", aliases={"../x": "leo"})


def test_alias_flags_and_files_parse_strictly() -> None:
    assert parse_alias("alloy=tara") == ("alloy", "tara")
    assert parse_alias(" nova = 유나 ") == ("nova", "유나")
    for bad in ("alloy", "=tara", "alloy=", "a/b=tara"):
        with pytest.raises(ValueError):
            parse_alias(bad)
    assert parse_alias_file('{"alloy": "pierre", "echo": "max"}') == {
        "alloy": "pierre",
        "echo": "max",
    }
    for bad in ("[1]", '{"alloy": 3}', "not json", '{"a/b": "x"}'):
        with pytest.raises(ValueError):
            parse_alias_file(bad)


def test_chosen_voices_keep_their_records_and_new_names_take_the_family_language() -> None:
    catalog = catalog_for("fr", voices=["marie", "custom-fr"])
    assert catalog.names() == ["marie", "custom-fr"]
    assert catalog.resolve("custom-fr") == Voice("custom-fr", "fr", "stock", "fr")
    with pytest.raises(InvalidVoiceName):
        catalog_for("fr", voices=["a/b"])
    with pytest.raises(ValueError, match="unknown model family 'xx'; known: en-ft, "):
        catalog_for("xx")
    with pytest.raises(ValueError, match="listed twice"):
        catalog_for("fr", voices=["marie", "marie"])


def test_a_catalog_holds_custom_voices_beside_stock_ones() -> None:
    catalog = catalog_for("en-pretrained").with_voices(
        [Voice("my-voice", "en", "custom", "en-pretrained")]
    )
    assert catalog.resolve(None) == catalog.resolve("my-voice")
    assert catalog.describe("orpheus") == [
        {"name": "my-voice", "kind": "custom", "language": "en", "engine": "orpheus",
         "family": "en-pretrained", "default": True}
    ]  # fmt: skip
    assert "my-voice" in catalog and list(catalog) == ["my-voice"]


def test_family_from_checkpoint_files() -> None:
    assert family_from_checkpoint(None) is None
    assert family_from_checkpoint({}) is None
    assert family_from_checkpoint({"orpheus_family": "ko"}) == "ko"
    assert family_from_checkpoint({"orpheus_family": "ko"}, "zh\n") == "zh"  # the file wins
    assert (
        family_from_checkpoint({"_name_or_path": "canopylabs/3b-fr-ft-research_release"})
        == "fr"
    )
    assert (
        family_from_checkpoint({"_name_or_path": "/models/canopylabs/orpheus-3b-0.1-ft/"})
        == "en-ft"
    )
    with pytest.raises(ValueError, match="checkpoint names model family 'klingon'"):
        family_from_checkpoint(None, "klingon")


def test_a_catalog_refuses_duplicate_voices() -> None:
    voice = Voice("tara", "en", "stock", "x")
    with pytest.raises(ValueError, match="listed twice"):
        VoiceCatalog((voice, voice), {})


def test_serve_reads_aliases_from_a_file_then_the_flags(tmp_path: Any) -> None:
    import argparse

    from orpheus_trio.server.engines.orpheus import alias_overrides, catalog_from_args

    table = tmp_path / "aliases.json"
    table.write_text('{"alloy": "marie", "narrator": "pierre"}', encoding="utf-8")
    args = argparse.Namespace(
        model_family="fr", voices=None, voice_alias_file=str(table), voice_alias=["alloy=amelie"]
    )
    assert alias_overrides(args) == {"alloy": "amelie", "narrator": "pierre"}
    catalog = catalog_from_args(args, checkpoint=None)
    assert catalog.resolve("narrator").name == "pierre"  # type: ignore[union-attr]
    assert catalog.resolve("alloy").name == "amelie"  # type: ignore[union-attr]


def test_a_checkpoint_directory_names_its_family(tmp_path: Any) -> None:
    from orpheus_trio.server.engines.orpheus import checkpoint_family

    (tmp_path / "config.json").write_text('{"_name_or_path": "canopylabs/3b-zh-ft-research_release"}')
    assert checkpoint_family(tmp_path) == "zh"
    (tmp_path / "orpheus-family.txt").write_text("ko\n")
    assert checkpoint_family(tmp_path) == "ko"
    assert checkpoint_family("canopylabs/3b-de-ft-research_release") == "de"
    assert checkpoint_family(tmp_path / "missing") is None
