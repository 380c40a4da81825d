"""Text streamed token by token, where the end may be the start of a marker (a stop sequence, a tool-call
tag) that only the next tokens confirm; the chat and vision engines hold such an end back."""

import codecs
from collections.abc import Callable
from typing import Protocol

# A decoded token list that ends in part of a character shows this until the rest of it arrives.
REPLACEMENT_CHARACTER = "\ufffd"


def partial_marker_length(text: str, marker: str) -> int:
    """The length of the longest end of `text` that begins `marker`: what may still grow into it."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class Detokenizer(Protocol):
    """Turns an engine's tokens, one at a time, into the text they complete."""

    def push(self, token: int) -> str:
        """The text this token completes ("" while a character is still unfinished)."""
        ...

    def flush(self) -> str:
        """What is left at the end of the reply (an unfinished character as U+FFFD)."""
        ...


class ByteDetokenizer:
    """For engines that give each token's bytes (llama.cpp): an incremental UTF-8 decoder over them."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._decoder.decode(self._token_bytes(token))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class WindowDetokenizer:
    """For tokenizers that only decode lists of ids (transformers), as TGI's decode_token: each token decodes
    a short window that starts at the last complete text, so every token costs the same, and the window's
    own first tokens give the context (a leading space, a character's first bytes) its text needs."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        # Text is complete up to read; the window decodes from prefix, one completed piece back.
        self._prefix = 0
        self._read = 0

    def push(self, token: int) -> str:
        self._tokens.append(token)
        return self._take(complete_only=True)

    def flush(self) -> str:
        return self._take(complete_only=False)

    def _take(self, complete_only: bool) -> str:
        known = self._decode(self._tokens[self._prefix : self._read])
        text = self._decode(self._tokens[self._prefix :])
        if len(text) <= len(known) or (complete_only and text.endswith(REPLACEMENT_CHARACTER)):
            return ""
        self._prefix, self._read = self._read, len(self._tokens)
        return text[len(known) :]


class ReplyText:
    """A reply's tokens as text safe to send, shared by the chat and vision engines: what the detokenizer
    completes, less an end that may still grow into a stop sequence, which the next tokens confirm."""

    def __init__(self, detokenizer: Detokenizer, stops: list[str]) -> None:
        self._detokenizer = detokenizer
        self._stops = [s for s in stops if s]
        self._held = ""

    def push(self, token: int) -> tuple[str, bool]:
        """The text that is now certain, and whether a stop sequence ended the reply (it is not included)."""
        return self._release(self._detokenizer.push(token))

    def finish(self) -> str:
        """The rest of a reply that no stop sequence ended: all that was held back, up to a late stop."""
        text, stopped = self._release(self._detokenizer.flush())
        if not stopped:
            text, self._held = text + self._held, ""
        return text

    def _release(self, text: str) -> tuple[str, bool]:
        self._held += text
        found = [index for index in (self._held.find(s) for s in self._stops) if index >= 0]
        if found:
            text, self._held = self._held[: min(found)], ""
            return text, True
        keep = max((partial_marker_length(self._held, s) for s in self._stops), default=0)
        text, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        return text, False
