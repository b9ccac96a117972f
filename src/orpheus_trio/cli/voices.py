"""``orpheus-trio voices add|list|show|remove``: the custom (cloned) voice library.

``voices add NAME --snac PATH --audio ref.wav --text "what the clip says"``
(``--audio``/``--text`` repeated for several references, paired in order)
encodes the clips with the SNAC checkpoint's encoder and writes one voice file
into ``--dir`` (default ``$ORPHEUS_TRIO_VOICES``, else
``~/.local/share/orpheus-trio/voices``). Serve them with ``serve --engine
orpheus --voices-dir DIR --can-clone`` and the pretrained checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..voices.library import (
    MAX_REFERENCES,
    InvalidVoiceName,
    VoiceExists,
    VoiceFileError,
    VoiceLibrary,
    VoiceNotFound,
    check_voice_name,
    default_voices_dir,
    references_summary,
)
from .options import EXIT_CODES, EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "voices",
        help="add, list, show and remove custom (cloned) voices",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, summary: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=summary, description=summary)
        sub.add_argument("--dir", type=Path, metavar="DIR", help="voice library (default: $ORPHEUS_TRIO_VOICES, else ~/.local/share/orpheus-trio/voices)")
        return sub

    add = action("add", "encode reference clips into a new voice")
    add.add_argument("name", help="the voice's name: letters, digits, '-', '_', '.'")
    add.add_argument("--audio", action="append", required=True, metavar="FILE", help="a reference clip, 3 to 30 s (WAV; mp3/flac/m4a with the formats extra); repeatable")
    add.add_argument("--text", action="append", required=True, metavar="TEXT", help="what the clip says, word for word; one per --audio, in order")
    add.add_argument("--snac", required=True, metavar="PATH", help="the SNAC 24 kHz checkpoint the server decodes with")
    add.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    action("list", "list the voices (one name a line; --json for details)").add_argument("--json", action="store_true")
    action("show", "print a voice's references and checkpoint as JSON").add_argument("name")
    action("remove", "delete a voice").add_argument("name")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    library = VoiceLibrary(args.dir if args.dir is not None else default_voices_dir())
    try:
        if args.action == "add":
            return _add(library, args)
        if args.action == "list":
            for name in library.names():
                if args.json:
                    print(json.dumps(_details(library, name), ensure_ascii=False))
                else:
                    print(name)
            return EXIT_OK
        if args.action == "show":
            print(json.dumps(_details(library, args.name), ensure_ascii=False, indent=2))
            return EXIT_OK
        library.remove(args.name)
        print(f"removed voice {args.name!r}", file=sys.stderr)
        return EXIT_OK
    except InvalidVoiceName as error:
        return _fail(str(error), EXIT_USAGE)
    except (VoiceNotFound, VoiceExists, VoiceFileError) as error:
        return _fail(str(error), EXIT_FAILED)


def _details(library: VoiceLibrary, name: str) -> dict[str, object]:
    try:
        voice = library.get(name)
    except VoiceFileError as error:
        return {"name": name, "error": str(error)}
    return {
        "name": voice.name,
        "snac": voice.snac,
        "seconds": round(voice.duration_s, 2),
        "references": list(references_summary(voice)),
        "file": str(library.path_of(name)),
    }


def _add(library: VoiceLibrary, args: argparse.Namespace) -> int:
    name = check_voice_name(args.name)
    audio: list[str] = args.audio
    texts: list[str] = args.text
    if len(audio) != len(texts):
        return _fail(f"give one --text per --audio: {len(audio)} --audio, {len(texts)} --text", EXIT_USAGE)
    if len(audio) > MAX_REFERENCES:
        return _fail(f"at most {MAX_REFERENCES} references per voice", EXIT_USAGE)
    if name in library:
        return _fail(f"a voice named {name!r} already exists in {library.directory}; remove it first", EXIT_FAILED)
    try:
        from ..local.cloning import encode_voice
        from ..local.snac_encoder import SnacEncoder
    except ModuleNotFoundError as error:
        return _fail(f"voices add needs the local extra ({error.name} is not installed): pip install '.[local]'", EXIT_FAILED)
    pairs = []
    for text, clip_path in zip(texts, audio, strict=True):
        try:
            pairs.append((text, Path(clip_path).read_bytes()))
        except OSError as error:
            return _fail(f"cannot read {clip_path}: {error.strerror}", EXIT_FAILED)
    try:
        encoder = SnacEncoder.from_pretrained(args.snac, device=args.device)
        voice = encode_voice(encoder, name, pairs)
    except (ValueError, FileNotFoundError) as error:
        return _fail(str(error), EXIT_FAILED)
    path = library.add(voice)
    print(f"added voice {name!r} ({voice.duration_s:.1f} s of reference audio) to {path}", file=sys.stderr)
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"orpheus-trio voices: {message}", file=sys.stderr)
    return code
