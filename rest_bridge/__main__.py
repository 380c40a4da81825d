"""Entry point: python -m rest_bridge [--port 8080 ...]."""

import sys

import uvicorn

from multai.api_keys import KeyStore
from multai.grpc_server import configure_logging
from multai.settings import load_settings
from multai.state_db import database_url, open_engine
from multai.tracing import setup_tracing
from rest_bridge.app import create_app
from rest_bridge.config import BridgeSettings


def main() -> None:
    settings = load_settings(BridgeSettings, sys.argv[1:], "python -m rest_bridge")
    configure_logging(settings.log_level)
    setup_tracing("bridge", settings.tracing)
    if settings.keys_required() and not KeyStore(open_engine(database_url(settings))).active():
        sys.exit(
            f"refusing to serve {settings.host} without API keys: anyone who reaches it could use it. "
            "Create one with `multai keys create NAME`, bind to 127.0.0.1, or set "
            "MULTAI_ALLOW_UNAUTHENTICATED=true behind a proxy that authenticates."
        )
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
