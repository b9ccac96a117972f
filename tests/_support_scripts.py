"""Splitting tables per script, shared by the batch splitter's and the streaming chunker's tests.

Each case: (id, text, max_chars, the exact pieces). ``max_chars`` is small
enough that every sentence is a piece of its own, so the streaming chunker fed
the text a grapheme at a time gives the very same pieces as the batch splitter.
"""

from __future__ import annotations

import unicodedata

NFD_E = unicodedata.normalize("NFD", "é")  # e + COMBINING ACUTE ACCENT
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"  # one ZWJ sequence

SCRIPT_CASES: list[tuple[str, str, int, list[str]]] = [
    (
        "mandarin: 。！？ with no spaces",
        "你好。今天天气很好！我们去公园吧？好的。",
        8,
        ["你好。", "今天天气很好！", "我们去公园吧？", "好的。"],
    ),
    (
        "mandarin: a long sentence cut at full-width commas, no space added",
        "今天天气很好，我们去公园吧，然后吃饭。",
        8,
        ["今天天气很好，", "我们去公园吧，", "然后吃饭。"],
    ),
    (
        "mandarin: closing corner bracket stays with its sentence",
        "他说：「你好。」我们走吧。",
        9,
        ["他说：「你好。」", "我们走吧。"],
    ),
    (
        "korean: spaced sentences and a tag with a space in it",
        "안녕하세요. 반갑습니다! 오늘 날씨가 좋네요? <작은 웃음> 네.",
        12,
        ["안녕하세요.", "반갑습니다!", "오늘 날씨가 좋네요?", "<작은 웃음> 네."],
    ),
    (
        "hindi: danda and double danda",
        "नमस्ते। आप कैसे हैं? मैं ठीक हूँ॥ धन्यवाद।",
        14,
        ["नमस्ते।", "आप कैसे हैं?", "मैं ठीक हूँ॥", "धन्यवाद।"],
    ),
    (
        "spanish: ¿ ¡ openers begin their sentence",
        "¿Cómo estás? ¡Muy bien! Gracias.",
        14,
        ["¿Cómo estás?", "¡Muy bien!", "Gracias."],
    ),
    (
        "french: a word cut never leaves « at a piece's end nor » at a start",
        "Il dit « bonjour »",
        11,
        ["Il dit", "« bonjour »"],
    ),
    (
        "french: a space before ! ? ; and guillemets",
        "« Bonjour ! » dit-il. Comment ça va ? Très bien ; merci.",
        22,
        ["« Bonjour ! » dit-il.", "Comment ça va ?", "Très bien ; merci."],
    ),
    (
        "french: a word cut never starts a piece with ! or ?",
        "Bonjour tout le monde ! Ça va ?",
        10,
        ["Bonjour", "tout le", "monde !", "Ça va ?"],
    ),
    (
        "french: no-break spaces are kept and never cut at",
        "Merci\u00a0! Au revoir\u00a0?",
        9,
        ["Merci\u00a0!", "Au", "revoir\u00a0?"],
    ),
    (
        "german: „ “ quotes, the closing “ stays with its sentence",
        "„Hallo!“, sagte er. „Wie geht es dir?“ Gut.",
        22,
        ["„Hallo!“, sagte er.", "„Wie geht es dir?“", "Gut."],
    ),
    (
        "decimal commas are never clause cuts",
        "Es kostet 3,5 Millionen, sagte er. Danach 2,75 Euro.",
        24,
        ["Es kostet 3,5 Millionen,", "sagte er.", "Danach 2,75 Euro."],
    ),
    (
        "english tag stays whole in a word cut",
        "I <laugh> love this so much",
        9,
        ["I <laugh>", "love this", "so much"],
    ),
    (
        "mixed scripts",
        "Hello. 你好。Bonjour ! 안녕.",
        9,
        ["Hello.", "你好。", "Bonjour !", "안녕."],
    ),
    (
        "emoji ZWJ sequences are never cut",
        FAMILY * 3,
        8,
        [FAMILY, FAMILY, FAMILY],
    ),
    (
        "combining marks stay on their letter",
        NFD_E * 4,
        3,
        [NFD_E, NFD_E, NFD_E, NFD_E],
    ),
    (
        "arabic passes through untouched",
        "مرحبا بك. كيف حالك؟ أنا بخير.",
        12,
        ["مرحبا بك.", "كيف حالك؟", "أنا بخير."],
    ),
    (
        "hebrew passes through untouched",
        "שלום עולם. מה שלומך? טוב.",
        12,
        ["שלום עולם.", "מה שלומך?", "טוב."],
    ),
]
