"""Entry point: python -m services.image [--port N ...]; --help lists every setting."""

from multai.grpc_server import run_process
from services.image.config import ImageSettings
from services.image.server import serve

if __name__ == "__main__":
    run_process(ImageSettings, "python -m services.image", serve)
