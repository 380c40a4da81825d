"""Generates multai/client/sync_client.py from async_client.py (unasync, as httpcore does), then formats it.

    python scripts/unasync_client.py            writes sync_client.py
    python scripts/unasync_client.py --check    exits 1 if sync_client.py is not what async_client.py makes

`make lint` runs the check, so the two clients cannot drift apart.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

CLIENT = Path(__file__).resolve().parent.parent / "multai" / "client"
# unasync turns AsyncX into SyncX; the blocking client's names are the openai SDK's, without a prefix.
RENAMES = {
    name: name.removeprefix("Async")
    for name in (
        "AsyncMultAI",
        "AsyncStream",
        "AsyncChat",
        "AsyncChatCompletions",
        "AsyncCompletions",
        "AsyncEmbeddings",
        "AsyncTranscriptions",
        "AsyncTranslations",
        "AsyncSpeech",
        "AsyncAudio",
        "AsyncImages",
        "AsyncModels",
    )
} | {"_aio": "_sync"}


def generated() -> str:
    """sync_client.py as async_client.py makes it: unasynced, then fixed and formatted as the project's ruff
    settings say for that path."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "async_client.py"
        source.write_bytes((CLIENT / "async_client.py").read_bytes())
        rule = unasync.Rule("async_client.py", "sync_client.py", additional_replacements=RENAMES)
        unasync.unasync_files([str(source)], [rule])
        text = (Path(scratch) / "sync_client.py").read_text()
    ruff = str(Path(sys.executable).parent / "ruff")
    target = str(CLIENT / "sync_client.py")
    for command in (["check", "--fix", "--quiet", "--exit-zero"], ["format", "--quiet"]):
        text = subprocess.run(
            [ruff, *command, "--stdin-filename", target, "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=CLIENT.parent.parent,
        ).stdout
    return text


def main() -> None:
    text = generated()
    target = CLIENT / "sync_client.py"
    if "--check" not in sys.argv[1:]:
        target.write_text(text)
    elif target.read_text() != text:
        sys.exit("multai/client/sync_client.py is stale: run `python scripts/unasync_client.py`")


if __name__ == "__main__":
    main()
