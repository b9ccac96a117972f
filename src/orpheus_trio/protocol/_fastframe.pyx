# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The v1 frame decoder, fast: same frames and same errors as ``frames.PythonFrameDecoder``.

Plain chunk lines, exactly ``{"type":"chunk","seq":N,"audio":"..."}``, are read
in place: ``memchr`` finds the line end, the fixed head and ``N`` are checked
byte by byte, and pybase64 (SIMD, ``validate=True``) decodes the audio straight
out of the received buffer. Any other line, and any plain-looking chunk line
whose audio pybase64 refuses, is handed to ``rules.parse_line``, the exact
reference reading, so every error comes from the shared rules. Line splitting,
the line limit, the stream rules and the error rule (frames completed before a
bad line are returned, the next call raises) mirror the reference decoder
statement by statement; the property tests hold the two together. With
``relay=True`` a plain chunk line is checked the same way (its decoded audio
dropped) and handed on as a copy of its bytes.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ
from libc.string cimport memchr, memcmp, memcpy

import pybase64

from orpheus_trio.protocol.rules import (
    DEFAULT_MAX_LINE_BYTES,
    Chunk as _Chunk,
    ChunkLine as _ChunkLine,
    EndOfStream as _EndOfStream,
    ErrorFrame as _ErrorFrame,
    after_end_error as _after_end_error,
    check_max_line_bytes as _check_max_line_bytes,
    incomplete_error as _incomplete_error,
    parse_line as _parse_line,
    seq_error as _seq_error,
    too_long_error as _too_long_error,
    totals_error as _totals_error,
)
from orpheus_trio.errors import ProtocolError

cdef object _b64decode = pybase64.b64decode

cdef const char* _CHUNK_HEAD = b'{"type":"chunk","seq":'
cdef Py_ssize_t _CHUNK_HEAD_LEN = 22
cdef const char* _AUDIO_KEY = b',"audio":"'
cdef Py_ssize_t _AUDIO_KEY_LEN = 10
# A pending-line buffer grown past this by one long line is released afterwards.
cdef Py_ssize_t _KEEP_BUFFER_BYTES = 1 << 20
# seq values up to 18 digits fit a long long; longer ones take the exact path.
cdef int _MAX_SEQ_DIGITS = 18


