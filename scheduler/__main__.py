"""Entry point: python -m scheduler [--port N ...]; --help lists every setting."""

from multai.grpc_server import run_process
from scheduler.config import SchedulerSettings
from scheduler.server import serve

if __name__ == "__main__":
    run_process(SchedulerSettings, "python -m scheduler", serve)
