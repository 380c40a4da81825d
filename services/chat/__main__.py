"""Entry point: python -m services.chat [--port N ...]; --help lists every setting."""

from multai.grpc_server import run_process
from services.chat.config import ChatSettings
from services.chat.server import serve

if __name__ == "__main__":
    run_process(ChatSettings, "python -m services.chat", serve)
