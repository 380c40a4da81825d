"""Entry point: python -m rest_bridge [--port 8080 ...]."""

import sys

import uvicorn

from multai.grpc_server import configure_logging
from multai.settings import load_settings
from rest_bridge.app import create_app
from rest_bridge.config import BridgeSettings


def main() -> None:
    settings = load_settings(BridgeSettings, sys.argv[1:], "python -m rest_bridge")
    configure_logging(settings.log_level)
    # uvicorn handles SIGTERM and SIGINT itself: it stops accepting, finishes responses, then exits.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
