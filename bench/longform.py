"""Long text in every language: a 5,000-character text per language through the espeak engine.

Each language's text (its own script and punctuation: 。！？ with no spaces,
the danda, ¿ ¡, French spacing, „ “ quotes, decimal commas) goes through the
long-text client path end to end: ``OrpheusTTS.stream`` splits it
(``text.split``), sends the pieces to an embedded server running the espeak
engine with that language's voice, and plays them in order with faded joins.
Per language: pieces, characters, audio seconds, time to first audio, wall time
(and real-time factor), and the joins measured as bench/agent.py does: the
first pieces synthesized each on its own, butted together ("before") and
through the client's JoinSmoother ("after"), each join's step over the
signal's own steps (:func:`join_discontinuities`; around 1 or less: seamless).

    .venv/bin/python bench/longform.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

from orpheus_trio import OrpheusTTS
from orpheus_trio.audio.joins import JoinSmoother, join_discontinuities
from orpheus_trio.server import ServerConfig, create_app, serve_app
from orpheus_trio.server.engines.espeak import EspeakEngine
from orpheus_trio.text.split import DEFAULT_MAX_CHARS, split_for_synthesis

BYTES_PER_S = 24_000 * 2
#: language -> (voice, sentences repeated into the text).
TEXTS: dict[str, tuple[str, list[str]]] = {
    "en": ("tara", [
        "The morning train left the station at nine fifteen, a little late as usual.",
        "Dr. Smith said the results, about 3.5 percent better, were e.g. worth a look.",
        "Would you like tea or coffee? I'd love some tea, thank you!",
        "The river ran quietly past the old mill, where nobody had worked for years.",
    ]),
    "fr": ("pierre", [
        "Le train du matin a quitté la gare à neuf heures et quart, un peu en retard.",
        "« Bonjour ! » dit-elle en souriant. Comment allez-vous aujourd'hui ?",
        "Le prix a augmenté de 3,5 pour cent ; personne ne s'y attendait vraiment.",
        "La rivière coulait doucement près du vieux moulin : tout était calme.",
    ]),
    "de": ("jana", [
        "Der Zug verließ den Bahnhof um neun Uhr fünfzehn, wie immer etwas verspätet.",
        "„Guten Morgen!“, sagte sie lächelnd. „Wie geht es Ihnen heute?“",
        "Der Preis stieg um 3,5 Prozent, und niemand hatte damit gerechnet.",
        "Der Fluss floss still an der alten Mühle vorbei, wo seit Jahren niemand arbeitete.",
    ]),
    "ko": ("유나", [
        "아침 기차는 아홉 시 십오 분에 역을 떠났습니다. 평소처럼 조금 늦었어요.",
        "안녕하세요! 오늘 기분이 어떠세요? 저는 아주 좋아요.",
        "가격이 3.5퍼센트 올랐지만, 아무도 놀라지 않았습니다.",
        "강물은 오래된 방앗간 옆을 조용히 흘러갔습니다.",
    ]),
    "hi": ("ऋतिका", [
        "सुबह की ट्रेन सवा नौ बजे स्टेशन से निकली, हमेशा की तरह थोड़ी देर से।",
        "नमस्ते! आज आप कैसे हैं? मैं बिल्कुल ठीक हूँ।",
        "कीमत में 3.5 प्रतिशत की बढ़ोतरी हुई, और किसी को इसकी उम्मीद नहीं थी।",
        "नदी पुरानी चक्की के पास से चुपचाप बहती रही॥",
    ]),
    "zh": ("长乐", [
        "早上的火车九点十五分离开了车站，和往常一样晚了一点。",
        "你好！今天过得怎么样？我很好，谢谢你。",
        "价格上涨了百分之三点五，谁也没有想到。",
        "河水静静地流过那座多年无人使用的旧磨坊。",
    ]),
    "es": ("javi", [
        "El tren de la mañana salió de la estación a las nueve y cuarto, algo tarde.",
        "¡Buenos días! ¿Cómo estás hoy? Yo estoy muy bien, gracias.",
        "El precio subió un 3,5 por ciento y nadie lo esperaba.",
        "El río corría en silencio junto al viejo molino abandonado.",
    ]),
    "it": ("giulia", [
        "Il treno del mattino lasciò la stazione alle nove e un quarto, un po' in ritardo.",
        "Buongiorno! Come stai oggi? Io sto benissimo, grazie.",
        "Il prezzo è salito del 3,5 per cento e nessuno se lo aspettava.",
        "Il fiume scorreva silenzioso accanto al vecchio mulino abbandonato.",
    ]),
}
JOINED_PIECES = 12


def long_text(sentences: list[str], chars: int, language: str) -> str:
    """Whole sentences, repeated, up to ``chars`` characters (Mandarin joins with no space)."""
    sep = "" if language == "zh" else " "
    out = ""
    i = 0
    while True:
        nxt = out + (sep if out else "") + sentences[i % len(sentences)]
        if len(nxt) > chars:
            return out
        out, i = nxt, i + 1


async def one_language(url: str, language: str, chars: int) -> dict[str, Any]:
    voice, sentences = TEXTS[language]
    text = long_text(sentences, chars, language)
    pieces = split_for_synthesis(text, max_chars=DEFAULT_MAX_CHARS)
    async with OrpheusTTS(url) as tts:
        started = trio.current_time()
        first_audio: float | None = None
        audio = 0
        async for pcm in tts.stream(text, voice):
            if first_audio is None:
                first_audio = trio.current_time() - started
            audio += len(pcm)
        wall = trio.current_time() - started
        separate = [
            b"".join([c async for c in tts.stream(piece, voice, split="never")])
            for piece in pieces[: JOINED_PIECES + 1]
        ]
    audio_s = audio / BYTES_PER_S
    result: dict[str, Any] = {
        "voice": voice,
        "chars": len(text),
        "pieces": len(pieces),
        "audio_s": round(audio_s, 1),
        "first_audio_ms": round(1000 * (first_audio or 0.0), 1),
        "wall_s": round(wall, 2),
        "rtf": round(wall / audio_s, 4) if audio_s else None,
    }
    result.update(join_ratios(separate))
    return result


def join_ratios(pieces: list[bytes]) -> dict[str, Any]:
    """Each join's step over the signal's own, butted and smoothed (as bench/agent.py)."""
    if len(pieces) < 2:
        return {"joins": 0}
    at, positions = 0, []
    for piece in pieces[:-1]:
        at += len(piece) // 2
        positions.append(at)
    smoother, smoothed = JoinSmoother(), bytearray()
    for i, piece in enumerate(pieces):
        smoother.start_piece()
        smoothed += smoother.push(piece)
        smoothed += smoother.end_piece(last=i == len(pieces) - 1)
    before = join_discontinuities(b"".join(pieces), positions)
    after = join_discontinuities(bytes(smoothed), positions)
    return {
        "joins": len(positions),
        "before_median": round(statistics.median(before), 2),
        "before_max": round(max(before), 2),
        "after_median": round(statistics.median(after), 2),
        "after_max": round(max(after), 2),
    }


async def run(chars: int) -> dict[str, Any]:
    config = ServerConfig(host="127.0.0.1", port=0, playground=False)
    engine = EspeakEngine()
    app = create_app(engine, config)
    results: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_app, app, config)
        for language in TEXTS:
            results[language] = await one_language(url, language, chars)
        nursery.cancel_scope.cancel()
    await engine.aclose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,500 characters per language")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args()
    chars = 1_500 if args.quick else 5_000
    began = time.perf_counter()
    languages = trio.run(run, chars)
    results = {"chars_per_language": chars, "engine": "espeak", "languages": languages}
    print(f"long text through the espeak engine, {chars} characters per language "
          f"({time.perf_counter() - began:.1f} s in all)")  # fmt: skip
    print(f"{'lang':<5} {'voice':<7} {'chars':>6} {'pieces':>7} {'audio':>8} {'1st audio':>10} "
          f"{'wall':>7} {'rtf':>7} {'joins butted med/max':>21} {'faded med/max':>14}")  # fmt: skip
    for language, r in languages.items():
        print(
            f"{language:<5} {r['voice']:<7} {r['chars']:>6} {r['pieces']:>7} "
            f"{r['audio_s']:>6.1f} s {r['first_audio_ms']:>7.1f} ms {r['wall_s']:>5.2f} s "
            f"{r['rtf']:>7.4f} {r['before_median']:>10} / {r['before_max']:<8} "
            f"{r['after_median']:>5} / {r['after_max']:<6}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
