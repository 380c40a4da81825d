"""Entry point: python -m services.audio [--port N ...]."""

import asyncio
import sys

from multai.grpc_server import configure_logging
from multai.settings import load_settings
from services.audio.config import AudioSettings
from services.audio.server import serve


def main() -> None:
    settings = load_settings(AudioSettings, sys.argv[1:], "python -m services.audio")
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
