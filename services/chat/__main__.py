"""Entry point: python -m services.chat [--port N ...]."""

import asyncio
import sys

from multai.grpc_server import configure_logging
from multai.settings import load_settings
from services.chat.config import ChatSettings
from services.chat.server import serve


def main() -> None:
    settings = load_settings(ChatSettings, sys.argv[1:], "python -m services.chat")
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
