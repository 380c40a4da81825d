"""Entry point: python -m scheduler [--port N ...]."""

import asyncio
import sys

from multai.grpc_server import configure_logging
from multai.settings import load_settings
from scheduler.config import SchedulerSettings
from scheduler.server import serve


def main() -> None:
    settings = load_settings(SchedulerSettings, sys.argv[1:], "python -m scheduler")
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
