"""Entry point: python -m services.audio [--port N ...]; --help lists every setting."""

from multai.grpc_server import run_process
from services.audio.config import AudioSettings
from services.audio.server import serve

if __name__ == "__main__":
    run_process(AudioSettings, "python -m services.audio", serve)