cdef bytes _terminated(const char* line, Py_ssize_t length):
    """A copy of the line with its ``\\n`` (what a relaying decoder hands on)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, length + 1)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, line, length)
    p[length] = c'\n'
    return out


cdef inline bint _is_blank_byte(char c) noexcept nogil:
    return c == c' ' or c == c'\t' or c == c'\r'


cdef class FastFrameDecoder:
    """Cython twin of ``frames.PythonFrameDecoder``; see its docstring for the rules."""

    cdef readonly object max_line_bytes
    cdef readonly bint relay
    cdef Py_ssize_t _limit
    cdef bytearray _pending  # holds the unterminated line so far in its first _held bytes
    cdef Py_ssize_t _held
    cdef Py_ssize_t _lines  # lines completed (terminated) so far
    cdef long long _chunks
    cdef long long _samples
    cdef bint _finished
    cdef bint _closed
    cdef object _failure

    def __init__(self, max_line_bytes=DEFAULT_MAX_LINE_BYTES, *, relay=False):
        _check_max_line_bytes(max_line_bytes)
        self.max_line_bytes = max_line_bytes
        self.relay = bool(relay)
        # A limit beyond the address space is no limit at all.
        self._limit = min(max_line_bytes, (<Py_ssize_t>1) << 62)
        self._pending = bytearray()
        self._held = 0
        self._lines = 0
        self._chunks = 0
        self._samples = 0
        self._finished = False
        self._closed = False
        self._failure = None

    @property
    def finished(self):
        """Whether the closing ``eos`` or ``error`` frame has arrived."""
        return self._finished

    @property
    def chunks_received(self):
        return self._chunks

    @property
    def samples_received(self):
        return self._samples

    def feed(self, data):
        """Decode the next piece of the body; return the frames of the lines it completed.

        A bad line after good frames in this piece is raised by the next call instead.
        """
        self._check_usable()
        if self._closed:
            raise RuntimeError("feed() called after close()")
        if type(data) is not bytes:
            data = bytes(memoryview(data))  # any buffer, but not bytes(5)
        frames = []
        try:
            self._feed(<bytes>data, frames)
        except ProtocolError as exc:
            # Good frames before the bad line are delivered; the next call raises.
            self._failure = exc
            if not frames:
                raise
        return frames

    def close(self):
        """End of body: raise ``IncompleteStreamError`` unless ``eos``/``error`` arrived."""
        self._check_usable()
        self._closed = True
        if self._finished:
            return
        cdef const char* p = PyByteArray_AS_STRING(self._pending)
        cdef Py_ssize_t i
        pending_line = None
        for i in range(self._held):
            if not _is_blank_byte(p[i]):
                pending_line = self._lines + 1
                break
        raise _incomplete_error(pending_line, self._chunks)

    cdef int _check_usable(self) except -1:
        if self._failure is not None:
            raise ProtocolError(self._failure.reason, self._failure.line)
        return 0

    cdef int _feed(self, bytes data, list frames) except -1:
        cdef const char* base = PyBytes_AS_STRING(data)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t start = 0, newline, held
        cdef const char* hit
        cdef bint ends_cr
        if self._finished:
            return self._check_trailing(base, 0, size)
        held = self._held
        if held:
            hit = <const char*>memchr(base, c'\n', size)
            if hit == NULL:
                return self._hold(base, 0, size)
            newline = hit - base
            if newline:
                ends_cr = base[newline - 1] == c'\r'
            else:
                ends_cr = PyByteArray_AS_STRING(self._pending)[held - 1] == c'\r'
            self._check_length(held + newline, ends_cr, self._lines + 1)
            self._reserve(held + newline)
            memcpy(PyByteArray_AS_STRING(self._pending) + held, base, newline)
            self._line(PyByteArray_AS_STRING(self._pending), 0, held + newline, frames)
            self._held = 0
            if PyByteArray_GET_SIZE(self._pending) > _KEEP_BUFFER_BYTES:
                PyByteArray_Resize(self._pending, 0)
            start = newline + 1
        while not self._finished:
            hit = <const char*>memchr(base + start, c'\n', size - start)
            if hit == NULL:
                return self._hold(base, start, size)
            newline = hit - base
            self._line(base, start, newline, frames)
            start = newline + 1
        return self._check_trailing(base, start, size)

    cdef int _check_length(self, Py_ssize_t raw_len, bint ends_cr, Py_ssize_t lineno) except -1:
        # A trailing \r may be the first half of a \r\n terminator: it does not count.
        if raw_len - ends_cr > self._limit:
            raise _too_long_error(self.max_line_bytes, lineno)
        return 0

    cdef int _hold(self, const char* base, Py_ssize_t start, Py_ssize_t size) except -1:
        """Keep the unterminated tail, refusing to grow past the line limit."""
        if start == size:
            return 0
        cdef Py_ssize_t held = self._held
        self._check_length(held + size - start, base[size - 1] == c'\r', self._lines + 1)
        self._reserve(held + size - start)
        memcpy(PyByteArray_AS_STRING(self._pending) + held, base + start, size - start)
        self._held = held + size - start
        return 0

    cdef int _reserve(self, Py_ssize_t size) except -1:
        # The buffer is reused line after line; growing it is the only reallocation.
        if PyByteArray_GET_SIZE(self._pending) < size:
            PyByteArray_Resize(self._pending, size)
        return 0

    cdef int _line(self, const char* base, Py_ssize_t start, Py_ssize_t end, list frames) except -1:
        self._lines += 1
        cdef Py_ssize_t lineno = self._lines
        cdef Py_ssize_t i
        if end > start and base[end - 1] == c'\r':
            end -= 1
        if end - start > self._limit:
            raise _too_long_error(self.max_line_bytes, lineno)
        if self._plain_chunk(base + start, end - start, lineno, frames):
            return 0
        for i in range(start, end):
            if not _is_blank_byte(base[i]):
                break
        else:
            return 0
        frame = _parse_line(
            PyBytes_FromStringAndSize(base + start, end - start), lineno, self.relay
        )
        if frame is None:
            return 0
        if type(frame) is _Chunk:
            if frame.seq != self._chunks:
                raise _seq_error(self._chunks, frame.seq, lineno)
            self._chunks += 1
            self._samples += len(frame.pcm) // 2
        elif type(frame) is _ChunkLine:
            if frame.seq != self._chunks:
                raise _seq_error(self._chunks, frame.seq, lineno)
            self._chunks += 1
            self._samples += frame.samples
        elif type(frame) is _EndOfStream:
            if frame.chunks != self._chunks or frame.samples != self._samples:
                raise _totals_error(self._chunks, self._samples, frame, lineno)
            self._finished = True
        elif type(frame) is _ErrorFrame:
            self._finished = True
        frames.append(frame)
        return 0

    cdef bint _plain_chunk(self, const char* line, Py_ssize_t length, Py_ssize_t lineno, list frames) except -1:
        """Decode a chunk line in the exact plain form; False hands the line to the exact path."""
        cdef Py_ssize_t i = _CHUNK_HEAD_LEN
        cdef long long seq = 0
        cdef int digits = 0
        if length < _CHUNK_HEAD_LEN + 1 + _AUDIO_KEY_LEN + 2 or memcmp(line, _CHUNK_HEAD, _CHUNK_HEAD_LEN):
            return False
        if line[i] == c'0':
            i += 1  # JSON forbids leading zeros: "01" fails the key check below
        else:
            while i < length and c'0' <= line[i] <= c'9':
                seq = seq * 10 + (line[i] - c'0')
                digits += 1
                i += 1
            if digits == 0 or digits > _MAX_SEQ_DIGITS:
                return False
        if length - i < _AUDIO_KEY_LEN + 2 or memcmp(line + i, _AUDIO_KEY, _AUDIO_KEY_LEN):
            return False
        i += _AUDIO_KEY_LEN
        if line[length - 2] != c'"' or line[length - 1] != c'}':
            return False
        # The audio holds no quote or backslash exactly when pybase64 accepts it,
        # so a line that passes is this one JSON object and nothing else.
        # (s, altchars, validate) go by position: keyword parsing costs more than the call.
        try:
            pcm = _b64decode(
                PyMemoryView_FromMemory(<char*>line + i, length - 2 - i, PyBUF_READ), None, True
            )
        except ValueError:
            return False
        cdef Py_ssize_t pcm_len = PyBytes_GET_SIZE(pcm)
        if pcm_len & 1:
            return False
        if seq != self._chunks:
            raise _seq_error(self._chunks, seq, lineno)
        self._chunks += 1
        self._samples += pcm_len >> 1
        if self.relay:
            frames.append(_ChunkLine(seq, _terminated(line, length), pcm_len >> 1))
        else:
            frames.append(_Chunk(seq, pcm))
        return True

    cdef int _check_trailing(self, const char* base, Py_ssize_t start, Py_ssize_t size) except -1:
        """After the end, only whitespace may follow; count its lines to name the culprit."""
        cdef Py_ssize_t i
        cdef Py_ssize_t newlines = 0
        cdef char c
        for i in range(start, size):
            c = base[i]
            if c == c'\n':
                newlines += 1
            elif not _is_blank_byte(c):
                raise _after_end_error(self._lines + 1 + newlines)
        self._lines += newlines
        return 0
