"""A scripted inference engine for bench/engine.py: the worker's own cost, with no LLM beside it.

    python bench/replay_engine.py RATE PORT_FILE

Serves ``POST /v1/completions`` as llama-server streams it (and answers
``GET /v1/models`` as an engine it does not know, so the worker reads text) (one SSE event of
llama-server's shape per token, chunked, the connection closed after the
reply): ``max_tokens`` valid Orpheus audio tokens at ``RATE`` tokens per
second per stream, then ``finish_reason: "length"`` and ``[DONE]``. It writes
its port to ``PORT_FILE``. Writing costs it little CPU, so the worker measured
against it does not share its cores with an engine's forward passes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from orpheus_trio.local.tokens import AUDIO_TOKEN_BASE, CODEBOOK_SIZE, CUSTOM_TOKEN_ID_OFFSET, TOKENS_PER_FRAME


def token_text(i: int) -> str:
    """Token ``i`` of a reply: a valid audio token for its frame position."""
    position = i % TOKENS_PER_FRAME
    code = (i // TOKENS_PER_FRAME * 613 + position * 97 + 11) % CODEBOOK_SIZE
    return f"<custom_token_{AUDIO_TOKEN_BASE + position * CODEBOOK_SIZE + code - CUSTOM_TOKEN_ID_OFFSET}>"


def chunk(text: str, finish: str | None = None) -> bytes:
    payload = {
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        "created": 1764812345,
        "model": "orpheus",
        "system_fingerprint": "b0-replay",
        "object": "text_completion",
        "id": "chatcmpl-0123456789abcdef0123456789abcdef",
    }
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"


async def serve_one(stream: trio.SocketStream, rate: float) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        if not (piece := await stream.receive_some(65536)):
            return
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    if head.startswith(b"GET /v1/models "):  # the worker asks once which engine this is
        models = b'{"object":"list","data":[{"id":"orpheus","owned_by":"replay"}]}'
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                              b"Connection: close\r\n\r\n%s" % (len(models), models))  # fmt: skip
        await stream.aclose()
        return
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += await stream.receive_some(65536)
    tokens = json.loads(body)["max_tokens"]
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    start = trio.current_time()
    try:
        for i in range(tokens):
            await trio.sleep_until(start + i / rate)
            await stream.send_all(chunk(token_text(i)))
        await stream.send_all(chunk("", "length") + DONE)
    except trio.BrokenResourceError:
        pass  # the worker left
    await stream.aclose()


async def main(rate: float, port_file: Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port_file.write_text(str(listeners[0].socket.getsockname()[1]))
    await trio.serve_listeners(lambda stream: serve_one(stream, rate), listeners)


if __name__ == "__main__":
    trio.run(main, float(sys.argv[1]), Path(sys.argv[2]))
