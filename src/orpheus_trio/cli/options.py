"""Flags shared by the client commands: where to connect, which voice, engine parameters.

Environment: ``ORPHEUS_URLS`` (comma-separated) when no ``--url`` is given,
``ORPHEUS_KEY`` when no ``--api-key`` is given.

Light to import (the standard library and :mod:`..text.split`): every parser is built
from it, and ``--help`` must not wait for httpx or Trio. The few helpers that need
the client import it when called, once the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..text.split import AUTO_SPLIT_CHARS, DEFAULT_MAX_CHARS, SPLIT_MODES

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConnectionSettings",
    "OnBoxModel",
    "UsageError",
    "add_connection_options",
    "add_on_box_options",
    "add_voice_options",
    "api_key_hint",
    "connection_settings",
    "engine_params",
    "given_api_key",
    "http_status",
    "http_url",
    "parse_param",
    "read_text",
    "report_failure",
    "text_argument",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = """exit codes:
  0    success
  1    the work failed (a request, a batch item, an unreachable service)
  2    bad usage (unknown flag, bad value, malformed input file)
  130  interrupted (Ctrl-C)"""


class UsageError(ValueError):
    """A bad flag value or input found after argument parsing: exit code 2."""


@dataclass(frozen=True, slots=True)
class OnBoxModel:
    """An Orpheus checkpoint and SNAC decoder for the embedded server to run instead of espeak.

    With ``llm_url`` the LLM runs on that inference engine instead (``model`` is
    then ``None``) and only SNAC runs here.
    """

    model: str | None
    snac: str
    tokenizer: str | None = None
    device: str | None = None
    dtype: str | None = None
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Where to send requests; no URLs means the embedded server (espeak, or ``on_box``)."""

    urls: tuple[str, ...]
    api_key: str | None
    hedge_ttfb_ms: float | None
    timeout_s: float | None
    on_box: OnBoxModel | None = None
    #: The embedded server's voices: ``--model-family`` and ``--voice-alias ALIAS=VOICE``.
    model_family: str | None = None
    voice_aliases: tuple[str, ...] = ()


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"expected http(s)://host[:port], got {value!r}"
        )
    return value


def _float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def positive_float(value: str) -> float:
    number = _float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def non_negative_float(value: str) -> float:
    number = _float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer, got {value!r}"
        ) from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return number


def non_negative_int(value: str) -> int:
    return 0 if value.strip() == "0" else positive_int(value)


