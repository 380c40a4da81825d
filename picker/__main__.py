"""Entry point: python -m picker [--port N --nodes ...]; --help lists every setting."""

from multai.grpc_server import run_process
from picker.config import PickerSettings
from picker.server import serve

if __name__ == "__main__":
    run_process(PickerSettings, "python -m picker", serve)
