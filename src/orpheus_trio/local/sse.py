"""Server-sent events (sans-IO): an inference engine's body bytes in, event ``data`` out.

The engine is an upstream that may be broken or hostile, so the decoder holds
at most ``max_event_bytes`` at any time (the unfinished line plus the event
being read; a longer event is an error, not a token piece) and does work in
proportion to the bytes fed: every byte is looked at a bounded number of
times, runs of blank lines are skipped in one step, and no buffer is sliced
again per line.
"""

from __future__ import annotations

import json
import re

from .engine_faults import EngineRequestError, Fault, fault_error

__all__ = ["MAX_EVENT_BYTES", "SSEDecoder"]

#: An event (or a line) longer than this is a broken engine, not a token piece.
MAX_EVENT_BYTES = 1 << 20
#: A run of line ends: blank lines, which end an event (or do nothing).
_BLANK_LINES = re.compile(rb"[\r\n]*")


class SSEDecoder:
    """Sans-IO: body bytes in, server-sent-event ``data`` payloads out.

    ``feed`` raises :class:`~.engine_faults.EngineRequestError` (502
    ``engine_error``) when what is held would pass ``max_event_bytes``.
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._line_parts: list[bytes] = []  # the unfinished line, as it came
        self._line_bytes = 0
        self._data: bytearray | None = None  # the event being read: its data lines, joined


    def feed(self, data: bytes) -> list[str]:
        """The data of every event that ``data`` completed."""
        events: list[str] = []
        end = data.find(b"\n")
        if end == -1:
            self._hold(data)
            return events
        if self._line_parts:
            first = b"".join(self._line_parts) + data[:end]
            self._line_parts, self._line_bytes = [], 0
        else:
            first = data[:end]
        start = self._line(first, data, end + 1, events)
        while (end := data.find(b"\n", start)) != -1:
            start = self._line(data[start:end], data, end + 1, events)
        self._hold(data[start:])
        return events

    def close(self) -> list[str]:
        """End of body: an event not ended by a blank line still counts."""
        return self.feed(b"\n\n") if self._line_parts or self._data is not None else []

    def _line(self, line: bytes, data: bytes, after: int, events: list[str]) -> int:
        """Take one line; where the next line starts in ``data``."""
        line = line.removesuffix(b"\r")
        if not line:
            if self._data is not None:
                events.append(self._data.decode("utf-8", "replace"))
                self._data = None
            match = _BLANK_LINES.match(data, after)
            return match.end() if match else after
        field, _, value = line.partition(b":")
        if field == b"data":
            self._add_data(value.removeprefix(b" "))
        elif field == b"error":  # llama-server's way to say it failed mid-stream
            text = value.strip().decode("utf-8", "replace")
            self._add_data(json.dumps({"error": text}).encode())
        return after

    def _add_data(self, value: bytes) -> None:
        if self._data is None:
            self._data = bytearray(value)
        else:
            self._data += b"\n"
            self._data += value
        if len(self._data) + self._line_bytes > self._max:
            raise self._too_large()

    def _hold(self, piece: bytes) -> None:
        if piece:
            self._line_bytes += len(piece)
            if self._line_bytes + (len(self._data) if self._data is not None else 0) > self._max:
                raise self._too_large()
            self._line_parts.append(piece)

    def _too_large(self) -> EngineRequestError:
        self._line_parts, self._data = [], None
        return fault_error(Fault.EVENT_TOO_LARGE)