def parse_value(text: str) -> Any:
    """``--param`` values: JSON when it parses (numbers, true/false, null, "quoted", [..], {..}), else the string."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def parse_param(spec: str) -> tuple[str, Any]:
    key, sep, value = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {spec!r}")
    return key, parse_value(value.strip())


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "connection (default: an embedded espeak server on 127.0.0.1)"
    )
    group.add_argument(
        "--url", action="append", dest="urls", type=http_url, default=[], metavar="URL",
        help="service base URL, repeatable (several workers are raced and failed over); "
        "default: $ORPHEUS_URLS (comma-separated), else the embedded server",
    )  # fmt: skip
    group.add_argument(
        "--api-key", metavar="KEY", help="sent as a Bearer token; default: $ORPHEUS_KEY"
    )
    group.add_argument(
        "--hedge-ms", type=non_negative_float, default=None, metavar="MS",
        help="start a backup attempt when no audio came after MS milliseconds (0: off; default 400, "
        "off for the embedded server)",
    )  # fmt: skip
    group.add_argument(
        "--timeout-s", type=positive_float, default=None, metavar="S",
        help="deadline per request (per piece of long text), also sent to the server",
    )  # fmt: skip


def add_on_box_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "on-box synthesis (the embedded server runs Orpheus instead of espeak; "
        "needs the local and server extras)"
    )
    group.add_argument("--model", metavar="PATH", help="Orpheus checkpoint: local directory or hub id")
    group.add_argument("--snac", metavar="PATH", help="SNAC 24 kHz checkpoint: local directory or hub id")
    group.add_argument("--tokenizer", metavar="PATH", help="tokenizer, if not the model's own")
    group.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    group.add_argument("--dtype", help="model dtype (default: bfloat16 on cuda, float32 on cpu)")
    group.add_argument(
        "--llm-url", metavar="URL", type=http_url,
        help="run the LLM on this inference engine (vllm serve, SGLang, llama-server: its "
        "OpenAI-compatible base URL) instead of --model; SNAC (--snac) still runs here",
    )  # fmt: skip
    group.add_argument("--llm-model", metavar="NAME", help="with --llm-url: the engine's model name")
    group.add_argument(
        "--llm-api-key", metavar="KEY", help="with --llm-url: the engine's API key; default: $ORPHEUS_LLM_API_KEY"
    )
    group.add_argument(
        "--model-family", metavar="NAME",
        help="the embedded server's voices and languages: en-ft, fr, de, ko, hi, zh, es-it, "
        "en-pretrained (default: what --model says, else en-ft; espeak: all); docs/voices.md",
    )  # fmt: skip
    group.add_argument(
        "--voice-alias", action="append", default=[], metavar="ALIAS=VOICE",
        help="the embedded server serves ALIAS (e.g. OpenAI's alloy) as VOICE (repeatable)",
    )  # fmt: skip


def _on_box(args: argparse.Namespace) -> OnBoxModel | None:
    """The ``--model`` flags, checked; ``None`` when not given (or not offered)."""
    flags = ("model", "snac", "tokenizer", "device", "dtype", "llm_url", "llm_model", "llm_api_key")
    given = {flag: getattr(args, flag, None) for flag in flags}
    if given["model"] is None and given["snac"] is None and given["llm_url"] is None:
        extra = [f"--{flag.replace('_', '-')}" for flag, value in given.items() if value is not None]
        if extra:
            raise UsageError(f"{', '.join(extra)}: only with --model and --snac (on-box synthesis)")
        return None
    model, snac, llm_url = given["model"], given["snac"], given["llm_url"]
    if llm_url is not None:
        if model is not None:
            raise UsageError("--model runs the LLM here, --llm-url on an engine: give one of them")
        if given["dtype"] is not None:
            raise UsageError("--dtype is the on-box model's: the engine at --llm-url sets its own")
        if snac is None:
            raise UsageError("--llm-url needs --snac (the SNAC decoder runs here)")
    elif model is None or snac is None:
        raise UsageError("on-box synthesis needs both --model and --snac")
    else:
        engine_only = [f"--{f.replace('_', '-')}" for f in ("llm_model", "llm_api_key") if given[f]]
        if engine_only:
            raise UsageError(f"{', '.join(engine_only)}: only with --llm-url")
    if args.urls:
        raise UsageError("--model runs the model here, --url sends to a service: give one of them")
    api_key = given["llm_api_key"] or (os.environ.get("ORPHEUS_LLM_API_KEY") or None if llm_url else None)
    return OnBoxModel(
        model, snac, given["tokenizer"], given["device"], given["dtype"], llm_url, given["llm_model"], api_key
    )


def add_voice_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("voice and engine parameters")
    group.add_argument(
        "--voice", help="voice name (the service lists them: orpheus-trio system)"
    )
    group.add_argument("--temperature", type=_float, help="sampling temperature")
    group.add_argument(
        "--top-p", type=float, dest="top_p", help="nucleus sampling threshold"
    )
    group.add_argument(
        "--max-tokens",
        type=positive_int,
        dest="max_tokens",
        help="most audio tokens per request",
    )
    group.add_argument(
        "--param", action="append", type=parse_param, default=[], metavar="KEY=VALUE", dest="params",
        help="any engine parameter, repeatable; VALUE is read as JSON when it parses "
        "(3, 0.5, true, null, \"text\"), else as a string",
    )  # fmt: skip
    group.add_argument(
        "--split", choices=SPLIT_MODES, default="auto",
        help=f"long text: auto = split above {AUTO_SPLIT_CHARS} characters; sentences = split at any "
        f"length into pieces of whole sentences packed up to {DEFAULT_MAX_CHARS} characters; "
        "never = one request",
    )  # fmt: skip
    group.add_argument(
        "--prefetch", type=non_negative_int, default=1, metavar="N",
        help="long text: pieces synthesized ahead of the one being received (default 1)",
    )  # fmt: skip


def engine_params(args: argparse.Namespace) -> dict[str, Any]:
    """The request's engine parameters: the named flags, then every ``--param`` (later wins)."""
    params: dict[str, Any] = {}
    for key in ("temperature", "top_p", "max_tokens"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    for key, value in args.params:
        if key in ("text", "voice"):
            raise UsageError(
                f"--param {key}=... is not an engine parameter; use the {key} argument"
            )
        params[key] = value
    return params


def given_api_key(args: argparse.Namespace) -> str | None:
    """``--api-key``, else ``$ORPHEUS_KEY``, else none."""
    key: str | None = args.api_key
    return key if key is not None else os.environ.get("ORPHEUS_KEY") or None


def api_key_hint(status: int | None, api_key: str | None) -> str | None:
    """What to do about a 401: pass a key, or check the one that was sent."""
    if status != 401:
        return None
    if api_key is None:
        return "the service needs an API key: pass --api-key KEY or set ORPHEUS_KEY"
    return "the service refused the API key given (--api-key or ORPHEUS_KEY): check it"


def http_status(error: BaseException) -> int | None:
    """The HTTP status a failure carries, if any."""
    import httpx

    status = getattr(error, "status_code", None)
    if status is None and isinstance(getattr(error, "response", None), httpx.Response):
        status = error.response.status_code  # type: ignore[attr-defined]
    return status if isinstance(status, int) else None


def connection_settings(args: argparse.Namespace) -> ConnectionSettings:
    from ..options import Hedging

    urls: list[str] = list(args.urls)
    on_box = _on_box(args)
    if not urls and on_box is None:  # an explicit --model wins over $ORPHEUS_URLS
        for url in os.environ.get("ORPHEUS_URLS", "").split(","):
            if url.strip():
                try:
                    urls.append(http_url(url.strip()))
                except argparse.ArgumentTypeError as error:
                    raise UsageError(f"ORPHEUS_URLS: {error}") from None
    api_key = given_api_key(args)
    hedge: float | None = args.hedge_ms
    if hedge is None:
        # A hedge to the same in-process engine cannot be faster.
        hedge = Hedging.ttfb_ms if urls else None
    family, aliases = getattr(args, "model_family", None), tuple(getattr(args, "voice_alias", ()))
    if urls and (family or aliases):
        raise UsageError("--model-family and --voice-alias set the embedded server's voices: not with --url")
    return ConnectionSettings(
        tuple(urls), api_key, hedge or None, args.timeout_s, on_box, family, aliases
    )


def decode_text(data: bytes, source: str) -> str:
    """``data`` as UTF-8, strictly: a wrong encoding is a :class:`UsageError` naming the byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UsageError(
            f"{source} is not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start} "
            f"(line {line}) cannot be decoded ({error.reason}); convert it to UTF-8, "
            "e.g. iconv -f LATIN1 -t UTF-8"
        ) from None


def read_text(source: str) -> str:
    """The text of a file, or of standard input for ``"-"``, whatever the locale says.

    Python reads standard input with ``surrogateescape`` in a C locale, which
    would pass undecodable bytes on as lone surrogates; read bytes, decode here.
    """
    if source == "-":
        return decode_text(sys.stdin.buffer.read(), "standard input")
    return decode_text(Path(source).read_bytes(), source)


def text_argument(text: str) -> str:
    """A TEXT argument, checked: Python decodes argv with ``surrogateescape`` too."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return decode_text(os.fsencode(text), "TEXT")
    return text


def report_failure(command: str, error: BaseException, *, api_key: str | None = None) -> int:
    """Print the failure on stderr; the exit code that goes with it.

    ``api_key``: the key that was sent, for the hint a 401 gets.
    """
    if isinstance(error, UsageError):
        print(f"orpheus-trio {command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    from .batch_jobs import describe_error

    line = describe_error(error)
    hint = api_key_hint(http_status(error), api_key)
    if hint is not None and "--api-key" not in line:  # the client's own message may say it
        line += f"; {hint}"
    print(f"orpheus-trio {command}: error: {line}", file=sys.stderr)
    return EXIT_FAILED
