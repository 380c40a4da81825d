"""Entry point: python -m services.vision [--port N ...]; --help lists every setting."""

from multai.grpc_server import run_process
from services.vision.config import VisionSettings
from services.vision.server import serve

if __name__ == "__main__":
    run_process(VisionSettings, "python -m services.vision", serve)
