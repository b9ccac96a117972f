"""What the synthesizer needs from whatever generates Orpheus tokens.

Two implementations: :class:`~.llm.OrpheusLM` (a ``transformers`` model on this
machine, token ids from a worker thread) and :class:`~.remote.RemoteLM` (an
inference engine's OpenAI-compatible completions stream: ``<custom_token_N>``
text pieces, or ids where the engine sends them). Everything after the tokens
(frame assembly, the token-error rules, streaming windows, the batching SNAC
decoder, truncation) is one code path in :mod:`.synthesizer` for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .llm import FinishReason, SamplingParams

__all__ = ["Prompt", "TokenModel", "TokenStream"]

#: Prompt token ids, or (for an engine without a tokenizer here) the prompt as text.
Prompt = Sequence[int] | str


class TokenStream(Protocol):
    """One generation: ``async for`` gives token ids (one, or a tuple of those
    that arrived together) or text pieces holding ``<custom_token_N>``;
    ``aclose`` stops the generation at its source."""

    @property
    def items(self) -> int:
        """Tokens received so far."""
        ...

    @property
    def reads_can_wait(self) -> bool:
        """Whether pieces not yet read wait at the source at no cost (an engine's socket),
        so a reader may take them later, in one piece; false for a thread that stalls
        when its buffer is full."""
        ...

    @property
    def result(self) -> FinishReason | None:
        """``"stop"`` or ``"length"`` once the source ended normally; else ``None``."""
        ...

    def __aiter__(self) -> TokenStream: ...

    async def __anext__(self) -> int | str | tuple[int, ...]:
        """A token id, a text piece, or the ids that arrived together."""
        ...

    async def aclose(self) -> None: ...


class TokenModel(Protocol):
    """Turns text + voice into a prompt, and a prompt into a :class:`TokenStream`."""

    #: The sampling parameters this model accepts (validated from request keys).
    params_type: type[SamplingParams]

    def prompt_ids(self, text: str, voice: str | None = None) -> Prompt: ...

    def check_fits(self, prompt_length: int, params: SamplingParams) -> None:
        """Raise ``InvalidParameter`` when the prompt plus ``max_tokens`` cannot fit."""
        ...

    def open_tokens(self, prompt: Prompt, params: SamplingParams) -> TokenStream:
        """Start generating (lazily: nothing runs before the first ``__anext__``)."""
        ...

    async def aclose(self) -> None:
        """Release what the model holds between requests (connections)."""
        ...

