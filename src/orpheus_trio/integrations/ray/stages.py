"""The pipeline's stages as plain callables over rows: what Ray runs, importable without Ray.

Each stage takes and returns batches as pandas DataFrames (one row per
utterance piece, then per utterance). A row that fails keeps going with
``error`` set and stops being worked on: later stages pass it through, and
the manifest records the reason.

- :class:`PromptStage`: text -> pieces (:func:`~orpheus_trio.text.split.split_for_synthesis`)
  -> prompt token ids (:func:`~orpheus_trio.local.llm.prompt_ids`, the on-box and
  engine paths' own function).
- :class:`OnBoxGeneration` / :class:`EngineGeneration`: prompt ids -> audio token ids
  (the transformers model here, or an OpenAI-compatible engine through
  :class:`~orpheus_trio.local.engine_client.RemoteLM`). vLLM's stage is
  ``ray.data.llm``'s own (see :mod:`.pipeline`); :func:`vllm_request` and
  :func:`vllm_reply` are its pre- and post-processing.
- :func:`join_pieces`: a long row's pieces back together, in order.
- :class:`DecodeStage`: token ids -> frames (:func:`~orpheus_trio.local.tokens.codes_from_token_ids`,
  the online paths' token-error rules) -> PCM, whole utterances, equal lengths
  batched in one SNAC call.
- :class:`WriteStage`: PCM -> an audio file (the project's encoders), written to
  a temporary name and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...local.llm import END_OF_SPEECH, PROMPT_SUFFIX, START_OF_HUMAN, SamplingParams, prompt_ids
from ...local.tokens import OnInvalid, codes_from_token_ids
from ...text.split import split_for_synthesis

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DecodeStage",
    "EngineGeneration",
    "OnBoxGeneration",
    "PromptStage",
    "WriteStage",
    "join_pieces",
    "vllm_reply",
    "vllm_request",
]

Row = dict[str, Any]
#: What an errored piece sends through generation: nothing to say, one token at most.
_PLACEHOLDER_PROMPT = [START_OF_HUMAN, *PROMPT_SUFFIX]


def _rows(batch: pd.DataFrame) -> list[Row]:
    rows: list[Row] = batch.to_dict("records")
    return rows


def _frame(rows: list[Row]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows)


def _ids(value: Any) -> list[int]:
    """Token ids from whatever array type a list column came back as."""
    if value is None:
        return []
    return [int(i) for i in value]


class PromptStage:
    """Rows -> one row per piece, with the Orpheus prompt ids (tokenizer loaded once per actor)."""

    def __init__(self, tokenizer: str, *, split: str = "auto", vocab_size: int | None = None) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self._split = split
        self._vocab_size = vocab_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out: list[Row] = []
        for row in _rows(batch):
            voice = row["voice"] or None
            pieces = split_for_synthesis(row["text"], self._split)  # type: ignore[arg-type]
            for index, piece in enumerate(pieces):
                try:
                    ids = prompt_ids(self._tokenizer, piece, voice, vocab_size=self._vocab_size)
                    error = ""
                except ValueError as exc:
                    ids, error = _PLACEHOLDER_PROMPT, f"prompt: {exc}"
                out.append(
                    {**row, "piece": index, "pieces": len(pieces), "prompt": ids, "error": error}
                )
        return _frame(out)


def sampling_params(row: Row) -> SamplingParams:
    """The row's sampling parameters (checked when the file was read)."""
    return SamplingParams.from_params(json.loads(row["params"]))


def vllm_request(row: Row) -> Row:
    """``ray.data.llm`` preprocessing: the prompt ids and vLLM's sampling parameters."""
    params = sampling_params(row)
    failed = bool(row["error"])
    sampling: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "repetition_penalty": params.repetition_penalty,
        "max_tokens": 1 if failed else params.max_tokens,
        "stop_token_ids": [END_OF_SPEECH],
        "detokenize": False,
        "skip_special_tokens": False,
    }
    if params.top_k:
        sampling["top_k"] = params.top_k
    if params.seed is not None:
        sampling["seed"] = params.seed
    keep = {k: row[k] for k in ("id", "text", "voice", "piece", "pieces", "error")}
    return {**keep, "tokenized_prompt": _ids(row["prompt"]), "prompt": "", "sampling_params": sampling}


