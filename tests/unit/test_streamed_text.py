"""The reply text loop the chat and vision engines share: detokenizers and stop sequences."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from multai.streamed_text import ByteDetokenizer, ReplyText, WindowDetokenizer
from tests.e2e.mesh import PROJECT_ROOT

LLAVA_TOKENIZER = PROJECT_ROOT / ".cache" / "test-models" / "llava-tiny-random"
TEXT = "Hello wörld, ça va? 東京 🙂 done."


class CountingDecoder:
    """A byte-per-token tokenizer (Llama's byte fallback) that records how many ids each decode reads."""

    def __init__(self) -> None:
        self.window_sizes: list[int] = []

    def __call__(self, ids: list[int]) -> str:
        self.window_sizes.append(len(ids))
        return bytes(ids).decode("utf-8", errors="replace")


def run(reply: ReplyText, tokens: list[int]) -> tuple[list[str], bool]:
    pieces, stopped = [], False
    for token in tokens:
        piece, stopped = reply.push(token)
        pieces.append(piece)
        if stopped:
            break
    return pieces, stopped


@pytest.mark.parametrize("kind", ["bytes", "window"])
def test_characters_split_over_tokens_are_sent_whole(kind: str) -> None:
    one_byte = ByteDetokenizer(lambda t: bytes([t]))
    reply = ReplyText(one_byte if kind == "bytes" else WindowDetokenizer(CountingDecoder()), stops=[])
    pieces, stopped = run(reply, list(TEXT.encode()))
    assert not stopped and not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) + reply.finish() == TEXT


def test_each_token_decodes_a_short_window_not_the_whole_reply() -> None:
    decoder = CountingDecoder()
    reply = ReplyText(WindowDetokenizer(decoder), stops=[])
    run(reply, list(("word " * 400).encode()))
    # Decoding the whole reply again at every token read 2,000 ids by the end, 2 million in all.
    assert max(decoder.window_sizes) <= 8
    assert sum(decoder.window_sizes) < 10 * 2000


def test_a_real_tokenizer_gives_back_the_text_it_encoded() -> None:
    tokenizer = AutoTokenizer.from_pretrained(Path(LLAVA_TOKENIZER), local_files_only=True)
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    detokenizer = WindowDetokenizer(lambda window: tokenizer.decode(window, skip_special_tokens=True))
    reply = ReplyText(detokenizer, stops=[])
    pieces, _ = run(reply, ids)
    assert "".join(pieces) + reply.finish() == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_stop_sequence_over_several_tokens_is_never_sent() -> None:
    reply = ReplyText(ByteDetokenizer(lambda t: bytes([t])), stops=["END"])
    pieces, stopped = run(reply, list(b"abENDcd"))
    assert stopped and "".join(pieces) == "ab"
    assert pieces[2:] == ["", "", ""]


def test_what_only_looked_like_a_stop_is_sent_at_the_end() -> None:
    reply = ReplyText(ByteDetokenizer(lambda t: bytes([t])), stops=["END"])
    pieces, stopped = run(reply, list(b"abEN"))
    assert not stopped and "".join(pieces) == "ab"
    assert reply.finish() == "EN"
