"""GET /v1/files/{id}/content reads from a handle opened before answering: a delete meanwhile (the fuzzer
sends one beside it) cannot cut the answer short after its headers."""

from pathlib import Path

from rest_bridge.routes.files import content_chunks, open_content


async def test_a_file_deleted_after_it_was_opened_is_still_sent_whole(tmp_path: Path) -> None:
    path = tmp_path / "file-1"
    data = bytes(range(256)) * 10_000
    path.write_bytes(data)
    opened = open_content(path)
    assert opened is not None
    handle, size = opened
    path.unlink()
    assert size == len(data)
    assert b"".join([chunk async for chunk in content_chunks(handle)]) == data
    assert handle.closed


def test_a_file_already_gone_is_none(tmp_path: Path) -> None:
    assert open_content(tmp_path / "missing") is None