def vllm_reply(row: Row) -> Row:
    """``ray.data.llm`` postprocessing: the generated ids (none for a piece that had failed)."""
    keep = {k: row[k] for k in ("id", "text", "voice", "piece", "pieces", "error")}
    generated = [] if row["error"] else _ids(row.get("generated_tokens"))
    if generated and generated[-1] == END_OF_SPEECH:  # vLLM hands back the stop token it matched
        generated.pop()
    return {**keep, "generated": generated}


def _generated_row(row: Row, generated: list[int], error: str) -> Row:
    keep = {k: row[k] for k in ("id", "text", "voice", "piece", "pieces")}
    return {**keep, "error": error, "generated": generated}


class OnBoxGeneration:
    """Audio tokens from the transformers model, one piece at a time (CPU clusters without vLLM)."""

    def __init__(self, model: str, *, device: str | None = None, dtype: str | None = None) -> None:
        from ...local.llm import OrpheusLM

        self._lm = OrpheusLM.load(model, device=device, dtype=dtype)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = []
        for row in _rows(batch):
            if row["error"]:
                out.append(_generated_row(row, [], row["error"]))
                continue
            try:
                tokens = list(self._lm.generate(_ids(row["prompt"]), sampling_params(row)))
                out.append(_generated_row(row, tokens, ""))
            except Exception as exc:  # one piece's failure is its row's, not the batch's
                out.append(_generated_row(row, [], f"generation: {type(exc).__name__}: {exc}"))
        return _frame(out)


class EngineGeneration:
    """Audio tokens from an OpenAI-compatible engine (vLLM, SGLang, llama-server) over HTTP,
    through the engine worker's own client; a batch's pieces are requested concurrently."""

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None) -> None:
        self._url, self._model, self._api_key = url, model, api_key

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import trio

        rows = _rows(batch)
        results: list[Row | None] = [None] * len(rows)

        async def run_all() -> None:
            from ...local.engine_client import RemoteLM

            lm = RemoteLM(self._url, model=self._model, api_key=self._api_key)
            try:
                async with trio.open_nursery() as nursery:
                    for index, row in enumerate(rows):
                        nursery.start_soon(one, lm, index, row)
            finally:
                await lm.aclose()

        async def one(lm: Any, index: int, row: Row) -> None:
            if row["error"]:
                results[index] = _generated_row(row, [], row["error"])
                return
            try:
                params = lm.params_type.from_params(json.loads(row["params"]))
                results[index] = _generated_row(row, await _engine_tokens(lm, row, params), "")
            except Exception as exc:
                results[index] = _generated_row(row, [], f"generation: {type(exc).__name__}: {exc}")

        trio.run(run_all)
        return _frame([r for r in results if r is not None])


async def _engine_tokens(lm: Any, row: Row, params: SamplingParams) -> list[int]:
    from ...local.tokens import parse_custom_tokens

    ids: list[int] = []
    text: list[str] = []
    stream = lm.open_tokens(_ids(row["prompt"]), params)
    try:
        async for piece in stream:
            if isinstance(piece, str):
                text.append(piece)
            else:
                ids.extend(piece)
    finally:
        await stream.aclose()
    # An engine sends ids or text for a whole reply; the text form is parsed as the worker does.
    return ids if ids else parse_custom_tokens("".join(text))


def join_pieces(group: pd.DataFrame) -> pd.DataFrame:
    """One row's pieces (a ``groupby("id")`` group) back into one row, in order."""
    pieces = sorted(_rows(group), key=lambda r: int(r["piece"]))
    first = pieces[0]
    errors = [p["error"] for p in pieces if p["error"]]
    if len(pieces) != int(first["pieces"]):
        errors.append(f"{len(pieces)} of {first['pieces']} pieces came back")
    joined = {k: first[k] for k in ("id", "text", "voice")}
    joined["error"] = errors[0] if errors else ""
    joined["generated"] = [_ids(p["generated"]) for p in pieces]
    return _frame([joined])


class DecodeStage:
    """Token ids -> PCM with the project's SNAC decoder: whole utterances, equal frame
    counts decoded together in one batched call."""

    def __init__(self, snac: str, *, device: str | None = None, on_invalid: OnInvalid = "error") -> None:
        from ...local.llm import torch_device
        from ...local.snac_decoder import SnacDecoder

        self._decoder = SnacDecoder.from_pretrained(snac, device=torch_device(device))
        self._on_invalid = on_invalid

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from ...local.snac_decoder import float_to_pcm16

        rows = _rows(batch)
        # Each row: a list of pieces' token lists (after join_pieces) or one list.
        frames: dict[tuple[int, int], np.ndarray] = {}
        tokens = [0] * len(rows)
        errors = [str(r["error"]) for r in rows]
        for i, row in enumerate(rows):
            if errors[i]:
                continue
            for j, ids in enumerate(_piece_tokens(row["generated"])):
                tokens[i] += len(ids)
                try:
                    frames[i, j] = codes_from_token_ids(ids, on_invalid=self._on_invalid)
                except ValueError as exc:  # InvalidAudioToken, IncompleteFrame
                    errors[i] = f"tokens: {exc}"
                    break
                if not len(frames[i, j]):
                    errors[i] = "no audio: the model ended before a whole frame"
                    break
        audio = self._decode_equal_lengths(
            {key: f for key, f in frames.items() if not errors[key[0]]}
        )
        out = []
        for i, row in enumerate(rows):
            keys = sorted(k for k in audio if k[0] == i)
            pcm = b"" if errors[i] else b"".join(float_to_pcm16(audio[k]) for k in keys)
            out.append(
                {k: row[k] for k in ("id", "text", "voice")}
                | {"error": errors[i], "pcm": pcm, "tokens": tokens[i]}
            )
        return _frame(out)

    def _decode_equal_lengths(
        self, frames: dict[tuple[int, int], np.ndarray]
    ) -> dict[tuple[int, int], np.ndarray]:
        by_length: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for key, f in frames.items():
            by_length[len(f)].append(key)
        audio: dict[tuple[int, int], np.ndarray] = {}
        for keys in by_length.values():
            decoded = self._decoder.decode_batch(np.stack([frames[k] for k in keys]))
            audio.update(zip(keys, decoded, strict=True))
        return audio


def _piece_tokens(generated: Any) -> list[list[int]]:
    """``generated`` is one piece's ids or (after :func:`join_pieces`) a list of them."""
    items = list(generated)
    if items and not np.isscalar(items[0]):
        return [_ids(piece) for piece in items]
    return [_ids(items)]


class WriteStage:
    """PCM -> ``out_dir/ID.FORMAT`` through the project's encoders; returns manifest rows."""

    def __init__(self, out_dir: str, audio_format: str, sample_rate: int = 24000) -> None:
        self._out_dir = Path(out_dir)
        self._format = audio_format
        self._rate = sample_rate

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return _frame([self._write(row) for row in _rows(batch)])

    def _write(self, row: Row) -> Row:
        entry = {k: row[k] for k in ("id", "text", "voice")} | {
            "path": "",
            "duration_s": 0.0,
            "sample_rate": self._rate,
            "tokens": int(row["tokens"]),
            "error": str(row["error"]),
        }
        if entry["error"]:
            return entry
        pcm: bytes = row["pcm"]
        name = f"{row['id']}.{self._format}"
        try:
            write_atomically(self._out_dir / name, encode(pcm, self._format, self._rate))
        except Exception as exc:  # a full disk, a folder in the way: this row's failure
            return entry | {"error": f"write: {type(exc).__name__}: {exc}"}
        return entry | {"path": name, "duration_s": len(pcm) / 2 / self._rate}


def encode(pcm: bytes, audio_format: str, sample_rate: int = 24000) -> bytes:
    """A whole file of ``audio_format`` from s16le mono PCM.

    WAV and FLAC are written into a seekable buffer, so that their headers
    carry the length (the project's streaming encoders cannot know it: a FLAC
    from them says "length unknown", which some readers refuse); MP3 and Opus
    go through the streaming encoders of :mod:`orpheus_trio.audio.formats`.
    """
    if audio_format == "wav":
        import wave

        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(pcm)
        return buffer.getvalue()
    if audio_format == "flac":
        return _flac(pcm, sample_rate)
    from ...audio.formats import open_encoder

    encoder = open_encoder(audio_format)
    return encoder.encode(pcm) + encoder.finish()


def _flac(pcm: bytes, sample_rate: int) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=sample_rate, layout="mono")
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds all of ``data`` or is untouched: written aside, synced, renamed over."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with temporary.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

